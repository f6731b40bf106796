"""Train a model from a :class:`RunConfig` into a new run directory.

Run directory (never overwritten; every file written atomically)::

    config.yaml          the resolved run config
    run.json             status (running/completed/failed/stopped/interrupted), the training process
                         (pid, pid_started, host), timing, class counts, MLflow run id, and how it was
                         distributed (world size, nodes, processes per node: see Several machines)
    model.json           model config, class names, preprocessing config: enough for inference
    history.csv          one row per epoch: train/val loss, accuracy, macro-F1, lr, seconds, training
                         images/s and the time the model waited for data
    provenance.json      what it was trained on: dataset name/path, source formats, synthetic or not, counts
    calibration.json     temperature fitted on the val split at the end, indeterminate thresholds
    checkpoints/best.safetensors, checkpoints/last.safetensors   weights (safetensors)
    checkpoints/last.ckpt                                         trainer state, for --resume

A killed run (SIGKILL, power cut) keeps ``status: running``; the next ``train --resume``, ``predict``
or ``evaluate`` sees that its process is gone and marks it ``interrupted`` (see
:mod:`mammocad.training.status`). ``last.ckpt`` also holds the config and the random states, so a
resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, WeightedRandomSampler

from mammocad.devices import training_precision
from mammocad.errors import ConfigError, DatasetError, MammocadError
from mammocad.io import _json_default, atomic_write_json, atomic_write_text, unique_new_dir, update_json
from mammocad.models import LesionAwareNet, create_model
from mammocad.models.freeze import freeze_all_but_last, freeze_all_but_stages
from mammocad.models.losses import balanced_class_weights
from mammocad.models.weights import load_weights, save_weights
from mammocad.procs import die_with_parent, owner_token, run_owner_fields
from mammocad.training.config import RunConfig, dump_run_config, load_run_config
from mammocad.training.data import CachedImageDataset, TaskData, build_augment, load_task_data, oversampled_indices
from mammocad.training.lesion import PatchData, PatchEpochs, film_stage, negative_class, patch_class_weights
from mammocad.training.module import ClassifierModule
from mammocad.training.resume import ResumeState, loader_generators, plateau_stepped, prepare_resume
from mammocad.training.throughput import StepTimer

log = logging.getLogger(__name__)

_DDP_RUN_DIR_ENV = "MAMMOCAD_DDP_RUN_DIR"

EpochFn = Callable[[dict[str, Any]], None]
NotifyFn = Callable[[str], None]

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_acc",
    "train_f1_macro",
    "train_auc_macro",
    "val_loss",
    "val_acc",
    "val_f1_macro",
    "val_auc_macro",
    "train_kt_distance",
    "lr",
    "seconds",
    "train_images_per_s",
    "data_wait_s",
]
#: The history columns that are the module's epoch metrics (the rest are timings).
METRIC_COLUMNS = HISTORY_COLUMNS[1 : HISTORY_COLUMNS.index("seconds")]


class StopTraining(MammocadError):
    """Raised from an ``on_epoch`` callback to end a run early on purpose (e.g. a pruned trial).

    The run is marked ``stopped`` (not ``failed``) with the message as its reason; the exception
    propagates to the caller of :func:`train`.
    """


@dataclass
class RunResult:
    """Where the run is and how it ended."""

    run_dir: Path
    best_epoch: int
    best_val_loss: float
    history: pd.DataFrame


def new_run_dir(config: RunConfig, wanted: Path | None = None) -> Path:
    """``wanted`` or ``<runs_dir>/<name>-<timestamp>``, made unique (``-2``...), created empty."""
    if wanted is not None:
        return unique_new_dir(wanted)
    return unique_new_dir(
        config.output.runs_dir / f"{config.output.name or config.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    )


class RunFiles(Checkpoint):
    """Writes history.csv, best/last safetensors, run.json and last.ckpt as training goes.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so Lightning calls it last at each epoch's
    end, after EarlyStopping has counted the epoch: the checkpoint holds the epoch's whole state.
    """

    def __init__(
        self,
        run_dir: Path,
        module: ClassifierModule,
        start_history: pd.DataFrame | None = None,
        on_epoch: EpochFn | None = None,
        timer: StepTimer | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.timer = timer or StepTimer()
        self.on_epoch = on_epoch
        self.module = module
        self.rows: list[dict[str, Any]] = [] if start_history is None else start_history.to_dict("records")
        self.best = min((r["val_loss"] for r in self.rows), default=float("inf"))
        self.best_epoch = int(min(self.rows, key=lambda r: r["val_loss"])["epoch"]) if self.rows else -1
        self.epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.module.finish_train_epoch()
        if trainer.sanity_checking:
            return
        # Trainer state for --resume, written beside and renamed so a crash never leaves half a file;
        # the temporary name carries its owner (a killed run's is removed by the next --resume).
        # save_checkpoint is collective under DDP (every rank calls it, rank 0 writes).
        final = self.run_dir / "checkpoints" / "last.ckpt"
        partial = final.with_name(f".last.ckpt.{owner_token()}.{secrets.token_hex(4)}.partial")
        with plateau_stepped(trainer):
            trainer.save_checkpoint(partial, weights_only=False)  # optimizer and loop state are needed to resume
        if not trainer.is_global_zero:
            return
        metrics = self.module.epoch_metrics
        row = {"epoch": trainer.current_epoch, **{k: metrics.get(k, float("nan")) for k in METRIC_COLUMNS}}
        row["seconds"] = round(time.perf_counter() - self.epoch_start, 3)
        row.update(self.timer.epoch)
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        atomic_write_text(
            self.run_dir / "history.csv", pd.DataFrame(self.rows, columns=HISTORY_COLUMNS).to_csv(index=False)
        )
        save_weights(self.module.model, self.run_dir / "checkpoints" / "last.safetensors")
        if row["val_loss"] < self.best:
            self.best, self.best_epoch = row["val_loss"], row["epoch"]
            save_weights(self.module.model, self.run_dir / "checkpoints" / "best.safetensors")
        _update_run_json(
            self.run_dir, {"epochs_done": row["epoch"] + 1, "best_epoch": self.best_epoch, "best_val_loss": self.best}
        )
        os.replace(partial, final)
        if self.on_epoch is not None:
            self.on_epoch(row)


def _update_run_json(run_dir: Path, updates: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    state = update_json(run_dir / "run.json", updates)
    if any(key in state for key in drop):
        atomic_write_json(run_dir / "run.json", {k: v for k, v in state.items() if k not in drop})


class DataLoaderWorkerInit:
    """``worker_init_fn`` of the training DataLoaders: the worker ends with its parent process (a killed
    ``mammocad train`` leaves no worker behind), then is seeded as Lightning seeds workers."""

    def __call__(self, worker_id: int) -> None:
        die_with_parent()
        if os.environ.get("PL_SEED_WORKERS") == "1":  # seed_everything(workers=True)
            from lightning.fabric.utilities.seed import pl_worker_init_function

            pl_worker_init_function(worker_id)


def _loaders(task: TaskData, config: RunConfig) -> tuple[DataLoader, DataLoader]:
    in_chans = config.model.in_chans
    train_set = CachedImageDataset(
        task.train,
        in_chans,
        build_augment(config.augment),
        config.data.cache_in_memory,
        with_masks=config.train.kt_beta > 0,
    )
    val_set = CachedImageDataset(task.val, in_chans, None, config.data.cache_in_memory)
    generator = torch.Generator().manual_seed(config.train.seed)
    labels = task.train["target"].to_numpy()
    sampler = None
    if config.train.target_share:
        indices = oversampled_indices(labels, task.classes, config.train.target_share, config.train.seed)
        train_set = torch.utils.data.Subset(train_set, indices.tolist())
    if config.train.sampler == "weighted":
        counts = np.bincount(labels, minlength=len(task.classes)).astype(float)
        sample_labels = labels if not config.train.target_share else labels[indices]
        weights = 1.0 / counts[sample_labels]
        sampler = WeightedRandomSampler(torch.as_tensor(weights), num_samples=len(sample_labels), generator=generator)
    workers = config.train.num_workers
    common = {
        "batch_size": config.train.batch_size,
        "num_workers": workers,
        # Persistent workers carry their random state from epoch to epoch, out of the checkpoint's
        # reach: deterministic runs start them anew each epoch, seeded from the saved generator.
        "persistent_workers": workers > 0 and not config.train.deterministic,
        "worker_init_fn": DataLoaderWorkerInit() if workers > 0 else None,
    }
    train_loader = DataLoader(
        train_set,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=len(train_set) > config.train.batch_size,
        **common,
    )
    val_loader = DataLoader(val_set, shuffle=False, **common)
    return train_loader, val_loader


def check_masks(task: TaskData, config: RunConfig) -> int:
    """How many training images have a lesion mask; refuses knowledge transfer when none has.

    Images without a mask (normals in a full-image task) still train, with no transfer term.
    """
    if config.train.kt_beta == 0:
        return 0
    masks = task.train["mask"] if "mask" in task.train else pd.Series(dtype=object)
    masked = int(sum(isinstance(m, str) and bool(m) for m in masks))
    if masked == 0:
        raise DatasetError(
            f"{config.data.dataset}: knowledge transfer (train.kt_beta = {config.train.kt_beta}) needs lesion masks, "
            f"but none of the {len(task.train)} training images has one. Use a dataset with masks or outlines "
            "(CBIS-DDSM, BCDR, MIAS circles, synthetic phantoms), or set train.kt_beta = 0."
        )
    return masked


def _build_model(config: RunConfig, classes: list[str]) -> torch.nn.Module:
    m = config.model
    num_classes = len(classes)
    height, width = config.preprocess.image_size
    extra: dict[str, Any] = {"input_size": height} if height == width else {}  # the Flatten head needs it
    lesion = config.lesion_options()
    if lesion is not None:
        extra |= {
            "backbone": m.backbone or "efficientnet_lite0",
            "patch_size": lesion.patch_size,
            "aggregation": lesion.aggregation,
            "top_k": lesion.top_k,
            "tta_flip": lesion.tta_flip,
            "bilateral": lesion.bilateral,
            "negative_class": negative_class(classes),
        }
    elif m.backbone is not None:
        raise ConfigError("model.backbone is for model.name: lesion_aware")
    model = create_model(
        m.name,
        num_classes=num_classes,
        in_chans=m.in_chans,
        pretrained=m.pretrained,
        weights=m.weights,
        head=m.head,
        drop_rate=m.drop_rate,
        se_reduction=m.se_reduction,
        batch_norm=m.batch_norm,
        **extra,
    )
    if m.freeze_all_but_last is not None and m.trainable_stages:
        raise ConfigError("model.freeze_all_but_last and model.trainable_stages exclude each other; set one")
    if m.freeze_all_but_last is not None:
        freeze_all_but_last(model, m.freeze_all_but_last)
    elif m.trainable_stages:
        freeze_all_but_stages(model, m.trainable_stages)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _mlflow_logger(config: RunConfig, run_dir: Path) -> Any:
    if not config.output.mlflow:
        return False
    from lightning.pytorch.loggers import MLFlowLogger

    uri = config.output.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        config.output.runs_dir.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{(config.output.runs_dir / 'mlflow.db').resolve()}"
    # A run inside a study (cv fold, trial) is named with its parent: "fold-0" alone says nothing in MLflow.
    name = run_dir.name if run_dir.parent.resolve() == config.output.runs_dir.resolve() else run_dir.parent.name
    if name != run_dir.name:
        name = f"{name}/{run_dir.name}"
    return MLFlowLogger(experiment_name=config.output.experiment, run_name=name, tracking_uri=uri)


def _probe_trainer(config: RunConfig) -> L.Trainer:
    """A trainer built only to see which strategy and launcher Lightning picks for ``config``."""
    return L.Trainer(
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        strategy=config.train.strategy,
        num_nodes=config.train.num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def relaunches_command(config: RunConfig) -> bool:
    """True when Lightning would start the running command again once per extra device (DDP's script
    launcher, also what ``devices: auto`` picks on a multi-GPU machine).

    Such a fit cannot sit inside a loop of fits (cross-validation, tuning): the relaunched copies would
    rerun the whole loop. Loops run each such fit as its own ``mammocad train`` command instead.
    """
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    trainer = _probe_trainer(config)
    return isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher)


@dataclass
class _TorchrunRanks:
    """This process's place in a torchrun job whose process group it has joined (:func:`_join_torchrun`)."""

    global_rank: int
    world_size: int
    group: Any  # a gloo group: small CPU messages, whatever backend (NCCL) the training itself uses

    def from_rank_zero(self, text: str) -> str:
        """Rank 0's ``text``, on every rank (rank 0 gets its own back).

        A rank 0 that fails first (a refused resume, an unwritable run directory) closes its connections:
        the others stop with an error that points to its output, instead of waiting out a timeout.
        """
        box = [text]
        try:
            torch.distributed.broadcast_object_list(box, src=0, group=self.group)
        except RuntimeError as exc:  # gloo: "Connection closed by peer"
            raise MammocadError(
                f"rank {self.global_rank}: rank 0 ended before it named the run directory ({type(exc).__name__}: "
                "connection lost); the output of rank 0's machine says why"
            ) from exc
        return box[0]


