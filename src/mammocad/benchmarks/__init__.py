"""Benchmarks: speed and memory measured by commands (``mammocad bench``), never by timed tests."""
