"""Device configuration shared by the service and the training jobs.

TensorFlow fixes its device setup (visible GPUs, memory growth, logical devices, thread pools)
the first time anything touches a device, so every option here must be applied before the first
op runs. Both `python -m app` and `python -m training` call `configure_devices` first thing, and
the returned `DeviceReport` is what the service logs at start and returns in `GET /v2`.

Only `tf.config` is used (no TF1 `ConfigProto`/`Session`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

DeviceMode = Literal["auto", "cpu", "gpu"]

log = logging.getLogger(__name__)


class DeviceUnavailableError(RuntimeError):
    """Raised when the requested device configuration cannot be honoured (e.g. no GPU)."""


@dataclass(frozen=True)
class DeviceOptions:
    """What the operator asked for; the same flags exist on both command lines."""

    device: DeviceMode = "auto"
    gpu_memory_growth: bool = False
    gpu_memory_limit_mb: int | None = None
    log_device_placement: bool = False
    intra_op_threads: int = 0  # 0 lets TensorFlow choose
    inter_op_threads: int = 0
    logical_cpu_devices: int = 1  # >1 splits the CPU into logical devices (distribution tests)


@dataclass(frozen=True)
class DeviceReport:
    """What TensorFlow actually ended up with, read back from it after the options were applied.

    `gpu_memory_growth` and `gpu_memory_limit_mb` are per visible GPU, as TensorFlow reports
    them (empty without a GPU); `requested` is what the operator asked for, so a difference
    between the two (an option TensorFlow could not apply any more) is visible.
    """

    mode: str
    physical_gpus: list[str]
    visible_devices: list[str]
    logical_devices: list[str]
    gpu_memory_growth: dict[str, bool]
    gpu_memory_limit_mb: dict[str, int | None]
    log_device_placement: bool
    intra_op_threads: int
    inter_op_threads: int
    requested: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def configure_devices(options: DeviceOptions, initialize: bool = True) -> DeviceReport:
    """Apply `options` to TensorFlow's runtime and report the resulting configuration.

    Must run before TensorFlow initialises its devices. If it is called again after that
    (e.g. several apps built in one test process), options that can no longer change are left
    as they are and the fact is recorded in `notes` instead of failing.

    `initialize=False` leaves the runtime uninitialised (the report then lists no logical
    devices): `MultiWorkerMirroredStrategy` must be created after the options are applied but
    before the runtime starts, because it configures collective ops at that moment.
    """
    import tensorflow as tf

    notes: list[str] = []
    gpus = tf.config.list_physical_devices("GPU")
    if options.device == "gpu" and not gpus:
        raise DeviceUnavailableError(
            "device 'gpu' was requested but TensorFlow sees no GPU on this machine "
            "(is the CUDA build of TensorFlow installed and a driver present?); "
            "use --device cpu or --device auto"
        )
    if options.gpu_memory_limit_mb is not None and options.gpu_memory_limit_mb <= 0:
        raise DeviceUnavailableError("--gpu-memory-limit must be a positive number of MB")

    try:
        if options.device == "cpu":
            tf.config.set_visible_devices([], "GPU")
            mode = "cpu"
        else:
            mode = "gpu" if gpus else "cpu"
            for gpu in gpus:
                if options.gpu_memory_limit_mb is not None:
                    tf.config.set_logical_device_configuration(
                        gpu,
                        [
                            tf.config.LogicalDeviceConfiguration(
                                memory_limit=options.gpu_memory_limit_mb
                            )
                        ],
                    )
                elif options.gpu_memory_growth:
                    tf.config.experimental.set_memory_growth(gpu, True)
            if options.gpu_memory_limit_mb is not None and options.gpu_memory_growth and gpus:
                notes.append(
                    "memory growth is ignored when a memory limit is set "
                    "(TensorFlow allows one or the other per GPU)"
                )
        if options.logical_cpu_devices > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * options.logical_cpu_devices
            )
        if options.intra_op_threads:
            tf.config.threading.set_intra_op_parallelism_threads(options.intra_op_threads)
        if options.inter_op_threads:
            tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_threads)
    except RuntimeError as exc:  # devices already initialised in this process
        mode = "gpu" if tf.config.get_visible_devices("GPU") else "cpu"
        notes.append(f"device options could not be changed after initialisation: {exc}")

    tf.debugging.set_log_device_placement(options.log_device_placement)
    if not gpus and (options.gpu_memory_growth or options.gpu_memory_limit_mb is not None):
        notes.append("GPU memory options accepted but no GPU is present")

    visible_gpus = tf.config.get_visible_devices("GPU")
    report = DeviceReport(
        mode=mode,
        physical_gpus=[d.name for d in gpus],
        visible_devices=[d.name for d in tf.config.get_visible_devices()],
        logical_devices=([d.name for d in tf.config.list_logical_devices()] if initialize else []),
        gpu_memory_growth={
            gpu.name: bool(tf.config.experimental.get_memory_growth(gpu)) for gpu in visible_gpus
        },
        gpu_memory_limit_mb={gpu.name: _memory_limit_mb(tf, gpu) for gpu in visible_gpus},
        log_device_placement=options.log_device_placement,
        intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        requested=asdict(options),
        notes=notes,
    )
    log.info("device configuration: %s", report.as_dict())
    return report


def _memory_limit_mb(tf: Any, gpu: Any) -> int | None:
    """The memory limit of `gpu`'s logical device as TensorFlow holds it (None: no limit)."""
    configured = tf.config.get_logical_device_configuration(gpu) or []
    limits = [c.memory_limit for c in configured if c.memory_limit is not None]
    return int(sum(limits)) if limits else None


def gpu_memory_in_use() -> dict[str, int]:
    """Bytes currently allocated per visible GPU (empty on CPU-only machines)."""
    import tensorflow as tf

    usage: dict[str, int] = {}
    for device in tf.config.list_logical_devices("GPU"):
        info = tf.config.experimental.get_memory_info(device.name)
        usage[device.name] = int(info["current"])
    return usage
