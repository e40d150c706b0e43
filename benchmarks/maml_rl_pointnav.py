"""MAML-TRPO on 2D point navigation: learning quality vs the oracle, in-graph vs gymnasium speed.

usage:
    python benchmarks/maml_rl_pointnav.py [--iterations 100] [--pretrain-iterations 100]
        [--eval-episodes 20] [--speed-repeats 3] [--gym-envs 400] [--seed 0] [--skip-speed]

Quality. ``MAMLRLLearner`` with ``MAMLRLConfig()`` (the issue's MAML settings: 20 tasks x 20
episodes of 100 steps, one inner policy-gradient step of rate 0.1, TRPO with max KL 0.01, 10 CG
iterations, damping 1e-5, line search 0.8^k x 15; policy (64, 64) tanh, as pytorch-maml-rl's
``2d-navigation.yaml``) is meta-trained on in-graph PointNav for ``--iterations`` meta-iterations,
then evaluated on the 40 meta-test goals of cbfinn/maml_rl ``test_maml_point.py`` (NumPy seed 1):
the mean episode return before adaptation, after 1, 2 and 3 inner steps (fresh episodes each
step), the oracle's (goal-aware straight-line policy) and ``gap_closed = (post - pre) / (oracle -
pre)`` after one step. The "pretrained" baseline (same outer loop without adaptation, i.e. one
policy for all goals, ``pretrained_baseline``) is evaluated the same way.

Speed. One meta-iteration (sample, adapt, sample again, TRPO meta-update) on in-graph PointNav vs
the same iteration with gymnasium PointNav through ``collect_episodes`` (a ``SyncVectorEnv`` of
``--gym-envs`` sub-environments); the sampling phase (rollouts, advantages and the inner step) is
also timed alone, since the TRPO update is the same computation in both, and the whole iteration
is timed again with ProMP's outer loop (5 Adam steps instead of TRPO's 10 conjugate-gradient
products and line search). ``--iterations 0`` skips the quality part.

One line per result, ``key=value`` pairs; ``#`` lines are progress. TensorFlow runs with one
intra-op and one inter-op thread.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from metarl_tf.algorithms.maml_rl import (MAMLRLConfig, MAMLRLLearner,  # noqa: E402
                                          pretrained_baseline)
from metarl_tf.networks import gaussian_mlp_policy  # noqa: E402
from metarl_tf.rollouts import make_vector_env  # noqa: E402
from metarl_tf.tasks import PointNavTasks  # noqa: E402

ORIGINAL = ("source=cbfinn/maml_rl:maml_examples/maml_trpo_point.py fast_lr=0.5 meta_batch_size=40 "
            "fast_batch_size=20 horizon=100 policy=(100,100)relu max_kl=0.01 n_itr=100")
REIMPLEMENTATION = ("source=tristandeleu/pytorch-maml-rl:configs/maml/2d-navigation.yaml "
                    "fast_lr=0.1 meta_batch_size=20 fast_batch_size=20 horizon=100 "
                    "policy=(64,64)tanh max_kl=0.01 num_batches=500")


def policy(seed):
    return gaussian_mlp_policy(2, 2, hidden=(64, 64), activation="tanh", seed=seed)


def fmt(x):
    return f"{x:.5g}" if isinstance(x, float) else str(x)


def line(**kv):
    print(" ".join(f"{k}={fmt(v)}" for k, v in kv.items()), flush=True)


def train(learner, iterations, label):
    start = time.perf_counter()
    for i in range(1, iterations + 1):
        m = learner.train(1)
        if i % 10 == 0 or i == iterations:
            print(f"# {label} iteration={i} pre_return={m['pre_return']:.2f} "
                  f"post_return={m['post_return']:.2f} kl={m.get('kl', 0.0):.4f} "
                  f"elapsed_s={time.perf_counter() - start:.0f}", flush=True)
    return time.perf_counter() - start


def evaluate(learner, goals, episodes, seed):
    curve = learner.evaluate(tasks=goals, num_steps=3, episodes_per_task=episodes, seed=seed)
    pre, post = curve["returns"][0], curve["returns"][1]
    oracle = curve["oracle_return"]
    return curve, pre, post, oracle, (post - pre) / (oracle - pre)


def sampling_phase_ingraph(learner):
    """Sampling, advantages and the inner step of one iteration, as one compiled function."""
    cfg = learner.config

    @tf.function
    def run(seed):
        goals = learner.tasks.sample_tf(seed, cfg.meta_batch_size)
        params = learner.fmodel.tile(learner._theta(), cfg.meta_batch_size)
        episodes = learner._rollout_ingraph(params, goals, seed + 1, cfg.episodes_per_task)
        batch, adapted = learner._prepare_and_adapt(params, episodes, [])
        post = learner._prepare(adapted, learner._rollout_ingraph(adapted, goals, seed + 2,
                                                                  cfg.episodes_per_task))
        return batch.advantages, post.advantages

    return lambda i: run(tf.constant([7, i], tf.int64))


def sampling_phase_gym(learner):
    cfg = learner.config

    def run(i):
        tasks = list(learner.tasks.sample(cfg.meta_batch_size, 1000 + i))
        params = learner.fmodel.tile(learner._theta(), cfg.meta_batch_size)
        episodes = learner._collect(params, tasks, 2 * i, cfg.episodes_per_task)
        _, adapted = learner._prepare_adapt_fn(params, episodes, [])
        post = learner._prepare_fn(adapted, learner._collect(adapted, tasks, 2 * i + 1,
                                                             cfg.episodes_per_task))
        return post.advantages

    return run


def timed(fn, repeats):
    """Median seconds of ``repeats`` calls after one warm-up call (tracing excluded)."""
    fn(0)
    times = []
    for i in range(1, repeats + 1):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--pretrain-iterations", type=int, default=100)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--gym-envs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    tasks = PointNavTasks()
    cfg = MAMLRLConfig()
    goals = tasks.maml_test_goals(40)
    line(original=ORIGINAL)
    line(reimplementation=REIMPLEMENTATION)
    print("config=" + repr(dataclasses.asdict(cfg)).replace(" ", ""), flush=True)
    line(tensorflow=tf.__version__, threads=1, policy="(64,64)tanh", eval_goals=40,
         eval_goal_source="cbfinn/maml_rl:test_maml_point.py(np.random.seed(1))",
         eval_episodes_per_step=args.eval_episodes)

    # -- quality ----------------------------------------------------------------------------------
    gap = None
    if args.iterations > 0:
        gap = quality(args, tasks, cfg, goals)
    speedup = speed(args, tasks, cfg) if not args.skip_speed else None

    verdict = lambda ok: "met" if ok else "missed"  # noqa: E731
    targets = []
    if gap is not None:
        targets.append(f"gap_closed>=0.6 {verdict(gap >= 0.6)}")
    if speedup is not None:
        targets.append(f"ingraph_speedup>=10 {verdict(speedup >= 10)}")
    print("targets: " + "; ".join(targets), flush=True)


def quality(args, tasks, cfg, goals):
    learner = MAMLRLLearner(policy(args.seed), tasks, cfg, seed=args.seed)
    _, init_pre, init_post, _, _ = evaluate(learner, goals, args.eval_episodes, args.seed)
    line(algo="initial_policy", pre_return=init_pre, post_1_step_return=init_post)
    seconds = train(learner, args.iterations, "maml_trpo")
    curve, pre, post, oracle, gap = evaluate(learner, goals, args.eval_episodes, args.seed)
    r = curve["returns"]
    line(algo="maml_trpo", meta_iterations=args.iterations, train_seconds=round(seconds, 1),
         seconds_per_iteration=round(seconds / args.iterations, 2), pre_return=pre,
         post_1_step_return=post, post_2_steps_return=r[2], post_3_steps_return=r[3],
         oracle_return=oracle, gap_closed=gap, ci95_pre=curve["ci95"][0],
         ci95_post_1_step=curve["ci95"][1])

    if args.pretrain_iterations > 0:
        start = time.perf_counter()
        pretrained = pretrained_baseline(policy(args.seed), tasks, cfg, args.pretrain_iterations,
                                         seed=args.seed)
        seconds_p = time.perf_counter() - start
        curve_p, pre_p, post_p, _, gap_p = evaluate(pretrained, goals, args.eval_episodes,
                                                    args.seed)
        rp = curve_p["returns"]
        line(algo="pretrained", meta_iterations=args.pretrain_iterations,
             train_seconds=round(seconds_p, 1), pre_return=pre_p, post_1_step_return=post_p,
             post_2_steps_return=rp[2], post_3_steps_return=rp[3], gap_closed=gap_p)
    return gap


def speed(args, tasks, cfg):
    """Whole iterations and sampling phases, in-graph vs gymnasium; returns the TRPO speedup."""
    envs = make_vector_env(tasks.make_env, num_envs=args.gym_envs)
    results = {}
    for outer in ("trpo", "promp"):
        c = dataclasses.replace(cfg, outer=outer)
        ingraph = MAMLRLLearner(policy(1), tasks, c, seed=1)
        gym = MAMLRLLearner(policy(1), tasks, c, seed=1, vector_env=envs)
        t_in = timed(lambda i: ingraph.train(1), args.speed_repeats)
        t_gym = timed(lambda i: gym.train(1), args.speed_repeats)
        results[outer] = t_gym / t_in
        line(outer=outer, ingraph_iteration_s=round(t_in, 3), gym_iteration_s=round(t_gym, 3),
             ingraph_speedup=round(t_gym / t_in, 2), gym_envs=args.gym_envs,
             episodes_per_iteration=2 * c.meta_batch_size * c.episodes_per_task,
             steps_per_episode=c.horizon)
        if outer == "trpo":
            s_in = timed(sampling_phase_ingraph(ingraph), max(args.speed_repeats, 3))
            s_gym = timed(sampling_phase_gym(gym), args.speed_repeats)
            line(phase="sampling", ingraph_sampling_s=round(s_in, 3),
                 gym_sampling_s=round(s_gym, 3), sampling_speedup=round(s_gym / s_in, 1),
                 trpo_update_s=round(t_in - s_in, 3))
    return results["trpo"]


if __name__ == "__main__":
    main()
