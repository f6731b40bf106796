"""The dashboard's latent space: a layer's features on the evaluation images, projected to 3-D by PCA
(drawn by :func:`mammocad.dashboard.figures.latent_figure`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mammocad.dashboard.runs import DashboardRun
from mammocad.evaluation.latent import project_layer
from mammocad.evaluation.predictions import default_feature_layers, predict_frame
from mammocad.serve.engine import InferenceEngine
from mammocad.training.predict import load_run


@dataclass(frozen=True)
class LatentPoints:
    """3-D PCA of one layer's features on the evaluation images, with each image's truth and prediction."""

    layer: str
    coords: np.ndarray  # (N, 3)
    truth: np.ndarray  # (N,) class names
    prediction: np.ndarray  # (N,) class names
    explained_variance: tuple[float, ...]  # of the three plotted components


def latent_layers(engine: InferenceEngine) -> list[str]:
    """Layers worth a latent-space look (backbone output, head stages), the last one the most task-specific."""
    return default_feature_layers(engine.run.model)


def latent_points(run: DashboardRun, layer: str, seed: int = 0) -> LatentPoints:
    """Features of ``layer`` for the evaluation's images (the cached inputs it scored), PCA to 3-D.

    The evaluation stores only a summary of the latent space, so the features are computed here,
    with a model of its own: the forward hooks must not see a concurrent heatmap's passes.
    """
    frame = run.predictions()
    loaded = load_run(run.run_dir)
    _, features = predict_frame(loaded, frame.assign(target=frame["label"]), [layer])
    projection = project_layer(layer, features[layer], seed=seed, tsne=False)
    return LatentPoints(
        layer=layer,
        coords=projection.pca,
        truth=frame["label_name"].to_numpy(dtype=str),
        prediction=frame["prediction_name"].to_numpy(dtype=str),
        explained_variance=tuple(float(v) for v in projection.explained_variance_ratio[:3]),
    )
