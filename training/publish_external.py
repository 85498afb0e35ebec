"""Publish a model made anywhere: `python -m training publish SOURCE --name NAME ...`.

SOURCE is a Keras 3 archive (`*.keras`) or a SavedModel folder. The model is staged in the
repository's hidden build folder exactly like a training run's version (`training.publish`),
loaded there by the server's own loader and asked for a generated input, so what passes here is
what the server will serve; only then is `metadata.json` written and the version renamed into
place. A source that does not load or answer leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.keras_archive import KerasOptions
from app.protocols.v2_codec import V2_NUMERIC_DTYPES, v2_datatype
from app.repository.format import KERAS_ARCHIVE, SAVED_MODEL_FILES, SIGNATURE_KEY
from training.publish import PublishError, StagedVersion, stage_version

# Above this many values per input the printed example is Python rather than a curl line.
CURL_MAX_VALUES = 64
# URL-safe and short: the name becomes a path segment of every protocol's routes.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ExternalModel:
    """What `publish` was asked to do (the CLI's flags)."""

    source: Path
    name: str
    repository: Path = Path("models")
    version: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    custom_object_modules: tuple[str, ...] = ()
    allow_unsafe_deserialization: bool = False


@dataclass(frozen=True)
class Published:
    name: str
    version: int
    path: Path
    signature: dict[str, Any]


def request_from_args(args: Any) -> ExternalModel:
    """The CLI's parsed flags (`python -m training publish ...`) as a request."""
    return ExternalModel(
        source=args.source,
        name=args.name,
        repository=args.repository,
        version=args.version,
        metadata=args.metadata,
        custom_object_modules=tuple(args.custom_objects_module),
        allow_unsafe_deserialization=args.allow_unsafe_deserialization,
    )


def source_kind(source: Path) -> str:
    """ "keras" for a Keras archive, "saved_model" for a SavedModel folder; else PublishError."""
    if source.is_file() and source.suffix == ".keras":
        return "keras"
    if source.is_dir() and any((source / name).is_file() for name in SAVED_MODEL_FILES):
        return "saved_model"
    raise PublishError(
        f"{source} is neither a .keras file nor a SavedModel folder (one holding "
        f"{' or '.join(SAVED_MODEL_FILES)})"
    )


def publish_external(request: ExternalModel) -> Published:
    """Copy, validate by loading and calling, then publish atomically as the next version."""
    if not MODEL_NAME.fullmatch(request.name):
        raise PublishError(
            f"model name {request.name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    kind = source_kind(request.source)
    staged = stage_version(request.repository, request.name, request.version)
    try:
        _copy_source(request.source, kind, staged)
        signature = _validate(request, staged)
        metadata = {
            "name": request.name,
            "version": staged.version,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "source": {
                "format": kind,
                "file": request.source.name,
                "sha256": _digest(request.source),
            },
            "published_with": "python -m training publish",
            SIGNATURE_KEY: signature,
            "user": request.metadata,
        }
        path = staged.commit(metadata)
    except BaseException:
        staged.discard()
        raise
    return Published(request.name, staged.version, path, signature)


def _copy_source(source: Path, kind: str, staged: StagedVersion) -> None:
    """Regular files and folders only: a link could point anywhere, a FIFO would block a reader."""
    if kind == "keras":
        _require_regular(source)
        shutil.copyfile(source, staged.path / KERAS_ARCHIVE)
        return
    for directory, folders, files in os.walk(source):
        relative = Path(directory).relative_to(source)
        for folder in folders:
            mode = os.lstat(Path(directory) / folder).st_mode
            if not stat.S_ISDIR(mode):
                raise PublishError(f"{relative / folder} in the SavedModel is a link; not copied")
            (staged.path / relative / folder).mkdir()
        for file_name in files:
            _require_regular(Path(directory) / file_name)
            shutil.copyfile(Path(directory) / file_name, staged.path / relative / file_name)


def _require_regular(path: Path) -> None:
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise PublishError(f"{path.name} is not a regular file (a link or a device); not copied")


def _validate(request: ExternalModel, staged: StagedVersion) -> dict[str, Any]:
    """Load with the server's loader and run generated inputs of batch 1 and 2 through it."""
    from app.servable import ModelLoadError, Servable

    try:
        options = KerasOptions(
            custom_objects_modules=request.custom_object_modules,
            allow_unsafe_deserialization=request.allow_unsafe_deserialization,
        )
        servable = Servable.load(
            request.name, staged.version, staged.path, warm_up=False, keras_options=options
        )
        for inputs in servable.warmup_inputs():
            servable.predict(inputs)
    except ModelLoadError as exc:
        raise PublishError(f"the server could not load it: {exc}") from exc
    except Exception as exc:  # the model's own call failing on a generated input
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise PublishError(f"it loaded but failed on a generated input: {first_line}") from exc
    return {
        "inputs": {key: _spec(spec) for key, spec in servable.inputs.items()},
        "outputs": {key: _spec(spec) for key, spec in servable.outputs.items()},
    }


def _spec(spec: Any) -> dict[str, Any]:
    return {"dtype": spec.tf_dtype, "shape": spec.shape_with_minus_one}


def _digest(source: Path) -> str:
    """SHA-256 of the archive, or of the SavedModel's files in name order (path, then bytes)."""
    digest = hashlib.sha256()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        if path != source:
            digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def client_instructions(published: Published, base_url: str = "http://localhost:8000") -> str:
    """What a client must send: the signature and a KServe v2 request of one zero row."""
    lines = [f"published {published.name} version {published.version}", "inputs:"]
    lines += _describe(published.signature["inputs"])
    lines.append("outputs:")
    lines += _describe(published.signature["outputs"])
    tensors = [
        (name, v2_datatype(spec["dtype"]), _one_row(spec["shape"]))
        for name, spec in published.signature["inputs"].items()
    ]
    url = f"{base_url}/v2/models/{published.name}/infer"
    if all(_count(shape) <= CURL_MAX_VALUES for _, _, shape in tensors):
        body = {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": shape,
                    "data": [_zero(datatype)] * _count(shape),
                }
                for name, datatype, shape in tensors
            ]
        }
        lines += [
            "one zero row as a KServe v2 JSON request:",
            f"  curl -s -X POST {url} -H 'Content-Type: application/json' \\",
            f"    -d '{json.dumps(body, separators=(',', ':'))}'",
        ]
    else:  # too many values for a readable command line: the same request from Python
        lines += ["one zero row as a KServe v2 JSON request (Python, httpx and numpy):"]
        lines += [f"  {line}" for line in _python_request(url, tensors)]
    return "\n".join(lines)


