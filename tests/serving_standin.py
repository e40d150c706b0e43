"""A loopback stand-in for ``tensorflow_model_server``, to test the serving clients end to end.

The model server binary cannot be installed here, so this implements the two predict routes the
clients use, on top of ``tf.saved_model.load``, following TF Serving's own rules:

* gRPC ``tensorflow.serving.PredictionService``: ``Predict`` (``PredictRequest`` ->
  ``PredictResponse``, ``model_spec`` with name / version / signature_name, ``output_filter``) and
  ``GetModelMetadata`` (``signature_def``), errors as gRPC status codes with the server's message;
* REST: ``POST /v1/models/<name>[/versions/<v>]:predict`` with the row (``instances``) or columnar
  (``inputs``) JSON format, answered in the same format (``predictions`` / ``outputs``), errors as
  ``{"error": "<message>"}`` with the HTTP status of the gRPC code; ``GET /v1/models/<name>
  [/versions/<v>]`` (status) and ``.../metadata``.

The JSON rules follow TF Serving's ``json_tensor.cc``: a single named input may be given as a bare
value, several need objects with exactly the signature's keys; every instance must have the same
shape; ints are refused where a float is not expected and the reverse is allowed; float32 outputs
are written in their shortest round-trip form; row-format outputs must share one batch size. It is
a test double: one process, no batching, no version polling, no string/base64 tensors. It binds
to ``127.0.0.1`` port 0 (a free port) and serves only that loopback address.

    with ServingStandIn({"sinusoid": "exports/sinusoid"}) as server:
        RestClient(server.rest_url, "sinusoid").predict({"x": [[0.5]]})
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, predict_pb2,
                                     prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

HTTP_STATUS = {  # grpc code -> HTTP status, as TF Serving's REST handler maps them
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504, grpc.StatusCode.INTERNAL: 500}
# TF's DataTypeString names, used in TF Serving's messages.
TYPE_NAMES = {tf.float32: "float", tf.float64: "double", tf.int32: "int32", tf.int64: "int64",
              tf.bool: "bool", tf.string: "string", tf.int8: "int8", tf.int16: "int16",
              tf.uint8: "uint8"}


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def read_models_config(path: str) -> dict[str, tuple[str, str, int]]:
    """``models.config`` (text ``ModelServerConfig``) -> ``{name: (base_path, policy, n)}``."""
    with open(path) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    out = {}
    for c in config.model_config_list.config:
        if c.model_platform not in ("", "tensorflow"):
            raise ValueError(f"model {c.name!r}: platform {c.model_platform!r} is not tensorflow")
        policy = c.model_version_policy.WhichOneof("policy_choice") or "latest"
        n = c.model_version_policy.latest.num_versions or 1
        out[c.name] = (c.base_path, policy, n)
    return out


class _Model:
    """One model directory (``<base>/<name>``): its versions, loaded on first use."""

    def __init__(self, name, base_path, policy="latest", num_versions=1):
        self.name, self.base_path, self.policy, self.num_versions = name, base_path, policy, num_versions
        self._loaded: dict[int, tuple] = {}
        self._lock = threading.Lock()

    def versions(self) -> list[int]:
        found = sorted(int(d) for d in os.listdir(self.base_path)
                       if d.isdigit() and os.path.isfile(os.path.join(self.base_path, d, "saved_model.pb")))
        return found if self.policy == "all" else found[-self.num_versions:]

    def get(self, version: int | None):
        versions = self.versions()
        if version is None:
            if not versions:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Latest({self.name})")
            version = versions[-1]
        elif version not in versions:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({self.name}, {version})")
        with self._lock:
            if version not in self._loaded:
                path = os.path.join(self.base_path, str(version))
                proto = saved_model_pb2.SavedModel()
                with open(os.path.join(path, "saved_model.pb"), "rb") as f:
                    proto.ParseFromString(f.read())
                graph = next(m for m in proto.meta_graphs if set(m.meta_info_def.tags) == {"serve"})
                self._loaded[version] = (tf.saved_model.load(path, tags=["serve"]), graph)
            return version, *self._loaded[version]


class ServingStandIn:
    """Serves SavedModels over gRPC and REST on loopback ports chosen by the OS.

    Args:
      models: ``{name: model_base_path}`` (each holding integer version directories) or the path
        of a ``models.config``.
      delay_s: sleep this long in every request (to test client timeouts).
    """

    def __init__(self, models: dict | str, delay_s: float = 0.0):
        if isinstance(models, str):
            entries = read_models_config(models)
        else:
            entries = {name: (path, "latest", 1) for name, path in models.items()}
        self.models = {name: _Model(name, *entry) for name, entry in entries.items()}
        self.delay_s = delay_s
        self.num_predicts = 0  # predict calls that reached a model (to show client-side refusals)
        self._grpc = self._http = None

    # -- the predict core shared by both front ends --------------------------------------------------
    def _model(self, name: str) -> _Model:
        if name not in self.models:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({name})")
        return self.models[name]

    def signature(self, name, version, signature_name):
        version, loaded, graph = self._model(name).get(version)
        key = signature_name or "serving_default"
        if key not in graph.signature_def or key not in loaded.signatures:
            raise _invalid(f'Serving signature name: "{key}" not found in signature def')
        return version, loaded.signatures[key], graph.signature_def[key]

    def predict(self, name, version, signature_name, inputs: dict, output_filter=()):
        """Runs one signature on numpy inputs; returns ``(version, {output: ndarray})``."""
        self.num_predicts += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        version, fn, sig = self.signature(name, version, signature_name)
        expected = set(sig.inputs)
        sent = set(inputs)
        if len(sent) != len(expected):
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")
        for key in sorted(sent - expected):
            raise _invalid(f"input tensor alias not found in signature: {key}. Inputs expected to "
                           f"be in the set {{{','.join(sorted(expected))}}}.")
        feeds = {}
        for i, key in enumerate(sorted(inputs)):
            want = tf.dtypes.as_dtype(sig.inputs[key].dtype)
            value = np.asarray(inputs[key])
            got = tf.dtypes.as_dtype(value.dtype)
            if got != want:
                raise _invalid(f"Expects arg[{i}] to be {TYPE_NAMES.get(want, want.name)} but "
                               f"{TYPE_NAMES.get(got, got.name)} is provided")
            feeds[key] = tf.constant(value, want)
        for key in output_filter:
            if key not in sig.outputs:
                raise _invalid(f"output tensor alias not found in signature: {key} Outputs expected "
                               f"to be in the set {{{','.join(sorted(sig.outputs))}}}.")
        try:
            out = fn(**feeds)
        except tf.errors.OpError as err:
            raise ServingError(grpc.StatusCode(_GRPC_CODES.get(err.error_code,
                                                               grpc.StatusCode.INTERNAL)),
                               err.message) from None
        except (TypeError, ValueError) as err:  # shape does not match the signature's spec
            raise _invalid(str(err).splitlines()[0]) from None
        keys = output_filter or sorted(out)
        return version, {k: out[k].numpy() for k in keys}

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "ServingStandIn":
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._grpc.start()
        handler = type("Handler", (_RestHandler,), {"standin": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self.rest_port = self._http.server_address[1]
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self._grpc is not None:
            self._grpc.stop(grace=None)
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self._grpc = self._http = None

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_GRPC_CODES = {getattr(tf.errors, n): getattr(grpc.StatusCode, n) for n in (
    "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED")}


# -- gRPC -------------------------------------------------------------------------------------------
class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, standin: ServingStandIn):
        self.standin = standin

    def Predict(self, request, context):  # noqa: N802 -- the service's method name
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        try:
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            version, out = self.standin.predict(spec.name, version, spec.signature_name, inputs,
                                                tuple(request.output_filter))
        except ServingError as err:
            context.abort(err.code, err.message)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for k, v in out.items():
            response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
        return response

    def GetModelMetadata(self, request, context):  # noqa: N802
        spec = request.model_spec
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          "Metadata field(s) not supported: only signature_def is")
        try:
            version = spec.version.value if spec.HasField("version") else None
            version, _, graph = self.standin._model(spec.name).get(version)
        except ServingError as err:
            context.abort(err.code, err.message)
        return _metadata_response(spec.name, version, graph)


def _metadata_response(name, version, graph):
    sigs = get_model_metadata_pb2.SignatureDefMap()
    for key, sd in graph.signature_def.items():
        if key != "__saved_model_init_op":
            sigs.signature_def[key].CopyFrom(sd)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.metadata["signature_def"].Pack(sigs)
    return response


# -- REST -------------------------------------------------------------------------------------------
_ROUTE = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+))?(:predict|/metadata)?$")


def _json_type(v) -> str:
    if v is None:
        return "Null"
    if isinstance(v, bool):
        return "True" if v else "False"
    return {dict: "Object", list: "Array", str: "String"}.get(type(v), "Number")


def _json_text(v) -> str:
    return json.dumps(v, separators=(",", ":"))


def _leaf(v, dtype: tf.DType):
    """One JSON scalar as a value of ``dtype``, with TF Serving's type rules (AddValueToTensor)."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if dtype.is_floating:
        ok = number
    elif dtype.is_integer:
        ok = isinstance(v, int) and not isinstance(v, bool)
    elif dtype == tf.bool:
        ok = isinstance(v, bool)
    else:
        ok = isinstance(v, str)
    if not ok:
        raise _invalid(f"JSON Value: {_json_text(v)} Type: {_json_type(v)} is not of expected "
                       f"type: {TYPE_NAMES.get(dtype, dtype.name)}")
    if dtype == tf.float32 and number and abs(v) > np.finfo(np.float32).max and np.isfinite(v):
        raise _invalid(f"Cannot convert JSON value: {_json_text(v)} to float without loss of "
                       "precision.")
    return v


