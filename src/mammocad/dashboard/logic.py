"""What the clinician dashboard computes, with no Streamlit in sight (the app only draws it).

- runs: :func:`load_runs` checks that each run is trained (``model.json`` + weights) and evaluated on
  a held-out split, and reads that evaluation (``RUN/evaluation/<split>``: predictions.parquet, metrics.json);
- blind test: :func:`blind_set` picks held-out images, :class:`BlindSession` records a reader's answers,
  :func:`score` compares the reader with the model (accuracy, Cohen's kappa, agreement, McNemar);
- model comparison: :func:`comparison_table` (the ``mammocad compare`` Table 1), :func:`radar_figure`,
  :func:`scatter_figure`;
- latent space: :func:`latent_points` (3-D PCA of a layer's features on the evaluation images), :func:`latent_figure`;
- misclassifications: :func:`misclassified` (critical errors first, most confident first);
- uploads: :func:`explain_upload` (decode, predict, heatmap; a :class:`~mammocad.errors.MammocadError` for the user).

Privacy: nothing here returns patient or image identifiers for display; sample ids (which can embed
patient numbers) stay internal, for joins only.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from sklearn.metrics import cohen_kappa_score

from mammocad.dashboard.viewer import MAX_VIEW_SIDE
from mammocad.errors import ConfigError, MammocadError
from mammocad.evaluation.compare import SCATTER_PAIRS, latest_evaluation, load_evaluation, tables, unique_names
from mammocad.evaluation.evaluate import CRITICAL_PREDICTED, CRITICAL_TRUE
from mammocad.evaluation.latent import project_layer
from mammocad.evaluation.predictions import default_feature_layers, predict_frame
from mammocad.evaluation.significance import McNemarResult, mcnemar_test
from mammocad.explain.overlay import colorbar_spec, heatmap_caption
from mammocad.explain.run import overlay_rgba
from mammocad.parse import parse_box as parse_lesion_box
from mammocad.parse import parse_int
from mammocad.preprocess import Geometry, read_sample
from mammocad.reporting.html import array_to_png
from mammocad.serve.engine import Explanation, InferenceEngine, PreparedImage
from mammocad.training.predict import Box, load_run, pixels_to_input, run_weights

RUNS_ENV = "MAMMOCAD_DASHBOARD_RUNS"
BLIND_N_ENV = "MAMMOCAD_DASHBOARD_BLIND_N"
SPLIT_ENV = "MAMMOCAD_DASHBOARD_SPLIT"
STUDY_DIR_ENV = "MAMMOCAD_DASHBOARD_STUDY_DIR"
RATING_ENV = "MAMMOCAD_DASHBOARD_RATING"
#: Rating scales of the reader study (see :mod:`mammocad.dashboard.reader_study`).
RATINGS = ("confidence", "birads")
DEFAULT_BLIND_N = 150
DEFAULT_SPLIT = "test"
#: Splits the dashboard shows: images the model never trained on (a blind test on training images means nothing).
HELD_OUT_SPLITS = ("test", "val", "blind")
#: Radar axes: metrics in [0, 1] where higher is better, so the polygons compare at a glance.
RADAR_METRICS = ("accuracy", "f1_macro", "auc_macro", "recall_min")
#: Plotly's default qualitative colours, one per class / run.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")


# ---- settings and runs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardSettings:
    """What ``mammocad dashboard`` hands the Streamlit app (through environment variables)."""

    runs: tuple[Path, ...]
    blind_n: int = DEFAULT_BLIND_N
    split: str = DEFAULT_SPLIT
    #: Where reader studies live, ``<study_dir>/<run>-<case set>/`` (None: ``~/.mammocad/studies``).
    study_dir: Path | None = None
    #: What a reader rates with each answer: ``confidence`` 1-5 or ``birads`` 1-5.
    rating: str = RATINGS[0]


def settings_env(settings: DashboardSettings) -> dict[str, str]:
    """The environment variables that carry ``settings`` to the app (read back by :func:`settings_from_env`)."""
    return {
        RUNS_ENV: os.pathsep.join(str(run) for run in settings.runs),
        BLIND_N_ENV: str(settings.blind_n),
        SPLIT_ENV: settings.split,
        STUDY_DIR_ENV: "" if settings.study_dir is None else str(settings.study_dir),
        RATING_ENV: settings.rating,
    }


def settings_from_env(environ: Mapping[str, str]) -> DashboardSettings:
    """The app's settings from ``environ``; ConfigError when no run is given or a value is malformed."""
    runs = tuple(Path(part) for part in environ.get(RUNS_ENV, "").split(os.pathsep) if part.strip())
    if not runs:
        raise ConfigError(f"no run to show: start the dashboard with `mammocad dashboard RUN` (or set {RUNS_ENV})")
    raw_n = environ.get(BLIND_N_ENV, str(DEFAULT_BLIND_N))
    blind_n = parse_int(raw_n)
    if blind_n is None or blind_n < 1:
        raise ConfigError(f"{BLIND_N_ENV} must be a positive integer, got {raw_n!r}")
    split = environ.get(SPLIT_ENV, DEFAULT_SPLIT)
    check_split(split)
    study_dir = environ.get(STUDY_DIR_ENV, "").strip()
    rating = environ.get(RATING_ENV, "").strip() or RATINGS[0]
    if rating not in RATINGS:
        raise ConfigError(f"{RATING_ENV} must be one of {', '.join(RATINGS)}, got {rating!r}")
    return DashboardSettings(runs, blind_n, split, Path(study_dir).expanduser() if study_dir else None, rating)


