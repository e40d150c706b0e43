"""Adaptable SavedModels: TensorFlow-only round trip, equality with the library, bad input, layout."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from export import export_learner, write_versioned
from metarl_tf import adaptation
from metarl_tf.algorithms import MAMLConfig, MAMLLearner, MetaSGDConfig, MetaSGDLearner
from metarl_tf.networks import mlp
from metarl_tf.params import mse
from metarl_tf.tasks import SinusoidTasks

PY_FUNC_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


@pytest.fixture(scope="module")
def trained():
    """A briefly trained MAML and Meta-SGD learner, each exported once."""
    import tempfile
    base = tempfile.mkdtemp()
    out = {}
    for name, learner in (
            ("maml", MAMLLearner(mlp(1, 1), SinusoidTasks(), MAMLConfig(), seed=1)),
            ("metasgd", MetaSGDLearner(mlp(1, 1), SinusoidTasks(), MetaSGDConfig(), seed=1))):
        learner.train(200)
        out[name] = (learner, export_learner(learner, base, name))
    return out


def task_data(seed=0, k=10, q=25):
    rng = np.random.default_rng(seed)
    amp, phase = rng.uniform(0.1, 5), rng.uniform(0, np.pi)
    xs = rng.uniform(-5, 5, (k, 1)).astype(np.float32)
    xq = rng.uniform(-5, 5, (q, 1)).astype(np.float32)
    return xs, (amp * np.sin(xs - phase)).astype(np.float32), xq


def library_adapt(learner, xs, ys, xq, steps):
    f = learner.fmodel
    loss = lambda p: mse(f.apply_batched(p, xs[None]), ys[None])
    adapted = adaptation.adapt(loss, f.tile(f.params(), 1), learner.update_rule(), steps)
    return f.apply_batched(adapted.params, xq[None])[0].numpy()


def max_steps(path):
    with open(os.path.join(path, "assets.extra", "metarl_tf.json")) as f:
        return json.load(f)["max_num_steps"]


def call_adapt(model, xs, ys, xq, steps):
    return model.signatures["adapt"](support_x=tf.constant(xs), support_y=tf.constant(ys),
                                     query_x=tf.constant(xq),
                                     num_steps=tf.constant(steps, tf.int32))["y"].numpy()


@pytest.mark.parametrize("algo", ["maml", "metasgd"])
@pytest.mark.parametrize("steps", [0, 1, 5])
def test_adapt_signature_equals_library_adaptation(trained, algo, steps):
    learner, path = trained[algo]
    model = tf.saved_model.load(path)
    xs, ys, xq = task_data(steps)
    bound = max_steps(path)
    if steps > bound:  # the export validated fewer steps (export.step_bounds): refused by name
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"num_steps must be <= max_num_steps \({bound}\): the largest"):
            call_adapt(model, xs, ys, xq, steps)
    else:
        np.testing.assert_allclose(call_adapt(model, xs, ys, xq, steps),
                                   library_adapt(learner, xs, ys, xq, steps), atol=1e-5, rtol=1e-5)
    y0 = model.signatures["serving_default"](x=tf.constant(xq))["y"].numpy()
    np.testing.assert_allclose(y0, learner.model(xq).numpy(), atol=1e-5, rtol=1e-5)


ROUND_TRIP = r"""
import json, sys
for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None
import numpy as np, tensorflow as tf
assert "keras" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
d = json.load(open(sys.argv[2]))
m = tf.saved_model.load(sys.argv[1])
y = m.signatures["adapt"](support_x=tf.constant(d["xs"], tf.float32), support_y=tf.constant(d["ys"], tf.float32),
                          query_x=tf.constant(d["xq"], tf.float32),
                          num_steps=tf.constant(d["steps"]))["y"]
