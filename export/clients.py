"""Clients for exported models served by TensorFlow Serving: REST and gRPC, adapt-then-act in one call.

Install with the ``serving`` extra (``pip install metarl-tf[serving]``: ``requests`` and
``tensorflow-serving-api``). Both clients are driven by the signatures the server reports
(``GetModelMetadata`` / ``GET /v1/models/<name>/metadata``) or that a local SavedModel holds, so
they work for every export kind::

    rest = RestClient("http://localhost:8501", "pointnav")
    out = rest.adapt_then_act(                                    # adapt -> params -> act
        {"observations": obs, "actions": act, "rewards": rew, "mask": mask, "num_steps": 1},
        {"observation": [[0.1, 0.2]]})
    out["adapted"]["params"], out["action"]["action"]

    grpc_client = GrpcClient("localhost:8500", "pointnav", timeout=5.0)
    grpc_client.predict({"observation": [[0.1, 0.2]]})            # serving_default

The adaptation flow: ``adapt`` returns the task's state (``params`` of a policy, ``z`` of a
Q-network, or already the query predictions ``y`` of a regressor); the acting signature is the one
whose inputs include every output of ``adapt`` (``action_with_params``, ``action_with_z``, ...),
and it is called with those outputs plus the observation. An RL² export (``get_initial_state`` and
``action``, no ``adapt``) adapts by carrying its RNN ``state`` through a trial's steps: the trial's
inputs are given with a leading time axis and fed to ``action`` one step at a time.

Errors: inputs whose dtype does not fit the signature are refused before sending, with a
``TypeError`` naming the input; shape ranks and fixed dimensions likewise (``ValueError``). What the
server refuses raises ``ServingError`` carrying the server's own message (``.message``), its gRPC
code or HTTP status; a request past ``timeout`` seconds raises ``ServingTimeout``.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Mapping

import numpy as np

# dtype names as TF Serving's metadata JSON spells them -> numpy dtypes
_PROTO_DTYPES = {"DT_FLOAT": "float32", "DT_DOUBLE": "float64", "DT_INT32": "int32",
                 "DT_INT64": "int64", "DT_INT16": "int16", "DT_INT8": "int8", "DT_UINT8": "uint8",
                 "DT_UINT32": "uint32", "DT_UINT64": "uint64", "DT_BOOL": "bool",
                 "DT_STRING": "object"}
ADAPT = "adapt"
INITIAL_STATE = "get_initial_state"  # RL² exports: the adaptation is a state the client carries
DEFAULT = "serving_default"


class ServingError(RuntimeError):
    """The server refused a request. ``message`` is the server's text; ``code`` the gRPC status
    code name (``"INVALID_ARGUMENT"``, ...) or ``None``; ``status`` the HTTP status (REST)."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None,
                 context: str = ""):
        where = f"{context}: " if context else ""
        how = " ".join(x for x in (code, f"HTTP {status}" if status else None) if x)
        super().__init__(f"{where}{how + ': ' if how else ''}{message}")
        self.message, self.code, self.status = message, code, status


