"""The generic training driver: what every model shares, around one `Recipe`.

Order matters and is fixed here: device options first (TensorFlow freezes them at first use), then
the distribution strategy (which also initialises the runtime), seeds, data, the model inside the
strategy scope, `--init-from` weights, `fit`, export into a hidden version folder, held-out
evaluation through the *exported* serving function, and finally the atomic publish.

Under `MultiWorkerMirroredStrategy` every worker trains and exports (saving can involve collective
ops, so all workers must take part), but only the chief publishes into the repository; the
others export into a private temporary folder and delete it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from app.devices import DeviceOptions, DeviceReport, configure_devices
from training import figures, publish, warm_start
from training.data import DEFAULT_SPLIT_SEED, load_split
from training.recipe import MnistSplit, Recipe, TrainConfig

log = logging.getLogger(__name__)

StrategyName = Literal["default", "mirrored", "multi-worker"]
STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi-worker")
MODEL_NAMES: tuple[str, ...] = ("mnist", "deskew", "ocr")


class JobError(RuntimeError):
    """The job as configured cannot run (unknown model or strategy, TF_CONFIG missing)."""


@dataclass(frozen=True)
class TrainingJob:
    """Everything one `python -m training <model>` run needs; built by the CLI or by tests."""

    model: str
    epochs: int | None = None  # None: the recipe's default
    batch_size: int | None = None
    steps_per_epoch: int | None = None
    seed: int = 1234
    split_seed: int = DEFAULT_SPLIT_SEED  # which rows are held out; not the training seed
    beam_width: int = 0
    data: str | None = None
    source: str = "auto"
    repository: Path = Path("models")
    version: int | None = None
    init_from: str | None = None  # "latest", a version folder, or a .weights.h5 file
    strategy: StrategyName = "default"
    devices: DeviceOptions = field(default_factory=DeviceOptions)
    verbose: int | str = "auto"  # Keras progress bars


@dataclass(frozen=True)
class TrainingResult:
    name: str
    version: int
    path: Path | None  # None on a worker that does not publish
    metrics: dict[str, float]
    wall_time_s: float
    size_bytes: int
    data_source: str

    def summary_line(self) -> str:
        metrics = " ".join(f"{key}={value:.4f}" for key, value in self.metrics.items())
        where = f"published {self.path}" if self.path else "not published (non-chief worker)"
        return (
            f"{self.name} version {self.version}: {metrics} | {where} | "
            f"{self.size_bytes / 1e6:.2f} MB | data {self.data_source} | "
            f"{self.wall_time_s:.0f} s"
        )


def load_recipe(name: str) -> Recipe:
    """`training.nets.<name>.RECIPE`: adding a model is adding a module, nothing to register."""
    if name not in MODEL_NAMES:
        raise JobError(f"unknown model {name!r}; choose one of {MODEL_NAMES}")
    return importlib.import_module(f"training.nets.{name}").RECIPE


def run(job: TrainingJob) -> TrainingResult:
    """Train, evaluate and publish one model; returns what the final summary line reports."""
    started = time.monotonic()
    # Device options first, before anything touches a device; MultiWorkerMirroredStrategy must
    # then be created before the runtime starts, so the report leaves the runtime alone for it.
    device_report = configure_devices(job.devices, initialize=job.strategy != "multi-worker")
    strategy = make_strategy(job.strategy)

    import keras

    recipe = load_recipe(job.model)
    keras.utils.set_random_seed(job.seed)
    split = load_split(job.data, job.source, job.split_seed)
    global_batch = job.batch_size or recipe.default_batch_size
    config = TrainConfig(
        epochs=job.epochs or recipe.default_epochs,
        batch_size=global_batch,
        seed=job.seed,
        steps_per_epoch=job.steps_per_epoch,
        beam_width=job.beam_width,
    )
    config = replace(config, steps_per_epoch=_steps_per_epoch(recipe, split, config))
    init_source = (
        warm_start.resolve(job.init_from, job.repository, job.model) if job.init_from else None
    )
    if init_source is not None:
        warm_start.check_split(init_source, split)
    if job.version is not None:
        publish.check_version_free(job.repository, recipe.name, job.version)
    log.info(
        "training %s: %s, strategy %s (%d replicas)",
        recipe.name,
        config,
        job.strategy,
        strategy.num_replicas_in_sync,
    )

    with strategy.scope():
        model = recipe.build_training_model(config)
        if init_source is not None:
            warm_start.restore(recipe, model, config, init_source)
    dataset = _shard_by_data(recipe.train_dataset(split, config, global_batch))
    if job.strategy == "multi-worker":
        history = fit_multi_worker(model, strategy, dataset, config, job.verbose)
    else:
        history = model.fit(
            dataset,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            verbose=job.verbose,
        ).history

    record = _training_record(job, config, strategy, device_report, init_source, history)
    return _export_evaluate_publish(
        job, recipe, model, split, config, record, is_chief(strategy), started
    )


def _export_evaluate_publish(
    job: TrainingJob,
    recipe: Recipe,
    model: Any,
    split: MnistSplit,
    config: TrainConfig,
    training_record: dict[str, Any],
    chief: bool,
    started: float,
) -> TrainingResult:
    """Export into the hidden folder, evaluate the exported graph, then commit (chief only)."""
    staged = (
        publish.stage_version(job.repository, recipe.name, job.version)
        if chief
        else _private_staging(recipe.name)
    )
    try:
        publish.save_servable(recipe.export_module(model, config), staged.path)
        if not chief:
            staged.discard()
            return TrainingResult(
                recipe.name, staged.version, None, {}, time.monotonic() - started, 0, split.source
            )
        serving_fn = publish.load_serving_function(staged.path)
        metrics = recipe.evaluate(serving_fn, split, config)
        log.info("held-out metrics: %s", metrics)
        heldout_figures = figures.recipe_figures(recipe, serving_fn, split, config)
        training_record["wall_time_s"] = round(time.monotonic() - started, 1)
        metadata = publish.build_metadata(
            name=recipe.name,
            version=staged.version,
            data={
                "source": split.source,
                "train_rows": int(len(split.y_train)),
                "heldout_rows": int(len(split.y_heldout)),
                "split_seed": split.split_seed,
            },
            training=training_record,
            metrics=metrics,
            signature=publish.signature_spec(serving_fn),
            extra={
                **recipe.metadata(config),
                **({figures.FIGURES_KEY: heldout_figures} if heldout_figures else {}),
            },
        )
        final_path = staged.commit(metadata)
    except BaseException:
        staged.discard()
        raise
    return TrainingResult(
        recipe.name,
        staged.version,
        final_path,
        metrics,
        time.monotonic() - started,
        publish.directory_size(final_path),
        split.source,
    )


def make_strategy(name: str) -> Any:
    """TensorFlow's own distribution engine.

    `mirrored` replicates over the visible GPUs; on a machine without GPUs it uses the logical CPU
    devices (`--logical-cpu-devices N`), which is how the tests exercise it. `multi-worker` reads
    the cluster from `TF_CONFIG`.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    if name == "multi-worker":
        if "TF_CONFIG" not in os.environ:
            raise JobError(
                "--strategy multi-worker needs the cluster in the TF_CONFIG environment variable"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise JobError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def is_chief(strategy: Any) -> bool:
    """Only one worker publishes: the `chief` task, or worker 0 when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _steps_per_epoch(recipe: Recipe, split: MnistSplit, config: TrainConfig) -> int | None:
    """`--steps-per-epoch`, else the recipe's own choice (optional hook), else one dataset pass."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    hook = getattr(recipe, "steps_per_epoch", None)
    return hook(split, config, config.batch_size) if callable(hook) else None


def fit_multi_worker(
    model: Any, strategy: Any, dataset: Any, config: TrainConfig, verbose: int | str
) -> dict[str, list[float]]:
    """`fit` for `MultiWorkerMirroredStrategy`: Keras's own `train_step` inside `strategy.run`.

    Keras 3's `fit` cannot run under this strategy (keras-team/keras issue 20585): it reduces the
    first distributed batch as if it were one tensor, and reduces scalar logs along axis 0. The
    step itself (forward pass, loss, gradient all-reduce, optimizer update, metrics) is sound,
    so this loop keeps it and replaces only the bookkeeping around it. Metric and optimizer
    state is built first (`_symbolic_build`, what `fit` itself calls) because variables cannot
    be created inside the replicated step.
    """
    import keras
    import tensorflow as tf

    if not config.steps_per_epoch:
        raise JobError(
            "--strategy multi-worker needs --steps-per-epoch for this model "
            "(every worker must run the same number of steps)"
        )
    with strategy.scope():
        model._symbolic_build(data_batch=next(iter(dataset)))
    batches = iter(strategy.experimental_distribute_dataset(dataset))

    @tf.function
    def train_step(iterator: Any) -> dict[str, Any]:
        logs = strategy.run(model.train_step, args=(next(iterator),))
        # Metrics are all-reduced inside the step: every replica holds the same values.
        return {name: strategy.experimental_local_results(value)[0] for name, value in logs.items()}

    history: dict[str, list[float]] = {}
    for epoch in range(config.epochs):
        if verbose:
            print(f"Epoch {epoch + 1}/{config.epochs}", flush=True)
        progress = keras.utils.Progbar(config.steps_per_epoch, verbose=1 if verbose else 0)
        model.reset_metrics()
        for step in range(config.steps_per_epoch):
            logs = {name: float(value) for name, value in train_step(batches).items()}
            progress.update(step + 1, values=list(logs.items()), finalize=False)
        progress.update(config.steps_per_epoch, finalize=True)
        for name, value in logs.items():
            history.setdefault(name, []).append(value)
    return history


def _shard_by_data(dataset: Any) -> Any:
    """Generated and in-memory datasets have no files to shard: split them by element instead."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _private_staging(name: str) -> publish.StagedVersion:
    path = Path(tempfile.mkdtemp(prefix=f"{name}-worker-"))
    return publish.StagedVersion(model_dir=path.parent, version=0, path=path)


def _training_record(
    job: TrainingJob,
    config: TrainConfig,
    strategy: Any,
    device_report: DeviceReport,
    init_source: warm_start.InitSource | None,
    history: dict[str, list[float]],
) -> dict[str, Any]:
    final_epoch = {key: float(values[-1]) for key, values in history.items() if values}
    record: dict[str, Any] = {
        **{key: value for key, value in asdict(config).items() if key != "extra"},
        "strategy": job.strategy,
        "replicas": int(strategy.num_replicas_in_sync),
        "device": device_report.mode,
        "devices": device_report.as_dict(),
        "init_from": str(init_source.path) if init_source else None,
        "final_epoch": final_epoch,
        # Per epoch, for learning curves (versions trained before this was kept lack it).
        figures.HISTORY_KEY: figures.history_record(history),
    }
    json.dumps(record)  # fail here, not half-way through the publish, if anything is not JSON
    return record
