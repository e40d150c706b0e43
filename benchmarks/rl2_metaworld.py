"""RL² on Meta-World ML1 reach-v3, scored by Meta-World's own ``metalearning_evaluation``.

usage:
    python benchmarks/rl2_metaworld.py [--minutes 10] [--max-iterations 0] [--meta-batch 10]
        [--episodes 3] [--horizon 100] [--units 64] [--eval-meta-batch 10] [--num-evals 5]
        [--adaptation-episodes 2] [--seed 0] [--ckpt DIR] [--out FILE]

Training: ``RL2Learner`` (Gaussian GRU, PPO over trials, the gymnasium path) on
``MetaWorldTasks("ML1", "reach-v3")``'s train goals (Meta-World's ``ML1("reach-v3",
seed=0).train_tasks``): per iteration ``--meta-batch`` trials of ``--episodes`` episodes of
``--horizon`` steps, one goal per trial, the state kept across the episodes of a trial; for
``--minutes`` of wall time (or ``--max-iterations``).

Evaluation (Meta-World's protocol, its code): ``metaworld.evaluation.metalearning_evaluation`` on
``gym.make_vec("Meta-World/ML1-test", env_name="reach-v3", meta_batch_size=M, seed=0,
max_episode_steps=--horizon)`` (the 50 held-out test goals, 50 / M per sub-environment) with
``RL2MetaWorldAgent``: per round every sub-environment gets a new test goal and a new trial (zero
state), the agent runs ``--adaptation-episodes`` episodes (sampled actions), ``adapt()`` keeps the
state (no gradient step), and Meta-World scores the evaluation episodes that continue the trial
(policy mean, terminate-on-success), ``evaluation_episodes = M``. ``--num-evals`` rounds (5 x 10 =
every test goal once). ``unadapted`` is the same with ``adaptation_steps=0`` (evaluation from the
trial's start). The trial length in training is ``--episodes`` = adaptation episodes + 1, so the
first evaluation episode is the one the policy was trained for.

Two envs: ``recurrent_info_in_obs=True, normalize_reward_in_recurrent_info=False`` (Meta-World's
``RNNBasedMetaRLWrapper`` appends the previous action / reward / done to the observation, so the
agent also sees the rewards of the evaluation phase, as in training) and the plain env (the
evaluation phase gives the agent no rewards: fed as 0). ``first_episode_success`` (one evaluation
episode per goal; see benchmarks/maml_rl_metaworld.py for why Meta-World's pooled count is biased
up) on the first env, for the trained and for the untrained (iteration 0) policy. Also
``RL2Learner.evaluate`` on 10 test goals: the mean return of episode k of a trial (the RL²
adaptation curve).

Deviations (PAPERS.md section 4: garage's RL² ML1 example uses 10 episodes of 500 steps per trial,
meta-batch 10, GRU 64, thousands of iterations): 100-step episodes, trials of 3 episodes, minutes
of training on a shared 2-core CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MUJOCO_GL", "disable")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metarl_tf.algorithms.rl2 import RL2Config, RL2Learner, rl2_policy_for  # noqa: E402
from metarl_tf.algorithms.rl2_metaworld import RL2MetaWorldAgent  # noqa: E402
from metarl_tf.tasks.metaworld import MetaWorldTasks, first_episode_success  # noqa: E402
from _report import Report, train_on_budget  # noqa: E402  (benchmarks/_report.py)

ENV_NAME = "reach-v3"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--max-iterations", type=int, default=0)
    p.add_argument("--meta-batch", type=int, default=10)
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--units", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--eval-meta-batch", type=int, default=10)
    p.add_argument("--num-evals", type=int, default=5)
    p.add_argument("--adaptation-episodes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", default="/tmp/rl2_metaworld_ckpt")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if 50 % a.eval_meta_batch:
        raise SystemExit(f"--eval-meta-batch must divide 50 (ML1 has 50 test goals), got "
                         f"{a.eval_meta_batch}")
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    start = datetime.datetime.now(datetime.timezone.utc)
    report = Report(a.out, ["$ " + " ".join([".venv/bin/python"] + sys.argv),
                            f"# date: {start:%Y-%m-%d %H:%M} UTC (start); machine: 2-core VM "
                            "shared with other engineers' jobs (load varies), CPU only, one TF "
                            "thread"])
    tasks = MetaWorldTasks("ML1", ENV_NAME, benchmark_seed=0, horizon=a.horizon)
    cfg = RL2Config(episodes_per_trial=a.episodes, meta_batch_size=a.meta_batch, discount=0.99,
                    gae_lambda=0.95, clip=0.2, entropy_coef=0.0, num_epochs=10,
                    num_minibatches=2, learning_rate=a.learning_rate, normalize_advantages=True,
                    max_grad_norm=1.0)
    policy = rl2_policy_for(tasks, units=a.units, seed=a.seed, separate_value=True)
    learner = RL2Learner(policy, tasks, cfg, seed=a.seed)
    report(task=f"ML1/{ENV_NAME}", meta_batch=a.meta_batch, episodes_per_trial=a.episodes,
           horizon=a.horizon, policy=f"GRU{a.units}+separate_value_GRU{a.units}",
           budget_minutes=a.minutes, tensorflow=tf.__version__)
    report("config=" + repr(dataclasses.asdict(cfg)).replace(" ", ""))

    import gymnasium as gym
    m = a.eval_meta_batch
    envs = {rec: gym.make_vec("Meta-World/ML1-test", env_name=ENV_NAME, meta_batch_size=m,
                              seed=a.seed, max_episode_steps=a.horizon,
                              recurrent_info_in_obs=rec, normalize_reward_in_recurrent_info=False)
            for rec in (True, False)}
    agent = RL2MetaWorldAgent(learner, num_envs=m, seed=a.seed)

    s = time.perf_counter()
    rate, per_goal = first_episode_success(agent, envs[True], num_evals=a.num_evals,
                                           adaptation_steps=1,
                                           adaptation_episodes=a.adaptation_episodes)
    report(policy_state="untrained", agent="adapted_in_state", first_episode_success=rate,
           goals=len(per_goal), eval_s=round(time.perf_counter() - s, 1))

    train(a, learner, tf.train.CheckpointManager(
        tf.train.Checkpoint(**learner.checkpoint_items()), a.ckpt, 2), report)
    evaluate(a, learner, agent, envs, report)
    for e in envs.values():
        e.close()
    end = datetime.datetime.now(datetime.timezone.utc)
    report(f"# end: {end:%Y-%m-%d %H:%M} UTC; wall {(end - start).total_seconds() / 60:.1f} min")


def train(a, learner, manager, report):
    def progress(it, m, elapsed):
        if it % 5 == 0 or it == 1:
            report(f"# iteration={it} trial_return={m['trial_return']:.1f} "
                   f"entropy={m['entropy']:.3f} approx_kl={m['approx_kl']:.4f} "
                   f"value_loss={m['value_loss']:.1f} elapsed_s={elapsed:.0f}")

    train_s = train_on_budget(learner, manager, a.minutes, a.max_iterations, progress)
    steps = learner.step * a.meta_batch * a.episodes * a.horizon
    report(phase="train", iterations=learner.step, train_s=round(train_s, 1), env_steps=steps,
           env_steps_per_s=round(steps / max(train_s, 1e-9), 1))


def evaluate(a, learner, agent, envs, report):
    from metaworld.evaluation import metalearning_evaluation

    m = a.eval_meta_batch
    s = time.perf_counter()
    curve = learner.evaluate(num_tasks=10, seed=a.seed)
    report(learner_evaluate_test_goals=10,
           episode_returns="[" + ",".join(f"{r:.1f}" for r in curve["returns"]) + "]",
           trial_return=curve["trial_return"], trial_return_ci95=curve["trial_return_ci95"])
    for rec, env_label in ((True, "recurrent_info_in_obs"), (False, "plain")):
        for steps, label in ((0, "unadapted"), (1, "adapted_in_state")):
            success, mean_return, _ = metalearning_evaluation(
                agent, envs[rec], num_evals=a.num_evals, adaptation_steps=steps,
                adaptation_episodes=a.adaptation_episodes, evaluation_episodes=m)
            report(env=env_label, agent=label, metaworld_success_rate=success,
                   metaworld_mean_return=mean_return, num_evals=a.num_evals, meta_batch_size=m,
                   adaptation_episodes=a.adaptation_episodes, evaluation_episodes=m,
                   episode_steps=a.horizon, unknown_reward_fraction=round(
                       agent.unknown_reward_steps / max(agent.eval_steps * m, 1), 3),
                   meta_iterations=learner.step)
    for steps, label in ((0, "unadapted"), (1, "adapted_in_state")):
        rate, per_goal = first_episode_success(agent, envs[True], num_evals=a.num_evals,
                                               adaptation_steps=steps,
                                               adaptation_episodes=a.adaptation_episodes)
        report(policy_state="trained", env="recurrent_info_in_obs", agent=label,
               first_episode_success=rate, goals=len(per_goal), successes=int(np.sum(per_goal)))
    report(phase="eval", eval_s=round(time.perf_counter() - s, 1))


if __name__ == "__main__":
    main()