def _python_request(url: str, tensors: list[tuple[str, str, list[int]]]) -> list[str]:
    def data(datatype: str, shape: list[int]) -> str:
        if datatype in ("BYTES", "BOOL"):
            return f"[{_zero(datatype)!r}] * {_count(shape)}"
        return f'np.zeros({shape}, "{V2_NUMERIC_DTYPES[datatype].name}").ravel().tolist()'

    inputs = ", ".join(
        f'{{"name": "{name}", "datatype": "{datatype}", "shape": {shape}, '
        f'"data": {data(datatype, shape)}}}'
        for name, datatype, shape in tensors
    )
    return [
        "import httpx, numpy as np",
        f'print(httpx.post("{url}", json={{"inputs": [{inputs}]}}).json())',
    ]


def _describe(specs: dict[str, dict[str, Any]]) -> list[str]:
    return [f"  {name}: {spec['dtype']} {spec['shape']}" for name, spec in specs.items()]


def _one_row(shape: list[int]) -> list[int]:
    """Batch 1; other variable dimensions 1 too (the smallest a model can be asked for)."""
    return [1 if dim < 0 else dim for dim in shape]


def _count(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _zero(datatype: str) -> Any:
    if datatype == "BYTES":
        return ""
    if datatype == "BOOL":
        return False
    return 0.0 if datatype.startswith(("FP", "BF")) else 0