def _join_torchrun(config: RunConfig) -> _TorchrunRanks | None:
    """Under torchrun with several processes: join the process group now, before a run directory is chosen.

    torchrun starts every rank itself, on one machine or several; unlike Lightning's own DDP launcher,
    no rank hands its run directory down to the others, so they take rank 0's through the process group.
    Lightning joins it as its fit would (backend, timeout, device); the fit then finds it joined and keeps
    it. None outside torchrun, or when torchrun started a single process.
    """
    from lightning.fabric.plugins.environments import TorchElasticEnvironment
    from lightning.pytorch.strategies import ParallelStrategy

    if not TorchElasticEnvironment.detect() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        if config.train.num_nodes > 1:
            # Lightning's own launcher would start each machine's ranks, and each machine its own run directory.
            raise ConfigError(
                f"train.num_nodes={config.train.num_nodes}: start the training with torchrun on every machine "
                f"(torchrun --nnodes {config.train.num_nodes} --nproc-per-node ... -m mammocad train ...); this "
                "process is not one of several torchrun processes"
            )
        return None
    processes, here = os.environ["WORLD_SIZE"], os.environ.get("LOCAL_WORLD_SIZE", "?")
    advice = (
        f"torchrun started {processes} processes, {here} on this machine: set train.num_nodes to torchrun's "
        "--nnodes and train.devices to its --nproc-per-node (train.strategy: ddp)"
    )
    probe = _probe_trainer(config)
    strategy = probe.strategy
    if not isinstance(strategy, ParallelStrategy):
        raise ConfigError(f"{advice}; train.strategy {config.train.strategy} would train each process alone")
    # Lightning does not check this under torchrun: the ranks would join, and each DistributedSampler
    # would then cut the data for devices × num_nodes processes instead of torchrun's count.
    if probe.num_devices * probe.num_nodes != int(processes) or str(probe.num_devices) not in (here, "?"):
        raise ConfigError(
            f"{advice}; this config gives train.num_nodes={probe.num_nodes} × {probe.num_devices} device(s) "
            f"per machine = {probe.num_devices * probe.num_nodes} process(es)"
        )
    strategy.setup_environment()
    return _TorchrunRanks(strategy.global_rank, strategy.world_size, torch.distributed.new_group(backend="gloo"))


