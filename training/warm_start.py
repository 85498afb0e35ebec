"""`--init-from`: give a training model the weights of a published version before `fit`.

A published version holds one copy of its weights: the SavedModel's variables. The exported
module (`training.nets.common.KerasInference`) tracks them as `model_variables`, the inference
model's `model.variables` in that model's own order, so the recipe's own `export_module`, applied
to a freshly built training model, lists the same variables in the same order. Each saved
variable also keeps its Keras path as its name (`conv2d/kernel:0`); Keras numbers layer names
per process (`conv2d_5` once other models were built), so names are matched exactly when they
line up one to one and by order otherwise, with the numbering set aside and every shape checked.
Batch-normalisation moving statistics are variables like any other and come across too; the
optimizer starts fresh either way.

Versions published before the SavedModel became the only copy also hold
`keras/model.weights.h5`; it is read when present, and a `.weights.h5` file may be given directly.

A run may only start from a version trained around the same held-out rows (`check_split`):
otherwise the weights have already trained on digits the new version is then measured on, and
its "held-out" figures flatter it. Every run of a fine-tuning chain therefore holds out the same
rows, and a version's figures stay honest however many runs made it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import publish
from training.recipe import MnistSplit, Recipe, TrainConfig

log = logging.getLogger(__name__)

LEGACY_KERAS_WEIGHTS = Path("keras") / "model.weights.h5"
# Keras' per-process suffix of an automatic layer name: `dense_3/kernel` -> `dense/kernel`.
_LAYER_NUMBER = re.compile(r"_\d+(?=/|$)")


@dataclass(frozen=True)
class InitSource:
    """Where the weights come from: a SavedModel version folder, or a Keras weights file."""

    path: Path
    keras_weights: bool
    version_dir: Path | None  # the published version the weights belong to, None for a bare file


def resolve(init_from: str, repository: Path, name: str) -> InitSource:
    """`--init-from latest|<version folder>|<file.weights.h5>`, checked before training."""
    if init_from == "latest":
        return locate(publish.latest_version_dir(repository, name))
    return locate(Path(init_from))


def locate(path: Path) -> InitSource:
    """The weights a version folder (or a weights file) offers; refuses anything else."""
    path = Path(path)
    if path.is_file():
        return InitSource(path, keras_weights=True, version_dir=None)
    if (path / LEGACY_KERAS_WEIGHTS).is_file():
        return InitSource(path / LEGACY_KERAS_WEIGHTS, keras_weights=True, version_dir=path)
    if (path / "saved_model.pb").is_file():
        return InitSource(path, keras_weights=False, version_dir=path)
    raise publish.PublishError(
        f"no weights to start from at {path}: neither a published version (saved_model.pb) "
        "nor a .weights.h5 file"
    )


def check_split(source: InitSource, split: MnistSplit) -> None:
    """Refuse weights trained around other held-out rows than `split`'s (see the module doc)."""
    if source.version_dir is None:
        log.warning(
            "%s is a bare weights file: whether it ever trained on this run's held-out rows "
            "(split seed %d) cannot be checked",
            source.path,
            split.split_seed,
        )
        return
    try:
        data = publish.read_metadata(source.version_dir).get("data", {})
    except (OSError, ValueError) as exc:
        raise publish.PublishError(
            f"cannot read the metadata of {source.version_dir}, so not which rows it held out"
        ) from exc
    trained = (data.get("source"), data.get("split_seed"))
    if trained != (split.source, split.split_seed):
        raise publish.PublishError(
            f"{source.version_dir} was trained around split seed {trained[1]} of {trained[0]}; "
            f"this run holds out the rows of split seed {split.split_seed} of {split.source}, "
            "some of which those weights trained on, so its held-out figures would flatter it. "
            f"Start from a version of the same split, or pass --split-seed {trained[1]}"
        )


def restore(recipe: Recipe, model: Any, config: TrainConfig, source: InitSource) -> None:
    """Assign `source`'s weights to the training `model` (call it inside the strategy scope)."""
    if source.keras_weights:
        _load_keras_weights(model, source.path)
    else:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(source.path))
        targets = list(recipe.export_module(model, config).model_variables)
        assign_saved_variables(targets, saved_variables(loaded, source.path), recipe.name, source)
        restored = {id(variable) for variable in targets}
        fresh = [_path(v) for v in model.variables if id(v) not in restored]
        if fresh:  # training-only variables (none in this project's recipes) are not exported
            log.warning("not in %s, left as initialised: %s", source.path, ", ".join(fresh))
    log.info("initialised from %s", source.path)