def check_split(split: str) -> None:
    """ConfigError unless ``split`` is one of :data:`HELD_OUT_SPLITS`."""
    if split not in HELD_OUT_SPLITS:
        raise ConfigError(
            f"the dashboard shows held-out images: choose split {', '.join(HELD_OUT_SPLITS)}, not {split!r}"
        )


@dataclass(frozen=True)
class DashboardRun:
    """A trained run with an evaluation of a held-out split, as the dashboard reads it."""

    run_dir: Path
    name: str
    split: str
    evaluation_dir: Path
    classes: tuple[str, ...]

    def metrics(self) -> dict[str, Any]:
        """The evaluation's ``metrics.json``."""
        return json.loads((self.evaluation_dir / "metrics.json").read_text())

    def predictions(self) -> pd.DataFrame:
        """The evaluation's per-image table (see :class:`~mammocad.evaluation.predictions.SplitPredictions`)."""
        return pd.read_parquet(self.evaluation_dir / "predictions.parquet")


def validate_run(run_dir: str | Path, split: str = DEFAULT_SPLIT, name: str | None = None) -> DashboardRun:
    """Check that ``run_dir`` is trained and evaluated on ``split``; MammocadError naming the run and what is missing."""
    check_split(split)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MammocadError(f"run {run_dir} does not exist")
    meta_path = run_dir / "model.json"
    if not meta_path.exists():
        raise MammocadError(f"run {run_dir} is not a trained run (no model.json); train it with `mammocad train`")
    meta = json.loads(meta_path.read_text())
    run_weights(run_dir, meta)  # the weights InferenceEngine will load, checked before any model is built
    evaluation = latest_evaluation(run_dir, split)
    if evaluation is None:
        raise MammocadError(
            f"run {run_dir} has no evaluation of the {split} split; run `mammocad evaluate {run_dir} --split {split}`"
        )
    return DashboardRun(run_dir, name or run_dir.name, split, evaluation, tuple(meta["classes"]))


def load_runs(run_dirs: Sequence[str | Path], split: str = DEFAULT_SPLIT) -> list[DashboardRun]:
    """Validate every run (unique display names); one MammocadError listing every unusable run."""
    if not run_dirs:
        raise MammocadError("give at least one run directory")
    paths = [Path(run) for run in run_dirs]
    runs, problems = [], []
    for path, name in zip(paths, unique_names(paths), strict=True):
        try:
            runs.append(validate_run(path, split, name))
        except ConfigError:
            raise  # a bad split is the same for every run: say it once
        except MammocadError as exc:
            problems.append(str(exc))
    if problems:
        raise MammocadError("; ".join(problems))
    return runs


# ---- images --------------------------------------------------------------------------------------


def cached_image(engine: InferenceEngine, path: str | Path, name: str = "case") -> PreparedImage:
    """A cached preprocessed sample (what the evaluation scored) as an engine input.

    The cache holds the model input itself, so its "original" is that image and the geometry is
    the identity: heatmaps come back on the image shown. ImageReadError when the cache is not
    reachable (e.g. a run copied without its dataset).
    """
    pixels = read_sample(path)
    tensor = pixels_to_input(pixels, engine.run.model.in_chans)
    height, width = pixels.shape[:2]
    geometry = Geometry(
        original_hw=(height, width), crop=(0, 0, width, height), flipped=False, output_hw=(height, width)
    )
    return PreparedImage(name, tensor, geometry, tensor[0].numpy().copy(), "png")


