"""Serving latency and throughput: adapt through the SavedModel, gRPC, REST and TFLite.

    .venv/bin/python benchmarks/serving.py [--repeats 200] [--rounds 3] [--tiny]
                                           [--out docs/notes/benchmarks/serving.txt] [--json FILE]

Measures, on the MAML sinusoid regressor (1 -> 40 -> 40 -> 1, relu; Finn et al. 2017):

* per-call latency of ``adapt`` with 5 inner steps on 10 support points (10 query points): the
  loaded SavedModel in process (the portable export, and the one exported with ``jit_compile``,
  whose inner loop XLA compiles), the gRPC and REST loopback stand-ins (``tests/serving_standin.py``:
  TF Serving's protocol on top of the same SavedModel, so the difference is the protocol and
  (de)serialisation, not TF Serving's C++ server), and the TFLite interpreter (hand-derived
  gradients, ``export/tflite.py``); and the TFLite / SavedModel ratio;
* where the SavedModel's time goes, from loaded SavedModels that do part of the work each (same
  inputs, same signature shape): ``call`` (a signature that returns ``query_x``: the Python ->
  C++ call path of ``signatures["adapt"]``), ``checks`` (the input checks of ``adapt``, then
  returning ``query_x``; minus ``call``), ``predict`` (``adapt`` at 0 steps minus the checks: the
  prediction and the loop's set-up), ``loop`` (a ``tf.while_loop`` that carries the parameters
  through ``num_steps`` empty iterations, per step) and ``math`` (the rest of a step: forward,
  backward, update; per step);
* throughput of ``serving_default`` for a Gaussian MLP policy (obs 20 -> 100 -> 100 -> act 6, the
  MAML-RL HalfCheetah size) at batch 1 and 256, in process and over gRPC.

Every figure is the median over ``--rounds`` rounds (the variants alternate within a round) of the
median of ``--repeats`` calls after 20 warm-up calls, one TensorFlow thread. Prints key=value lines
and writes them with the command, date and load average to ``--out``; ``--json`` also writes one
dict of the figures. ``--tiny``: 30 repeats, 1 round, no gRPC/REST/policy rows (seconds, for a
results registry).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from export import tflite  # noqa: E402
from export.clients import GrpcClient, RestClient  # noqa: E402
from export.layout import write_versioned  # noqa: E402
from export.policy import AdaptablePolicy  # noqa: E402
from metarl_tf import adaptation  # noqa: E402
from metarl_tf.adaptable import AdaptableRegressor  # noqa: E402
from metarl_tf.networks import gaussian_mlp_policy  # noqa: E402
from metarl_tf.params import FunctionalModel  # noqa: E402
from serving_standin import ServingStandIn  # noqa: E402

from benchmarks._report import median_ms  # noqa: E402


ADAPT_SPECS = [tf.TensorSpec([None, 1], tf.float32, name="support_x"),
               tf.TensorSpec([None, 1], tf.float32, name="support_y"),
               tf.TensorSpec([None, 1], tf.float32, name="query_x"),
               tf.TensorSpec([], tf.int32, name="num_steps")]


class _Part(tf.Module):
    """A SavedModel doing part of ``adapt``'s work, for the split of where the time goes."""

    def __init__(self, part: str, params):
        super().__init__()
        self.params = [tf.Variable(p, trainable=False) for p in params]

        @tf.function(input_signature=ADAPT_SPECS)
        def adapt(support_x, support_y, query_x, num_steps):
            if part == "call":
                return {"y": query_x}
            if part == "checks":  # the same checks AdaptableRegressor.adapt runs
                x = tf.debugging.check_numerics(tf.ensure_shape(support_x, [None, 1]), "a")
                y = tf.debugging.check_numerics(tf.ensure_shape(support_y, [None, 1]), "b")
                q = tf.debugging.check_numerics(tf.ensure_shape(query_x, [None, 1]), "c")
                rows_x, rows_y = tf.shape(x)[0], tf.shape(y)[0]
                checks = [tf.debugging.assert_equal(rows_x, rows_y),
                          tf.debugging.assert_positive(rows_x),
                          tf.debugging.assert_non_negative(num_steps),
                          tf.debugging.assert_less_equal(num_steps, 20)]
                with tf.control_dependencies(checks):
                    return {"y": tf.debugging.check_numerics(tf.identity(q), "d")}
            # "loop": the parameters through num_steps iterations that do nothing else
            start = [tf.convert_to_tensor(p)[None] for p in self.params]
            _, out = tf.while_loop(lambda i, _: i < num_steps,
                                   lambda i, p: (i + 1, [tf.identity(t) for t in p]),
                                   (tf.constant(0), start))
            return {"y": query_x + tf.reduce_sum(out[-1])}

        self.adapt = adapt


