"""A version's signatures: which ones it has, what each one is for, and how a request picks one.

A SavedModel may carry several signatures besides `serving_default`. Each becomes a `Signature`
with its own inputs and outputs; a request names one (TF Serving's `signature_name`, KServe v2's
`parameters.signature_name`) or gets `serving_default`.

What a signature is for (its TF Serving method) comes from the SavedModel's own
`signature_def` when it says classify or regress (models exported by TF 1 or Estimators do).
TensorFlow 2's `tf.saved_model.save` writes `tensorflow/serving/predict` for every signature and
has no way to set another, so a predict signature shaped like TF Serving's classify or regress
signatures (its `signature_constants`: one string input named `inputs` of serialized
`tf.Example`s; outputs `classes` and/or `scores`, or `outputs`) is taken for one. Such a
signature still answers `:predict` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import InvalidInput

if TYPE_CHECKING:
    from app.servable import TensorSpec

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
#: TF Serving's signature_constants: the tensor names of classify and regress signatures.
EXAMPLES_INPUT = "inputs"
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"
REGRESS_OUTPUT = "outputs"
#: Signature defs that are not callable signatures (TensorFlow 2 writes this one).
INTERNAL_SIGNATURES = frozenset({"__saved_model_init_op"})
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class SignatureDef:
    """What the SavedModel file says of one signature: its method and its tensors' graph names."""

    method_name: str
    input_names: dict[str, str] = field(default_factory=dict)
    output_names: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Signature:
    """One callable signature of a loaded version."""

    name: str
    method_name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    #: Graph tensor names per input/output key, as TF Serving's metadata shows them.
    input_tensor_names: dict[str, str]
    output_tensor_names: dict[str, str]

    @property
    def is_classify(self) -> bool:
        return self.method_name == CLASSIFY_METHOD

    @property
    def is_regress(self) -> bool:
        return self.method_name == REGRESS_METHOD


def read_signature_defs(path: Path) -> dict[str, SignatureDef]:
    """Method and tensor names of every signature in `path/saved_model.pb` ({} if unreadable:
    the names are then made up the way TensorFlow 2 makes them, see `build_signature`)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((path / SAVED_MODEL_FILE).read_bytes())
    except Exception:  # a model format without this file, or a protobuf it cannot read
        return {}
    if not saved_model.meta_graphs:
        return {}
    return {
        key: SignatureDef(
            method_name=value.method_name,
            input_names={name: info.name for name, info in value.inputs.items()},
            output_names={name: info.name for name, info in value.outputs.items()},
        )
        for key, value in saved_model.meta_graphs[0].signature_def.items()
    }


def detect_method(
    declared: str, inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec]
) -> str:
    """The TF Serving method of a signature: the declared one unless it is predict and the
    signature has the shape of a classify or regress signature (see the module's doc)."""
    if declared in (CLASSIFY_METHOD, REGRESS_METHOD):
        return declared
    takes_examples = list(inputs) == [EXAMPLES_INPUT] and inputs[EXAMPLES_INPUT].is_string
    if not takes_examples:
        return PREDICT_METHOD
    names = set(outputs)
    if names and names <= {CLASSES_OUTPUT, SCORES_OUTPUT}:
        return CLASSIFY_METHOD
    if names == {REGRESS_OUTPUT} and not outputs[REGRESS_OUTPUT].is_string:
        return REGRESS_METHOD
    return PREDICT_METHOD


def build_signature(
    name: str,
    inputs: dict[str, TensorSpec],
    outputs: dict[str, TensorSpec],
    definition: SignatureDef | None,
    output_call_index: int = 0,
) -> Signature:
    """A `Signature`, with the file's tensor names when it has them; otherwise TensorFlow 2's
    pattern (`<signature>_<input>:0`, `StatefulPartitionedCall[_n]:<i>`)."""
    call = "StatefulPartitionedCall" + (f"_{output_call_index}" if output_call_index else "")
    input_names = {key: f"{name}_{key}:0" for key in inputs}
    output_names = {key: f"{call}:{index}" for index, key in enumerate(outputs)}
    declared = PREDICT_METHOD
    if definition is not None:
        input_names.update(definition.input_names)
        output_names.update(definition.output_names)
        declared = definition.method_name or PREDICT_METHOD
    return Signature(
        name=name,
        method_name=detect_method(declared, inputs, outputs),
        inputs=inputs,
        outputs=outputs,
        input_tensor_names={key: input_names[key] for key in inputs},
        output_tensor_names={key: output_names[key] for key in outputs},
    )


def choose(
    signatures: Mapping[str, Signature], model: str, requested: str | None, method: str | None
) -> Signature:
    """The signature a request names (`None` or "": `serving_default`), else a 400 that lists
    the ones there are; `method` (classify/regress) must be the signature's method."""
    key = requested or DEFAULT_SIGNATURE
    signature = signatures.get(key)
    if signature is None:
        raise InvalidInput(
            f"serving signature name {key[:80]!r} not found; model {model!r} has "
            f"signatures {list(signatures)}"
        )
    if method is not None and signature.method_name != method:
        suitable = [s.name for s in signatures.values() if s.method_name == method]
        kind = method.rsplit("/", 1)[-1]
        raise InvalidInput(
            f"signature {key!r} of model {model!r} is a "
            f"{signature.method_name.rsplit('/', 1)[-1]} signature, not {kind}; "
            + (
                f"its {kind} signatures are {suitable}: name one in 'signature_name'"
                if suitable
                else f"the model has no {kind} signature"
            )
        )
    return signature
