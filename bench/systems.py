"""The servers under test: how to start each one, what it speaks, and why it may be missing.

Each system is started fresh on a free port on 127.0.0.1. The peers run from their own virtual
environments under bench/.venvs (see bench/setup_peers.sh); when a peer's environment is missing
the system reports why and the benchmark goes on without it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import Protocol
from bench.processes import ServerProcess, free_port, service_command

REPO_ROOT = Path(__file__).resolve().parent.parent
PEER_VENVS = REPO_ROOT / "bench" / ".venvs"
MLSERVER_SETTINGS_TEMPLATE = (
    REPO_ROOT / "bench" / "servers" / "mlserver_runtime" / "model-settings.json"
)


Launch = tuple[list[str], dict[str, str], list[str]]  # command, extra environment, ready paths
GRPC = "grpc"


@dataclass(frozen=True)
class System:
    """A server under test: a name, the protocols and models it serves, and how to start it."""

    name: str
    description: str
    protocols: tuple[Protocol, ...]
    models: tuple[str, ...]
    unavailable: str | None  # why it cannot run here, or None

    def server(self, log_dir: Path, options: SystemOptions) -> ServerProcess:
        port = free_port()
        grpc_port = free_port() if GRPC in self.protocols else None
        launcher = LAUNCHERS[self.name.split("@")[0]]
        command, env, ready = launcher(self, port, options, log_dir, grpc_port)
        return ServerProcess(
            name=self.name,
            command=command,
            port=port,
            ready_paths=ready,
            env=env,
            cwd=REPO_ROOT,
            log_path=log_dir / f"{self.name}.log",
            grpc_port=grpc_port,
        )


@dataclass(frozen=True)
class SystemOptions:
    """Where the models are and how the service is run."""

    model_repository: Path
    mnist_dir: Path
    service_models: tuple[str, ...]
    python: str = sys.executable


def service_workers(system: System) -> int:
    return int(system.name.split("@")[1].rstrip("w")) if "@" in system.name else 1


def launch_service(
    system: System, port: int, options: SystemOptions, work_dir: Path, grpc_port: int | None
) -> Launch:
    command = service_command(
        options.model_repository,
        port,
        ["--grpc-port", str(grpc_port or 0), "--workers", str(service_workers(system))],
        python=options.python,
    )
    ready = ["/v2/health/ready"] + [f"/v2/models/{m}/ready" for m in options.service_models]
    return command, {}, ready


def launch_baseline(
    system: System, port: int, options: SystemOptions, work_dir: Path, grpc_port: int | None
) -> Launch:
    command = [
        options.python,
        "-m",
        f"bench.servers.{system.name}",
        "--model-dir",
        str(options.mnist_dir),
        "--port",
        str(port),
    ]
    return command, {}, ["/ready"]


def venv_python(peer: str) -> Path:
    return PEER_VENVS / peer / "bin" / "python"


def interpreter_libdir(python: Path) -> str:
    """The interpreter's LIBDIR: PyTriton's Python stub must load this libpython."""
    return subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def launch_pytriton(
    system: System, port: int, options: SystemOptions, work_dir: Path, grpc_port: int | None
) -> Launch:
    python = venv_python("pytriton")
    command = [
        str(python),
        "-m",
        "bench.servers.pytriton_server",
        "--model-dir",
        str(options.mnist_dir),
        "--http-port",
        str(port),
        "--grpc-port",
        str(grpc_port or free_port()),
        "--metrics-port",
        str(free_port()),
    ]
    env = {"PYTHONPATH": str(REPO_ROOT), "LD_LIBRARY_PATH": interpreter_libdir(python)}
    return command, env, ["/v2/health/ready", "/v2/models/mnist/ready"]


def launch_mlserver(
    system: System, port: int, options: SystemOptions, work_dir: Path, grpc_port: int | None
) -> Launch:
    """MLServer reads a folder of model-settings; it is written next to the run's raw logs."""
    folder = Path(tempfile.mkdtemp(prefix="mlserver-models-", dir=work_dir))
    settings = json.loads(MLSERVER_SETTINGS_TEMPLATE.read_text())
    settings["parameters"]["uri"] = str(options.mnist_dir)
    (folder / "mnist").mkdir()
    (folder / "mnist" / "model-settings.json").write_text(json.dumps(settings, indent=2))
    command = [str(PEER_VENVS / "mlserver" / "bin" / "mlserver"), "start", str(folder)]
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(port),
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
        # debug=True (the default) writes an access-log line per request: not a fair setting.
        "MLSERVER_DEBUG": "false",
        "MLSERVER_PARALLEL_WORKERS": "1",
    }
    return command, env, ["/v2/health/ready", "/v2/models/mnist/ready"]


LAUNCHERS = {
    "service": launch_service,
    "unbatched": launch_baseline,
    "naive": launch_baseline,
    "pytriton": launch_pytriton,
    "mlserver": launch_mlserver,
}


def peer_missing(peer: str) -> str | None:
    if not venv_python(peer).exists():
        return f"{PEER_VENVS / peer} missing: run bash bench/setup_peers.sh {peer}"
    return None


def all_systems(options: SystemOptions, service_worker_counts: tuple[int, ...]) -> list[System]:
    service_missing = (
        None if (REPO_ROOT / "app" / "__main__.py").exists() else "app/__main__.py not written yet"
    )
    systems = [
        System(
            "service" if workers == 1 else f"service@{workers}w",
            f"this service, {workers} uvicorn worker(s)",
            ("tfs", "v2json", "v2bin", GRPC),
            options.service_models,
            service_missing,
        )
        for workers in service_worker_counts
    ]
    systems += [
        System(
            "unbatched",
            "FastAPI + orjson + signature in the thread pool, no batching",
            ("tfs",),
            ("mnist",),
            None,
        ),
        System(
            "naive",
            "FastAPI + pydantic + Keras model.predict per request",
            ("tfs",),
            ("mnist",),
            None,
        ),
        System(
            "pytriton",
            "PyTriton 0.7.0, dynamic batching (max 128, 1 ms queue delay)",
            ("v2json", "v2bin", GRPC),
            ("mnist",),
            peer_missing("pytriton"),
        ),
        System(
            "mlserver",
            "MLServer 1.7.1, adaptive batching (max 128, 1 ms)",
            ("v2json",),
            ("mnist",),
            peer_missing("mlserver"),
        ),
    ]
    return systems