class ServingTimeout(ServingError, TimeoutError):
    """No answer within the client's ``timeout``."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    dtype: np.dtype  # the signature's dtype
    shape: tuple[int, ...] | None  # -1 for unknown dimensions, None for unknown rank


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]


def signatures_from_saved_model(path: str) -> dict[str, Signature]:
    """The signatures of a local SavedModel (``saved_model.pb`` only; nothing is loaded)."""
    from export.inspect import read_signatures

    def spec(t):
        return TensorSpec(np.dtype("object" if t.dtype == "string" else t.dtype), t.shape)

    return {n: Signature(n, {t.key: spec(t) for t in s.inputs}, {t.key: spec(t) for t in s.outputs})
            for n, s in read_signatures(path).items()}


def _signatures_from_metadata_json(doc: dict) -> dict[str, Signature]:
    """Parses ``GetModelMetadataResponse`` as JSON (REST metadata route, or MessageToDict)."""
    defs = doc.get("metadata", {}).get("signature_def", {}).get("signature_def", {})

    def spec(info):
        shape = info.get("tensor_shape", {})
        dims = None if shape.get("unknown_rank") else tuple(
            int(d.get("size", 0)) for d in shape.get("dim", []))
        return TensorSpec(np.dtype(_PROTO_DTYPES.get(info.get("dtype"), "object")), dims)

    return {name: Signature(name, {k: spec(v) for k, v in sd.get("inputs", {}).items()},
                            {k: spec(v) for k, v in sd.get("outputs", {}).items()})
            for name, sd in defs.items() if name != "__saved_model_init_op"}


def check_input(signature: Signature, key: str, value) -> np.ndarray:
    """``value`` as an array of the signature's dtype for input ``key``; refuses lossy or meaningless
    conversions (float -> int, bool -> number, text -> number) and wrong ranks / fixed dimensions.

    Raises:
      TypeError: wrong dtype, naming the input. ValueError: wrong rank or fixed dimension.
    """
    spec = signature.inputs.get(key)
    arr = np.asarray(value)
    if spec is None:  # unknown input: the server decides (and says so)
        return arr
    want, got = spec.dtype, arr.dtype
    where = f"input `{key}` of signature `{signature.name}`"
    if want.kind == "f":
        ok = got.kind in "fiu"  # ints are exact in float (TF Serving's JSON accepts them too)
    elif want.kind in "iu":
        ok = got.kind in "iu"
    elif want.kind == "b":
        ok = got.kind == "b"
    else:
        ok = got.kind in "USO"
    if arr.size == 0 and got.kind == "f" and want.kind in "fiub":
        ok = True  # np.asarray([]) is float64: an empty list fits any numeric input
    if not ok:
        raise TypeError(f"{where} must be {want.name if want.kind != 'O' else 'string'}, got "
                        f"{got.name} (values like {arr.ravel()[:3].tolist()})")
    if want.kind in "iu" and arr.size and (arr.min() < np.iinfo(want).min
                                           or arr.max() > np.iinfo(want).max):
        raise TypeError(f"{where} must be {want.name}: values out of its range")
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise ValueError(f"{where} must have rank {len(spec.shape)} (shape "
                             f"{list(spec.shape)}), got shape {list(arr.shape)}")
        for i, (d, n) in enumerate(zip(spec.shape, arr.shape)):
            if d >= 0 and d != n:
                raise ValueError(f"{where} must have shape {list(spec.shape)}: dimension {i} is "
                                 f"{n}, expected {d}")
    return arr.astype(want, copy=False) if want.kind != "O" else arr


def acting_signature(signatures: Mapping[str, Signature], adapted: Mapping[str, object]) -> str | None:
    """The signature to act with after ``adapt``: the one (besides adapt and serving_default) whose
    inputs include every output of ``adapt``; None when ``adapt``'s outputs are the answer."""
    keys = set(adapted)
    candidates = sorted(n for n, s in signatures.items()
                        if n not in (ADAPT, DEFAULT) and keys <= set(s.inputs))
    return candidates[0] if candidates else None


