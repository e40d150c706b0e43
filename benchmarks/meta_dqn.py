"""Meta-DQN benchmark (issue 8): CartPoleDir and GridWorld, key=value lines.

Parts (each writes its full output, command and date to docs/notes/benchmarks/<file>.txt):

  --part cartpole-scratch   per-task double DQNs trained from scratch for --scratch-steps env
                            steps on the first --scratch-tasks held-out CartPoleDir variants
                            (batched over tasks); their returns are saved to
                            docs/notes/benchmarks/meta_dqn_cartpole_scratch.json for the next part
  --part cartpole           the five-way comparison on those held-out variants (reads the json):
                            Meta-DQN (z adapted on a one-step model head from 200 random-policy
                            transitions), the unadapted z, a task-agnostic DQN (the same learner
                            with no inner steps, same pool and iterations), fine-tuning of the
                            whole network from the same 200 transitions (the task-agnostic DQN's
                            and the meta-trained one's, the best of --finetune-lrs and 1 ..
                            --finetune-steps steps), and the scratch DQNs; writes
                            docs/notes/benchmarks/meta_dqn_cartpole.txt
  --part gridworld          meta-DQN on the 5x5 grid-world; success on the 5 held-out goals
                            (default --grid-config: the meta-dqn-gridworld preset's settings;
                            pass '{"inner_loss": "td", ...}' for the TD inner loss);
                            --seeds 0 1 2 trains one learner per seed
  --part speed              steady-state env-steps/s of CartPoleDir meta-training (graph and
                            XLA) and latency of the exported adapt
  --part diagnose           grid-world diagnosis: rewarded transitions in 200-transition random
                            supports, random-episode success, and a per-task DQN oracle (goal
                            known) trained for 3000 steps on the held-out goals (~10 s)

Usage:
  nice -n 5 .venv/bin/python benchmarks/meta_dqn.py --part gridworld
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from metarl_tf.algorithms.dqn import (PerTaskDQNConfig, PerTaskDQNLearner,  # noqa: E402
                                      collect_support)
from metarl_tf.algorithms.meta_dqn import MetaDQNConfig, MetaDQNLearner  # noqa: E402
from metarl_tf.networks.q_network import TaskConditionedQNetwork  # noqa: E402
from metarl_tf.tasks import CartPoleDirTasks, GridWorldTasks  # noqa: E402

OUT = os.path.join(ROOT, "docs", "notes", "benchmarks")
LINES: list[str] = []


def emit(line: str) -> None:
    print(line, flush=True)
    LINES.append(line)


LOADED = "2 shared CPU cores, loaded by other jobs (timings are not quiet-machine)"


def save(name: str, machine: str = LOADED) -> None:
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    header = [f"# command: {' '.join(sys.argv)}",
              f"# date: {datetime.datetime.now(datetime.timezone.utc).isoformat()}",
              f"# machine: {machine}",
              "# TF threads: intra 1, inter 1"]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(header + LINES) + "\n")
    os.replace(tmp, path)


def cartpole_scratch(args):
    family = CartPoleDirTasks()
    tasks = family.sample(args.eval_tasks, args.seed, "test")[:args.scratch_tasks]
    emit(f"scratch_tasks={len(tasks)} scratch_steps={args.scratch_steps}")
    for i, t in enumerate(tasks):
        emit(f"task_{i}={np.round(t, 3).tolist()}")
    learner = PerTaskDQNLearner(family, tasks, PerTaskDQNConfig(), hidden=(64, 64), seed=args.seed)
    start = time.perf_counter()
    while learner.step < args.scratch_steps:
        m = learner.train(min(5000, args.scratch_steps - learner.step))
        ret = learner.evaluate(episodes=5, seed=1)
        emit(f"step={learner.step} seconds={time.perf_counter() - start:.0f} "
             f"td_loss={m['td_loss']:.4f} greedy_return_mean={ret.mean():.1f}")
    own = learner.evaluate(episodes=10, seed=2)
    emit(f"scratch_return_per_task={np.round(own, 1).tolist()}")
    emit(f"scratch_return_mean={own.mean():.1f}")
    # every from-scratch network on every other variant: the best single (task-agnostic) network
    cross = []
    for shift in range(1, len(tasks)):
        cross.append(learner.evaluate(episodes=5, seed=3, tasks=np.roll(tasks, shift, axis=0)))
    cross = np.stack(cross)  # [shift, net]: net j on task (j - shift)
    best_other = cross.mean(axis=0)
    emit(f"scratch_net_on_other_variants_per_net={np.round(best_other, 1).tolist()}")
    emit(f"best_single_scratch_net_on_other_variants={best_other.max():.1f}")
    with open(os.path.join(OUT, "meta_dqn_cartpole_scratch.json"), "w") as f:
        json.dump({"tasks": tasks.tolist(), "returns": own.tolist(),
                   "best_single_other": float(best_other.max()), "seed": args.seed,
                   "steps": args.scratch_steps}, f)
    save(args.out or "meta_dqn_cartpole_scratch.txt")


CARTPOLE_CONFIG = dict(
    z_dim=2, inner_steps=3, inner_lr=0.5, inner_loss="model", normalize_inner_grad=True,
    learn_z_init=False, num_train_tasks=32, meta_batch_size=16, support_size=200, discount=0.99,
    replay_capacity=20000, epsilon_decay_steps=5000, target_update="polyak",
    learning_rate=5e-4, steps_per_execution=250, jit_compile=False)


def cartpole(args):
    """The five-way CartPoleDir comparison on the held-out variants of --part cartpole-scratch."""
    family = CartPoleDirTasks()
    with open(os.path.join(OUT, "meta_dqn_cartpole_scratch.json")) as f:
        ref = json.load(f)
    tasks = np.asarray(ref["tasks"], np.float32)
    scratch = np.asarray(ref["returns"])
    cfg = MetaDQNConfig(**{**CARTPOLE_CONFIG, **json.loads(args.cartpole_config)})
    emit(f"config={json.dumps(cfg.__dict__)}")
    emit(f"held_out_tasks={len(tasks)} (the cartpole-scratch tasks) support_size="
         f"{cfg.support_size} (random-policy transitions) support_sets={args.cartpole_supports} "
         f"episodes_per_support={args.cartpole_episodes}")
    meta = train_meta(family, cfg, (64, 64), args.cartpole_steps, args.seed, "meta")
    # the task-agnostic DQN: the same learner with no inner steps (z stays z_0 for every task),
    # trained on the same pool for the same number of iterations, TD loss only
    agnostic_cfg = dataclasses.replace(cfg, inner_steps=0, inner_loss="td",
                                       normalize_inner_grad=False, per_step_inner_lr=False, inner_lr_decay=1.0,
                                       outer_loss_steps=1)
    agnostic = train_meta(family, agnostic_cfg, (64, 64), args.cartpole_steps, args.seed,
                          "agnostic")

    def returns(learner, steps, **kw):
        """[supports, steps + 1, tasks] greedy returns over fresh random support sets."""
        rows = [np.asarray(learner.evaluate(tasks=tasks, num_steps=steps,
                                            episodes=args.cartpole_episodes, seed=300 + rep,
                                            **kw)["per_task"])
                for rep in range(args.cartpole_supports)]
        return np.stack(rows)

    m = returns(meta, cfg.inner_steps)
    a = returns(agnostic, 0)[:, 0]
    fine = {}
    for lr in args.finetune_lrs:
        for label, learner in (("agnostic", agnostic), ("meta", meta)):
            r = returns(learner, args.finetune_steps, adaptation_mode="finetune", finetune_lr=lr)
            for k in range(1, args.finetune_steps + 1):
                fine[(label, lr, k)] = r[:, k]
            emit(f"finetune_from={label} lr={lr} steps={args.finetune_steps} "
                 f"return_mean={r[:, -1].mean():.1f} return_after_each_step="
                 f"{np.round(r.mean(axis=(0, 2)), 1).tolist()}")
    best_fine = max(fine, key=lambda k: fine[k].mean())
    rows = {
        "scratch_dqn_50k": scratch,
        "meta_dqn_adapted": m[:, -1].mean(0),
        "meta_dqn_unadapted": m[:, 0].mean(0),
        "task_agnostic_dqn": a.mean(0),
        "finetune_best": fine[best_fine].mean(0),
    }
    for k in range(cfg.inner_steps + 1):
        emit(f"meta_dqn_inner_steps={k} return_mean={m[:, k].mean():.1f} "
             f"ci95={1.96 * m[:, k].mean(1).std(ddof=1) / np.sqrt(len(m)):.1f}")
    emit(f"finetune_best=from_{best_fine[0]} lr={best_fine[1]} steps={best_fine[2]} (the best "
         "source, rate and step count, chosen on these held-out tasks: optimistic for the "
         "baseline)")
    for name, per_task in rows.items():
        emit(f"{name}_return_mean={per_task.mean():.1f} per_task={np.round(per_task, 1).tolist()}")
    emit(f"best_single_scratch_net_on_other_variants={ref['best_single_other']:.1f}")
    ratio = rows["meta_dqn_adapted"].mean() / scratch.mean()
    others = max(rows["meta_dqn_unadapted"].mean(), rows["task_agnostic_dqn"].mean(),
                 rows["finetune_best"].mean(), ref["best_single_other"])
    emit(f"adapted_over_scratch={ratio:.3f} target=0.9 "
         f"{'met' if ratio >= 0.9 else 'missed'}")
    emit(f"adapted_minus_best_other_baseline={rows['meta_dqn_adapted'].mean() - others:.1f}")
    save(args.out or "meta_dqn_cartpole.txt")


def train_meta(family, cfg, hidden, steps, seed, label):
    net = TaskConditionedQNetwork(family.obs_dim, family.num_actions, cfg.z_dim, hidden, seed=seed)
    learner = MetaDQNLearner(net, family, cfg, seed=seed)
    start = time.perf_counter()
    env0 = learner.env_steps.numpy()
    while learner.step < steps:
        m = learner.train(min(1000, steps - learner.step))
        emit(f"{label}_iteration={learner.step} seconds={time.perf_counter() - start:.0f} "
             + " ".join(f"{k}={v:.4f}" for k, v in m.items()))
    seconds = time.perf_counter() - start
    emit(f"{label}_train_seconds={seconds:.0f} "
         f"{label}_env_steps_per_s={(learner.env_steps.numpy() - env0) / seconds:.0f}")
    return learner


def gridworld(args):
    family = GridWorldTasks()
    cfg = MetaDQNConfig(**json.loads(args.grid_config))
    emit(f"config={json.dumps(cfg.__dict__)}")
    seeds = args.seeds or [args.seed]
    held_out = []
    for seed in seeds:
        emit(f"# seed={seed}")
        learner = train_meta(family, cfg, (64, 64), args.grid_steps, seed, "meta")
        held_out.append(grid_success(learner, family, cfg.inner_steps, args.grid_supports))
    emit(f"seeds={seeds} test_success_rate_after_{cfg.inner_steps}_steps_per_seed="
         f"{[round(float(h), 3) for h in held_out]} mean={np.mean(held_out):.3f} target=0.95 "
         f"{'met' if np.mean(held_out) >= 0.95 else 'missed'}")
    save(args.out or "meta_dqn_gridworld.txt")


def grid_success(learner, family, inner_steps, supports):
    """Greedy success after 0..inner_steps steps, over ``supports`` fresh random support sets;
    returns the held-out goals' success rate after the last step."""
    for split in ("train", "test"):
        goals = family.goals(split)
        reached, informative = [], []
        for rep in range(supports):
            ev = learner.evaluate(tasks=goals, num_steps=inner_steps, episodes=10,
                                  seed=100 + rep)
            reached.append(np.asarray(ev["per_task"]))  # [steps+1, goals] success rates
            informative.append(np.asarray(ev["support_rewarded"]) > 0)
        reached = np.stack(reached)  # [supports, steps+1, goals]
        informative = np.stack(informative)  # [supports, goals]: the support saw the goal
        for k in range(inner_steps + 1):
            emit(f"{split}_goals={len(goals)} support_sets={supports} inner_steps={k} "
                 f"success_rate={reached[:, k].mean():.3f} "
                 f"goals_reached_from_every_start={(reached[:, k] == 1.0).mean():.3f}")
        # a support set with no rewarded transition says nothing about where the goal is
        emit(f"{split}_support_sets_without_reward={int((~informative).sum())} of "
             f"{informative.size} (per goal {(~informative).sum(0).tolist()}) "
             f"success_rate_on_supports_with_reward={reached[:, -1][informative].mean():.3f}")
        if split == "test":
            per_goal = reached[:, -1].mean(axis=0)
            emit("test_success_rate_per_goal=" + " ".join(
                f"({int(g[0])},{int(g[1])}):{r:.2f}" for g, r in zip(goals, per_goal)))
            held_out = reached[:, -1].mean()
    return held_out