def display_png(image: PreparedImage) -> bytes:
    """The image as an 8-bit grey PNG for display."""
    return array_to_png(np.rint(np.clip(image.original, 0.0, 1.0) * 255).astype(np.uint8))


def probability_figure(probabilities: Mapping[str, float], truth: str | None = None) -> go.Figure:
    """Horizontal bars of class probabilities (the true class, when given, marked)."""
    names = list(probabilities)
    labels = [f"{name} (truth)" if name == truth else name for name in names]
    figure = go.Figure(
        go.Bar(
            x=[probabilities[name] for name in names],
            y=labels,
            orientation="h",
            marker_color=[COLOURS[k % len(COLOURS)] for k in range(len(names))],
            text=[f"{probabilities[name]:.2f}" for name in names],
            textposition="auto",
        )
    )
    figure.update_layout(
        xaxis={"range": [0, 1], "title": "probability"},
        height=60 + 40 * len(names),
        margin={"l": 10, "r": 10, "t": 10, "b": 40},
    )
    return figure


# ---- blind test ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlindItem:
    """One held-out image of a blind test, with the truth and the model's answer (hidden until answered)."""

    sample_id: str  # for joins only: never shown, ids can embed patient numbers
    image: Path  # the cached preprocessed image the evaluation scored
    truth: str
    prediction: str
    probabilities: dict[str, float]


