"""The clinician dashboard (``mammocad dashboard``): a Streamlit app over trained, evaluated runs.

``app`` is the Streamlit script; it only lays out what the modules beside it compute: ``settings``
(from ``mammocad dashboard``), ``runs`` (checked, evaluated runs), ``blind_test``, ``latent``,
``figures``, ``uploads``, ``reader_study`` (the reader-study tab) and ``viewer`` (the film viewer).
``logic`` re-exports the computing modules' names under the dashboard's old single module name.
"""

from pathlib import Path

#: The Streamlit script ``mammocad dashboard`` runs.
APP_PATH = Path(__file__).with_name("app.py")
