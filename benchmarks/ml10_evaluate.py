"""Scores a `metarl train` run on Meta-World ML10 / ML45 with Meta-World's own evaluator.

usage:
    python benchmarks/ml10_evaluate.py RUN_DIR [--splits test train] [--num-evals 10]
        [--meta-batch-size 20] [--total-tasks-per-cls 40] [--max-episode-steps 500]
        [--adaptation-episodes 10] [--evaluation-episodes 3] [--seed 0] [--out FILE]

Restores the run's latest checkpoint (``maml-trpo-ml10``, ``maml-promp-ml10``, ``maml-trpo-ml45``:
``MAMLMetaWorldAgent``, one inner step per goal, acting with the adapted mean; ``rl2-ml10``,
``rl2-ml45``: ``RL2MetaWorldAgent``, adaptation in the recurrent state, Meta-World's
``recurrent_info_in_obs`` wrapper feeding it the evaluation rewards) and runs
``metarl_tf.integrations.metaworld.evaluate_protocol``: ``metalearning_evaluation`` at Meta-World's
ML10/ML45 defaults (the flags' defaults), adapted and unadapted (``adaptation_steps=0``) on the same
goals, per split -- ``test`` (meta-test success, the 5 held-out classes), ``train`` (meta-train
success), ``validation`` (train classes, goals never trained on: tune on this, not on test).
Writes ``RUN_DIR/metaworld_protocol.json`` and prints (and with ``--out`` keeps) the text report.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MUJOCO_GL", "disable")

import dataclasses  # noqa: E402

import tensorflow as tf  # noqa: E402

from metarl_tf.integrations.metaworld import (ProtocolConfig, evaluate_protocol,  # noqa: E402
                                              format_protocol)
from training.config import SamplerConfig, build_learner, kind_of  # noqa: E402
from training.run import checkpoint_manager, read_run_config, restore_latest  # noqa: E402
from _report import Report  # noqa: E402  (benchmarks/_report.py)

BENCHMARK_OF_TASK = {"ml10": "ML10", "ml45": "ML45"}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--splits", nargs="+", default=["test", "train"])
    p.add_argument("--num-evals", type=int, default=10)
    p.add_argument("--meta-batch-size", type=int, default=20)
    p.add_argument("--total-tasks-per-cls", type=int, default=40)
    p.add_argument("--max-episode-steps", type=int, default=500)
    p.add_argument("--adaptation-episodes", type=int, default=10)
    p.add_argument("--evaluation-episodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    config = read_run_config(a.run_dir)
    if config.task not in BENCHMARK_OF_TASK:
        raise SystemExit(f"{a.run_dir} is a {config.task!r} run; this scores ml10 / ml45 runs")
    # Scoring steps Meta-World's own environments: the run's sampler (maybe Ray) is not needed.
    config = dataclasses.replace(config, sampler=SamplerConfig())
    learner = build_learner(config)
    if restore_latest(checkpoint_manager(learner, a.run_dir, config.keep_checkpoints)) is None:
        raise SystemExit(f"{a.run_dir} has no checkpoint yet")
    protocol = ProtocolConfig(BENCHMARK_OF_TASK[config.task], benchmark_seed=a.seed,
                              meta_batch_size=a.meta_batch_size,
                              total_tasks_per_cls=a.total_tasks_per_cls, num_evals=a.num_evals,
                              adaptation_episodes=a.adaptation_episodes,
                              evaluation_episodes=a.evaluation_episodes,
                              max_episode_steps=a.max_episode_steps)
    env_kwargs = None
    if kind_of(config) == "rl2":
        from metarl_tf.algorithms.rl2_metaworld import RL2MetaWorldAgent
        env_kwargs = {"recurrent_info_in_obs": True, "normalize_reward_in_recurrent_info": False}
        make_agent = lambda n: RL2MetaWorldAgent(learner, n, seed=a.seed)  # noqa: E731
    else:
        from metarl_tf.tasks.metaworld import MAMLMetaWorldAgent
        make_agent = lambda n: MAMLMetaWorldAgent(learner, n, seed=a.seed)  # noqa: E731
    start = datetime.datetime.now(datetime.timezone.utc)
    report = Report(a.out, header=[
        "$ " + " ".join([".venv/bin/python"] + sys.argv),
        f"# date: {start:%Y-%m-%d %H:%M} UTC; run {config.name} at iteration {learner.step}; "
        "machine: 2-core VM shared with other agents' jobs"])
    result = evaluate_protocol(make_agent, protocol, splits=a.splits, env_kwargs=env_kwargs)
    result["run"] = {"run_dir": a.run_dir, "name": config.name, "iteration": learner.step}
    with open(os.path.join(a.run_dir, "metaworld_protocol.json"), "w") as f:
        json.dump(result, f, indent=2)
    for line in format_protocol(result).splitlines():
        report(line)


if __name__ == "__main__":
    main()
