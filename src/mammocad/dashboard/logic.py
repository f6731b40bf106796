"""Everything the clinician dashboard computes, with no Streamlit in sight, under its old single name.

The code lives in modules named after what they are; this module re-exports their public names so
``from mammocad.dashboard import logic`` keeps working (kept for existing scripts and the tests; the app
imports the modules themselves):

- :mod:`~mammocad.dashboard.settings`: what ``mammocad dashboard`` hands the app (environment variables);
- :mod:`~mammocad.dashboard.runs`: :func:`load_runs` checks that each run is trained and evaluated on a
  held-out split and reads that evaluation; cached evaluation images; :func:`comparison_table`;
  :func:`misclassified` (critical errors first, most confident first);
- :mod:`~mammocad.dashboard.blind_test`: :func:`blind_set`, :class:`BlindSession`, :func:`score`;
- :mod:`~mammocad.dashboard.latent`: :func:`latent_points` (3-D PCA of a layer's features);
- :mod:`~mammocad.dashboard.figures`: the Plotly figures (probabilities, radar, scatter pairs, latent space);
- :mod:`~mammocad.dashboard.uploads`: :func:`explain_upload` (decode, predict, heatmap).
"""

from mammocad.dashboard.blind_test import BlindItem, BlindScore, BlindSession, blind_set, score
from mammocad.dashboard.blind_test import stratified_positions as _stratified  # noqa: F401  (old private name)
from mammocad.dashboard.figures import (
    COLOURS,
    RADAR_METRICS,
    latent_figure,
    probability_figure,
    radar_figure,
    scatter_figure,
)
from mammocad.dashboard.latent import LatentPoints, latent_layers, latent_points
from mammocad.dashboard.runs import (
    DashboardRun,
    cached_image,
    comparison_table,
    display_png,
    load_runs,
    misclassified,
    validate_run,
)
from mammocad.dashboard.settings import (
    BLIND_N_ENV,
    DEFAULT_BLIND_N,
    DEFAULT_SPLIT,
    HELD_OUT_SPLITS,
    RATING_ENV,
    RATINGS,
    RUNS_ENV,
    SPLIT_ENV,
    STUDY_DIR_ENV,
    DashboardSettings,
    check_split,
    settings_env,
    settings_from_env,
)
from mammocad.dashboard.uploads import UploadResult, explain_upload
from mammocad.dashboard.uploads import parse_upload_box as parse_box

__all__ = [
    "BLIND_N_ENV",
    "COLOURS",
    "DEFAULT_BLIND_N",
    "DEFAULT_SPLIT",
    "HELD_OUT_SPLITS",
    "RADAR_METRICS",
    "RATINGS",
    "RATING_ENV",
    "RUNS_ENV",
    "SPLIT_ENV",
    "STUDY_DIR_ENV",
    "BlindItem",
    "BlindScore",
    "BlindSession",
    "DashboardRun",
    "DashboardSettings",
    "LatentPoints",
    "UploadResult",
    "blind_set",
    "cached_image",
    "check_split",
    "comparison_table",
    "display_png",
    "explain_upload",
    "latent_figure",
    "latent_layers",
    "latent_points",
    "load_runs",
    "misclassified",
    "parse_box",
    "probability_figure",
    "radar_figure",
    "scatter_figure",
    "score",
    "settings_env",
    "settings_from_env",
    "validate_run",
]
