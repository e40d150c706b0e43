"""PEARL runs on their test tasks: return under the prior and after context, per seed, vs a target.

    .venv/bin/python benchmarks/pearl_eval.py --runs runs/pearl-hcv-s0 runs/pearl-hcv-s1 \
        runs/pearl-hcv-s2 [--exploration 2] [--repeats 1] [--out docs/notes/benchmarks/pearl_eval.txt]

Each run directory (``metarl train pearl-... --out RUN --seed S``) is restored from its latest
checkpoint and evaluated with ``PEARLLearner.evaluate`` (oyster's protocol: ``--exploration``
episodes of posterior sampling, the first from the prior; deterministic episodes with the
posterior mean before and after each) on the family's fixed test tasks:

* HalfCheetahVel: the 40 meta-test velocities of cbfinn/maml_rl (``maml_test_tasks``), the tasks
  of the MAML-RL / ProMP row (``benchmarks/maml_rl_halfcheetah.py``'s output: ProMP after one inner
  step -55.1 on 100-step episodes after ~12.2M environment steps); the target is a higher return
  after context with at most a tenth of those steps.
* HalfCheetahDir / AntDir: the two directions (``maml_test_tasks``), each ``--repeats`` times
  (default 10 for them: the exploration draws differ); the target is the return after context
  well above the prior's.
* Other families: 20 tasks of the test split.

Prints per run the iterations, environment steps, ``return_after_k`` (k = 0: the prior) with 95%
intervals over test tasks, and across runs the mean of the seeds' returns with the interval of
that mean (normal approximation over seeds; few seeds make it wide).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MUJOCO_GL", "disable")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

from benchmarks._report import Report  # noqa: E402
from training.run import restore_learner  # noqa: E402

PROMP_HALFCHEETAH_VEL = {"return": -55.1, "env_steps": 304 * 2 * 20 * 10 * 100, "horizon": 100}


def test_tasks(config, learner, repeats):
    family = learner.tasks
    if config.task == "halfcheetah-vel":
        return list(family.maml_test_tasks(40)) * repeats
    if config.task in ("halfcheetah-dir", "ant-dir"):
        return list(family.maml_test_tasks()) * repeats
    return list(family.sample(20, config.seed, "test")) * repeats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR")
    p.add_argument("--exploration", type=int, default=None,
                   help="exploration episodes (default: the run's num_exp_traj_eval)")
    p.add_argument("--repeats", type=int, default=None,
                   help="times each test task is run (default 10 for the two-direction families, "
                   "else 1)")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "notes", "benchmarks",
                                                 "pearl_eval.txt"))
    args = p.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command = " ".join(sys.argv[1:])
    report = Report(args.out, [f"# date={now} command=benchmarks/pearl_eval.py {command}"])
    finals, priors, tasks_seen, env_steps, horizons = [], [], set(), 0, set()
    for run in args.runs:
        config, learner = restore_learner(run)
        tasks_seen.add(config.task)
        horizons.add(learner.horizon)
        repeats = args.repeats or (10 if config.task in ("halfcheetah-dir", "ant-dir") else 1)
        curve = learner.evaluate(num_steps=args.exploration, seed=config.seed,
                                 tasks=test_tasks(config, learner, repeats))
        returns = {f"return_after_{k}": round(r, 2) for k, r in enumerate(curve["returns"])}
        cis = {f"ci95_after_{k}": round(c, 2) for k, c in enumerate(curve["ci95"])}
        report(run=run, task=config.task, seed=config.seed, iterations=learner.step,
               env_steps=int(learner.env_steps.numpy()), test_episodes=curve["num_tasks"],
               **returns, **cis)
        finals.append(curve["returns"][-1])
        priors.append(curve["returns"][0])
        env_steps = max(env_steps, int(learner.env_steps.numpy()))
        learner.close()
    n = len(finals)
    half = 1.96 * float(np.std(finals, ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    report(seeds=n, mean_return_after_context=round(float(np.mean(finals)), 2),
           ci95_over_seeds=round(half, 2), mean_return_prior=round(float(np.mean(priors)), 2))
    ref = PROMP_HALFCHEETAH_VEL
    if tasks_seen == {"halfcheetah-vel"} and horizons != {ref["horizon"]}:
        report(f"target: not comparable (horizon {sorted(horizons)}, the ProMP row's is "
               f"{ref['horizon']})")
    elif tasks_seen == {"halfcheetah-vel"}:
        met = float(np.mean(finals)) > ref["return"] and env_steps <= ref["env_steps"] / 10
        report(f"target: after-context return > ProMP's {ref['return']} with <= "
               f"{ref['env_steps'] // 10} environment steps (a tenth of ProMP's "
               f"{ref['env_steps']}): {'met' if met else 'not met'}"
               + (" (beyond the seeds' interval)" if met and
                  float(np.mean(finals)) - half > ref["return"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