print(json.dumps(y.numpy().tolist()))
"""


def test_export_loads_and_adapts_with_tensorflow_alone(trained, tmp_path):
    learner, path = trained["metasgd"]
    xs, ys, xq = task_data(7)
    data = tmp_path / "data.json"
    steps = min(3, max_steps(path))  # within the export's validated bound
    assert steps >= 1
    data.write_text(json.dumps({"xs": xs.tolist(), "ys": ys.tolist(), "xq": xq.tolist(),
                                "steps": steps}))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", ROUND_TRIP, path, str(data)], capture_output=True,
                         text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    y = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(y, library_adapt(learner, xs, ys, xq, steps), atol=1e-5, rtol=1e-5)


def test_saved_model_has_no_python_ops_and_serving_structure(trained):
    _, path = trained["maml"]
    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    (meta,) = sm.meta_graphs
    assert "serve" in meta.meta_info_def.tags
    ops = {n.op for n in meta.graph_def.node}
    for fn in meta.graph_def.library.function:
        ops |= {n.op for n in fn.node_def}
    assert not ops & PY_FUNC_OPS
    assert {"serving_default", "adapt"} <= set(meta.signature_def)
    adapt = meta.signature_def["adapt"]
    assert adapt.method_name == "tensorflow/serving/predict"
    assert set(adapt.inputs) == {"support_x", "support_y", "query_x", "num_steps"}
    assert set(adapt.outputs) == {"y"}
    dims = lambda t: [d.size for d in t.tensor_shape.dim]
    assert dims(adapt.inputs["support_x"]) == [-1, 1] and dims(adapt.outputs["y"]) == [-1, 1]
    assert dims(adapt.inputs["num_steps"]) == []
    assert adapt.inputs["num_steps"].dtype == tf.int32.as_datatype_enum
    meta_json = json.load(open(os.path.join(path, "assets.extra", "metarl_tf.json")))
    assert meta_json["kind"] == "AdaptableRegressor"
    # the CLI's default 1000, lowered to what the validation tasks support
    assert meta_json["step_bound"]["requested"] == 1000 and meta_json["step_bound"]["validated"]
    assert 1 <= meta_json["max_num_steps"] <= 1000


@pytest.mark.parametrize("bad,match", [
    ({"support_y": np.zeros((4, 1), np.float32)}, "support_x and support_y must have the same number of rows"),
    ({"support_x": np.zeros((10, 2), np.float32)}, "support_x"),
    ({"query_x": np.zeros((5, 3), np.float32)}, "query_x"),
    ({"support_x": np.zeros((0, 1), np.float32), "support_y": np.zeros((0, 1), np.float32)},
     "support_x must have at least one row"),
    ({"steps": -1}, "num_steps must be >= 0"),
    ({"steps": 1001}, "num_steps must be <= max_num_steps"),
    ({"support_y": np.full((10, 1), np.nan, np.float32)}, "support_y must be finite"),
])
def test_bad_input_names_the_input_and_the_model_keeps_working(trained, bad, match):
    learner, path = trained["maml"]
    model = tf.saved_model.load(path)
    xs, ys, xq = task_data(3)
    args = {"xs": bad.get("support_x", xs), "ys": bad.get("support_y", ys),
            "xq": bad.get("query_x", xq), "steps": bad.get("steps", 2)}
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        call_adapt(model, args["xs"], args["ys"], args["xq"], args["steps"])
    np.testing.assert_allclose(call_adapt(model, xs, ys, xq, 2),
                               library_adapt(learner, xs, ys, xq, 2), atol=1e-5, rtol=1e-5)


def test_versions_increase_and_are_never_overwritten(tmp_path):
    written = []
    write = lambda d: (open(os.path.join(d, "f"), "w").write("x"), written.append(d))
    assert write_versioned(str(tmp_path), "m", write).endswith(os.path.join("m", "1"))
    assert write_versioned(str(tmp_path), "m", write).endswith(os.path.join("m", "2"))
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_versioned(str(tmp_path), "m", write, version=1)
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]  # no temp dir left behind


def test_a_failed_export_leaves_nothing(tmp_path):
    def explode(d):
        open(os.path.join(d, "partial"), "w").write("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_versioned(str(tmp_path), "m", explode)
    assert os.listdir(tmp_path / "m") == []
    with pytest.raises(ValueError, match="`name`"):
        write_versioned(str(tmp_path), "../evil", explode)
