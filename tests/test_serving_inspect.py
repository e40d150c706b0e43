"""`metarl inspect`: signatures printed readably, TF Serving's structural requirements checked."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from export.inspect import check_saved_model, format_signatures, inspect, read_signatures
from serving_standin import shared_exports
from training.cli import main


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return shared_exports(tmp_path_factory)[1]


def save(tmp_path, name, module, signatures):
    path = str(tmp_path / name)
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def test_every_export_passes(exports):
    for name, ex in exports.items():
        report = check_saved_model(ex["path"])
        assert report.ok, (name, report.failures)
        # the checks that matter all ran: tag, default signature, method, batch dims, no PyFunc
        text = "\n".join(report.passed)
        for what in ("MetaGraph tagged {serve}", "serving_default present",
                     "signature `serving_default`: method tensorflow/serving/predict",
                     "no Python ops",
                     "every op registered in TensorFlow"):
            assert what in text, (name, what)
    sigs = read_signatures(exports["gaussian_policy"]["path"])
    assert sorted(sigs) == ["action_with_params", "adapt", "serving_default"]  # no init op
    obs = next(t for t in sigs["adapt"].inputs if t.key == "observations")
    assert (obs.dtype, obs.shape) == ("float32", (-1, -1, 2))


def test_cli_prints_signatures_and_exits_zero(exports, repo_root):
    path = exports["sinusoid"]["path"]
    out = subprocess.run([sys.executable, "-m", "training.cli", "inspect", path],
                         capture_output=True, text=True, cwd=repo_root, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "signature 'adapt'  (tensorflow/serving/predict)" in lines
    # one line per tensor: name, dtype, shape
    assert any(line.split() == ["num_steps", "int32", "[]"] for line in lines)
    assert any(line.split() == ["support_x", "float32", "[-1,", "1]"] for line in lines)
    assert "TF Serving check:" in out.stdout and "0 failed" in out.stdout


class WithPyFunc(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serving_default(self, x):
        y = tf.numpy_function(lambda a: np.square(a), [x], tf.float32)  # PyFunc: no Python in TF Serving
        return {"y": tf.ensure_shape(y, [None, 2])}


class Plain(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def adapt(self, x):
        return {"y": x * 2.0}

    @tf.function(input_signature=[tf.TensorSpec([4, 2], tf.float32, name="x")])
    def fixed(self, x):
        return {"y": x + 1.0}


def test_pyfunc_op_fails_the_check_and_the_cli(tmp_path, capsys):
    m = WithPyFunc()
    path = save(tmp_path, "pyfunc", m, {"serving_default": m.serving_default})
    report = check_saved_model(path)
    assert not report.ok
    assert any("Python ops ['PyFunc']" in f for f in report.failures), report.failures
    assert main(["inspect", path, "--no-load"]) == 1
    assert "FAIL the graph uses Python ops ['PyFunc']" in capsys.readouterr().out


def test_missing_serving_default_and_fixed_batch_fail(tmp_path, capsys):
    m = Plain()
    path = save(tmp_path, "plain", m, {"adapt": m.adapt, "fixed": m.fixed})
    report = check_saved_model(path)
    failures = "\n".join(report.failures)
    assert "no `serving_default` signature (found: ['adapt', 'fixed'])" in failures
    # [4, 2]: rank 2 with a fixed leading dimension is not servable at any batch size
    assert "signature `fixed` input `x` has shape [4, 2]: its leading (batch) dimension must be -1" \
        in failures
    assert "signature `adapt`" not in failures  # the well-formed signature passes
    assert main(["inspect", path]) == 1
    out = capsys.readouterr().out
    assert "signature 'fixed'" in out and "FAIL no `serving_default`" in out


def test_not_a_saved_model(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="is not a SavedModel directory"):
        format_signatures(str(tmp_path))
    assert main(["inspect", str(tmp_path)]) == 2
    assert "is not a SavedModel directory" in capsys.readouterr().err


def test_inspect_text_includes_metadata(exports):
    text, report = inspect(exports["categorical_policy"]["path"], load=False)
    assert report.ok and "kind=AdaptablePolicy" in text and "distribution=categorical" in text
    assert "logits" in text and "int32" in text
