"""Grid-world diagnosis for Meta-DQN (issue #8): is the task learnable, and do support sets carry
the task?

Measures, on ``GridWorldTasks()`` (5 x 5, horizon 20, reward 1 on entering the goal):

1. how many rewarded transitions a 200-transition uniformly-random support set holds per goal, and
   how often a random-policy episode reaches the goal;
2. whether the DQN side learns at all: ``PerTaskDQNLearner`` (one double DQN per held-out goal, the
   goal fixed per network, i.e. an oracle that knows the task) trained for 3000 steps, greedy
   success rate every 500 steps.

Writes key=value lines, the command and the date to docs/benchmarks/meta_dqn_gridworld_diagnosis.txt.
"""
from __future__ import annotations

import datetime
import os
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from metarl_tf.algorithms.meta_dqn import (PerTaskDQNConfig, PerTaskDQNLearner,  # noqa: E402
                                           collect_support)
from metarl_tf.tasks.gridworld import GridWorldTasks  # noqa: E402


def main() -> None:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    lines = [f"# command: {' '.join(sys.argv)}",
             f"# date: {datetime.datetime.now(datetime.timezone.utc).isoformat()}",
             "# TF threads: intra 1, inter 1"]

    def emit(line):
        print(line, flush=True)
        lines.append(line)

    family = GridWorldTasks()
    env = family.tf_env()
    for split in ("train", "test"):
        goals = tf.constant(family.goals(split))
        for seed in range(3):
            sup = collect_support(env, goals, 200, family.horizon, family.num_actions,
                                  tf.constant([seed, 1], tf.int64))
            rewarded = sup.reward.numpy().sum(axis=1)
            ended = sup.boundary.numpy().sum(axis=1)
            emit(f"split={split} support_seed={seed} support_size=200 goals={len(rewarded)} "
                 f"rewarded_transitions_mean={rewarded.mean():.2f} "
                 f"rewarded_transitions_min={int(rewarded.min())} "
                 f"supports_with_reward={np.mean(rewarded > 0):.2f} "
                 f"random_episode_success={rewarded.sum() / ended.sum():.3f}")
    goals = family.goals("test")
    config = PerTaskDQNConfig(discount=0.9, prefill_steps=200, epsilon_decay_steps=1500,
                              target_update_period=100, replay_capacity=5000,
                              steps_per_execution=500)
    learner = PerTaskDQNLearner(family, goals, config, hidden=(64, 64))
    start = time.time()
    for i in range(6):
        metrics = learner.train(500)
        success = learner.evaluate(episodes=10, seed=i)
        emit(f"oracle=per_task_dqn test_goals={len(goals)} step={learner.step} "
             f"seconds={time.time() - start:.1f} td_loss={metrics['td_loss']:.5f} "
             f"greedy_success_mean={success.mean():.3f} greedy_success_min={success.min():.3f}")
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks",
                        "meta_dqn_gridworld_diagnosis.txt")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
