"""Latent space of a trained model: PCA (explained variance, 2-D, 3-D) and t-SNE of layer features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler


@dataclass
class LayerProjection:
    """One layer's features projected: PCA explained-variance ratios, 3-D PCA coordinates, 2-D t-SNE."""

    layer: str
    dimensions: int
    explained_variance_ratio: np.ndarray
    pca: np.ndarray
    tsne: np.ndarray | None


def project_layer(layer: str, features: np.ndarray, seed: int = 0, tsne: bool = True) -> LayerProjection:
    """Standardise a layer's (N, D) features, then PCA (up to 50 components) and t-SNE (2-D).

    Constant features (e.g. dead ReLU units) are dropped first, as they carry no information and
    would divide by zero in the scaling. t-SNE needs at least 5 samples; its perplexity is capped
    at (N - 1) / 3 so small test sets work.
    """
    features = np.asarray(features, dtype=np.float64)
    n = len(features)
    varying = features[:, features.std(axis=0) > 1e-12]
    if varying.shape[1] == 0 or n < 2:
        empty = np.zeros((n, 3))
        return LayerProjection(layer, features.shape[1], np.zeros(0), empty, None)
    scaled = StandardScaler().fit_transform(varying)
    components = min(50, n, scaled.shape[1])
    pca = PCA(n_components=components, random_state=seed).fit(scaled)
    coords = pca.transform(scaled)
    coords = np.pad(coords[:, :3], ((0, 0), (0, max(0, 3 - coords.shape[1]))))
    embedded = None
    if tsne and n >= 5:
        perplexity = float(min(30.0, (n - 1) / 3))
        init = "pca" if scaled.shape[1] >= 2 else "random"
        embedded = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed).fit_transform(scaled)
    return LayerProjection(layer, features.shape[1], pca.explained_variance_ratio_, coords, embedded)