def _distributed_summary(trainer: L.Trainer) -> dict[str, Any]:
    """run.json's ``distributed``: how many processes trained the run, on how many machines, started how."""
    environment = getattr(trainer.strategy, "cluster_environment", None)
    return {
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "devices_per_node": trainer.num_devices,
        "strategy": type(trainer.strategy).__name__,  # DDPStrategy, SingleDeviceStrategy, ...
        # TorchElasticEnvironment: torchrun; LightningEnvironment: Lightning's own launcher (or one process)
        "cluster_environment": type(environment).__name__ if environment is not None else None,
    }


def _history_from_rank_zero(trainer: L.Trainer, run_dir: Path) -> pd.DataFrame:
    """history.csv as rank 0 wrote it, on every rank.

    The other ranks never read the file: on another machine they may not see the run directory at all,
    and on this one they may read it before rank 0 has written the last epoch's row.
    """
    text = (run_dir / "history.csv").read_text() if trainer.is_global_zero else ""
    if trainer.world_size > 1:
        text = trainer.strategy.broadcast(text, src=0)
    return pd.read_csv(StringIO(text))


def _precision(config: RunConfig) -> str:
    return training_precision(config.train.precision, config.train.accelerator)


def _with_precision(config: RunConfig, precision: str) -> RunConfig:
    """``config`` with ``train.precision`` set (a resolved ``auto``, or rank 0's under torchrun)."""
    return config.model_copy(update={"train": config.train.model_copy(update={"precision": precision})})


