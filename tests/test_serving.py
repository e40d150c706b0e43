"""Serving: TF Serving layout and models.config, REST and gRPC clients against a loopback stand-in."""
import functools
import json
import os

import numpy as np
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from export.clients import (GrpcClient, RestClient, ServingError, ServingTimeout, acting_signature,
                            signatures_from_saved_model)
from export.layout import write_versioned
from export.serving_config import serving_config_text, write_serving_config
from serving_standin import ServingStandIn, shared_exports


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return shared_exports(tmp_path_factory)


@pytest.fixture(scope="module")
def server(exports):
    base, _ = exports
    config = write_serving_config(base)  # absolute base paths: the stand-in reads this very file
    with ServingStandIn(config) as s:
        yield s


@functools.lru_cache(maxsize=None)
def _load(path):
    return tf.saved_model.load(path)


def local(path, signature, inputs):
    """The in-process reference: the SavedModel's own signature on the same inputs."""
    fn = _load(path).signatures[signature]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def client(kind, server, model, **kw):
    return (RestClient(server.rest_url, model, **kw) if kind == "rest"
            else GrpcClient(server.grpc_address, model, **kw))


# -- layout and models.config --------------------------------------------------------------------
def test_versions_increase_and_are_never_overwritten(tmp_path):
    def writer(text):
        return lambda d: open(os.path.join(d, "saved_model.pb"), "w").write(text)

    base = str(tmp_path)
    assert write_versioned(base, "m", writer("a")).endswith(os.path.join("m", "1"))
    assert write_versioned(base, "m", writer("b")).endswith(os.path.join("m", "2"))
    with pytest.raises(FileExistsError, match="never overwritten"):
        write_versioned(base, "m", writer("c"), version=1)
    assert open(os.path.join(base, "m", "1", "saved_model.pb")).read() == "a"  # untouched

    def racing(d):  # another exporter takes version 3 while this one writes
        os.makedirs(os.path.join(base, "m", "3"))
        open(os.path.join(base, "m", "3", "saved_model.pb"), "w").write("other")
        writer("mine")(d)

    assert write_versioned(base, "m", racing).endswith(os.path.join("m", "4"))
    assert open(os.path.join(base, "m", "3", "saved_model.pb")).read() == "other"
    assert sorted(os.listdir(os.path.join(base, "m"))) == ["1", "2", "3", "4"]  # no temp left


def test_models_config_is_a_model_server_config_covering_every_export(exports, tmp_path):
    base, built = exports
    text = serving_config_text(base, serving_base="/models")
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    entries = {c.name: c for c in config.model_config_list.config}
    assert sorted(entries) == sorted(built)
    for name, c in entries.items():
        assert c.base_path == f"/models/{name}" and c.model_platform == "tensorflow"
        assert c.model_version_policy.latest.num_versions == 1
    every = text_format.Parse(serving_config_text(base, version_policy="all"),
                              model_server_config_pb2.ModelServerConfig())
    assert every.model_config_list.config[0].model_version_policy.HasField("all")
    assert every.model_config_list.config[0].base_path.startswith(os.path.abspath(base))
    with pytest.raises(ValueError, match="no exported model under"):
        serving_config_text(str(tmp_path))
    with pytest.raises(ValueError, match="`version_policy` must be one of"):
        serving_config_text(base, version_policy="newest")


def test_cli_writes_the_serving_config(exports, tmp_path):
    from training.cli import main

    base, built = exports
    out = tmp_path / "models.config"
    assert main(["export", "--to", base, "--serving-config", str(out),
                 "--serving-base-path", "/models"]) == 0
    assert text_format.Parse(out.read_text(), model_server_config_pb2.ModelServerConfig())
    assert main(["export", "--to", base]) == 2  # neither RUN_DIR nor --serving-config


# -- clients against the stand-in, every exported kind ----------------------------------------------
@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_clients_equal_the_saved_model_for_every_kind(exports, server, kind):
    _, built = exports
    for name, ex in built.items():
        c = client(kind, server, name)
        assert set(c.signatures) == set(signatures_from_saved_model(ex["path"]))
        if ex.get("recurrent"):
            check_recurrent_flow(c, ex)
            continue
        got = c.predict(ex["default"])
        want = local(ex["path"], "serving_default", ex["default"])
        assert set(got) == set(want), name
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=name)
            assert got[k].dtype == want[k].dtype
        flow = c.adapt_then_act(ex["adapt"], ex["act"])
        adapted = local(ex["path"], "adapt", ex["adapt"])
        for k in adapted:
            np.testing.assert_allclose(flow["adapted"][k], adapted[k], rtol=1e-6, atol=1e-7)
        if ex["act"] is None:  # the regressor's adapt already predicts at query_x
            assert flow["signature"] is None and flow["action"] is None
            continue
        act = local(ex["path"], flow["signature"], {**ex["act"], **adapted})
        for k in act:
            np.testing.assert_allclose(flow["action"][k], act[k], rtol=1e-6, atol=1e-7)
        # adapting moved the policy: its actions differ from the meta-learned ones
        default = local(ex["path"], "serving_default", ex["act"])
        key = {"log_std": "action", "logits": "logits", "q_values": "q_values"}[
            next(k for k in ("log_std", "logits", "q_values") if k in act)]
        assert not np.allclose(act[key], default[key])