def _json_to_array(value, dtype: tf.DType) -> np.ndarray:
    """A JSON value (scalar or nested lists) -> ndarray, shape from the first element at each level
    and every list checked against it (FillTensorProto)."""
    shape = []
    v = value
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    flat = []

    def fill(v, level):
        if not isinstance(v, list):
            if level != len(shape):
                raise _invalid(f"JSON Value: {_json_text(v)} found at incorrect level: {level + 1} in "
                               f"the JSON DOM. Expected at level: {len(shape)}")
            if isinstance(v, dict):
                raise _invalid(f"JSON Value: {_json_text(v)} Type: Object is not of expected type: "
                               f"{TYPE_NAMES.get(dtype, dtype.name)}")
            flat.append(_leaf(v, dtype))
            return
        if level >= len(shape):
            raise _invalid(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
        if len(v) != shape[level]:
            raise _invalid(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                           f"expected size: {shape[level]}")
        for item in v:
            fill(item, level + 1)

    fill(value, 0)
    return np.array(flat, dtype=dtype.as_numpy_dtype).reshape(shape)


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _parse_request(body: bytes, standin: ServingStandIn, name: str, version):
    """The JSON body -> (signature name, {input: ndarray}, format) by TF Serving's rules."""
    text = body.decode("utf-8", errors="replace")
    if not text.strip():
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise _invalid(f"JSON Parse error: {err.msg} at offset: {err.pos}") from None
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {_json_text(doc)} Is not object")
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _invalid(f"JSON Value: {_json_text(doc)} not formatted correctly. 'signature_name' "
                       "key must be a string value.")
    _, _, sig = standin.signature(name, version, signature_name)
    info = {k: tf.dtypes.as_dtype(v.dtype) for k, v in sorted(sig.inputs.items())}
    if not info:
        raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    if "instances" in doc and "inputs" in doc:
        raise _invalid(f"JSON Value: {_json_text(doc)} Not formatted correctly expecting only one "
                       "of 'inputs' or 'instances' keys to exist ")
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _invalid(f"JSON Value: {_json_text(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise _invalid(f"JSON Value: {_json_text(doc)} No values in 'instances' array")
        return signature_name, _rows_to_arrays(instances, info), "row"
    if "inputs" in doc:
        value = doc["inputs"]
        if not isinstance(value, dict):
            if len(info) > 1:
                raise _invalid("inputs is a plain value/list, but expecting an object as multiple "
                               "input tensors required as per tensorinfo_map")
            key = next(iter(info))
            return signature_name, {key: _json_to_array(value, info[key])}, "columnar"
        arrays = {}
        for key, dtype in info.items():
            if key not in value:
                raise _invalid(f"Missing named input: {key} in 'inputs' object.")
            arrays[key] = _json_to_array(value[key], dtype)
        return signature_name, arrays, "columnar"
    raise _invalid("Missing 'inputs' or 'instances' key")


def _rows_to_arrays(instances: list, info: dict) -> dict:
    if not isinstance(instances[0], dict) and len(info) > 1:
        raise _invalid("instances is a plain list, but expecting list of objects as multiple input "
                       "tensors required as per tensorinfo_map")
    objects = isinstance(instances[0], dict)
    rows: dict[str, list] = {k: [] for k in info}
    for i, item in enumerate(instances):
        if objects != isinstance(item, dict):
            raise _invalid(f"Expecting object but got list at item {i} of input list" if objects
                           else f"Expecting value/list but got object at item {i} of input list")
        pairs = item.items() if objects else [(next(iter(info)), item)]
        for key, value in pairs:
            try:
                if key not in info:
                    raise _invalid(f"JSON object: does not have named input: {key}")
                arr = _json_to_array(value, info[key])
                if rows[key] and arr.shape != rows[key][0].shape:
                    first = rows[key][0]
                    raise _invalid(f"Expecting tensor size: {first.size} but got: {arr.size}"
                                   if arr.size != first.size else
                                   f"Expecting shape {_shape_text(first.shape)} but got: "
                                   f"{_shape_text(arr.shape)}")
            except ServingError as err:
                where = f" key: {key}" if objects else ""
                raise _invalid(f"Failed to process element: {i}{where} of 'instances' list. "
                               f"Error: INVALID_ARGUMENT: {err.message}") from None
            rows[key].append(arr)
        if objects and set(item) != set(info):
            raise _invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                           f"{_json_text(item)} must only have keys: {','.join(sorted(info))}")
    return {k: np.stack(v) for k, v in rows.items()}


def _to_json_value(arr: np.ndarray):
    """ndarray -> nested lists; float32 in its shortest round-trip decimal (like WriteDecimal)."""
    if arr.dtype == np.float32:
        flat = [float(np.format_float_positional(x, unique=True, trim="0")) if np.isfinite(x)
                else float(x) for x in arr.ravel()]
        return np.array(flat, dtype=np.float64).reshape(arr.shape).tolist()
    return arr.tolist()


def _response_json(out: dict, fmt: str) -> dict:
    if fmt == "columnar":
        values = {k: _to_json_value(v) for k, v in sorted(out.items())}
        return {"outputs": values if len(values) > 1 else next(iter(values.values()))}
    batch = 0
    for k, v in sorted(out.items()):
        if v.ndim == 0:
            raise _invalid(f"Tensor name: {k} has no shape information ")
        if v.shape[0] < 1:
            raise _invalid(f"Tensor name: {k} has invalid batch size: {v.shape[0]}")
        if batch and v.shape[0] != batch:
            raise _invalid(f"Tensor name: {k} has inconsistent batch size: {v.shape[0]} "
                           f"expecting: {batch}")
        batch = v.shape[0]
    values = {k: _to_json_value(v) for k, v in sorted(out.items())}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{k: values[k][i] for k in values} for i in range(batch)]}