class _Client:
    def __init__(self, model: str, version: int | None, timeout: float,
                 signatures: Mapping[str, Signature] | str | None):
        if not model or not isinstance(model, str):
            raise ValueError(f"`model` must be a model name, got {model!r}")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or version < 1):
            raise ValueError(f"`version` must be a positive integer or None, got {version!r}")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"`timeout` must be a number of seconds > 0, got {timeout!r}")
        self.model, self.version, self.timeout = model, version, float(timeout)
        self._signatures = (signatures_from_saved_model(signatures) if isinstance(signatures, str)
                            else None if signatures is None else dict(signatures))

    @property
    def signatures(self) -> dict[str, Signature]:
        """The model's signatures (fetched from the server once, unless given)."""
        if self._signatures is None:
            self._signatures = self._fetch_signatures()
        return self._signatures

    def _checked(self, signature_name: str, inputs: Mapping) -> dict:
        if not isinstance(inputs, Mapping) or not inputs:
            raise ValueError(f"`inputs` must be a non-empty dict of named inputs for signature "
                             f"`{signature_name}`, got {type(inputs).__name__}")
        sig = self.signatures.get(signature_name)
        if sig is None:  # let the server answer (its message names the signature)
            return {k: np.asarray(v) for k, v in inputs.items()}
        return {k: check_input(sig, k, v) for k, v in inputs.items()}

    def adapt_then_act(self, adapt_inputs: Mapping, act_inputs: Mapping | None = None) -> dict:
        """The adaptation flow in one call: ``adapt`` on the task's data, then act with its result.

        Args:
          adapt_inputs: the inputs of the ``adapt`` signature (support set or episodes, num_steps).
          act_inputs: the acting signature's other inputs (e.g. ``{"observation": ...}``); ignored
            for a regressor, whose ``adapt`` already returns the query predictions.

        Returns:
          ``{"adapted": adapt outputs, "signature": acting signature or None, "action": its
          outputs or None}``.
        """
        if ADAPT not in self.signatures and INITIAL_STATE in self.signatures:
            return self._adapt_recurrent(adapt_inputs, act_inputs)
        adapted = self.predict(adapt_inputs, ADAPT)
        act = acting_signature(self.signatures, adapted)
        if act is None:
            return {"adapted": adapted, "signature": None, "action": None}
        if not act_inputs:
            raise ValueError(f"give `act_inputs` for signature `{act}` (inputs "
                             f"{sorted(set(self.signatures[act].inputs) - set(adapted))})")
        return {"adapted": adapted, "signature": act,
                "action": self.predict({**act_inputs, **adapted}, act)}


    def _adapt_recurrent(self, trial: Mapping, act_inputs: Mapping | None) -> dict:
        """RL²: adaptation is the state after the trial's steps, fed one by one to ``action``.

        ``trial`` holds the acting signature's inputs (all but ``state``) with a leading time axis,
        e.g. ``observation [T, B, obs_dim]``, ``prev_action [T, B]``, ``prev_reward [T, B]``,
        ``done [T, B]``; the state starts at ``get_initial_state(batch_size=B)``.
        """
        act = acting_signature(self.signatures, {"state": None})
        if act is None:
            raise ValueError(f"{self.model} has `{INITIAL_STATE}` but no signature taking `state`")
        arrays = {k: np.asarray(v) for k, v in trial.items()}
        lengths = {k: v.shape[:2] for k, v in arrays.items()}
        if len(set(lengths.values())) != 1 or any(len(n) < 2 for n in lengths.values()):
            raise ValueError("a recurrent trial needs every input as [time, batch, ...] with the "
                             f"same time and batch sizes, got leading shapes {lengths}")
        steps, batch = next(iter(lengths.values()))
        state = self.predict({"batch_size": np.int32(batch)}, INITIAL_STATE)["state"]
        for t in range(steps):
            state = self.predict({**{k: v[t] for k, v in arrays.items()}, "state": state}, act)["state"]
        adapted = {"state": state}
        if not act_inputs:
            return {"adapted": adapted, "signature": act, "action": None}
        return {"adapted": adapted, "signature": act,
                "action": self.predict({**act_inputs, **adapted}, act)}


