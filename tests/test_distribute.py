"""tf.distribute: a meta-step sharded over replicas equals the single-device meta-step."""
import json
import os
import socket
import subprocess
import sys

MIRRORED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from metarl_tf.algorithms import *
from metarl_tf.networks import mlp
from metarl_tf.tasks import SinusoidTasks
out = {}
for name, L, C in [("maml", MAMLLearner, MAMLConfig), ("metasgd", MetaSGDLearner, MetaSGDConfig),
                   ("reptile", ReptileLearner, ReptileConfig)]:
    cfg = C(meta_batch_size=4, steps_per_execution=3)
    single = L(mlp(1, 1, (16,), init="glorot_uniform", seed=1), SinusoidTasks(), cfg, seed=2)
    single.train(6)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = mlp(1, 1, (16,), init="glorot_uniform", seed=1)
    dist = L(model, SinusoidTasks(), cfg, seed=2, strategy=strategy)
    dist.train(6)
    out[name] = {"replicas": dist.num_replicas, "step": dist.step, "max_diff": max(
        float(tf.reduce_max(tf.abs(tf.convert_to_tensor(a) - tf.convert_to_tensor(b))))
        for a, b in zip(single.meta_variables, dist.meta_variables))}
print(json.dumps(out))
"""


def run(args, env=None, cwd=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)


def test_mirrored_two_logical_cpus_equal_one_device(repo_root):
    proc = run([sys.executable, "-c", MIRRORED], cwd=repo_root)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    for name, r in result.items():
        assert r["replicas"] == 2 and r["step"] == 6, name
        # 6 meta-steps on half meta-batches per replica, gradients summed: the same weights.
        assert r["max_diff"] < 1e-6, (name, r)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_with_tf_config_agree_with_each_other_and_one_device(tmp_path, repo_root):
    cmd = [sys.executable, "-m", "training.cli", "train", "maml-sinusoid", "--steps", "20",
           "--quiet", "--set", "algorithm_config.meta_batch_size=4", "--set", "eval_tasks=20",
           "--set", "algorithm_config.steps_per_execution=5"]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    workers = [run(cmd + ["--out", str(tmp_path / f"w{i}"), "--set", "distribute=multi_worker"],
                   env={"TF_CONFIG": json.dumps({"cluster": cluster,
                                                 "task": {"type": "worker", "index": i}})},
                   cwd=repo_root) for i in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err[-3000:]
    single = run(cmd + ["--out", str(tmp_path / "single")], cwd=repo_root)
    _, err = single.communicate(timeout=600)
    assert single.returncode == 0, err[-3000:]
    summaries = [json.load(open(tmp_path / d / "summary.json")) for d in ("w0", "w1", "single")]
    assert summaries[0]["final_metrics"] == summaries[1]["final_metrics"]
    for key, value in summaries[0]["final_metrics"].items():
        assert abs(value - summaries[2]["final_metrics"][key]) < 1e-5, key
    assert abs(summaries[0]["eval"]["mse"][1] - summaries[2]["eval"]["mse"][1]) < 1e-5