class _RestHandler(BaseHTTPRequestHandler):
    standin: ServingStandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def setup(self):
        super().setup()
        # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's algorithm and
        # the client's delayed ACK add ~40 ms to every keep-alive request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, status: int, payload: dict):
        body = json.dumps(payload, indent=4).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
            self.close_connection = True

    def _error(self, err: ServingError):
        self._send(HTTP_STATUS.get(err.code, 500), {"error": err.message})

    def _route(self, method):
        match = _ROUTE.match(self.path)
        if not match:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Malformed request: {method} {self.path}")
        name, version, verb = match.groups()
        return name, None if version is None else int(version), verb

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            name, version, verb = self._route("POST")
            if verb != ":predict":
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: POST {self.path}")
            signature_name, inputs, fmt = _parse_request(body, self.standin, name, version)
            _, out = self.standin.predict(name, version, signature_name, inputs)
            self._send(200, _response_json(out, fmt))
        except ServingError as err:
            self._error(err)

    def do_GET(self):  # noqa: N802
        try:
            name, version, verb = self._route("GET")
            model = self.standin._model(name)
            if verb == ":predict":
                raise ServingError(grpc.StatusCode.NOT_FOUND, f"Malformed request: GET {self.path}")
            if verb == "/metadata":
                version, _, graph = model.get(version)
                self._send(200, json_format.MessageToDict(
                    _metadata_response(name, version, graph), preserving_proto_field_name=True))
                return
            versions = model.versions() if version is None else [model.get(version)[0]]
            self._send(200, {"model_version_status": [
                {"version": str(v), "state": "AVAILABLE",
                 "status": {"error_code": "OK", "error_message": ""}} for v in reversed(versions)]})
        except ServingError as err:
            self._error(err)


