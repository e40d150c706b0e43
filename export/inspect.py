"""Read a SavedModel's signatures and check them against what TF Serving requires.

``metarl inspect SAVEDMODEL`` prints every signature (like ``saved_model_cli show --all``, one line
per tensor) and runs ``check_saved_model``; it exits non-zero when a check fails. The check reads
``saved_model.pb`` only (no TensorFlow session), so it also explains models that fail to load::

    report = check_saved_model("exports/sinusoid/1")
    assert report.ok, report.failures

What is checked, and why (TF Serving's model server and its REST/gRPC predict API):

* a MetaGraph tagged exactly ``{serve}`` (the server's default ``--saved_model_tags``);
* a ``serving_default`` signature (the one a request without ``signature_name`` gets);
* every signature uses the predict method ``tensorflow/serving/predict``;
* every signature has named inputs and outputs, each a dense tensor with a dtype the REST JSON
  codec can read and write (float, double, (u)int8-64, bool, string);
* every shape has a known rank, and every tensor of rank >= 2 has a batch dimension of -1;
* no Python ops (``PyFunc``, ``PyFuncStateless``, ``EagerPyFunc``: the server has no Python) and
  no op unknown to TensorFlow's registry (a custom op the server would not have).

Not a failure but a requirement on the server, listed in ``CheckReport.requirements``: a graph with
functions XLA must compile (``jit_compile=True``: the ``_XlaMustCompile`` attribute, e.g. an
``AdaptableRegressor`` exported with ``jit_compile``) runs only on a TF Serving with its XLA JIT on
(``--xla_cpu_compilation_enabled=true`` on CPU; without it the first call of such a signature
fails, the others still serve).
"""
from __future__ import annotations

import dataclasses
import json
import os

PREDICT_METHOD = "tensorflow/serving/predict"
SERVE_TAG = "serve"
DEFAULT_SIGNATURE = "serving_default"
# Not a servable signature: tf.saved_model.save's hook for initialisation (TF Serving skips it).
INIT_OP_KEY = "__saved_model_init_op"
PYTHON_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc"})
# dtypes TF Serving's REST JSON codec converts both ways (json_tensor.cc); gRPC takes any.
JSON_DTYPES = frozenset({"float32", "float64", "int8", "int16", "int32", "int64", "uint8",
                         "uint32", "uint64", "bool", "string"})


@dataclasses.dataclass(frozen=True)
class TensorSpecInfo:
    """One named input or output of a signature."""

    key: str  # The name a client uses (the signature's map key).
    dtype: str  # e.g. "float32".
    shape: tuple[int, ...] | None  # -1 for an unknown dimension; None for an unknown rank.
    dense: bool  # False for sparse / composite tensors.

    def shape_text(self) -> str:
        return "<unknown rank>" if self.shape is None else "[" + ", ".join(map(str, self.shape)) + "]"


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
    name: str
    method: str
    inputs: tuple[TensorSpecInfo, ...]
    outputs: tuple[TensorSpecInfo, ...]


@dataclasses.dataclass(frozen=True)
class CheckReport:
    """The result of ``check_saved_model``: every check that ran, and the failed ones."""

    path: str
    passed: tuple[str, ...]
    failures: tuple[str, ...]
    requirements: tuple[str, ...] = ()  # What the server must provide beyond a stock TF Serving.

    @property
    def ok(self) -> bool:
        return not self.failures