def train(
    config: RunConfig,
    resume: Path | None = None,
    progress: bool = True,
    on_epoch: EpochFn | None = None,
    run_dir: Path | None = None,
    notify: NotifyFn | None = None,
) -> RunResult:
    """Train per ``config`` into a new run directory, or continue the run at ``resume``.

    ``progress`` shows Lightning's progress bar; ``on_epoch`` is called with each epoch's history
    row (a dict of the history.csv columns) once the epoch's files are written, and may raise
    :class:`StopTraining` to end the run early. ``run_dir`` names the new run directory (made
    unique with ``-2``... when it exists); default ``<output.runs_dir>/<name>-<timestamp>``.
    ``notify`` gets one line per thing a resume found and did (default: logged).

    A resume is refused with :class:`MammocadError` before anything is written (see
    :func:`~mammocad.training.resume.prepare_resume`); a run with no checkpoint starts again from
    epoch 0 in its directory.

    Returns the run directory, the best epoch (by validation loss) and the history. The model
    ends with the best weights restored (EarlyStopping's restore-best-weights behaviour).
    """
    say = notify or log.warning
    start_history = None
    restart = False
    # Lightning's DDP launcher re-runs this command once per extra GPU; those workers share the
    # launching process's run directory (passed through the environment) and leave its files to rank 0.
    ddp_worker_dir = os.environ.get(_DDP_RUN_DIR_ENV) if int(os.environ.get("LOCAL_RANK", "0")) > 0 else None
    # torchrun starts every rank itself, on one machine or several: the others take rank 0's run directory
    # (received below, once rank 0 has made it) and, like the workers above, write nothing.
    torchrun = _join_torchrun(config)
    torchrun_worker = torchrun is not None and torchrun.global_rank > 0
    if torchrun is not None:
        ddp_worker_dir = None
    if resume is not None and not ddp_worker_dir and not torchrun_worker:
        # Checked before the data is loaded: a refusal is quick and leaves the run as it was.
        plan = prepare_resume(Path(resume), config.model_dump(mode="json"), config.train.epochs, say)
        restart = plan.checkpoint is None
        if not restart and (Path(resume) / "history.csv").exists():
            start_history = pd.read_csv(Path(resume) / "history.csv")
            start_history = start_history[start_history["epoch"] <= plan.epoch]  # epochs the checkpoint holds
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    task = load_task_data(config.data, config.preprocess)
    if ddp_worker_dir:
        run_dir = Path(ddp_worker_dir)
    elif torchrun_worker:
        run_dir = None  # rank 0's, received below
    elif resume is not None:
        run_dir = Path(resume)
    else:
        # A new run records the precision it trains in (auto resolves by machine), so it reproduces as run.
        config = _with_precision(config, _precision(config))
        run_dir = new_run_dir(config, run_dir)
        atomic_write_text(run_dir / "config.yaml", dump_run_config(config))
    if torchrun is not None:
        # Rank 0's precision too: "auto" resolves by machine, and machines may differ.
        decided = {"run_dir": str(run_dir), "precision": _precision(config)}
        shared = json.loads(torchrun.from_rank_zero(json.dumps(decided)))
        run_dir = Path(shared["run_dir"])
        if torchrun_worker:
            ddp_worker_dir = str(run_dir)
            config = _with_precision(config, shared["precision"])
    counts = task.counts("train")
    masked = check_masks(task, config)
    model = _build_model(config, task.classes)
    weights = balanced_class_weights(counts) if config.train.class_weights else None
    patches = PatchData(task, config) if isinstance(model, LesionAwareNet) else None
    if patches is not None and config.train.class_weights:
        weights = patch_class_weights(patches, model.patch_class_count)
    if config.train.compile:
        model.compile()  # in place: the state dict keeps its names, so checkpoints stay interchangeable
    module = ClassifierModule(model, config.train, weights, patch_mode=patches is not None)
    if not ddp_worker_dir:
        if resume is not None and not restart:
            _check_same_model(run_dir, config, task, model)  # also for checkpoints that hold no config
        _write_model_json(run_dir, config, task, model)
        _write_provenance(run_dir, config, task)
        now = datetime.now().isoformat(timespec="seconds")
        _update_run_json(
            run_dir,
            {
                "status": "running",
                "started": now,
                **run_owner_fields(),
                **({"resumed": now} if resume is not None else {}),
                **({"restarted": now} if restart else {}),
                "classes": task.classes,
                "counts": {s: task.counts(s) for s in ("train", "val", "test")},
                "task": config.data.task,
                "precision": _precision(config),
                **({"kt_masked_train_images": masked} if config.train.kt_beta > 0 else {}),
                **({"refit": True} if config.data.refit else {}),
                **({"patch_stage": patches.summary(model.patch_class_count)} if patches is not None else {}),
            },
            drop=("ended", "error", "reason", "early_stopped")
            + (("epochs_done", "best_epoch", "best_val_loss", "film_stage") if restart else ()),
        )
    timer = StepTimer()
    files = RunFiles(run_dir, module, start_history, on_epoch, timer)
    early_stopping = None
    if config.train.early_stopping_patience:
        early_stopping = EarlyStopping(monitor="val_loss", patience=config.train.early_stopping_patience, mode="min")
    # Rank 0 alone logs: an MLflow client creates its sqlite store when made, also on the other machines.
    logger = _mlflow_logger(config, run_dir) if not ddp_worker_dir else False
    if patches is not None:
        train_loader, val_loader = patches.loaders(config)
    else:
        train_loader, val_loader = _loaders(task, config)
    # ResumeState first: it puts the saved random states back before any other callback runs.
    callbacks: list[Callback] = [ResumeState(config.model_dump(mode="json"), loader_generators(train_loader)), timer]
    if early_stopping is not None:
        callbacks.append(early_stopping)
    if patches is not None:
        callbacks.append(PatchEpochs(patches, model))
    callbacks.append(files)  # a Checkpoint: Lightning runs it last
    trainer = L.Trainer(
        max_epochs=config.train.epochs,
        accelerator=config.train.accelerator,
        devices=config.train.devices,
        strategy=config.train.strategy,
        num_nodes=config.train.num_nodes,
        precision=_precision(config),
        accumulate_grad_batches=config.train.accumulate_grad_batches,
        deterministic=config.train.deterministic,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=True,  # by RunFiles alone (no ModelCheckpoint is added beside it)
        num_sanity_val_steps=0,
        log_every_n_steps=max(1, min(50, len(train_loader))),
        default_root_dir=run_dir,
    )
    if logger and not ddp_worker_dir:
        logger.log_hyperparams(_flatten(config.model_dump(mode="json")))
        _update_run_json(run_dir, {"mlflow_run_id": logger.run_id, "mlflow_tracking_uri": logger._tracking_uri})
    if not ddp_worker_dir:
        _update_run_json(run_dir, {"distributed": _distributed_summary(trainer)})
    previous_env = os.environ.get(_DDP_RUN_DIR_ENV)
    os.environ[_DDP_RUN_DIR_ENV] = str(run_dir)
    try:
        last_ckpt = run_dir / "checkpoints" / "last.ckpt"
        ckpt = str(last_ckpt) if resume is not None and last_ckpt.exists() else None
        # weights_only=True: even the run's own trainer state is read without unpickling code.
        trainer.fit(module, train_loader, val_loader, ckpt_path=ckpt, weights_only=True)
    except BaseException as exc:
        if trainer.is_global_zero:
            ended = {"ended": datetime.now().isoformat(timespec="seconds")}
            if isinstance(exc, StopTraining):
                _update_run_json(run_dir, {"status": "stopped", "reason": str(exc), **ended})
            elif isinstance(exc, KeyboardInterrupt | SystemExit | SIGTERMException):
                # Ctrl-C (Lightning turns it into SystemExit) or SIGTERM: resumable like a kill.
                reason = f"stopped by {'SIGTERM' if isinstance(exc, SIGTERMException) else 'an interrupt (Ctrl-C)'}"
                _update_run_json(run_dir, {"status": "interrupted", "reason": reason, **ended})
            else:
                _update_run_json(run_dir, {"status": "failed", "error": f"{type(exc).__name__}: {exc}", **ended})
        raise
    finally:
        if previous_env is None:
            os.environ.pop(_DDP_RUN_DIR_ENV, None)
        else:
            os.environ[_DDP_RUN_DIR_ENV] = previous_env
    history = _history_from_rank_zero(trainer, run_dir)  # every rank, now: rank 0 alone goes on below
    final = run_dir / "checkpoints" / ("best" if config.train.restore_best_weights else "last")
    if final.with_suffix(".safetensors").exists():  # early stopping restores the best epoch's weights
        load_weights(module.model, final.with_suffix(".safetensors"))
    if patches is not None and trainer.is_global_zero:
        _film_stage(run_dir, module.model, task, config, final.with_suffix(".safetensors"))
    if trainer.is_global_zero and config.predict.calibrate:
        _calibrate(run_dir, module.model, task, config)
    if trainer.is_global_zero:
        stopped_early = early_stopping is not None and early_stopping.stopped_epoch > 0
        _update_run_json(
            run_dir,
            {
                "status": "completed",
                "ended": datetime.now().isoformat(timespec="seconds"),
                **({"early_stopped": True} if stopped_early else {}),
            },
        )
    best_row = history.loc[history["val_loss"].idxmin()]  # rank 0's rows: DDP workers never held them
    return RunResult(run_dir, int(best_row["epoch"]), float(best_row["val_loss"]), history)


