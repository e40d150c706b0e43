"""RL² on random tabular MDPs vs the uniformly random policy and the value-iteration optimum.

Trains an RL² GRU policy with PPO over trials (``metarl_tf.algorithms.rl2``, in graph on
``TabularMDPTF``) on the RL² paper's MDPs (Duan et al. 2016, arXiv:1611.02779, table 2: 10 states,
5 actions, episodes of 10 steps, n episodes per trial; transitions Dirichlet(1), mean rewards
N(1, 1)), then scores it on 1000 held-out MDPs (test split). On the same MDPs it computes, exactly,
the expected trial return of the uniformly random policy and of the optimal policy with the true
model (finite-horizon value iteration: an upper bound no learner can reach without knowing the MDP),
and prints RL²'s fraction of the optimum and of the gap between random and optimum.

Usage (key=value lines on stdout and in ``--out``)::

    python benchmarks/rl2_tabular.py --n 10 --iterations 1000 --out docs/benchmarks/rl2_tabular_n10.txt
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from _report import add_lr_drop_arg, lr_text, train_with_evals  # noqa: E402
from metarl_tf.algorithms.rl2 import RL2Config, RL2Learner, rl2_policy_for  # noqa: E402
from metarl_tf.tasks.tabular_mdp import (TabularMDPTasks, optimal_return,  # noqa: E402
                                         uniform_random_return)


def ci95(x) -> float:
    x = np.asarray(x, np.float64)
    return float(1.96 * x.std() / np.sqrt(x.size))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="episodes per trial")
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=100, help="trials per PPO iteration")
    ap.add_argument("--units", type=int, default=64, help="GRU width")
    ap.add_argument("--value-net", choices=("separate", "shared"), default="separate",
                    help="value head on its own GRU (pytorch_rl2) or on the policy's GRU")
    ap.add_argument("--lr", type=float, default=1e-3)
    add_lr_drop_arg(ap)
    ap.add_argument("--entropy", type=float, default=0.01)
    ap.add_argument("--discount", type=float, default=0.99)
    ap.add_argument("--gae-lambda", type=float, default=0.3)
    ap.add_argument("--bptt-chunk", type=int, default=0)
    ap.add_argument("--minibatches", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-trials", type=int, default=1000)
    ap.add_argument("--max-minutes", type=float, default=0.0, help="stop training after this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt", default=None, help="checkpoint directory (resumed when present)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    command = "python " + " ".join([os.path.relpath(__file__)] + sys.argv[1:])
    lines = [f"# {command}", f"# date={datetime.datetime.now(datetime.timezone.utc).isoformat()}",
             "# machine loaded (2 cores shared by 4 engineers); 1 TF thread", f"n={args.n}"]
    tasks = TabularMDPTasks(num_episodes=args.n)
    test = tasks.sample(args.eval_trials, seed=1234, split="test")
    opt = np.array([args.n * optimal_return(t, tasks.horizon) for t in test])
    rnd = np.array([args.n * uniform_random_return(t, tasks.horizon) for t in test])
    lines.append(f"random_total={rnd.mean():.2f} random_ci95={ci95(rnd):.2f} (exact expectation)")
    lines.append(f"vi_optimum_total={opt.mean():.2f} vi_optimum_ci95={ci95(opt):.2f} "
                 "(true model, exact expectation: an upper bound)")
    print("\n".join(lines), flush=True)

    cfg = RL2Config(episodes_per_trial=args.n, meta_batch_size=args.batch, learning_rate=args.lr,
                    entropy_coef=args.entropy, discount=args.discount, gae_lambda=args.gae_lambda,
                    bptt_chunk=args.bptt_chunk, num_minibatches=args.minibatches)
    policy = rl2_policy_for(tasks, units=args.units, seed=args.seed,
                            separate_value=args.value_net == "separate")
    learner = RL2Learner(policy, tasks, cfg, seed=args.seed)
    start, train_s, stopped_early = train_with_evals(learner, test, args, digits=2)
    ev = learner.evaluate(tasks=test, seed=3)
    rl2 = ev["trial_return"]
    lines.append(f"rl2_total={rl2:.2f} rl2_ci95={ev['trial_return_ci95']:.2f}")
    lines.append("rl2_return_per_episode=" + ",".join(f"{r:.2f}" for r in ev["returns"]))
    lines.append(f"rl2_fraction_of_vi_optimum={rl2 / opt.mean():.4f} "
                 f"random_fraction_of_vi_optimum={rnd.mean() / opt.mean():.4f}")
    lines.append(f"rl2_fraction_of_random_to_optimum_gap="
                 f"{(rl2 - rnd.mean()) / (opt.mean() - rnd.mean()):.4f}")
    lines.append(f"rl2_over_random={rl2 / rnd.mean():.4f}")
    lines.append(f"train_iterations={learner.step} trained_this_run={learner.step - start} "
                 f"stopped_on_time_budget={stopped_early} train_seconds={train_s:.0f} "
                 f"train_env_steps_per_s={(learner.step - start) * args.batch * args.n * tasks.horizon / max(train_s, 1e-9):.0f} "
                 f"batch={args.batch} units={args.units} value_net={args.value_net} {lr_text(args)} "
                 f"entropy_coef={args.entropy} discount={args.discount} "
                 f"gae_lambda={args.gae_lambda} bptt_chunk={args.bptt_chunk} "
                 f"env_steps={learner.step * args.batch * args.n * tasks.horizon}")
    print("\n".join(lines[-6:]), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