def speed(args):
    """Steady-state env-steps/s of meta-training on CartPoleDir (CARTPOLE_CONFIG: 32 pool tasks,
    the model-head inner loss), graph and XLA, the first call (tracing/compiling) timed apart;
    then the latency of the exported adapt (200 transitions, 3 steps) beside serving_default's."""
    import tempfile

    from export.qnetwork import export_qnetwork_learner

    family = CartPoleDirTasks()
    for jit in (False, True):
        cfg = MetaDQNConfig(**{**CARTPOLE_CONFIG, "jit_compile": jit})
        net = TaskConditionedQNetwork(family.obs_dim, family.num_actions, cfg.z_dim, (64, 64),
                                      seed=args.seed)
        learner = MetaDQNLearner(net, family, cfg, seed=args.seed)
        t0 = time.perf_counter()
        learner.train(cfg.steps_per_execution)
        first = time.perf_counter() - t0
        env0, t0 = learner.env_steps.numpy(), time.perf_counter()
        learner.train(args.speed_iterations)
        seconds = time.perf_counter() - t0
        emit(f"meta_training jit_compile={jit} first_call_s={first:.1f} "
             f"iterations={args.speed_iterations} seconds={seconds:.1f} "
             f"env_steps_per_s={(learner.env_steps.numpy() - env0) / seconds:.0f} "
             f"meta_iterations_per_s={args.speed_iterations / seconds:.1f} "
             f"(pool {cfg.num_train_tasks} tasks, meta-batch {cfg.meta_batch_size}, "
             f"{cfg.env_steps_per_iteration} env step per task per iteration)")
    base = tempfile.mkdtemp()
    path = export_qnetwork_learner(learner, base, "q", max_num_steps=10)
    model = tf.saved_model.load(path)
    tr = collect_support(family.tf_env(), tf.constant(family.sample(1, 1, "test")), 200,
                         family.horizon, 2, tf.constant([1, 2], tf.int64))
    feed = dict(observations=tr.observation[0], actions=tr.action[0], rewards=tr.reward[0],
                next_observations=tr.next_observation[0], dones=tr.terminated[0],
                num_steps=tf.constant(3))
    adapt, act = model.signatures["adapt"], model.signatures["serving_default"]
    obs = tr.observation[0][:1]
    for _ in range(5):
        adapt(**feed), act(observation=obs)
    times = {"adapt": [], "serving_default": []}
    for _ in range(50):
        t0 = time.perf_counter()
        adapt(**feed)
        times["adapt"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        act(observation=obs)
        times["serving_default"].append(time.perf_counter() - t0)
    med = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    emit(f"export_adapt_ms_median={med['adapt']:.2f} (200 transitions, 3 steps, z_dim "
         f"{learner.config.z_dim}, 64x64, inner loss {learner.config.inner_loss})")
    emit(f"export_serving_default_ms_median={med['serving_default']:.2f} (batch 1)")
    emit(f"adapt_over_serving_default_ratio={med['adapt'] / med['serving_default']:.1f}")
    save(args.out or "meta_dqn_speed.txt")


def diagnose(args):
    """Is the grid-world learnable, and do random support sets carry the task?"""
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
    save("meta_dqn_gridworld_diagnosis.txt",
         machine=f"2 CPU cores, load average {os.getloadavg()[0]:.2f} at the end of the run")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--part", required=True,
                   choices=["cartpole-scratch", "cartpole", "gridworld", "speed", "diagnose"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="gridworld: train and score one learner per seed (default: --seed)")
    p.add_argument("--out", default="",
                   help="output file name under docs/notes/benchmarks/ (default: the part's own name)")
    p.add_argument("--eval-tasks", type=int, default=20)
    p.add_argument("--scratch-tasks", type=int, default=6)
    p.add_argument("--scratch-steps", type=int, default=50000)
    p.add_argument("--cartpole-steps", type=int, default=6000)
    p.add_argument("--cartpole-supports", type=int, default=5)
    p.add_argument("--cartpole-episodes", type=int, default=4)
    p.add_argument("--cartpole-config", default="{}",
                   help="JSON overrides of CARTPOLE_CONFIG (the Meta-DQN settings)")
    p.add_argument("--speed-iterations", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=5)
    p.add_argument("--finetune-lrs", type=float, nargs="+", default=[0.001, 0.01])
    p.add_argument("--grid-steps", type=int, default=8000)
    p.add_argument("--grid-supports", type=int, default=10)
    # the meta-dqn-gridworld preset's settings (the preset also XLA-compiles the step)
    p.add_argument("--grid-config", default=json.dumps(dict(
        z_dim=4, inner_steps=10, inner_lr=1.0, per_step_inner_lr=True, inner_lr_decay=0.7,
        outer_loss_steps=3, inner_loss="reward", normalize_inner_grad=True,
        reward_head="next_logistic", task_loss_weight=1.0,
        learn_z_init=False, num_train_tasks=20, meta_batch_size=20, discount=0.9,
        replay_capacity=5000, epsilon_decay_steps=1000, target_update_period=100,
        support_sampling="window", random_buffer_size=2000,
        steps_per_execution=250, jit_compile=False)))
    args = p.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    {"cartpole-scratch": cartpole_scratch, "cartpole": cartpole, "gridworld": gridworld, "speed": speed,
     "diagnose": diagnose}[args.part](args)


if __name__ == "__main__":
    main()
