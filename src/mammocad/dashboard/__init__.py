"""The clinician dashboard (``mammocad dashboard``): a Streamlit app over trained, evaluated runs.

``logic`` holds everything it computes (testable without Streamlit); ``app`` is the Streamlit script.
"""

from pathlib import Path

#: The Streamlit script ``mammocad dashboard`` runs.
APP_PATH = Path(__file__).with_name("app.py")
