"""MAML-RL on Meta-World ML1 reach-v3, scored by Meta-World's own ``metalearning_evaluation``.

usage:
    python benchmarks/maml_rl_metaworld.py [--outer promp] [--minutes 35] [--max-iterations 0]
        [--meta-batch 10] [--episodes 5] [--horizon 100] [--eval-meta-batch 10] [--num-evals 5]
        [--eval-horizon 100] [--ckpt DIR] [--resume] [--eval-only] [--out FILE]

Training: ``MAMLRLLearner`` (``--outer promp`` ProMP, ``trpo`` MAML-TRPO; one inner
policy-gradient step of rate 0.1, LVC estimator) on ``MetaWorldTasks("ML1", "reach-v3")``'s train
goals (Meta-World's ``ML1("reach-v3", seed=0).train_tasks``), ``--meta-batch`` goals x
``--episodes`` episodes of ``--horizon`` steps per round, for ``--minutes`` of wall time (or
``--max-iterations``), checkpointing every 10 iterations to ``--ckpt``.

Evaluation (Meta-World's protocol, its code): ``metaworld.evaluation.metalearning_evaluation`` on
``gym.make_vec("Meta-World/ML1-test", env_name="reach-v3", meta_batch_size=M, seed=0)`` (the 50
held-out test goals; ``M`` sub-environments, each holding 50 / M of them) with
``MAMLMetaWorldAgent``: per evaluation round every sub-environment gets a new test goal, the agent
acts with the meta-learned policy for ``adaptation_episodes=10`` episodes, takes one inner step per
goal on them, then Meta-World scores the adapted policies (its mean action) over
``evaluation_episodes`` episodes with terminate-on-success. ``--num-evals`` rounds (5 x M = 50: every
test goal once with M = 10). ``evaluation_episodes`` is set to ``M`` (one episode per
sub-environment on average): Meta-World counts the first ``evaluation_episodes`` episodes that END,
pooled over the sub-environments of the task, and successful episodes end early, so a smaller
value over-weights the quick successes. Even at ``M`` a goal solved quickly can contribute a second
episode before a failing one times out, so the script also reports ``first_episode_success``: the
success of exactly one evaluation episode per goal (same adapted agent, our loop), which has no
such bias. The unadapted policy is scored the same way with ``adaptation_steps=0``.

Deviations (PAPERS.md sections 4, 5), to fit a session on 2 shared cores (Meta-World steps at
~500/s here): episodes of 100 steps in training AND evaluation (``max_episode_steps=100`` passed
to Meta-World's vector env; its default is ``max_path_length`` 500, so this is conservative for
success: fewer steps to reach the goal); meta-batch 10 goals x 5 episodes (garage's MAML-TRPO
Meta-World example: 20 x 10, 300 epochs, policy (100, 100) tanh, inner rate 0.1); minutes of
training instead of hundreds of iterations. Policy (100, 100) tanh as garage.
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

import tensorflow as tf  # noqa: E402

from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner  # noqa: E402
from metarl_tf.networks import gaussian_mlp_policy  # noqa: E402
from metarl_tf.tasks.metaworld import (ACT_DIM, OBS_DIM, MAMLMetaWorldAgent,  # noqa: E402
                                       MetaWorldTasks, first_episode_success)
from _report import Report, train_on_budget  # noqa: E402  (benchmarks/_report.py)

ENV_NAME = "reach-v3"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--outer", choices=("promp", "trpo"), default="promp")
    p.add_argument("--minutes", type=float, default=35.0)
    p.add_argument("--max-iterations", type=int, default=0)
    p.add_argument("--meta-batch", type=int, default=10)
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--eval-meta-batch", type=int, default=10)
    p.add_argument("--num-evals", type=int, default=5)
    p.add_argument("--eval-horizon", type=int, default=100)
    p.add_argument("--adaptation-episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", default="/tmp/maml_rl_metaworld_ckpt")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--eval-only", action="store_true", help="evaluate the latest checkpoint")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    start = datetime.datetime.now(datetime.timezone.utc)
    report = Report(a.out, keep_existing=a.eval_only, header=[
        "$ " + " ".join([".venv/bin/python"] + sys.argv),
        f"# date: {start:%Y-%m-%d %H:%M} UTC (start); machine: 2-core VM shared with other "
        "engineers' runs (load varies), CPU only, one TF thread"])
    tasks = MetaWorldTasks("ML1", ENV_NAME, benchmark_seed=0, horizon=a.horizon)
    cfg = MAMLRLConfig(outer=a.outer, inner_lr=0.1, inner_steps=1, meta_batch_size=a.meta_batch,
                       episodes_per_task=a.episodes, horizon=a.horizon, promp_clip=0.3,
                       promp_kl_coeff=5e-4, promp_adaptive_kl=False)
    policy = gaussian_mlp_policy(OBS_DIM, ACT_DIM, hidden=(100, 100), activation="tanh",
                                 seed=a.seed)
    learner = MAMLRLLearner(policy, tasks, cfg, seed=a.seed)
    ckpt = tf.train.Checkpoint(**learner.checkpoint_items())
    manager = tf.train.CheckpointManager(ckpt, a.ckpt, 2)
    if (a.resume or a.eval_only) and manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        report(f"# restored iteration {learner.step} from {manager.latest_checkpoint}")
    if not a.eval_only:
        report(task=f"ML1/{ENV_NAME}", outer=a.outer, meta_batch=a.meta_batch,
               episodes_per_task=a.episodes, horizon=a.horizon, policy="(100,100)tanh",
               budget_minutes=a.minutes, tensorflow=tf.__version__)
        report("config=" + repr(dataclasses.asdict(cfg)).replace(" ", ""))
        train(a, learner, manager, report)
    evaluate(a, learner, report)
    end = datetime.datetime.now(datetime.timezone.utc)
    report(f"# end: {end:%Y-%m-%d %H:%M} UTC; wall {(end - start).total_seconds() / 60:.1f} min")


def train(a, learner, manager, report):
    def progress(it, m, elapsed):
        if it % 5 == 0:
            report(f"# iteration={it} pre_return={m['pre_return']:.1f} "
                   f"post_return={m['post_return']:.1f} kl={m['kl']:.4f} "
                   f"elapsed_s={elapsed:.0f}")

    train_s = train_on_budget(learner, manager, a.minutes, a.max_iterations, progress)
    report(phase="train", iterations=learner.step, train_s=round(train_s, 1),
           env_steps_per_iteration=2 * a.meta_batch * a.episodes * a.horizon)


def evaluate(a, learner, report):
    import gymnasium as gym
    from metaworld.evaluation import metalearning_evaluation

    m = a.eval_meta_batch
    if 50 % m:
        raise SystemExit(f"--eval-meta-batch must divide 50 (ML1 has 50 test goals), got {m}")
    s = time.perf_counter()
    envs = gym.make_vec("Meta-World/ML1-test", env_name=ENV_NAME, meta_batch_size=m, seed=a.seed,
                        max_episode_steps=a.eval_horizon)
    agent = MAMLMetaWorldAgent(learner, num_envs=m, seed=a.seed)
    for steps, label in ((0, "unadapted"), (1, "adapted_1_step")):
        success, mean_return, _ = metalearning_evaluation(
            agent, envs, num_evals=a.num_evals, adaptation_steps=steps,
            adaptation_episodes=a.adaptation_episodes, evaluation_episodes=m)
        report(agent=label, metaworld_success_rate=success, metaworld_mean_return=mean_return,
               num_evals=a.num_evals, meta_batch_size=m, adaptation_episodes=a.adaptation_episodes,
               evaluation_episodes=m, episode_steps=a.eval_horizon,
               meta_iterations=learner.step)
    # Unbiased check: one evaluation episode per test goal, after the same adaptation.
    for steps, label in ((0, "unadapted"), (1, "adapted_1_step")):
        rate, per_goal = first_episode_success(agent, envs, num_evals=a.num_evals,
                                               adaptation_steps=steps,
                                               adaptation_episodes=a.adaptation_episodes)
        report(agent=label, first_episode_success=rate, goals=len(per_goal))
    report(phase="eval", eval_s=round(time.perf_counter() - s, 1))
    envs.close()


if __name__ == "__main__":
    main()