def saved_variables(loaded: Any, version_dir: Path) -> list[Any]:
    """The exported module's `model_variables`, in the order they were exported."""
    variables = getattr(loaded, "model_variables", None)
    if variables is None:
        raise publish.PublishError(
            f"{version_dir} was not exported by `python -m training` (its SavedModel has no "
            "model_variables), so its weights cannot be matched to a training model"
        )
    return list(variables)


def assign_saved_variables(
    targets: Sequence[Any], saved: Sequence[Any], name: str, source: InitSource
) -> None:
    """Match every saved variable to one target, check all shapes, then assign (all or none)."""
    if len(saved) != len(targets):
        raise publish.PublishError(
            f"cannot initialise the {name} model from {source.path}{_made_by(source)}: it holds "
            f"{len(saved)} variables, the {name} model {len(targets)}"
        )
    by_path = _match_by_path(targets, saved)
    pairs = by_path or _match_by_order(targets, saved, name, source)
    for target, value in pairs:
        want, got = _shape(target), _shape(value)
        if want != got or _dtype(target) != _dtype(value):
            raise publish.PublishError(
                f"cannot initialise the {name} model from {source.path}{_made_by(source)}: "
                f"{_path(value)} is {_dtype(value)} {got} there, {_path(target)} is "
                f"{_dtype(target)} {want} in the model"
            )
    for target, value in pairs:
        target.assign(value.numpy())
    log.info("restored %d variables, matched by %s", len(pairs), "path" if by_path else "order")


def _match_by_path(targets: Sequence[Any], saved: Sequence[Any]) -> list[tuple[Any, Any]] | None:
    """Pairs by exact Keras path, or None unless the paths correspond one to one."""
    by_path = {_path(value): value for value in saved}
    paths = [_path(target) for target in targets]
    if len(by_path) != len(saved) or len(set(paths)) != len(paths) or set(paths) != set(by_path):
        return None
    return [(target, by_path[path]) for target, path in zip(targets, paths, strict=True)]


def _match_by_order(
    targets: Sequence[Any], saved: Sequence[Any], name: str, source: InitSource
) -> list[tuple[Any, Any]]:
    for index, (target, value) in enumerate(zip(targets, saved, strict=True)):
        if _generic(_path(target)) != _generic(_path(value)):
            raise publish.PublishError(
                f"cannot initialise the {name} model from {source.path}{_made_by(source)}: "
                f"variable {index} is {_path(value)} there, {_path(target)} in the model"
            )
    return list(zip(targets, saved, strict=True))


def _path(variable: Any) -> str:
    """A Keras variable's path; a TensorFlow variable's name without the `:0` output index."""
    path = getattr(variable, "path", None)
    return str(path) if path else str(variable.name).removesuffix(":0")


def _generic(path: str) -> str:
    return _LAYER_NUMBER.sub("", path)


def _shape(variable: Any) -> tuple[int | None, ...]:
    return tuple(None if dim is None else int(dim) for dim in variable.shape)


def _dtype(variable: Any) -> str:
    import tensorflow as tf

    return str(tf.as_dtype(variable.dtype).name)


def _made_by(source: InitSource) -> str:
    """` (a version of 'mnist')` when the version's metadata names its model, else nothing."""
    if source.version_dir is None:
        return ""
    try:
        other = publish.read_metadata(source.version_dir).get("name")
    except (OSError, ValueError):
        return ""
    return f" (a version of {other!r})" if other else ""


def _load_keras_weights(model: Any, weights_file: Path) -> None:
    """A Keras weights file: the model's weights only, the optimizer starts fresh."""
    from keras.src.saving import saving_lib

    optimizer = getattr(model, "optimizer", None)
    skip = [optimizer] if optimizer is not None else []
    try:
        saving_lib.load_weights_only(model, str(weights_file), objects_to_skip=skip)
    except ValueError as exc:
        # Keras names the first layer that does not fit, then prints the whole target variable.
        reason = " ".join(str(exc).split(" Target variable:")[0].split())
        raise publish.PublishError(
            f"cannot initialise the model from {weights_file}: {reason}"
        ) from exc