def _read_proto(path: str):
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(path, "saved_model.pb")
    if not os.path.isfile(pb):
        raise FileNotFoundError(f"{path} is not a SavedModel directory (no saved_model.pb); give a "
                                "version directory such as exports/<name>/1")
    proto = saved_model_pb2.SavedModel()
    with open(pb, "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _dtype_name(enum: int) -> str:
    import tensorflow as tf

    try:
        return tf.dtypes.as_dtype(enum).name
    except TypeError:
        return f"<invalid dtype {enum}>"


def _tensor_info(key: str, info) -> TensorSpecInfo:
    shape = None if info.tensor_shape.unknown_rank else tuple(
        int(d.size) for d in info.tensor_shape.dim)
    return TensorSpecInfo(key, _dtype_name(info.dtype), shape, info.WhichOneof("encoding") == "name")


def _serve_graph(proto):
    for mg in proto.meta_graphs:
        if set(mg.meta_info_def.tags) == {SERVE_TAG}:
            return mg
    return None


def read_signatures(path: str) -> dict[str, SignatureInfo]:
    """The signatures of the ``serve`` MetaGraph of the SavedModel at ``path``, by name."""
    proto = _read_proto(path)
    mg = _serve_graph(proto) or (proto.meta_graphs[0] if proto.meta_graphs else None)
    if mg is None:
        return {}
    out = {}
    for name in sorted(mg.signature_def):
        if name == INIT_OP_KEY:
            continue
        sd = mg.signature_def[name]
        out[name] = SignatureInfo(
            name, sd.method_name,
            tuple(_tensor_info(k, sd.inputs[k]) for k in sorted(sd.inputs)),
            tuple(_tensor_info(k, sd.outputs[k]) for k in sorted(sd.outputs)))
    return out


def _ops(mg) -> tuple[set, set]:
    """(ops used anywhere in the graph and its function library, names of library functions)."""
    ops = {n.op for n in mg.graph_def.node}
    functions = set()
    for fn in mg.graph_def.library.function:
        functions.add(fn.signature.name)
        ops.update(n.op for n in fn.node_def)
    return ops, functions


def xla_functions(mg) -> list[str]:
    """Names of the library functions marked for XLA compilation (``_XlaMustCompile`` true)."""
    return sorted(fn.signature.name for fn in mg.graph_def.library.function
                  if "_XlaMustCompile" in fn.attr and fn.attr["_XlaMustCompile"].b)


def check_saved_model(path: str) -> CheckReport:
    """Checks the SavedModel at ``path`` against TF Serving's requirements (see module docstring).

    Raises:
      FileNotFoundError: ``path`` holds no ``saved_model.pb``.
    """
    from tensorflow.python.framework import op_def_registry

    proto = _read_proto(path)
    passed, failures = [], []

    def check(ok: bool, what: str, failure: str):
        (passed if ok else failures).append(what if ok else failure)

    mg = _serve_graph(proto)
    tags = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    check(mg is not None, "MetaGraph tagged {serve}",
          f"no MetaGraph tagged exactly {{serve}} (tag sets found: {tags})")
    if mg is None:
        return CheckReport(path, tuple(passed), tuple(failures))
    sigs = read_signatures(path)
    check(DEFAULT_SIGNATURE in sigs, "serving_default present",
          f"no `{DEFAULT_SIGNATURE}` signature (found: {sorted(sigs)}); a request without "
          "signature_name would fail")
    for sig in sigs.values():
        where = f"signature `{sig.name}`"
        check(sig.method == PREDICT_METHOD, f"{where}: method {PREDICT_METHOD}",
              f"{where}: method is {sig.method!r}, TF Serving's predict API needs {PREDICT_METHOD!r}")
        check(bool(sig.inputs), f"{where}: has inputs", f"{where}: has no inputs")
        check(bool(sig.outputs), f"{where}: has outputs", f"{where}: has no outputs")
        for kind, tensors in (("input", sig.inputs), ("output", sig.outputs)):
            for t in tensors:
                name = f"{where} {kind} `{t.key}`"
                check(bool(t.key.strip()), f"{name}: named", f"{where} has an {kind} with an empty name")
                check(t.dense, f"{name}: dense", f"{name} is not a dense tensor (sparse/composite "
                      "tensors have no REST JSON form)")
                check(t.dtype in JSON_DTYPES, f"{name}: dtype {t.dtype}",
                      f"{name} has dtype {t.dtype}, which TF Serving's REST JSON cannot carry "
                      f"(allowed: {sorted(JSON_DTYPES)})")
                if t.shape is None:
                    failures.append(f"{name} has an unknown rank; give it a fixed rank")
                elif len(t.shape) >= 2:
                    check(t.shape[0] == -1, f"{name}: batch dimension -1",
                          f"{name} has shape {t.shape_text()}: its leading (batch) dimension must "
                          "be -1 so any batch size is served")
                else:
                    passed.append(f"{name}: rank {len(t.shape)}")
    ops, functions = _ops(mg)
    python_ops = sorted(ops & PYTHON_OPS)
    check(not python_ops, "no Python ops",
          f"the graph uses Python ops {python_ops} (tf.py_function / tf.numpy_function): TF Serving "
          "has no Python interpreter")
    unknown = sorted(op for op in ops - functions - PYTHON_OPS if op_def_registry.get(op) is None)
    check(not unknown, "every op registered in TensorFlow",
          f"ops unknown to TensorFlow's registry (custom ops the server lacks): {unknown}")
    xla = xla_functions(mg)
    requirements = (f"XLA JIT: {len(xla)} function(s) must be compiled by XLA (jit_compile); TF "
                    "Serving needs --xla_cpu_compilation_enabled=true on CPU",) if xla else ()
    return CheckReport(path, tuple(passed), tuple(failures), requirements)


def read_metadata(path: str) -> dict | None:
    """``assets.extra/metarl_tf.json`` of a metarl-tf export, or None."""
    meta = os.path.join(path, "assets.extra", "metarl_tf.json")
    if not os.path.isfile(meta):
        return None
    with open(meta) as f:
        return json.load(f)


def format_signatures(path: str) -> str:
    """Every signature of the SavedModel, readably: one line per named tensor."""
    proto = _read_proto(path)
    lines = [f"SavedModel {path}",
             "  tag sets: " + "; ".join(",".join(sorted(m.meta_info_def.tags))
                                        for m in proto.meta_graphs)]
    meta = read_metadata(path)
    if meta:
        lines.append("  metarl_tf: " + ", ".join(
            f"{k}={v}" for k, v in meta.items() if not isinstance(v, (list, dict))))
    for sig in read_signatures(path).values():
        lines.append(f"\nsignature {sig.name!r}  ({sig.method})")
        width = max([len(t.key) for t in sig.inputs + sig.outputs] + [4])
        for kind, tensors in (("inputs", sig.inputs), ("outputs", sig.outputs)):
            lines.append(f"  {kind}:")
            for t in tensors:
                dense = "" if t.dense else "  (not dense)"
                lines.append(f"    {t.key:<{width}}  {t.dtype:<8} {t.shape_text()}{dense}")
    return "\n".join(lines)


def inspect(path: str, load: bool = True) -> tuple[str, CheckReport]:
    """The text ``metarl inspect`` prints, and the check report.

    With ``load``, also loads the SavedModel with ``tf.saved_model.load`` (a failure to load is a
    failed check).
    """
    text = format_signatures(path)
    report = check_saved_model(path)
    if load:
        import tensorflow as tf

        try:
            tf.saved_model.load(path)
            report = dataclasses.replace(report, passed=report.passed + ("loads with tf.saved_model.load",))
        except Exception as err:  # noqa: BLE001 -- reported as a failed check, never swallowed
            report = dataclasses.replace(report, failures=report.failures + (
                f"tf.saved_model.load fails: {type(err).__name__}: {str(err)[:300]}",))
    lines = [text, "", f"TF Serving check: {len(report.passed)} passed, "
             f"{len(report.failures)} failed"]
    lines += [f"  FAIL {f}" for f in report.failures]
    lines += [f"  REQUIRES {r}" for r in report.requirements]
    return "\n".join(lines), report
