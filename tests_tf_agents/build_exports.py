"""Builds the exports the TF-Agents tests load, with the core venv (Keras 3): tiny training runs.

    .venv/bin/python tests_tf_agents/build_exports.py OUT_DIR

Runs the `metarl` CLI in this process (one TensorFlow start-up for all): `train` then `export`,
each into OUT_DIR/exports/<name>/1. The PointNav MAML-TRPO run is the one that must really adapt;
its budget is set so the adapted return clears the unadapted one by a wide margin.
"""
import os
import sys
import time

from training.cli import main as metarl

# name -> (preset, train arguments): budgets measured on a 2-core CPU (docs/TF_AGENTS.md).
RUNS = {
    "pointnav": ("maml-trpo-pointnav", ["--steps", "8", "--set", "eval_tasks=2",
                                        "--set", "eval_steps=1", "--set", "log_every=4",
                                        "--set", "checkpoint_every=8"]),
    "rl2-bandits": ("rl2-bandits", ["--steps", "10", "--set", "algorithm_config.meta_batch_size=50",
                                    "--set", "eval_tasks=10", "--set", "log_every=5",
                                    "--set", "checkpoint_every=10"]),
    "rl2-pointnav": ("rl2-pointnav", ["--steps", "1", "--set", "algorithm_config.meta_batch_size=4",
                                      "--set", "eval_tasks=1", "--set", "log_every=1",
                                      "--set", "checkpoint_every=1"]),
    "meta-dqn-cartpole": ("meta-dqn-cartpole", [
        "--steps", "50", "--set", "algorithm_config.steps_per_execution=50",
        "--set", "algorithm_config.jit_compile=false",
        "--set", "algorithm_config.num_train_tasks=4",
        "--set", "algorithm_config.meta_batch_size=2",
        "--set", "algorithm_config.support_size=50", "--set", "eval_tasks=1",
        "--set", "eval_steps=1", "--set", "log_every=50", "--set", "checkpoint_every=50"]),
}


def build(out: str, names=None) -> None:
    for name in names or RUNS:
        preset, args = RUNS[name]
        run_dir, start = os.path.join(out, "runs", name), time.time()
        code = metarl(["train", preset, "--out", run_dir, "--threads", "1", "--quiet", *args])
        if code:
            raise SystemExit(f"metarl train {preset} failed ({code})")
        code = metarl(["export", run_dir, "--to", os.path.join(out, "exports"), "--name", name,
                       "--version", "1", "--max-num-steps", "5"])
        if code:
            raise SystemExit(f"metarl export {name} failed ({code})")
        print(f"built {name} in {time.time() - start:.1f}s", flush=True)


if __name__ == "__main__":
    build(sys.argv[1], sys.argv[2:] or None)
