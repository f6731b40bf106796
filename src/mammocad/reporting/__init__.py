"""Self-contained HTML reports (figures embedded, open offline); used by every stage that reports."""

from mammocad.reporting.html import HtmlReport, figure_to_png, png_data_uri

__all__ = ["HtmlReport", "figure_to_png", "png_data_uri"]