class RestClient(_Client):
    """TF Serving's REST predict API: ``POST /v1/models/<name>[/versions/<v>]:predict``.

    Args:
      url: the server's REST root, e.g. ``http://localhost:8501``.
      model: the model name (``models.config``'s ``name``).
      version: a fixed version; default the latest served.
      timeout: seconds per request (connect and read).
      signatures: the model's signatures, or a local SavedModel path to read them from; default:
        asked from the server (``GET /v1/models/<name>/metadata``).
      session: a ``requests.Session`` to reuse connections (default: a new one).
    """

    def __init__(self, url: str, model: str, version: int | None = None, timeout: float = 10.0,
                 signatures=None, session=None):
        super().__init__(model, version, timeout, signatures)
        import requests

        self._requests = requests
        self.url = url.rstrip("/")
        self.session = session or requests.Session()

    def _model_url(self) -> str:
        return f"{self.url}/v1/models/{self.model}" + (
            f"/versions/{self.version}" if self.version else "")

    def _call(self, method: str, url: str, context: str, body: bytes | None = None) -> dict:
        try:
            r = self.session.request(method, url, data=body, timeout=self.timeout,
                                     headers={"Content-Type": "application/json"})
        except self._requests.Timeout:
            raise ServingTimeout(f"no answer within {self.timeout} s from {url}",
                                 "DEADLINE_EXCEEDED", context=context) from None
        except self._requests.ConnectionError as err:
            raise ServingError(f"cannot reach {url}: {err}", "UNAVAILABLE", context=context) from None
        try:
            doc = r.json()
        except ValueError:
            doc = None
        if r.status_code != 200:
            message = doc.get("error") if isinstance(doc, dict) and "error" in doc else r.text
            raise ServingError(message, None, r.status_code, context=context)
        if not isinstance(doc, dict):
            raise ServingError(f"the server's answer is not a JSON object: {r.text[:200]}",
                               None, r.status_code, context=context)
        return doc

    def _fetch_signatures(self) -> dict[str, Signature]:
        doc = self._call("GET", self._model_url() + "/metadata", f"{self.model} metadata")
        return _signatures_from_metadata_json(doc)

    def request_body(self, inputs: Mapping, signature_name: str = DEFAULT,
                     format: str = "columnar") -> dict:
        """The JSON body of a predict request (``inputs`` checked, as arrays of the right dtype).

        ``format="columnar"``: ``{"inputs": {name: value}}``, any signature. ``format="row"``:
        ``{"instances": [{name: row}, ...]}``, one object per row, for signatures whose inputs all
        share the leading (batch) dimension; a bare list of rows when there is one input.
        """
        if format not in ("columnar", "row"):
            raise ValueError(f"`format` must be 'columnar' or 'row', got {format!r}")
        arrays = self._checked(signature_name, inputs)
        body: dict = {"signature_name": signature_name}
        if format == "columnar":
            body["inputs"] = {k: _json_value(v) for k, v in arrays.items()}
            return body
        sizes = {k: (v.shape[0] if v.ndim else None) for k, v in arrays.items()}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError(f"the row ('instances') format needs every input of `{signature_name}` "
                             f"batched along one shared first dimension; leading sizes {sizes} "
                             "(None = a scalar): use format='columnar'")
        n = next(iter(sizes.values()))
        if len(arrays) == 1:
            body["instances"] = _json_value(next(iter(arrays.values())))
        else:
            body["instances"] = [{k: _json_value(v[i]) for k, v in arrays.items()} for i in range(n)]
        return body

    def predict(self, inputs: Mapping, signature_name: str = DEFAULT,
                format: str = "columnar") -> dict[str, np.ndarray]:
        """Calls one signature; returns its outputs by name as numpy arrays."""
        body = json.dumps(self.request_body(inputs, signature_name, format)).encode()
        doc = self._call("POST", self._model_url() + ":predict", f"{self.model}:{signature_name}",
                         body)
        return self.parse_response(doc, signature_name)

    def predict_raw(self, body: str | bytes, signature_name: str = "") -> dict:
        """POSTs ``body`` as it is (no checks) to the predict route; returns the JSON answer.

        For bodies built elsewhere (e.g. by another language's client); the server's refusal
        raises ``ServingError`` with its message.
        """
        data = body.encode() if isinstance(body, str) else body
        return self._call("POST", self._model_url() + ":predict",
                          f"{self.model}:{signature_name or 'raw'}", data)

    def parse_response(self, doc: dict, signature_name: str) -> dict[str, np.ndarray]:
        """A predict response (``outputs`` or ``predictions``) -> ``{name: ndarray}``."""
        sig = self.signatures.get(signature_name)
        names = sorted(sig.outputs) if sig else None

        def array(key, value):
            dtype = sig.outputs[key].dtype if sig and key in sig.outputs else None
            return np.asarray(value, dtype=dtype)

        if "outputs" in doc:
            out = doc["outputs"]
            if isinstance(out, dict) and (names is None or set(out) <= set(names)) and \
                    not (names and len(names) == 1):
                return {k: array(k, v) for k, v in out.items()}
            if names is None or len(names) != 1:
                raise ServingError(f"cannot name the single output of `{signature_name}` "
                                   f"(signature outputs: {names})", context=self.model)
            return {names[0]: array(names[0], out)}
        if "predictions" in doc:
            rows = doc["predictions"]
            if rows and isinstance(rows[0], dict):
                return {k: array(k, [r[k] for r in rows]) for k in rows[0]}
            if names is None or len(names) != 1:
                raise ServingError(f"cannot name the single output of `{signature_name}` "
                                   f"(signature outputs: {names})", context=self.model)
            return {names[0]: array(names[0], rows)}
        raise ServingError(f"answer has neither 'outputs' nor 'predictions': {str(doc)[:200]}",
                           context=self.model)