def blind_set(run: DashboardRun, n: int = DEFAULT_BLIND_N, seed: int = 0) -> list[BlindItem]:
    """Up to ``n`` images of the run's evaluated held-out split, stratified by true class, in a seeded order.

    Each class gets its share of ``n`` (largest remainders; a present class at least one image when
    ``n`` allows), so a rare class is not lost from a short test. The same run, ``n`` and ``seed``
    give the same items in the same order.
    """
    if n < 1:
        raise ConfigError(f"a blind test needs at least one image, got n={n}")
    frame = run.predictions().sort_values("sample_id", kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    chosen = _stratified(frame["label_name"].to_numpy(), n, rng)
    classes = list(run.classes)
    return [
        BlindItem(
            sample_id=str(row["sample_id"]),
            image=Path(row["image"]),
            truth=str(row["label_name"]),
            prediction=str(row["prediction_name"]),
            probabilities={c: float(row[f"p_{c}"]) for c in classes},
        )
        for row in frame.iloc[chosen].to_dict("records")
    ]


def _stratified(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row positions: each class's share of min(n, N) by largest remainders, drawn at random, shuffled."""
    total = len(labels)
    take = min(n, total)
    names, counts = np.unique(labels, return_counts=True)
    quota = take * counts / total
    shares = np.floor(quota).astype(int)
    # At least one of each class when there is room, so small tests still see every class.
    if take >= len(names):
        shares = np.maximum(shares, 1)
    while shares.sum() > take:  # the minimum of one overshot: take back where it costs least
        shares[np.argmax(np.where(shares > 1, shares - quota, -np.inf))] -= 1
    for k in np.argsort(shares - quota, kind="stable")[: take - shares.sum()]:  # largest shortfalls first
        shares[k] += 1
    picked = [
        rng.permutation(np.flatnonzero(labels == name))[:share] for name, share in zip(names, shares, strict=True)
    ]
    return rng.permutation(np.concatenate(picked))


@dataclass
class BlindSession:
    """A reader's pass through a blind set: one item at a time, answer, reveal, next."""

    items: list[BlindItem]
    answers: list[str] = field(default_factory=list)  # answers[i] is the reader's class for items[i]
    position: int = 0  # the item on screen

    @property
    def finished(self) -> bool:
        return self.position >= len(self.items)

    @property
    def current(self) -> BlindItem | None:
        """The item on screen (None once every item was seen)."""
        return None if self.finished else self.items[self.position]

    @property
    def revealed(self) -> bool:
        """Whether the item on screen was answered (truth and model answer may be shown)."""
        return len(self.answers) > self.position

    def answer(self, label: str) -> None:
        """Record the reader's class for the item on screen (once)."""
        if self.finished or self.revealed:
            raise MammocadError("this item is already answered; go to the next one")
        self.answers.append(label)

    def advance(self) -> None:
        """Move on to the next item (only after answering this one)."""
        if not self.revealed:
            raise MammocadError("answer this item before moving on")
        self.position += 1


@dataclass(frozen=True)
class BlindScore:
    """Reader vs model on the answered items; None where a number is undefined (no items, constant labels)."""

    n_answered: int
    user_accuracy: float | None
    model_accuracy: float | None
    user_kappa: float | None  # Cohen's kappa, reader vs truth
    model_kappa: float | None  # Cohen's kappa, model vs truth
    agreement: float | None  # fraction of items where reader and model gave the same class
    mcnemar: McNemarResult | None  # reader (a) vs model (b); b: reader right and model wrong


def score(session: BlindSession) -> BlindScore:
    """Accuracy, Cohen's kappa against the truth, reader-model agreement and McNemar's test, on answered items."""
    answered = session.items[: len(session.answers)]
    if not answered:
        return BlindScore(0, None, None, None, None, None, None)
    truth = np.array([item.truth for item in answered])
    user = np.array(session.answers)
    model = np.array([item.prediction for item in answered])
    user_right, model_right = user == truth, model == truth
    return BlindScore(
        n_answered=len(answered),
        user_accuracy=float(user_right.mean()),
        model_accuracy=float(model_right.mean()),
        user_kappa=_kappa(truth, user),
        model_kappa=_kappa(truth, model),
        agreement=float((user == model).mean()),
        mcnemar=mcnemar_test(user_right, model_right),
    )


def _kappa(truth: np.ndarray, rated: np.ndarray) -> float | None:
    # Undefined (None, not sklearn's warning) when chance agreement is 1, e.g. truth and rater one class.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = cohen_kappa_score(truth, rated)
    return float(value) if np.isfinite(value) else None


# ---- model comparison ----------------------------------------------------------------------------


def comparison_table(runs: Sequence[DashboardRun]) -> pd.DataFrame:
    """One row per run: images scored, then ``mammocad compare``'s Table 1 (accuracy, loss, macro-F1, macro-AUC,
    recall_min, recall_std, overfitting gaps), straight from each evaluation's metrics.json."""
    evaluations = [load_evaluation(run.run_dir, run.evaluation_dir, run.name) for run in runs]
    table, _ = tables(evaluations)
    table.insert(0, "n_images", [int(ev.metrics["n_images"]) for ev in evaluations])
    return table


def radar_figure(table: pd.DataFrame, metrics: Sequence[str] = RADAR_METRICS) -> go.Figure:
    """A polygon per run over ``metrics`` (all in [0, 1], higher is better); undefined values sit at 0."""
    figure = go.Figure()
    axes = [*metrics, metrics[0]]  # repeat the first axis to close the polygon
    for k, (name, row) in enumerate(table.iterrows()):
        values = [float(row[m]) if pd.notna(row[m]) else 0.0 for m in axes]
        figure.add_trace(
            go.Scatterpolar(r=values, theta=axes, fill="toself", name=str(name), line_color=COLOURS[k % len(COLOURS)])
        )
    figure.update_layout(polar={"radialaxis": {"range": [0, 1]}}, height=420, margin={"t": 30, "b": 30})
    return figure


def scatter_figure(table: pd.DataFrame, pairs: Sequence[tuple[str, str]] = tuple(SCATTER_PAIRS)) -> go.Figure:
    """``mammocad compare``'s scatter pairs (accuracy vs loss, ...): a point per run in each panel (legend: run)."""
    figure = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.12)
    for k, (name, row) in enumerate(table.iterrows()):
        for col, (x, y) in enumerate(pairs, start=1):
            figure.add_trace(
                go.Scatter(
                    x=[row[x]],
                    y=[row[y]],
                    mode="markers",
                    name=str(name),
                    hovertext=str(name),
                    legendgroup=str(name),
                    showlegend=col == 1,
                    marker={"size": 11, "color": COLOURS[k % len(COLOURS)]},
                ),
                row=1,
                col=col,
            )
            figure.update_xaxes(title_text=x, row=1, col=col)
            figure.update_yaxes(title_text=y, row=1, col=col)
    figure.update_layout(height=380, margin={"t": 30}, legend={"orientation": "h", "y": -0.25})
    return figure


# ---- latent space --------------------------------------------------------------------------------


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


def latent_figure(points: LatentPoints, classes: Sequence[str]) -> go.Figure:
    """A rotatable 3-D scatter: colour = true class, open ring = misclassified (hover says what the model said)."""
    figure = go.Figure()
    wrong = points.truth != points.prediction
    for k, name in enumerate(classes):
        chosen = points.truth == name
        if not chosen.any():
            continue
        figure.add_trace(
            go.Scatter3d(
                x=points.coords[chosen, 0],
                y=points.coords[chosen, 1],
                z=points.coords[chosen, 2],
                mode="markers",
                name=f"{name} ({int(wrong[chosen].sum())} ○ misclassified)",
                marker={
                    "size": 4,
                    "color": COLOURS[k % len(COLOURS)],
                    # Plotly draws 3-D symbols as font glyphs: ○/● exist in every font, ✕ is tofu in some.
                    "symbol": np.where(wrong[chosen], "circle-open", "circle").tolist(),
                },
                text=[f"true {name} · predicted {p}" for p in points.prediction[chosen]],
                hoverinfo="text",
            )
        )
    variance = ", ".join(f"{v:.0%}" for v in points.explained_variance)
    figure.update_layout(
        title=f"3-D PCA · {points.layer} (explained variance {variance})",
        scene={"xaxis_title": "PC1", "yaxis_title": "PC2", "zaxis_title": "PC3"},
        height=560,
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
    )
    return figure


# ---- misclassifications --------------------------------------------------------------------------


def misclassified(frame: pd.DataFrame) -> pd.DataFrame:
    """Wrong predictions, critical ones first (malignant/abnormal called normal/benign), then most confident first.

    Adds ``critical``; keeps the evaluation's columns (``image``, ``label_name``, ``prediction_name``,
    ``confidence``, ``p_<class>``...).
    """
    wrong = frame[~frame["correct"]].copy()
    wrong["critical"] = wrong["label_name"].isin(CRITICAL_TRUE) & wrong["prediction_name"].isin(CRITICAL_PREDICTED)
    return wrong.sort_values(["critical", "confidence"], ascending=[False, False], kind="stable").reset_index(drop=True)


# ---- uploads -------------------------------------------------------------------------------------


def parse_box(text: str) -> Box | None:
    """``x0,y0,x1,y1`` (original pixels) -> a box; blank -> None; ConfigError when malformed."""
    if not text.strip():
        return None
    return parse_lesion_box(text, "lesion box")


@dataclass(frozen=True)
class UploadResult:
    """An explained upload: what was read and the explanation (prediction, probabilities, overlay).

    ``film`` is the decoded film (windowed as in training) as uint16 at its own resolution, and
    ``overlay_rgba`` the heatmap picture for it (breast only, transparent where low, at most
    :data:`~mammocad.dashboard.viewer.MAX_VIEW_SIDE` a side): what the film viewer shows, blended in the browser.
    """

    name: str
    file_format: str
    shape: tuple[int, int]
    explanation: Explanation
    film: np.ndarray | None = None
    overlay_rgba: np.ndarray | None = None

    @property
    def caption(self) -> str:
        """Method, class (only for class-specific methods), layer, and what the colours mean."""
        e = self.explanation
        return heatmap_caption(e.method, e.target, e.layer)

    @property
    def colorbar(self) -> dict:
        """The viewer's legend for this heatmap."""
        return colorbar_spec(self.explanation.method, self.explanation.target)


def explain_upload(
    engine: InferenceEngine,
    data: bytes,
    name: str,
    box: str = "",
    method: str = "gradcam",
    target: str | None = None,
    opacity: float = 0.45,
) -> UploadResult:
    """Decode an uploaded file (type sniffed from its bytes, whatever its name), predict and draw a heatmap.

    ``target`` None explains the predicted class. Every problem a user can fix (empty, corrupt or
    non-image file, missing or bad lesion box, unknown method/class) raises MammocadError with
    the file name and reason; no DICOM tag is read into the result.
    """
    image = engine.decode(data, name, parse_box(box))
    explanation = engine.explain(image, method, target=target, opacity=opacity)
    height, width = image.original.shape[:2]
    film = np.rint(np.clip(np.nan_to_num(image.original), 0.0, 1.0) * 65535).astype(np.uint16)
    rgba = overlay_rgba(image.original, image.geometry, explanation.heatmap_original, MAX_VIEW_SIDE)
    return UploadResult(name, image.file_format, (height, width), explanation, film, rgba)