def save_load(base, name, write):
    return tf.saved_model.load(write_versioned(base, name, write)).signatures["adapt"]


def adapt_rows(emit, base, fm, rule, inputs, repeats, rounds) -> dict:
    """The ``adapt`` latencies and the split; returns the figures."""
    tf_inputs = {k: tf.constant(v) for k, v in inputs.items()}
    steps = int(inputs["num_steps"])
    at = lambda n: {**tf_inputs, "num_steps": tf.constant(n, tf.int32)}  # noqa: E731
    sigs = {
        "plain": save_load(base, "sinusoid", lambda d: AdaptableRegressor(
            fm, fm.params(), rule, max_num_steps=20).save(d)),
        "xla": save_load(base, "sinusoid_xla", lambda d: AdaptableRegressor(
            fm, fm.params(), rule, max_num_steps=20, jit_compile=True).save(d)),
    }
    def save_part(part, d):
        module = _Part(part, fm.params())
        tf.saved_model.save(module, d, signatures={"adapt": module.adapt})

    parts = {part: save_load(base, f"part_{part}", lambda d, part=part: save_part(part, d))
             for part in ("call", "checks", "loop")}
    calls = {}
    for name, sig in sigs.items():
        calls[f"{name}_{steps}"] = lambda sig=sig: sig(**tf_inputs)["y"].numpy()
        calls[f"{name}_0"] = lambda sig=sig: sig(**at(0))["y"].numpy()
    for part, sig in parts.items():
        calls[f"part_{part}_{steps}"] = lambda sig=sig: sig(**tf_inputs)["y"].numpy()
    calls["part_loop_0"] = lambda: parts["loop"](**at(0))["y"].numpy()
    times = {k: [] for k in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            times[key].append(median_ms(fn, repeats))
    ms = {k: float(np.median(v)) for k, v in times.items()}
    figures = {"adapt_savedmodel_ms": ms[f"plain_{steps}"],
               "adapt_savedmodel_xla_ms": ms[f"xla_{steps}"]}
    emit(f"adapt_savedmodel_ms={ms[f'plain_{steps}']:.3f}  (portable: runs on a stock TF Serving)")
    emit(f"adapt_savedmodel_xla_ms={ms[f'xla_{steps}']:.3f}  (jit_compile export: TF Serving "
         "needs --xla_cpu_compilation_enabled=true)")
    call = ms[f"part_call_{steps}"]
    checks = ms[f"part_checks_{steps}"] - call
    loop = (ms[f"part_loop_{steps}"] - ms["part_loop_0"]) / steps
    for name in sigs:
        predict = ms[f"{name}_0"] - call - checks
        per_step = (ms[f"{name}_{steps}"] - ms[f"{name}_0"]) / steps
        split = {"call": call, "checks": checks, "predict_and_setup": predict,
                 "loop": loop * steps, "math": (per_step - loop) * steps}
        if name == "xla":  # XLA compiles the loop with the math: no separate loop figure
            split["math"] += split.pop("loop")
        emit(f"# split of adapt_{name} ({steps} steps), ms: " + " ".join(
            f"{k}={v:.3f}" for k, v in split.items()) + f"  (sum {sum(split.values()):.3f})")
        figures.update({f"adapt_{name}_split_{k}_ms": v for k, v in split.items()})
        figures[f"adapt_{name}_per_step_ms"] = per_step
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=None, help="calls per timing (200; --tiny: 30)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tiny", action="store_true", help="30 repeats, 1 round, adapt rows only")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "notes", "benchmarks", "serving.txt"))
    p.add_argument("--json", help="also write the figures as one JSON dict to this file")
    args = p.parse_args()
    if args.tiny:
        args.rounds = 1
    if args.repeats is None:
        args.repeats = 30 if args.tiny else 200
    lines = []

    def emit(line):
        print(line, flush=True)
        lines.append(line)

    base = tempfile.mkdtemp(prefix="serving_bench_")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(40, "relu"),
                              keras.layers.Dense(40, "relu"), keras.layers.Dense(1)])
    fm = FunctionalModel(model)
    rule = adaptation.SGD(0.01)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    inputs = {"support_x": xs, "support_y": (2.0 * np.sin(xs - 0.5)).astype(np.float32),
              "query_x": rng.uniform(-5, 5, (10, 1)).astype(np.float32), "num_steps": np.int32(5)}
    tf_inputs = {k: tf.constant(v) for k, v in inputs.items()}

    emit(f"# date={datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} "
         f"command={' '.join(['benchmarks/serving.py'] + sys.argv[1:])}")
    emit(f"# tensorflow={tf.__version__} threads=1 cpus={os.cpu_count()} repeats={args.repeats} "
         f"rounds={args.rounds} loadavg_1min_start={os.getloadavg()[0]:.2f} (machine shared with "
         "other jobs: compare the ratios, measured in this one process)")
    emit("# adapt: 5 inner steps, 10 support points, 10 query points, MAML sinusoid net 1-40-40-1")
    figures = adapt_rows(emit, base, fm, rule, inputs, args.repeats, args.rounds)
    sm_ms = figures["adapt_savedmodel_ms"]
    path = os.path.join(base, "sinusoid", "1")
    adapt = tf.saved_model.load(path).signatures["adapt"]
    tfl_path = tflite.convert(tflite.regressor_module(model, None, rule, 20),
                              os.path.join(base, "sinusoid.tflite"))[0]
    lite = tflite.TFLiteModel(tfl_path, max_num_steps=20)
    raw = lite.interpreter.get_signature_runner("adapt")
    lite_runs, raw_runs = [], []
    for _ in range(args.rounds):
        lite_runs.append(median_ms(lambda: lite("adapt", **inputs), args.repeats))
        raw_runs.append(median_ms(lambda: raw(**inputs), args.repeats))
    lite_ms, raw_ms = float(np.median(lite_runs)), float(np.median(raw_runs))
    ref = adapt(**tf_inputs)["y"].numpy()
    err = float(np.abs(lite("adapt", **inputs)["y"] - ref).max())
    xla_err = float(np.abs(tf.saved_model.load(os.path.join(base, "sinusoid_xla", "1")).signatures[
        "adapt"](**tf_inputs)["y"].numpy() - ref).max())
    figures.update(adapt_tflite_ms=lite_ms, adapt_tflite_raw_runner_ms=raw_ms,
                   tflite_max_abs_diff_vs_savedmodel=err, xla_max_abs_diff_vs_savedmodel=xla_err)
    emit(f"adapt_tflite_ms={lite_ms:.3f}  (with TFLiteModel's input and output checks)")
    emit(f"adapt_tflite_raw_runner_ms={raw_ms:.3f}")
    emit(f"tflite_over_savedmodel={lite_ms / sm_ms:.3f}")
    emit(f"xla_over_savedmodel={figures['adapt_savedmodel_xla_ms'] / sm_ms:.3f}")
    emit(f"tflite_max_abs_diff_vs_savedmodel={err:.2e}")
    emit(f"xla_max_abs_diff_vs_savedmodel={xla_err:.2e}")
    if not args.tiny:
        policy = gaussian_mlp_policy(20, 6, hidden=(100, 100), seed=0)
        ppath = write_versioned(base, "policy", lambda d: AdaptablePolicy(
            policy, [tf.convert_to_tensor(v) for v in policy.trainable_variables], rule).save(d))
        with ServingStandIn({"sinusoid": os.path.dirname(path),
                             "policy": os.path.dirname(ppath)}) as s:
            grpc_c = GrpcClient(s.grpc_address, "sinusoid")
            rest_c = RestClient(s.rest_url, "sinusoid")
            grpc_ms = median_ms(lambda: grpc_c.predict(inputs, "adapt"), args.repeats)
            rest_ms = median_ms(lambda: rest_c.predict(inputs, "adapt"), args.repeats)
            figures.update(adapt_grpc_standin_ms=grpc_ms, adapt_rest_standin_ms=rest_ms)
            emit(f"adapt_grpc_standin_ms={grpc_ms:.3f}")
            emit(f"adapt_rest_standin_ms={rest_ms:.3f}")
            emit(f"grpc_over_savedmodel={grpc_ms / sm_ms:.3f}")
            emit(f"rest_over_savedmodel={rest_ms / sm_ms:.3f}")

            emit("# serving_default of a Gaussian policy 20-100-100-6")
            serve = tf.saved_model.load(ppath).signatures["serving_default"]
            pg = GrpcClient(s.grpc_address, "policy")
            for batch in (1, 256):
                obs = rng.normal(size=(batch, 20)).astype(np.float32)
                tobs = tf.constant(obs)
                ms = median_ms(lambda: serve(observation=tobs)["action"].numpy(), args.repeats)
                gms = median_ms(lambda: pg.predict({"observation": obs}),
                                max(args.repeats // 2, 10))
                figures[f"serving_default_batch{batch}_savedmodel_ms"] = ms
                figures[f"serving_default_batch{batch}_grpc_standin_ms"] = gms
                emit(f"serving_default_batch{batch}_savedmodel_ms={ms:.3f} "
                     f"calls_per_s={1e3 / ms:.0f} rows_per_s={batch * 1e3 / ms:.0f}")
                emit(f"serving_default_batch{batch}_grpc_standin_ms={gms:.3f} "
                     f"calls_per_s={1e3 / gms:.0f} rows_per_s={batch * 1e3 / gms:.0f}")
    figures["loadavg_1min_end"] = os.getloadavg()[0]
    emit(f"# loadavg_1min_end={figures['loadavg_1min_end']:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1, sort_keys=True)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
