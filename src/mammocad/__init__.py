"""mammocad."""
