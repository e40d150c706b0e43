"""MAML-RL on HalfCheetahVel: return before / after one inner step vs the pretrained baseline.

usage:
    python benchmarks/maml_rl_halfcheetah.py [--outer promp] [--minutes 45] [--max-iterations 0]
        [--meta-batch 20] [--episodes 10] [--horizon 100] [--eval-tasks 40] [--eval-episodes 20]
        [--quick-eval-every 25] [--ckpt DIR] [--resume] [--out docs/benchmarks/maml_rl_halfcheetah.txt]

What it measures (issue 3, target "HalfCheetahVel"). Two learners train side by side, one
meta-iteration each in turn, on the same task family (``HalfCheetahVelTasks``: v_goal ~ U[0, 2],
r = -|v_x - v_goal| - 0.05 ||a||^2, gymnasium MuJoCo v5) until ``--minutes`` of wall time are
spent (or ``--max-iterations``), so that at any moment both have had the same number of
iterations:

* ``maml``: ``MAMLRLLearner`` (``--outer promp``: ProMP; ``trpo``: MAML-TRPO), one inner
  policy-gradient step of rate 0.1 (LVC estimator);
* ``pretrained``: ``pretrained_baseline``'s learner, the same outer loop with ``inner_steps=0``: one
  policy trained on all tasks jointly (the MAML paper's "pretrained" baseline).

Then both are evaluated on the 40 meta-test velocities of cbfinn/maml_rl ``test_maml_cheetah.py``
(NumPy seed 1): mean episode return before adaptation (``pre``) and after one inner step with
fresh episodes (``post_1_step``; the pretrained policy is fine-tuned with the same rate), with
95% intervals over tasks. The target is ``maml post_1_step > maml pre`` and ``> pretrained`` (both
its pre and post values are printed).

Deviations from the papers (PAPERS.md sections 2b, 2d, 3, 8), to fit a session on 2 shared cores:
horizon 100 (ProMP, pytorch-maml-rl; MR: 200, so returns are about half of MR's -130 / -80),
policy (64, 64) tanh (ProMP, pytorch-maml-rl), meta-batch 20 tasks x 10 episodes (ProMP: 40 x 20),
and a wall-clock budget of a few hundred iterations at most (ProMP: 1001, MR: 800). ProMP's run
script settings otherwise: clip 0.3, fixed inner KL penalty 5e-4, 5 Adam steps at 1e-3. Evaluation
uses ``--eval-episodes`` episodes per task and step (MR: 20 of 200 steps).

Progress: every ``--quick-eval-every`` iterations both learners are evaluated on 10 held-out
(test-split) velocities x 5 episodes (``#`` lines), checkpoints are written to ``--ckpt``
(``tf.train.Checkpoint``), and the report file ``--out`` is rewritten (atomically) with everything
printed so far, so an interrupted run still leaves its numbers; ``--resume`` continues from the
checkpoints. One TF thread; the machine may be shared (wall times are indicative only).
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
from metarl_tf.tasks.mujoco import HalfCheetahVelTasks  # noqa: E402
from _report import Report  # noqa: E402  (benchmarks/_report.py)

SOURCES = ("ProMP=jonasrothfuss/ProMP:run_scripts/pro-mp_run_mujoco.py(HalfCheetahRandVel: meta_batch 40, "
           "20 episodes x 100 steps, (64,64)tanh, inner_lr 0.1, clip 0.3, eta 5e-4 fixed, 5 Adam steps lr 1e-3, "
           "1001 iterations) MR=cbfinn/maml_rl:maml_examples/cluster_maml_trpo_cheetah.py(meta_batch 40, 20 x 200 "
           "steps, (100,100)relu, TRPO max_kl 0.01, 800 iterations; reads ~-130 pre / ~-80 post at convergence)")


def make_policy(seed):
    return gaussian_mlp_policy(HalfCheetahVelTasks.obs_dim, HalfCheetahVelTasks.act_dim,
                               hidden=(64, 64), activation="tanh", seed=seed)


def evaluate(learner, tasks, episodes, seed):
    curve = learner.evaluate(tasks=tasks, num_steps=1, episodes_per_task=episodes, seed=seed)
    return curve["returns"][0], curve["returns"][1], curve["ci95"][0], curve["ci95"][1]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--outer", choices=("promp", "trpo"), default="promp")
    p.add_argument("--minutes", type=float, default=45.0, help="training wall-clock budget")
    p.add_argument("--max-iterations", type=int, default=0, help="0 = until --minutes")
    p.add_argument("--meta-batch", type=int, default=20)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--horizon", type=int, default=100)
    p.add_argument("--eval-tasks", type=int, default=40)
    p.add_argument("--eval-episodes", type=int, default=20)
    p.add_argument("--quick-eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", default="/tmp/maml_rl_halfcheetah_ckpt")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=None, help="report file, rewritten as the run goes")
    a = p.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    tasks = HalfCheetahVelTasks(horizon=a.horizon)
    cfg = MAMLRLConfig(outer=a.outer, inner_lr=0.1, inner_steps=1, meta_batch_size=a.meta_batch,
                       episodes_per_task=a.episodes, horizon=a.horizon, discount=0.99,
                       gae_lambda=1.0, promp_clip=0.3, promp_kl_coeff=5e-4,
                       promp_adaptive_kl=False, promp_steps=5, promp_lr=1e-3)
    start = datetime.datetime.now(datetime.timezone.utc)
    report = Report(a.out, [
        "$ " + " ".join([".venv/bin/python"] + sys.argv),
        f"# date: {start:%Y-%m-%d %H:%M} UTC (start); machine: 2-core VM shared with other "
        f"engineers' tests and trainings (load varies), CPU only, one TF thread",
        f"# sources: {SOURCES}"])
    report(task="HalfCheetahVel", velocity_range="U[0,2]", horizon=a.horizon, policy="(64,64)tanh",
           outer=a.outer, meta_batch=a.meta_batch, episodes_per_task=a.episodes,
           budget_minutes=a.minutes, tensorflow=tf.__version__)
    report("config=" + repr(dataclasses.asdict(cfg)).replace(" ", ""))

    maml = MAMLRLLearner(make_policy(a.seed), tasks, cfg, seed=a.seed)
    pretrained = MAMLRLLearner(make_policy(a.seed), tasks, dataclasses.replace(cfg, inner_steps=0),
                               seed=a.seed)
    learners = {"maml": maml, "pretrained": pretrained}
    managers = {}
    for name, learner in learners.items():
        ckpt = tf.train.Checkpoint(**learner.checkpoint_items())
        managers[name] = tf.train.CheckpointManager(ckpt, os.path.join(a.ckpt, name), 2)
        if a.resume and managers[name].latest_checkpoint:
            ckpt.restore(managers[name].latest_checkpoint).assert_existing_objects_matched()
            report(f"# resumed {name} at iteration {learner.step}")

    quick_tasks = list(tasks.sample(10, seed=a.seed + 1, split="test"))
    test_tasks = list(tasks.maml_test_tasks(a.eval_tasks))
    if maml.step == 0:
        pre, post, _, _ = evaluate(maml, quick_tasks, 5, a.seed)
        report(f"# quick_eval iteration=0 maml_pre={pre:.2f} maml_post={post:.2f} "
               "(initial policy, 10 test-split tasks x 5 episodes)")

    t0 = time.perf_counter()
    seconds = {"maml": 0.0, "pretrained": 0.0}
    while True:
        it = maml.step
        if a.max_iterations and it >= a.max_iterations:
            break
        if time.perf_counter() - t0 > 60.0 * a.minutes:
            break
        logs = {}
        for name, learner in learners.items():
            s = time.perf_counter()
            logs[name] = learner.train(1)
            seconds[name] += time.perf_counter() - s
        it = maml.step
        if it % 5 == 0:
            m, b = logs["maml"], logs["pretrained"]
            report(f"# iteration={it} maml_pre={m['pre_return']:.2f} "
                   f"maml_post={m['post_return']:.2f} maml_kl={m['kl']:.4f} "
                   f"pretrained_return={b['post_return']:.2f} "
                   f"maml_s={seconds['maml']:.0f} pretrained_s={seconds['pretrained']:.0f}")
        if it % a.quick_eval_every == 0:
            for manager in managers.values():
                manager.save(checkpoint_number=it)
            mp, mq, _, _ = evaluate(maml, quick_tasks, 5, a.seed)
            bp, bq, _, _ = evaluate(pretrained, quick_tasks, 5, a.seed)
            report(f"# quick_eval iteration={it} maml_pre={mp:.2f} maml_post={mq:.2f} "
                   f"pretrained_pre={bp:.2f} pretrained_post={bq:.2f}")
    for manager in managers.values():
        manager.save(checkpoint_number=maml.step)
    iterations = maml.step
    report(phase="train", iterations=iterations, maml_train_s=round(seconds["maml"], 1),
           pretrained_train_s=round(seconds["pretrained"], 1),
           env_steps_per_iteration_maml=2 * a.meta_batch * a.episodes * a.horizon,
           env_steps_per_iteration_pretrained=a.meta_batch * a.episodes * a.horizon)

    s = time.perf_counter()
    pre, post, ci_pre, ci_post = evaluate(maml, test_tasks, a.eval_episodes, a.seed)
    report(algo=f"maml_{a.outer}", meta_iterations=iterations, pre_return=pre,
           post_1_step_return=post, ci95_pre=ci_pre, ci95_post=ci_post,
           eval_tasks=len(test_tasks), eval_episodes=a.eval_episodes)
    bpre, bpost, bci_pre, bci_post = evaluate(pretrained, test_tasks, a.eval_episodes, a.seed)
    report(algo="pretrained", meta_iterations=iterations, pre_return=bpre,
           post_1_step_return=bpost, ci95_pre=bci_pre, ci95_post=bci_post)
    report(phase="eval", eval_s=round(time.perf_counter() - s, 1))
    best_baseline = max(bpre, bpost)
    above_pre = post - ci_post > pre + ci_pre
    above_base = post - ci_post > best_baseline
    verdict = lambda ok: "met" if ok else "missed"  # noqa: E731
    report(f"targets: post>pre {verdict(post > pre)} (beyond the 95% intervals: "
           f"{'yes' if above_pre else 'no'}); post>pretrained {verdict(post > best_baseline)} "
           f"(beyond the interval: {'yes' if above_base else 'no'}); "
           f"adaptation_gain={post - pre:.2f}; gain_over_pretrained={post - best_baseline:.2f}")
    end = datetime.datetime.now(datetime.timezone.utc)
    report(f"# end: {end:%Y-%m-%d %H:%M} UTC; wall {(end - start).total_seconds() / 60:.1f} min")


if __name__ == "__main__":
    main()