def check_recurrent_flow(c, ex):
    """RL²: the client's state after the trial equals stepping the SavedModel by hand."""
    m = _load(ex["path"])
    trial = ex["adapt"]
    state = m.signatures["get_initial_state"](batch_size=tf.constant(trial["done"].shape[1]))["state"]
    for t in range(trial["done"].shape[0]):
        state = m.signatures["action"](state=state, **{k: tf.constant(v[t]) for k, v in
                                                        trial.items()})["state"]
    flow = c.adapt_then_act(trial, ex["act"])
    assert flow["signature"] == "action"
    np.testing.assert_allclose(flow["adapted"]["state"], state.numpy(), rtol=1e-5, atol=1e-6)
    want = m.signatures["action"](state=state, **{k: tf.constant(v) for k, v in ex["act"].items()})
    for k in ("logits", "value", "state", "action"):  # sampled_action is a random draw
        np.testing.assert_allclose(flow["action"][k], want[k].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(state.numpy(), 0.0)  # the trial moved the state off its start


def test_acting_signature_is_the_one_that_takes_adapts_outputs(exports):
    _, built = exports
    sigs = signatures_from_saved_model(built["gaussian_policy"]["path"])
    assert acting_signature(sigs, {"params": None}) == "action_with_params"
    assert acting_signature(signatures_from_saved_model(built["sinusoid"]["path"]),
                            {"y": None}) is None


def test_versions_are_addressed(exports, server):
    _, built = exports
    ex = built["sinusoid"]
    assert RestClient(server.rest_url, "sinusoid", version=1).predict(ex["default"])["y"].shape == (4, 1)
    for kind in ("rest", "grpc"):
        with pytest.raises(ServingError, match=r"Servable not found for request: Specific\(sinusoid, 7\)"):
            client(kind, server, "sinusoid", version=7, signatures=ex["path"]).predict(ex["default"])
    with pytest.raises(ServingError, match=r"Latest\(nope\)") as err:
        RestClient(server.rest_url, "nope", signatures=ex["path"]).predict(ex["default"])
    assert err.value.status == 404
    status = requests.get(f"{server.rest_url}/v1/models/sinusoid", timeout=10).json()
    assert status["model_version_status"][0]["version"] == "1"


# -- REST JSON formats ----------------------------------------------------------------------------
def test_rest_json_round_trips_in_both_formats(exports, server):
    _, built = exports
    ex = built["gaussian_policy"]
    c = RestClient(server.rest_url, "gaussian_policy")
    obs = ex["default"]["observation"]
    row = c.request_body({"observation": obs}, format="row")
    col = c.request_body({"observation": obs}, format="columnar")
    # one input: row format is the bare list of rows; columnar names nothing either
    assert row == {"signature_name": "serving_default", "instances": obs.tolist()}
    assert col == {"signature_name": "serving_default", "inputs": {"observation": obs.tolist()}}
    # the JSON floats parse back to the very same float32 values
    np.testing.assert_array_equal(np.asarray(json.loads(json.dumps(row))["instances"], np.float32), obs)
    want = local(ex["path"], "serving_default", ex["default"])
    answers = {fmt: c.predict({"observation": obs}, format=fmt) for fmt in ("row", "columnar")}
    for got in answers.values():
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)
    # the raw answers: row -> a list of {output: row} objects, columnar -> {output: all rows}
    raw_row = c.predict_raw(json.dumps(row))
    raw_col = c.predict_raw(json.dumps(col))
    assert len(raw_row["predictions"]) == 3 and set(raw_row["predictions"][0]) == {"action", "log_std"}
    assert np.asarray(raw_col["outputs"]["action"]).shape == (3, 2)
    # several inputs with one batch dimension: one object per row
    adapt = RestClient(server.rest_url, "categorical_policy")
    params = local(built["categorical_policy"]["path"], "adapt", built["categorical_policy"]["adapt"])
    with pytest.raises(ValueError, match="row .'instances'. format needs every input"):
        adapt.request_body({**built["categorical_policy"]["act"], **params}, "action_with_params",
                           format="row")
    # a single output in columnar format is unnamed: the client names it from the signature
    y = RestClient(server.rest_url, "sinusoid").predict_raw(json.dumps(
        {"inputs": built["sinusoid"]["default"]["x"].tolist()}))
    assert isinstance(y["outputs"], list) and len(y["outputs"]) == 4


