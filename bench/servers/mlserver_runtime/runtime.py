"""MLServer peer: a custom runtime that calls the same SavedModel signature as every other server.

Why a custom runtime: MLServer 1.7.1 ships no TensorFlow runtime. With `max_batch_size` and
`max_batch_time` in model-settings.json, MLServer's adaptive batcher merges concurrent v2 requests
into one `predict` call, which is what the benchmark compares against.

Runs in bench/.venvs/mlserver (mlserver 1.7.1, uvloop<0.22, tensorflow-cpu) with the repository
root on PYTHONPATH; model-settings.json names
`bench.servers.mlserver_runtime.runtime.SavedModelRuntime`.
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri

from bench.servers.savedmodel import SignatureFunction, load_signature


class SavedModelRuntime(MLModel):
    """Decode `image`, call the signature once for the (possibly merged) batch, encode outputs."""

    _predict_rows: SignatureFunction

    async def load(self) -> bool:
        self._predict_rows = load_signature(await get_model_uri(self._settings))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        image = NumpyCodec.decode_input(payload.inputs[0])
        outputs = self._predict_rows(image)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, array) for name, array in outputs.items()],
        )