def _film_stage(run_dir: Path, model: LesionAwareNet, task: TaskData, config: RunConfig, final: Path) -> None:
    """The lesion-aware model's film stage; its weights (the fitted aggregation) become the final ones."""
    started = time.perf_counter()
    summary = film_stage(model, task, config)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    save_weights(model, final)
    _update_run_json(run_dir, {"film_stage": summary})


def _check_same_model(run_dir: Path, config: RunConfig, task: TaskData, model: torch.nn.Module) -> None:
    """Refuse (nothing written yet) to resume a run into another architecture, task or preprocessing."""
    meta_path = run_dir / "model.json"
    if not meta_path.exists():
        return
    saved = json.loads(meta_path.read_text())
    now = {
        "model": model.config(),
        "classes": task.classes,
        "task": config.data.task,
        "preprocess": config.preprocess.model_dump(mode="json"),
    }
    now = json.loads(json.dumps(now, default=_json_default))  # as model.json was written
    changed = [key for key, value in now.items() if key in saved and saved[key] != value]
    if changed:
        raise MammocadError(
            f"{run_dir}: the {', '.join(changed)} of this config differ from the run's model.json; a resumed run "
            "must train the same thing: undo the change or start a new run"
        )


def _write_model_json(run_dir: Path, config: RunConfig, task: TaskData, model: torch.nn.Module) -> None:
    atomic_write_json(
        run_dir / "model.json",
        {
            "model": model.config(),
            "classes": task.classes,
            "task": config.data.task,
            "preprocess": config.preprocess.model_dump(mode="json"),
            "weights": {
                "best": "checkpoints/best.safetensors",
                "last": "checkpoints/last.safetensors",
                # the weights the run ends with, used by predict/evaluate unless told otherwise
                "final": "best" if config.train.restore_best_weights else "last",
            },
        },
    )