def test_rest_row_format_with_named_inputs(exports, server):
    """Row format with several inputs: each instance an object with every input's row."""
    _, built = exports
    c = RestClient(server.rest_url, "sinusoid")
    x = np.array([[0.5], [1.5]], np.float32)
    # serving_default has one input; send it as objects {"x": row} -- also accepted
    got = c.predict_raw(json.dumps({"instances": [{"x": [0.5]}, {"x": [1.5]}]}))
    want = local(built["sinusoid"]["path"], "serving_default", {"x": x})["y"]
    np.testing.assert_allclose(np.asarray(got["predictions"], np.float32), want, rtol=1e-6)


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("body,message", [
    ("", "JSON Parse error: The document is empty"),
    ("{", "JSON Parse error"),
    ("[1, 2]", "Is not object"),
    ('{"instances": [[0.5]], "inputs": [[0.5]]}', "expecting only one of 'inputs' or 'instances'"),
    ('{"signature_name": 3, "inputs": [[0.5]]}', "'signature_name' key must be a string value"),
    ('{"instance": [[0.5]]}', "Missing 'inputs' or 'instances' key"),
    ('{"instances": []}', "No values in 'instances' array"),
    ('{"instances": [[0.5], [0.5, 1.0]]}', "Expecting tensor size: 1 but got: 2"),
    ('{"inputs": [["a"]]}', 'JSON Value: "a" Type: String is not of expected type: float'),
    ('{"signature_name": "adapt", "inputs": {"support_x": [[1.0]]}}',
     "Missing named input: num_steps in 'inputs' object."),
    ('{"signature_name": "adapt", "inputs": {"support_x": [[1.0]], "support_y": [[1.0]], '
     '"query_x": [[1.0]], "num_steps": 1.5}}', "JSON Value: 1.5 Type: Number is not of expected type: int32"),
    ('{"signature_name": "adapt", "instances": [{"support_x": [1.0]}]}',
     "must only have keys: num_steps,query_x,support_x,support_y"),
])
def test_malformed_rest_bodies_give_the_servers_text(server, body, message):
    c = RestClient(server.rest_url, "sinusoid")
    with pytest.raises(ServingError) as err:
        c.predict_raw(body)
    assert message in err.value.message and err.value.status == 400


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_server_errors_reach_the_caller(exports, server, kind):
    _, built = exports
    ex = built["sinusoid"]
    c = client(kind, server, "sinusoid")
    with pytest.raises(ServingError, match='Serving signature name: "nope" not found in signature def') as err:
        c.predict(ex["default"], "nope")
    assert err.value.code == "INVALID_ARGUMENT" if kind == "grpc" else err.value.status == 400
    bad = {**ex["adapt"], "support_y": ex["adapt"]["support_y"][:-1]}  # 10 vs 9 rows
    with pytest.raises(ServingError, match="support_x and support_y must have the same number of rows"):
        c.predict(bad, "adapt")
    with pytest.raises(ServingError, match="num_steps must be <= max_num_steps .20."):
        c.predict({**ex["adapt"], "num_steps": np.int32(21)}, "adapt")
    missing = {k: v for k, v in ex["adapt"].items() if k != "query_x"}
    with pytest.raises(ServingError, match="query_x"):
        c.predict(missing, "adapt")


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_wrong_dtypes_are_refused_client_side_by_name(exports, server, kind):
    _, built = exports
    before = server.num_predicts
    c = client(kind, server, "sinusoid")
    with pytest.raises(TypeError, match="input `num_steps` of signature `adapt` must be int32, got float64"):
        c.predict({**built["sinusoid"]["adapt"], "num_steps": 5.0}, "adapt")
    with pytest.raises(TypeError, match="input `x` of signature `serving_default` must be float32, got bool"):
        c.predict({"x": [[True]]})
    cat = client(kind, server, "categorical_policy")
    ex = built["categorical_policy"]
    with pytest.raises(TypeError, match="input `actions` of signature `adapt` must be int32, got float32"):
        cat.adapt_then_act({**ex["adapt"], "actions": ex["adapt"]["actions"].astype(np.float32)},
                           ex["act"])
    with pytest.raises(ValueError, match=r"input `observation` .* must have shape \[-1, 3\]: dimension 1 is 2"):
        cat.predict({"observation": np.zeros((2, 2), np.float32)})
    assert server.num_predicts == before  # nothing was sent


@pytest.mark.parametrize("kind", ["rest", "grpc"])
def test_timeouts(exports, server, kind):
    _, built = exports
    ex = built["sinusoid"]
    c = client(kind, server, "sinusoid", timeout=0.2, signatures=ex["path"])
    server.delay_s = 1.0
    try:
        with pytest.raises(ServingTimeout, match="no answer within 0.2 s"):
            c.predict(ex["default"])
    finally:
        server.delay_s = 0.0
    with pytest.raises(ValueError, match="`timeout` must be a number of seconds > 0"):
        client(kind, server, "sinusoid", timeout=0)