# -- the exported model kinds the serving tests serve ----------------------------------------------
def build_exports(base: str, seed: int = 0) -> dict:
    """Writes one small export of every kind under ``base`` (TF Serving layout) and returns
    ``{name: {"path", "adapt": inputs, "act": inputs or None, "default": inputs}}``.

    Kinds: the regressor and the Gaussian and categorical policies always; the Q-network
    (``export.qnetwork``) and the recurrent policy (``export.recurrent``) when those modules exist.
    """
    import keras

    from export.layout import write_versioned
    from export.policy import AdaptablePolicy
    from metarl_tf import adaptation
    from metarl_tf.adaptable import AdaptableRegressor
    from metarl_tf.networks import categorical_mlp_policy, gaussian_mlp_policy
    from metarl_tf.params import FunctionalModel

    rng = np.random.default_rng(seed)
    f32 = np.float32
    out = {}
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, "relu"),
                              keras.layers.Dense(16, "relu"), keras.layers.Dense(1)])
    fm = FunctionalModel(model)
    path = write_versioned(base, "sinusoid", lambda d: AdaptableRegressor(
        fm, fm.params(), adaptation.SGD(0.01), max_num_steps=20).save(d))
    xs = rng.uniform(-5, 5, (10, 1)).astype(f32)
    out["sinusoid"] = {"path": path, "default": {"x": rng.uniform(-5, 5, (4, 1)).astype(f32)},
                       "adapt": {"support_x": xs, "support_y": np.sin(xs).astype(f32),
                                 "query_x": rng.uniform(-5, 5, (5, 1)).astype(f32),
                                 "num_steps": np.int32(5)}, "act": None}
    for name, policy, actions in (
            ("gaussian_policy", gaussian_mlp_policy(2, 2, hidden=(16, 16), seed=1),
             rng.normal(size=(4, 6, 2)).astype(f32)),
            ("categorical_policy", categorical_mlp_policy(3, 4, hidden=(16,), seed=2),
             rng.integers(0, 4, (4, 6)).astype(np.int32))):
        params = [tf.convert_to_tensor(v) for v in policy.trainable_variables]
        path = write_versioned(base, name, lambda d, p=policy, v=params: AdaptablePolicy(
            p, v, adaptation.SGD(0.1), max_num_steps=10).save(d))
        obs_dim = int(policy.inputs[0].shape[-1])
        out[name] = {"path": path,
                     "default": {"observation": rng.normal(size=(3, obs_dim)).astype(f32)},
                     "adapt": {"observations": rng.normal(size=(4, 6, obs_dim)).astype(f32),
                               "actions": actions, "rewards": rng.normal(size=(4, 6)).astype(f32),
                               "mask": np.ones((4, 6), f32), "num_steps": np.int32(2)},
                     "act": {"observation": rng.normal(size=(3, obs_dim)).astype(f32)}}
    try:  # Meta-DQN's export (H4), when present in this checkout
        from export.qnetwork import AdaptableQNetwork
        from metarl_tf.networks.q_network import TaskConditionedQNetwork
    except ImportError:
        AdaptableQNetwork = None
    if AdaptableQNetwork is not None:
        net = TaskConditionedQNetwork(3, 2, z_dim=4, hidden=(16, 16), seed=3)
        z_init = rng.normal(size=4).astype(f32) * 0.1
        path = write_versioned(base, "q_network", lambda d: AdaptableQNetwork(
            net, [tf.convert_to_tensor(v) for v in net.trainable_variables], z_init,
            adaptation.PerParameterSGD([tf.fill([4], 0.5)]), discount=0.9, max_num_steps=10).save(d))
        out["q_network"] = {
            "path": path, "default": {"observation": rng.normal(size=(3, 3)).astype(f32)},
            "adapt": {"observations": rng.normal(size=(8, 3)).astype(f32),
                      "actions": rng.integers(0, 2, 8).astype(np.int32),
                      "rewards": rng.normal(size=8).astype(f32),
                      "next_observations": rng.normal(size=(8, 3)).astype(f32),
                      "dones": (rng.uniform(size=8) < 0.2).astype(f32), "num_steps": np.int32(3)},
            "act": {"observation": rng.normal(size=(3, 3)).astype(f32)}}
    try:  # RL²'s export (H3), when present
        from export.recurrent import AdaptiveRecurrentPolicy
        from metarl_tf.networks.recurrent import recurrent_policy, rl2_input_dim
    except ImportError:
        AdaptiveRecurrentPolicy = None
    if AdaptiveRecurrentPolicy is not None:
        policy = recurrent_policy(rl2_input_dim(1, 3), num_actions=3, units=8, seed=4)
        path = write_versioned(base, "rl2_policy",
                               lambda d: AdaptiveRecurrentPolicy(policy, obs_dim=1).save(d))
        steps, batch = 4, 2
        out["rl2_policy"] = {
            "path": path, "recurrent": True,
            "default": None,
            "adapt": {"observation": np.zeros((steps, batch, 1), f32),
                      "prev_action": np.concatenate([np.full((1, batch), -1), rng.integers(
                          0, 3, (steps - 1, batch))]).astype(np.int32),
                      "prev_reward": rng.normal(size=(steps, batch)).astype(f32),
                      "done": np.zeros((steps, batch), f32)},
            "act": {"observation": np.zeros((batch, 1), f32),
                    "prev_action": rng.integers(0, 3, batch).astype(np.int32),
                    "prev_reward": rng.normal(size=batch).astype(f32),
                    "done": np.zeros(batch, f32)}}
    return out


_SHARED: dict = {}


def shared_exports(tmp_path_factory) -> tuple[str, dict]:
    """``(base, build_exports(base))`` built once per test process (the serving test modules share
    it: writing the SavedModels is the slow part)."""
    if "exports" not in _SHARED:
        base = str(tmp_path_factory.mktemp("serving_exports"))
        _SHARED["exports"] = (base, build_exports(base))
    return _SHARED["exports"]