def _json_value(arr: np.ndarray):
    # float32 -> Python float is exact, and the server's float parse of that decimal gives back the
    # same float32, so values round-trip bit for bit.
    return arr.tolist()


class GrpcClient(_Client):
    """TF Serving's gRPC ``PredictionService`` (``tensorflow-serving-api``).

    Args:
      address: ``host:port`` of the gRPC endpoint (TF Serving's ``--port``, default 8500).
      model, version, timeout, signatures: as for ``RestClient`` (signatures default: the
        server's ``GetModelMetadata``).
      channel: an existing ``grpc.Channel`` (default: an insecure channel to ``address``).
    """

    def __init__(self, address: str, model: str, version: int | None = None,
                 timeout: float = 10.0, signatures=None, channel=None):
        super().__init__(model, version, timeout, signatures)
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        self.address = address
        self.channel = channel or grpc.insecure_channel(address)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def _spec(self, spec, signature_name: str | None):
        spec.name = self.model
        if self.version:
            spec.version.value = self.version
        if signature_name is not None:
            spec.signature_name = signature_name

    def _rpc(self, method, request, context: str):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as err:
            code = err.code()
            if code == self._grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingTimeout(f"no answer within {self.timeout} s from {self.address}",
                                     code.name, context=context) from None
            raise ServingError(err.details() or str(code), code.name, context=context) from None

    def _fetch_signatures(self) -> dict[str, Signature]:
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._spec(request.model_spec, None)
        request.metadata_field.append("signature_def")
        response = self._rpc(self.stub.GetModelMetadata, request, f"{self.model} metadata")
        return _signatures_from_metadata_json(
            json_format.MessageToDict(response, preserving_proto_field_name=True))

    def predict(self, inputs: Mapping, signature_name: str = DEFAULT,
                output_filter: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Calls one signature; returns its outputs by name as numpy arrays."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        arrays = self._checked(signature_name, inputs)
        request = predict_pb2.PredictRequest()
        self._spec(request.model_spec, signature_name)
        sig = self.signatures.get(signature_name)
        for k, v in arrays.items():
            dtype = sig.inputs[k].dtype if sig and k in sig.inputs else None
            request.inputs[k].CopyFrom(tf.make_tensor_proto(v, dtype=dtype))
        request.output_filter.extend(output_filter)
        response = self._rpc(self.stub.Predict, request, f"{self.model}:{signature_name}")
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def close(self):
        self.channel.close()
