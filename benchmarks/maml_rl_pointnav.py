"""MAML-TRPO on 2D point navigation: learning quality vs the oracle, in-graph vs gymnasium speed.

usage:
    python benchmarks/maml_rl_pointnav.py [--iterations 100] [--pretrain-iterations 100]
        [--eval-episodes 20] [--speed-repeats 3] [--gym-envs 400] [--seed 0] [--skip-speed]
        [--trpo-fvp-fraction 1.0] [--speed-configs 1.0,0.25,0.1,0.25:xla] [--skip-products]

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

``--trpo-fvp-fraction`` sets ``MAMLRLConfig.trpo_fvp_fraction`` for the quality run (1.0, all
tasks in the KL products, is the papers' setting; below 1 is TRPO's own subsampling, a labelled
deviation); the TRPO speed lines are printed for each of ``--speed-configs``, a comma-separated
list of ``FRACTION`` or ``FRACTION:xla`` (``jit_compile=True`` on both sides: the in-graph
iteration and the gymnasium path's compiled steps alike).

Products. The conjugate gradient of one TRPO update (``cg_iters`` KL Hessian products, all tasks),
timed with two forms of the product on the same episodes: ``trpo.gauss_newton_vector_product`` (forward mode through the inner
step, the inner adaptation re-run per product) and the learner's own (one plain-SGD inner step has
a symmetric Jacobian, so ``trpo.symmetric_gauss_newton_product``: reverse passes through one
recording of the inner map, KL curvature through the policy outputs), with the largest relative
difference of the two CG solutions (medians of 5 interleaved calls each). Then the meta-gradient
alone (graph and XLA) and the two sampling phases give ``max_possible_speedup``: the bound on the
whole iteration's in-graph speedup if CG and the line search were free, since both sides compute
the same full-data gradient. ``--skip-products`` skips both.

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

from metarl_tf.algorithms import pg_losses, trpo  # noqa: E402
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


def one_round_ingraph(learner, seed):
    """Sampling, advantages and the inner step of one iteration: ``(pre batch, post batch)``."""
    cfg = learner.config
    goals = learner.tasks.sample_tf(seed, cfg.meta_batch_size)
    params = learner.fmodel.tile(learner._theta(), cfg.meta_batch_size)
    episodes = learner._rollout_ingraph(params, goals, seed + 1, cfg.episodes_per_task)
    batch, adapted = learner._prepare_and_adapt(params, episodes, [])
    post = learner._prepare(adapted, learner._rollout_ingraph(adapted, goals, seed + 2,
                                                              cfg.episodes_per_task))
    return batch, post


def sampling_phase_ingraph(learner):
    """``one_round_ingraph`` as one compiled function."""

    @tf.function
    def run(seed):
        batch, post = one_round_ingraph(learner, seed)
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
    parser.add_argument("--trpo-fvp-fraction", type=float, default=1.0)
    parser.add_argument("--speed-configs", default="1.0,0.25,0.1,0.25:xla")
    parser.add_argument("--skip-products", action="store_true")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    tasks = PointNavTasks()
    cfg = MAMLRLConfig(trpo_fvp_fraction=args.trpo_fvp_fraction)
    goals = tasks.maml_test_goals(40)
    line(original=ORIGINAL)
    line(reimplementation=REIMPLEMENTATION)
    print("config=" + repr(dataclasses.asdict(cfg)).replace(" ", ""), flush=True)
    line(tensorflow=tf.__version__, threads=1, policy="(64,64)tanh", eval_goals=40,
         eval_goal_source="cbfinn/maml_rl:test_maml_point.py(np.random.seed(1))",
         eval_episodes_per_step=args.eval_episodes)

    # -- quality ----------------------------------------------------------------------------------
    gap = None
    if not args.skip_products:
        gradient_bound(args, tasks, *products(cfg))
    if args.iterations > 0:
        gap = quality(args, tasks, cfg, goals)
    configs = []
    for item in filter(None, args.speed_configs.split(",")):
        fraction, _, flag = item.partition(":")
        if flag not in ("", "xla"):
            parser.error(f"--speed-configs: expected FRACTION or FRACTION:xla, got {item!r}")
        configs.append((float(fraction), flag == "xla"))
    speedups = speed(args, tasks, cfg, configs) if not args.skip_speed else {}

    verdict = lambda ok: "met" if ok else "missed"  # noqa: E731
    targets = []
    if gap is not None:
        targets.append(f"gap_closed>=0.6 {verdict(gap >= 0.6)}")
    for (fraction, xla), speedup in speedups.items():
        targets.append(f"ingraph_speedup>=10 (trpo_fvp_fraction={fraction:g}, xla={xla}) "
                       f"{verdict(speedup >= 10)}")
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


def speed(args, tasks, cfg, configs):
    """Whole iterations and sampling phases, in-graph vs gymnasium; returns the TRPO speedup per
    ``(trpo_fvp_fraction, xla)``."""
    envs = make_vector_env(tasks.make_env, num_envs=args.gym_envs)
    results = {}
    runs = [("trpo", f, x) for f, x in configs] + [("promp", 1.0, False)]
    s_in = s_gym = None
    for outer, fraction, xla in runs:
        c = dataclasses.replace(cfg, outer=outer, trpo_fvp_fraction=fraction, jit_compile=xla)
        ingraph = MAMLRLLearner(policy(1), tasks, c, seed=1)
        gym = MAMLRLLearner(policy(1), tasks, c, seed=1, vector_env=envs)
        start = time.perf_counter()
        t_in = timed(lambda i: ingraph.train(1), args.speed_repeats)
        t_gym = timed(lambda i: gym.train(1), args.speed_repeats)
        extra = {"trpo_fvp_fraction": fraction, "xla": xla} if outer == "trpo" else {}
        line(outer=outer, **extra, ingraph_iteration_s=round(t_in, 3),
             gym_iteration_s=round(t_gym, 3), ingraph_speedup=round(t_gym / t_in, 2),
             gym_envs=args.gym_envs,
             episodes_per_iteration=2 * c.meta_batch_size * c.episodes_per_task,
             steps_per_episode=c.horizon,
             wall_s_with_tracing=round(time.perf_counter() - start, 1))
        if outer == "trpo":
            results[(fraction, xla)] = t_gym / t_in
            if s_in is None:
                s_in = timed(sampling_phase_ingraph(ingraph), max(args.speed_repeats, 3))
                s_gym = timed(sampling_phase_gym(gym), args.speed_repeats)
                line(phase="sampling", ingraph_sampling_s=round(s_in, 3),
                     gym_sampling_s=round(s_gym, 3), sampling_speedup=round(s_gym / s_in, 1))
            if not xla:
                # The sampling phase above is timed without XLA: only then is the difference
                # the update's time.
                line(phase="trpo_update", trpo_fvp_fraction=fraction,
                     trpo_update_s=round(t_in - s_in, 3))
    return results


def products(cfg):
    """One KL Hessian product two ways (see the module docstring), on one round of episodes."""
    # All 20 tasks in the products (the fraction of the quality run does not apply here).
    c = dataclasses.replace(cfg, trpo_fvp_fraction=1.0)
    learner = MAMLRLLearner(policy(2), PointNavTasks(), c, seed=2)
    pre, post = tf.function(lambda seed: one_round_ingraph(learner, seed))(
        tf.constant([11, 0], tf.int64))
    theta = learner._theta()
    vector = [tf.random.stateless_normal(t.shape, [3, i]) for i, t in enumerate(theta)]
    mask, obs = post.episodes.mask, post.episodes.observations
    kl_of = lambda adapted: tf.reduce_mean(pg_losses.mean_kl(  # noqa: E731
        post.outputs, learner.apply_fn(adapted, obs), mask, "gaussian"))
    b = trpo.flatten(vector)

    def cg(make_product):
        product = make_product()
        return trpo.conjugate_gradient(
            lambda v: trpo.flatten(product(trpo.unflatten(v, theta))) + c.cg_damping * v, b,
            c.cg_iters, 0.0)

    forward = tf.function(lambda: cg(lambda: lambda v: trpo.gauss_newton_vector_product(
        lambda th: learner._adapt_chain(th, [pre])[-1], kl_of, theta, v)))
    library = tf.function(lambda: cg(lambda: learner._kl_hessian_product(theta, [pre], post)))
    a, x = forward(), library()
    times = {forward: [], library: []}
    for _ in range(5):   # interleaved, so a change of machine load hits both alike
        for fn in (forward, library):
            start = time.perf_counter()
            fn().numpy()
            times[fn].append(time.perf_counter() - start)
    t_forward, t_library = statistics.median(times[forward]), statistics.median(times[library])
    line(part="kl_products_in_cg", products=c.cg_iters, tasks=c.meta_batch_size,
         samples_per_task=c.episodes_per_task * c.horizon,
         forward_mode_s=round(t_forward, 3), symmetric_s=round(t_library, 3),
         speedup=round(t_forward / t_library, 2),
         cg_solution_max_rel_diff=float(tf.reduce_max(tf.abs(a - x)) / tf.reduce_max(tf.abs(a))),
         cg_solution_max_abs=float(tf.reduce_max(tf.abs(a))))
    return learner, pre, post


def gradient_bound(args, tasks, learner, pre, post):
    """The meta-gradient alone (graph and XLA) next to the two sampling phases: the whole
    iteration's speedup cannot exceed ``(gym sampling + gradient) / (in-graph sampling +
    gradient)`` even if CG and the line search cost nothing, since both sides compute it."""
    theta = learner._theta()
    mask = post.episodes.mask

    def grad():
        with tf.GradientTape() as tape:
            tape.watch(theta)
            adapted = learner._adapt_chain(theta, [pre])[-1]
            logp, _ = learner._post_terms(adapted, post)
            loss = -tf.reduce_mean(pg_losses.trpo_surrogate(logp, post.log_probs,
                                                            post.advantages, mask))
        return tape.gradient(loss, theta)

    graph = tf.function(grad)
    xla = tf.function(grad, jit_compile=True)
    t_graph = timed(lambda i: [g.numpy() for g in graph()], 5)
    t_xla = timed(lambda i: [g.numpy() for g in xla()], 5)
    gym = MAMLRLLearner(policy(1), tasks, learner.config, seed=1,
                        vector_env=make_vector_env(tasks.make_env, num_envs=args.gym_envs))
    s_in = timed(sampling_phase_ingraph(learner), 3)
    s_gym = timed(sampling_phase_gym(gym), 3)
    fastest = min(t_graph, t_xla)
    line(part="meta_gradient_bound", grad_s=round(t_graph, 3), grad_xla_s=round(t_xla, 3),
         ingraph_sampling_s=round(s_in, 3), gym_sampling_s=round(s_gym, 3),
         max_possible_speedup=round((s_gym + fastest) / (s_in + fastest), 2))


if __name__ == "__main__":
    main()
