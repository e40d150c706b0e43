"""Serving latency and throughput: adapt through the SavedModel, gRPC, REST and TFLite.

    .venv/bin/python benchmarks/serving.py [--repeats 200] [--out docs/benchmarks/serving.txt]

Measures, on the MAML sinusoid regressor (1 -> 40 -> 40 -> 1, relu; Finn et al. 2017):

* per-call latency of ``adapt`` with 5 inner steps on 10 support points (10 query points): the
  loaded SavedModel in process, the gRPC and REST loopback stand-ins (``tests/serving_standin.py``:
  TF Serving's protocol on top of the same SavedModel, so the difference is the protocol and
  (de)serialisation, not TF Serving's C++ server), and the TFLite interpreter (hand-derived
  gradients, ``export/tflite.py``); and the TFLite / SavedModel ratio;
* throughput of ``serving_default`` for a Gaussian MLP policy (obs 20 -> 100 -> 100 -> act 6, the
  MAML-RL HalfCheetah size) at batch 1 and 256, in process and over gRPC.

Median of ``--repeats`` calls after 20 warm-up calls, one TensorFlow thread. Prints key=value lines
and writes them with the command and date to ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time

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


def median_ms(fn, repeats: int, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks", "serving.txt"))
    args = p.parse_args()
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
    path = write_versioned(base, "sinusoid", lambda d: AdaptableRegressor(
        fm, fm.params(), rule, max_num_steps=20).save(d))
    policy = gaussian_mlp_policy(20, 6, hidden=(100, 100), seed=0)
    ppath = write_versioned(base, "policy", lambda d: AdaptablePolicy(
        policy, [tf.convert_to_tensor(v) for v in policy.trainable_variables], rule).save(d))
    tfl_path = tflite.convert(tflite.regressor_module(model, None, rule, 20),
                              os.path.join(base, "sinusoid.tflite"))[0]

    rng = np.random.default_rng(0)
    xs = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    inputs = {"support_x": xs, "support_y": (2.0 * np.sin(xs - 0.5)).astype(np.float32),
              "query_x": rng.uniform(-5, 5, (10, 1)).astype(np.float32), "num_steps": np.int32(5)}
    tf_inputs = {k: tf.constant(v) for k, v in inputs.items()}

    emit(f"# date={datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} "
         f"command={' '.join(['benchmarks/serving.py'] + sys.argv[1:])}")
    emit(f"# tensorflow={tf.__version__} threads=1 cpus={os.cpu_count()} repeats={args.repeats} "
         "(machine shared with other jobs: compare the ratios, measured in this one process)")
    adapt = tf.saved_model.load(path).signatures["adapt"]
    sm_ms = median_ms(lambda: adapt(**tf_inputs)["y"].numpy(), args.repeats)
    lite = tflite.TFLiteModel(tfl_path, max_num_steps=20)
    lite_ms = median_ms(lambda: lite("adapt", **inputs), args.repeats)
    raw = lite.interpreter.get_signature_runner("adapt")
    raw_ms = median_ms(lambda: raw(**inputs), args.repeats)
    ref = adapt(**tf_inputs)["y"].numpy()
    err = float(np.abs(lite("adapt", **inputs)["y"] - ref).max())
    with ServingStandIn({"sinusoid": os.path.dirname(path), "policy": os.path.dirname(ppath)}) as s:
        grpc_c = GrpcClient(s.grpc_address, "sinusoid")
        rest_c = RestClient(s.rest_url, "sinusoid")
        grpc_ms = median_ms(lambda: grpc_c.predict(inputs, "adapt"), args.repeats)
        rest_ms = median_ms(lambda: rest_c.predict(inputs, "adapt"), args.repeats)
        emit("# adapt: 5 inner steps, 10 support points, 10 query points, MAML sinusoid net 1-40-40-1")
        emit(f"adapt_savedmodel_ms={sm_ms:.3f}")
        emit(f"adapt_grpc_standin_ms={grpc_ms:.3f}")
        emit(f"adapt_rest_standin_ms={rest_ms:.3f}")
        emit(f"adapt_tflite_ms={lite_ms:.3f}  (with TFLiteModel's input checks)")
        emit(f"adapt_tflite_raw_runner_ms={raw_ms:.3f}")
        emit(f"tflite_over_savedmodel={lite_ms / sm_ms:.3f}")
        emit(f"tflite_raw_over_savedmodel={raw_ms / sm_ms:.3f}")
        emit(f"grpc_over_savedmodel={grpc_ms / sm_ms:.3f}")
        emit(f"rest_over_savedmodel={rest_ms / sm_ms:.3f}")
        emit(f"tflite_max_abs_diff_vs_savedmodel={err:.2e}")

        emit("# serving_default of a Gaussian policy 20-100-100-6")
        serve = tf.saved_model.load(ppath).signatures["serving_default"]
        pg = GrpcClient(s.grpc_address, "policy")
        for batch in (1, 256):
            obs = rng.normal(size=(batch, 20)).astype(np.float32)
            tobs = tf.constant(obs)
            ms = median_ms(lambda: serve(observation=tobs)["action"].numpy(), args.repeats)
            gms = median_ms(lambda: pg.predict({"observation": obs}), max(args.repeats // 2, 10))
            emit(f"serving_default_batch{batch}_savedmodel_ms={ms:.3f} "
                 f"calls_per_s={1e3 / ms:.0f} rows_per_s={batch * 1e3 / ms:.0f}")
            emit(f"serving_default_batch{batch}_grpc_standin_ms={gms:.3f} "
                 f"calls_per_s={1e3 / gms:.0f} rows_per_s={batch * 1e3 / gms:.0f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
