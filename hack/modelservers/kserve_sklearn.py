"""A scikit-learn model behind KServe's Python model server (``kserve.ModelServer``), for the compat-probe's
real-server tests and demo. Run with the kserve venv's python:

    python kserve_sklearn.py --model_dir DIR --model_name iris --http_port PORT --enable_grpc false

KServe serves both its protocols for the model: v1 (``POST /v1/models/iris:predict`` with
``{"instances": [[...]]}`` answers ``{"predictions": [[p0, p1, p2], ...]}``, the class probabilities) and
the Open Inference Protocol (``POST /v2/models/iris/infer``: outputs ``predict`` (INT64 or BYTES, [n])
and ``predict_proba`` (FP64, [n, classes]), or those named in the request's ``outputs``).

KServe's REST server binds 0.0.0.0; ``MODELROLLOUT_BIND_HOST`` (default 127.0.0.1) rebinds it, so tests
listen on the loopback only.
"""

from __future__ import annotations

import argparse
import os
import uuid
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import uvicorn
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve import model_server as kserve_model_server
from kserve.errors import InvalidInput
from kserve.protocol.rest import server as kserve_rest_server


class SklearnModel(Model):
    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self._path = model_dir / "model.joblib"
        self._model: Any = None

    def load(self) -> bool:
        self._model = joblib.load(self._path)
        self.ready = True
        return self.ready

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> Any:
        if isinstance(payload, InferRequest):
            return self._infer_v2(payload)
        instances = payload.get("instances") if isinstance(payload, dict) else None
        if not isinstance(instances, list):
            raise InvalidInput('expected {"instances": [[...], ...]}')
        try:
            features = np.asarray(instances, dtype=np.float64)
            return {"predictions": self._model.predict_proba(features).tolist()}
        except ValueError as exc:
            raise InvalidInput(str(exc)) from exc

    def _infer_v2(self, request: InferRequest) -> InferResponse:
        if not request.inputs:
            raise InvalidInput("no input tensor")
        try:
            features = np.asarray(request.inputs[0].as_numpy(), dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(str(exc)) from exc
        wanted = [out.name for out in request.request_outputs or []] or ["predict", "predict_proba"]
        outputs = []
        for name in wanted:
            if name == "predict":
                labels = self._model.predict(features)
                if labels.dtype.kind in "US":
                    outputs.append(InferOutput(name, list(labels.shape), "BYTES", [str(v) for v in labels]))
                else:
                    outputs.append(InferOutput(name, list(labels.shape), "INT64", labels.astype(np.int64).tolist()))
            elif name == "predict_proba":
                proba = self._model.predict_proba(features)
                outputs.append(InferOutput(name, list(proba.shape), "FP64", proba.reshape(-1).tolist()))
            else:
                raise InvalidInput(f"unknown output {name!r}: this model serves predict and predict_proba")
        return InferResponse(
            response_id=request.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=outputs
        )


class _LoopbackConfig(uvicorn.Config):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["host"] = os.environ.get("MODELROLLOUT_BIND_HOST", "127.0.0.1")
        super().__init__(*args, **kwargs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve_model_server.parser])
    parser.add_argument("--model_dir", type=Path, required=True)
    args, _ = parser.parse_known_args()
    kserve_rest_server.uvicorn.Config = _LoopbackConfig  # type: ignore[misc]
    model = SklearnModel(args.model_name, args.model_dir)
    model.load()
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start([model])
