"""RL² on Bernoulli bandits vs the classic bandit strategies, plus in-graph vs gymnasium speed.

Trains an RL² GRU policy with PPO over trials (``metarl_tf.algorithms.rl2``) on ``k``-armed
Bernoulli bandits with ``n`` pulls per trial (RL² paper, Duan et al. 2016, arXiv:1611.02779,
table 1), then scores it on held-out trials (test split) next to random, greedy, epsilon-greedy
(epsilon tuned on train-split bandits), UCB1 and Thompson sampling run on the SAME held-out bandits.
The RL² paper's Gittins-index figures (as recalled by the issue: 6.6, 78.3, 82.8 for (n, k) =
(10, 5), (100, 5), (100, 10); pytorch_rl2's README copies "RL² 6.7" for n=10, k=5) are printed as
references, not recomputed.

Speed: env-steps/s of one PPO iteration with the pure-TF bandit stepped inside the compiled
iteration vs the same iteration with the gymnasium ``BanditEnv`` in a ``SyncVectorEnv``, measured
in the same process (and, for the in-graph path, with and without XLA).

Usage (key=value lines on stdout and in ``--out``)::

    python benchmarks/rl2_bandits.py --n 10 --k 5 --iterations 1500 \
        --out docs/benchmarks/rl2_bandits_n10_k5.txt
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _report import add_lr_drop_arg, lr_text, train_with_evals  # noqa: E402
from metarl_tf.algorithms.rl2 import RL2Config, RL2Learner, rl2_policy_for  # noqa: E402
from metarl_tf.tasks.bandits import BernoulliBanditTasks, run_bandit_strategy  # noqa: E402

GITTINS = {(10, 5): 6.6, (100, 5): 78.3, (100, 10): 82.8}  # RL² paper table 1, as recalled


def ci95(x) -> float:
    x = np.asarray(x, np.float64)
    return float(1.96 * x.std() / np.sqrt(x.size))


def speed(args, tasks, lines) -> None:
    """Env-steps/s of whole PPO iterations, all built first and then timed in turns (the machine
    is shared: interleaving spreads its load over the variants). Variants: ``ingraph`` (the
    default: graph-mode iteration, each PPO minibatch step an XLA cluster), ``ingraph_graph``
    (the same with ``jit_minibatch=False``, the path before), ``gymnasium`` (SyncVectorEnv
    sampling, same update as ``ingraph``), ``ingraph_xla`` (``jit_compile``: the whole iteration
    one XLA function; with ``--speed-xla``). Wall-clock and process-CPU rates are both printed:
    with one TF thread the CPU rate is the less load-sensitive one."""
    steps = args.speed_batch * args.n
    variants = [("ingraph", dict(in_graph=True)),
                ("ingraph_graph", dict(in_graph=True, jit_minibatch=False)),
                ("gymnasium", dict(in_graph=False))]
    if args.speed_xla:
        variants.append(("ingraph_xla", dict(in_graph=True, jit_compile=True)))
    learners = {}
    for name, kw in variants:
        cfg = RL2Config(episodes_per_trial=args.n, num_arms=args.k,
                        meta_batch_size=args.speed_batch, **kw)
        policy = rl2_policy_for(tasks, units=args.units, seed=args.seed,
                                separate_value=args.value_net == "separate")
        learner = RL2Learner(policy, tasks, cfg, seed=args.seed)
        learner.train(1)
        learner.train(1)  # warm-up: tracing / compilation (XLA compiles on the first two calls)
        learners[name] = learner
    wall = {name: 0.0 for name in learners}
    cpu = {name: 0.0 for name in learners}
    for _ in range(args.speed_iterations):
        for name, learner in learners.items():
            t0, c0 = time.perf_counter(), time.process_time()
            learner.train(1)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
    total = steps * args.speed_iterations
    for name in learners:
        lines.append(f"speed_{name}_env_steps_per_s={total / wall[name]:.1f} "
                     f"speed_{name}_env_steps_per_cpu_s={total / cpu[name]:.1f}")
    lines.append(f"speed_ingraph_over_gymnasium={wall['gymnasium'] / wall['ingraph']:.2f} "
                 f"cpu={cpu['gymnasium'] / cpu['ingraph']:.2f}")
    lines.append(f"speed_jit_minibatch_over_graph={wall['ingraph_graph'] / wall['ingraph']:.2f} "
                 f"cpu={cpu['ingraph_graph'] / cpu['ingraph']:.2f}")
    if "ingraph_xla" in learners:
        lines.append(f"speed_xla_over_ingraph={wall['ingraph'] / wall['ingraph_xla']:.2f} "
                     f"cpu={cpu['ingraph'] / cpu['ingraph_xla']:.2f}")
    lines.append(f"speed_setting=batch {args.speed_batch} trials x {args.n} pulls, GRU "
                 f"{args.units}, value_net={args.value_net}, {RL2Config().num_epochs} epochs x "
                 f"{RL2Config().num_minibatches} minibatches per iteration, "
                 f"{args.speed_iterations} timed iterations each (interleaved), 1 TF thread, "
                 f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="pulls per trial")
    ap.add_argument("--k", type=int, default=5, help="arms")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=500, help="trials per PPO iteration")
    ap.add_argument("--units", type=int, default=64, help="GRU width")
    ap.add_argument("--value-net", choices=("separate", "shared"), default="shared",
                    help="value head on its own GRU (pytorch_rl2) or on the policy's GRU")
    ap.add_argument("--minibatches", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    add_lr_drop_arg(ap)
    ap.add_argument("--entropy", type=float, default=0.01)
    ap.add_argument("--discount", type=float, default=0.99)
    ap.add_argument("--gae-lambda", type=float, default=0.3)
    ap.add_argument("--bptt-chunk", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-trials", type=int, default=1000)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop training after this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt", default=None, help="checkpoint directory (resumed when present)")
    ap.add_argument("--speed", action="store_true", help="also measure in-graph vs gymnasium")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--speed-batch", type=int, default=250)
    ap.add_argument("--speed-iterations", type=int, default=3)
    ap.add_argument("--speed-xla", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    command = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    lines = [f"# {command}", f"# date={datetime.datetime.now(datetime.timezone.utc).isoformat()}",
             f"n={args.n}", f"k={args.k}"]
    tasks = BernoulliBanditTasks(num_arms=args.k, num_pulls=args.n)

    if args.speed or args.speed_only:
        speed(args, tasks, lines)
        print("\n".join(lines[4:]), flush=True)
    if not args.speed_only:
        test = tasks.sample(args.eval_trials, seed=1234, split="test")
        tune = tasks.sample(args.eval_trials, seed=4321, split="train")
        eps_grid = (0.01, 0.05, 0.1, 0.2, 0.3)
        eps = max(eps_grid, key=lambda e: run_bandit_strategy(
            "epsilon_greedy", tune, args.n, seed=1, epsilon=e).mean())
        for name in ("random", "greedy", "epsilon_greedy", "ucb1", "thompson"):
            totals = run_bandit_strategy(name, test, args.n, seed=2, epsilon=eps)
            lines.append(f"{name}_total={totals.mean():.3f} {name}_ci95={ci95(totals):.3f}")
        lines.append(f"epsilon_greedy_epsilon={eps} (best of {eps_grid} on train-split bandits)")
        lines.append(f"oracle_best_arm_total={args.n * test.max(axis=1).mean():.3f}")
        print("\n".join(lines), flush=True)

        cfg = RL2Config(episodes_per_trial=args.n, num_arms=args.k, meta_batch_size=args.batch,
                        learning_rate=args.lr, entropy_coef=args.entropy, discount=args.discount,
                        gae_lambda=args.gae_lambda, bptt_chunk=args.bptt_chunk,
                        num_minibatches=args.minibatches)
        policy = rl2_policy_for(tasks, units=args.units, seed=args.seed,
                                separate_value=args.value_net == "separate")
        learner = RL2Learner(policy, tasks, cfg, seed=args.seed)
        start, train_s, stopped = train_with_evals(learner, test, args)
        if stopped:
            lines.append(f"stopped_on_time_budget=True max_minutes={args.max_minutes}")
        ev = learner.evaluate(tasks=test, seed=3)
        greedy = learner.evaluate(tasks=test, seed=3, greedy=True)
        ts = run_bandit_strategy("thompson", test, args.n, seed=2)
        lines.append(f"rl2_total={ev['trial_return']:.3f} rl2_ci95={ev['trial_return_ci95']:.3f}")
        lines.append(f"rl2_greedy_total={greedy['trial_return']:.3f} "
                     f"rl2_greedy_ci95={greedy['trial_return_ci95']:.3f}")
        lines.append("rl2_reward_per_pull=" + ",".join(f"{r:.3f}" for r in ev["returns"][:10])
                     + ("..." if args.n > 10 else ""))
        best = max(ev["trial_return"], greedy["trial_return"])
        lines.append(f"rl2_minus_thompson={ev['trial_return'] - ts.mean():.3f}")
        ref = GITTINS.get((args.n, args.k))
        if ref is not None:
            lines.append(f"gittins_paper={ref} rl2_over_gittins={ev['trial_return'] / ref:.4f} "
                         f"best_rl2_over_gittins={best / ref:.4f}")
            lines.append(f"target_geq_thompson={ev['trial_return'] >= ts.mean()} "
                         f"target_within_2pct_gittins={ev['trial_return'] >= 0.98 * ref}")
        lines.append(f"train_iterations={learner.step} trained_this_run={learner.step - start} "
                     f"train_seconds={train_s:.0f} "
                 f"train_env_steps_per_s={(learner.step - start) * args.batch * args.n / max(train_s, 1e-9):.0f} batch={args.batch} units={args.units} "
                     f"value_net={args.value_net} minibatches={args.minibatches} "
                     f"{lr_text(args)} entropy_coef={args.entropy} discount={args.discount} "
                     f"gae_lambda={args.gae_lambda} env_steps={learner.step * args.batch * args.n}")
        print("\n".join(lines[-7:]), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
