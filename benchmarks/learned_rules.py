"""Learned update rules vs SGD: the Meta-LSTM on sinusoids, the meta-policy-gradient rule on PointNav.

usage:
    python benchmarks/learned_rules.py [--part sinusoid|pointnav|all|hidden-cost] [--sin-steps 3000]
        [--rl-iterations 30] [--hidden 8] [--eval-tasks 600] [--eval-episodes 20] [--seed 0]
        [--second-order] [--rule-steps 5] [--maml-steps 1] [--rule-xla] [--rule-meta-lr 1e-3]

Sinusoid (K=10). Two learners meta-trained in this process for the same number of meta-steps from
the same seed, then scored on the same 600 held-out tasks (100 query points each):

* ``maml``: the ``maml-sinusoid`` preset (MAML paper 5.1: one second-order SGD step at 0.01,
  meta-batch 25, Adam 1e-3, 1-40-40-1 ReLU); ``--maml-steps`` inner steps during meta-training
  (default 1, the paper's; the meta-loss after the last step, as the paper);
* ``meta_lstm``: the ``metalstm-sinusoid`` preset (``update_rule="meta_lstm"``, 5 first-order
  inner steps, the meta-loss summed over the 5 steps, the input gate starting at rate 0.01), with
  ``--hidden`` LSTM units, ``--rule-steps`` inner steps during meta-training (default 5),
  ``--second-order`` for the second-order meta-gradient and ``--rule-meta-lr`` for the Adam rate of
  the rule's own weights (default: the same 1e-3 as the network's). Its meta-step runs on TF's
  kernels, not XLA (``--rule-xla`` compiles it): on CPU that ran it ~2x faster. XLA's Philox is
  not TF's bit for bit, so its training task stream is a different draw from the same
  distribution than MAML's (XLA); the held-out tasks are the same, and the paired line compares
  them task by task.

Both are evaluated after 0..10 inner steps with their own rule; the target compares the query MSE
after 1 and after 5 steps. A comparison is like for like when both learners were meta-trained for
the step count it is read at (``--rule-steps 1 --maml-steps 1`` for the 1-step figure,
``--rule-steps 5 --maml-steps 5`` for the 5-step one); the target lines name the step counts each
was trained for. Cost per meta-step: seconds per meta-step of each (after compilation, in this
process), and the ratio to MAML's; also to SGD with the Meta-LSTM's inner steps, which isolates the
rule's own cost from the extra steps.

PointNav. MAML-TRPO (``MAMLRLConfig()``: 20 goals x 20 episodes, one inner step, TRPO max KL 0.01;
policy (64, 64) tanh as ``benchmarks/maml_rl_pointnav.py``) and the meta-policy-gradient rule
(the same config with ``update_rule="meta_lstm"``) meta-trained for ``--rl-iterations``
iterations each, then evaluated on the 40 meta-test goals of cbfinn/maml_rl (20 episodes per step):
``gap_closed = (post_1_step - pre) / (oracle - pre)``. Also printed: the two paired on the same
goals (meta-PG minus MAML-TRPO per goal: post-1-step return and one-step gain, with 95% intervals)
and how far meta-training moved the rule (its base rate ``sigmoid(b_I)``, from 0.1).

``--part hidden-cost`` only times the Meta-LSTM meta-step at ``--hidden`` and at the papers' 20
units.

One line per result, ``key=value``; ``#`` lines are progress. One TF thread each side.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from metarl_tf import evaluation  # noqa: E402
from metarl_tf.algorithms import MAMLConfig, MAMLLearner  # noqa: E402
from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner  # noqa: E402
from metarl_tf.networks import gaussian_mlp_policy, mlp  # noqa: E402
from metarl_tf.tasks import PointNavTasks, SinusoidTasks  # noqa: E402

MAML_SINUSOID = dict(meta_batch_size=25, num_support=10, num_query=10, inner_steps=1,
                     inner_lr=0.01, meta_lr=1e-3, first_order=False)
META_LSTM_SINUSOID = dict(meta_batch_size=25, num_support=10, num_query=10, inner_steps=5,
                          inner_lr=0.01, meta_lr=1e-3, first_order=True, update_rule="meta_lstm",
                          query_every_step=True, jit_compile=False)


def fmt(x):
    return f"{x:.5g}" if isinstance(x, float) else str(x)


def line(**kv):
    print(" ".join(f"{k}={fmt(v)}" for k, v in kv.items()), flush=True)


def seconds_per_step(learner, steps: int) -> float:
    learner.train(min(steps, learner.config.steps_per_execution))  # compile
    start = time.perf_counter()
    learner.train(steps)
    return (time.perf_counter() - start) / steps


def train_supervised(learner, steps, label):
    start = time.perf_counter()
    chunk = max(steps // 10, 1)
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        m = learner.train(n)
        done += n
        print(f"# {label} step={done} query_loss={m['query_loss']:.4f} "
              f"elapsed_s={time.perf_counter() - start:.0f}", flush=True)
    return time.perf_counter() - start


def gate_stats(learner, num_tasks: int, seed: int, steps: int = 5) -> dict:
    """What the learned rule does on held-out tasks: the mean input gate (the per-coordinate rate)
    and its 10/50/90th percentiles, and the mean forget gate, at inner steps 1 and ``steps``."""
    from metarl_tf import adaptation
    from metarl_tf.params import mse
    from metarl_tf.tasks.regression import sample_task_batch
    fm = learner.fmodel
    batch = sample_task_batch(learner.tasks, evaluation.held_out_seed(seed), num_tasks,
                              learner.config.num_support, 0)
    rule = learner.update_rule()
    params = fm.tile(fm.params(), num_tasks)
    loss = lambda q: mse(fm.apply_batched(q, batch.support_x), batch.support_y)  # noqa: E731
    state = rule.init_state(params)
    out = {}
    for k in range(1, steps + 1):
        params, state, _ = adaptation.inner_step(loss, params, rule, state, first_order=True)
        if k in (1, steps):
            rate = tf.reshape(state.input, [-1]).numpy()
            q = [float(x) for x in tf.sort(rate).numpy()[[int(f * (rate.size - 1))
                                                          for f in (0.1, 0.5, 0.9)]]]
            out.update({f"rate_mean_step_{k}": float(rate.mean()), f"rate_p10_step_{k}": q[0],
                        f"rate_p50_step_{k}": q[1], f"rate_p90_step_{k}": q[2],
                        f"forget_mean_step_{k}": float(tf.reduce_mean(state.forget))})
    return out


def sinusoid(args):
    tasks = SinusoidTasks()
    spe = 50
    configs = {
        "maml": MAMLConfig(**{**MAML_SINUSOID, "inner_steps": args.maml_steps},
                           steps_per_execution=spe),
        "meta_lstm": MAMLConfig(**{**META_LSTM_SINUSOID, "first_order": not args.second_order,
                                   "inner_steps": args.rule_steps, "jit_compile": args.rule_xla,
                                   "rule_meta_lr": args.rule_meta_lr},
                                rule_hidden_size=args.hidden, steps_per_execution=spe),
    }
    for name, cfg in configs.items():
        line(algo=name, config=repr(dataclasses.asdict(cfg)).replace(" ", ""))
    results, per_task = {}, {}
    for name, cfg in configs.items():
        learner = MAMLLearner(mlp(1, 1, (40, 40), seed=args.seed), tasks, cfg, seed=args.seed)
        seconds = train_supervised(learner, args.sin_steps, name)
        per_task[name] = evaluation.per_task_curve(
            learner.fmodel, learner.fmodel.params(), tasks, learner.update_rule(),
            num_tasks=args.eval_tasks, num_support=cfg.num_support, num_query=100, num_steps=10,
            seed=args.seed)  # what learner.evaluate() averages
        mse = [float(row.mean()) for row in per_task[name]]
        ci = [float(1.96 * row.std() / math.sqrt(args.eval_tasks)) for row in per_task[name]]
        results[name] = {"mse": mse}
        line(algo=name, shots=10, meta_steps=args.sin_steps, train_seconds=round(seconds, 1),
             mse_before=mse[0], mse_after_1_step=mse[1], mse_after_5_steps=mse[5],
             mse_after_10_steps=mse[10], ci95_after_1_step=ci[1], ci95_after_5_steps=ci[5],
             eval_tasks=args.eval_tasks)
        if name == "meta_lstm":
            line(algo=name, diagnostic="learned_gates_on_100_held_out_tasks",
                 **gate_stats(learner, 100, args.seed))
    # Paired on the same held-out tasks: meta_lstm - maml per task, mean and 95% interval.
    diff = per_task["meta_lstm"] - per_task["maml"]
    line(paired="meta_lstm_minus_maml_per_task",
         **{f"after_{k}_step{'s' if k > 1 else ''}": float(diff[k].mean()) for k in (1, 5)},
         **{f"ci95_after_{k}_step{'s' if k > 1 else ''}": float(
             1.96 * diff[k].std() / math.sqrt(args.eval_tasks)) for k in (1, 5)})
    # Cost per meta-step, measured back to back on fresh learners (compile excluded).
    cost = {}
    for name, cfg in [*configs.items(),
                      ("sgd_same_steps", dataclasses.replace(
                          configs["maml"], inner_steps=args.rule_steps, first_order=True,
                          query_every_step=True)),
                      ("meta_lstm_other_compile", dataclasses.replace(
                          configs["meta_lstm"], jit_compile=not args.rule_xla))]:
        learner = MAMLLearner(mlp(1, 1, (40, 40), seed=1), tasks, cfg, seed=1)
        cost[name] = seconds_per_step(learner, args.cost_steps)
    line(cost="sinusoid_meta_step", maml_s=round(cost["maml"], 5), maml_steps=args.maml_steps,
         rule_steps=args.rule_steps, sgd_same_steps_first_order_s=round(cost["sgd_same_steps"], 5),
         meta_lstm_s=round(cost["meta_lstm"], 5), meta_lstm_xla=args.rule_xla,
         meta_lstm_xla_s=round(
             cost["meta_lstm" if args.rule_xla else "meta_lstm_other_compile"], 5),
         meta_lstm_tf_kernels_s=round(
             cost["meta_lstm_other_compile" if args.rule_xla else "meta_lstm"], 5),
         meta_lstm_vs_maml=round(cost["meta_lstm"] / cost["maml"], 1),
         meta_lstm_vs_sgd_same_steps=round(cost["meta_lstm"] / cost["sgd_same_steps"], 1))
    ok = [results["meta_lstm"]["mse"][k] < results["maml"]["mse"][k] for k in (1, 5)]
    return ok


def hidden_cost(args):
    """Seconds per Meta-LSTM meta-step at ``--hidden`` and at the papers' 20 units (the
    ``metalstm-sinusoid`` preset otherwise: 5 first-order steps, meta-batch 25, TF kernels)."""
    tasks = SinusoidTasks()
    cfg = MAMLConfig(**META_LSTM_SINUSOID, steps_per_execution=25)
    cost = {}
    for hidden in (args.hidden, 20):
        learner = MAMLLearner(mlp(1, 1, (40, 40), seed=1), tasks,
                              dataclasses.replace(cfg, rule_hidden_size=hidden), seed=1)
        cost[hidden] = seconds_per_step(learner, args.cost_steps)
    line(cost="meta_lstm_hidden_size", rule_steps=cfg.inner_steps,
         **{f"hidden_{h}_s": round(c, 5) for h, c in cost.items()},
         hidden_20_vs_hidden_ratio=round(cost[20] / cost[args.hidden], 2))


def rl_policy(seed):
    return gaussian_mlp_policy(2, 2, hidden=(64, 64), activation="tanh", seed=seed)


def pointnav(args):
    tasks = PointNavTasks()
    goals = tasks.maml_test_goals(40)
    configs = {"maml_trpo": MAMLRLConfig(),
               "meta_pg": MAMLRLConfig(update_rule="meta_lstm", rule_hidden_size=args.hidden)}
    for name, cfg in configs.items():
        line(algo=name, config=repr(dataclasses.asdict(cfg)).replace(" ", ""))
    gaps, per_iter, per_goal = {}, {}, {}
    for name, cfg in configs.items():
        learner = MAMLRLLearner(rl_policy(args.seed), tasks, cfg, seed=args.seed)
        rule_init = [v.numpy().copy() for v in learner.extra_variables]
        learner.train(1)  # compile (counted as one of the iterations)
        start = time.perf_counter()
        for i in range(2, args.rl_iterations + 1):
            m = learner.train(1)
            if i % 5 == 0 or i == args.rl_iterations:
                print(f"# {name} iteration={i} pre_return={m['pre_return']:.2f} "
                      f"post_return={m['post_return']:.2f} kl={m['kl']:.4f} "
                      f"elapsed_s={time.perf_counter() - start:.0f}", flush=True)
        per_iter[name] = (time.perf_counter() - start) / max(args.rl_iterations - 1, 1)
        curve = learner.evaluate(tasks=goals, num_steps=3, episodes_per_task=args.eval_episodes,
                                 seed=args.seed)
        r = curve["returns"]
        per_goal[name] = np.asarray(curve["per_task"])  # [steps + 1, goals]
        gap = (r[1] - r[0]) / (curve["oracle_return"] - r[0])
        gaps[name] = gap
        line(algo=name, meta_iterations=args.rl_iterations, seconds_per_iteration=round(
            per_iter[name], 2), pre_return=r[0], post_1_step_return=r[1],
             post_2_steps_return=r[2], post_3_steps_return=r[3],
             oracle_return=curve["oracle_return"], gap_closed=gap, ci95_pre=curve["ci95"][0],
             ci95_post_1_step=curve["ci95"][1])
        if rule_init:
            # How far meta-training moved the rule: its base rate sigmoid(b_I) (0.1 at the start,
            # MAML-TRPO's inner_lr), its base forget gate sigmoid(b_F), and the relative change of
            # all its weights.
            now = [v.numpy() for v in learner.extra_variables]
            moved = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(now, rule_init)))
            size = math.sqrt(sum(float((b ** 2).sum()) for b in rule_init))
            line(algo=name, diagnostic="rule_weights",
                 base_rate=float(tf.sigmoid(now[6])),
                 base_rate_init=float(tf.sigmoid(rule_init[6])),
                 base_forget=float(tf.sigmoid(now[4])), relative_change=moved / size)
    # Paired on the same 40 goals: meta_pg - maml_trpo per goal, mean and 95% interval.
    post = per_goal["meta_pg"][1] - per_goal["maml_trpo"][1]
    gain = ((per_goal["meta_pg"][1] - per_goal["meta_pg"][0])
            - (per_goal["maml_trpo"][1] - per_goal["maml_trpo"][0]))
    ci = lambda d: float(1.96 * d.std() / math.sqrt(d.size))  # noqa: E731
    line(paired="meta_pg_minus_maml_trpo_per_goal", post_1_step_return=float(post.mean()),
         ci95_post_1_step_return=ci(post), one_step_gain=float(gain.mean()),
         ci95_one_step_gain=ci(gain), goals=post.size)
    line(cost="pointnav_meta_iteration", maml_trpo_s=round(per_iter["maml_trpo"], 2),
         meta_pg_s=round(per_iter["meta_pg"], 2),
         meta_pg_vs_maml_trpo=round(per_iter["meta_pg"] / per_iter["maml_trpo"], 2))
    return gaps["meta_pg"] > gaps["maml_trpo"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("sinusoid", "pointnav", "all", "hidden-cost"),
                        default="all")
    parser.add_argument("--sin-steps", type=int, default=3000)
    parser.add_argument("--cost-steps", type=int, default=100)
    parser.add_argument("--rl-iterations", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--eval-tasks", type=int, default=600)
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--second-order", action="store_true",
                        help="meta-train the Meta-LSTM second order (through the update's g)")
    parser.add_argument("--rule-xla", action="store_true",
                        help="compile the Meta-LSTM's meta-step with XLA (the preset does not: "
                        "on CPU TF's kernels ran it ~2x faster); MAML is always compiled")
    parser.add_argument("--rule-meta-lr", type=float, default=None,
                        help="Adam rate of the Meta-LSTM's own weights (default: meta_lr, 1e-3)")
    parser.add_argument("--rule-steps", type=int, default=5,
                        help="inner steps the Meta-LSTM is meta-trained with")
    parser.add_argument("--maml-steps", type=int, default=1,
                        help="inner steps MAML is meta-trained with")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    for name in ("rule_steps", "maml_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    line(tensorflow=tf.__version__, threads=1, hidden=args.hidden, seed=args.seed,
         meta_lstm_second_order=args.second_order, rule_steps=args.rule_steps,
         maml_steps=args.maml_steps, meta_lstm_xla=args.rule_xla, rule_meta_lr=args.rule_meta_lr,
         note="machine_shared_with_other_jobs_timings_indicative_ratios_same_process")
    verdict = lambda ok: "met" if ok else "missed"  # noqa: E731
    targets = []
    if args.part in ("sinusoid", "all"):
        one, five = sinusoid(args)
        trained = f"(rule_trained_steps={args.rule_steps} maml_trained_steps={args.maml_steps})"
        targets += [f"sinusoid_k10_beats_maml_after_1_step {verdict(one)} {trained}",
                    f"sinusoid_k10_beats_maml_after_5_steps {verdict(five)} {trained}"]
    if args.part in ("pointnav", "all"):
        targets.append(f"pointnav_gap_closed_beats_maml_trpo {verdict(pointnav(args))}")
    if args.part == "hidden-cost":
        hidden_cost(args)
        return
    print("targets: " + "; ".join(targets), flush=True)


if __name__ == "__main__":
    main()