def _split_summary(frame: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    counts = frame["target"].value_counts() if len(frame) else pd.Series(dtype=int)
    return {
        "n_images": len(frame),
        "n_patients": int(frame["patient_id"].nunique()) if "patient_id" in frame and len(frame) else 0,
        "per_class": {name: int(counts.get(k, 0)) for k, name in enumerate(classes)},
    }


def _write_provenance(run_dir: Path, config: RunConfig, task: TaskData) -> None:
    """``provenance.json``: what the run was trained on, so its model card never re-reads a dataset that moved."""
    from mammocad.data.provenance import dataset_provenance
    from mammocad.training.model_card import PROVENANCE_NAME

    found = dataset_provenance(config.data.dataset)
    splits = {name: getattr(task, name) for name in ("train", "val", "test")}
    everything = (
        pd.concat([frame for frame in splits.values() if len(frame)]) if any(map(len, splits.values())) else None
    )
    per_split = {name: _split_summary(frame, task.classes) for name, frame in splits.items()}
    atomic_write_json(
        run_dir / PROVENANCE_NAME,
        found
        | {
            "split": config.data.split,
            "fold": config.data.fold,
            "task": config.data.task,
            "refit": config.data.refit,
            "n_images": sum(s["n_images"] for s in per_split.values()),
            "n_patients": int(everything["patient_id"].nunique()) if everything is not None else 0,
            "per_class": {c: sum(s["per_class"][c] for s in per_split.values()) for c in task.classes},
            "per_split": per_split,
            "recorded_at": datetime.now().isoformat(timespec="seconds"),
        },
    )


def _calibrate(run_dir: Path, model: torch.nn.Module, task: TaskData, config: RunConfig) -> None:
    """Fit the temperature on the val split (``calibration.json``); a failure is logged, never fatal."""
    from mammocad.evaluation.predictions import frame_logits
    from mammocad.training.calibration import CALIBRATION_NAME, calibration_document
    from mammocad.training.predict import LoadedRun

    thresholds = {"min_probability": config.predict.min_probability, "min_margin": config.predict.min_margin}
    try:
        model = model.to("cpu").eval()
        loaded = LoadedRun(run_dir, model, task.classes, config.preprocess, {})
        val = task.val
        logits = frame_logits(loaded, val)[0] if len(val) else np.zeros((0, len(task.classes)))
        labels = val["target"].to_numpy() if len(val) else np.zeros(0, dtype=np.int64)
        document = calibration_document(logits, labels, thresholds)
        if config.data.refit:
            document["note"] = "refit run: its val split was inside training, so this temperature is optimistic"
        atomic_write_json(run_dir / CALIBRATION_NAME, document)
    except Exception as exc:  # calibration must never lose a finished run
        log.warning(
            "%s: temperature scaling failed (%s: %s); predictions use temperature 1", run_dir, type(exc).__name__, exc
        )


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def train_from_file(
    path: str | Path | None,
    overrides: dict[str, Any] | None = None,
    resume: Path | None = None,
    run_dir: Path | None = None,
    notify: NotifyFn | None = None,
) -> RunResult:
    """CLI helper: a resumed run reads its own saved config; otherwise file + overrides."""
    if resume is not None:
        if not (Path(resume) / "config.yaml").exists():
            raise MammocadError(f"{resume}: not a run directory (no config.yaml); nothing to resume")
        config = load_run_config(Path(resume) / "config.yaml", overrides)
    else:
        config = load_run_config(path, overrides)
    return train(config, resume=resume, run_dir=run_dir, notify=notify)


__all__ = ["RunResult", "StopTraining", "relaunches_command", "train", "train_from_file"]
