"""Adapts an exported AdaptablePolicy to new PointNav goals, using nothing but TensorFlow and NumPy.

    python examples/adapt_policy_exported.py EXPORT_DIR [--goals 8] [--episodes 20] [--png out.png]

The client side of a served policy: it simulates 2D point navigation itself (the MAML paper's task:
start at the origin, actions clipped to [-0.1, 0.1]^2, reward -distance to the goal, 100 steps,
done within 0.01 of the goal), samples episodes with the exported policy (`serving_default`: mean
and log-std), sends them to `adapt`, and acts with the adapted weights it gets back
(`action_with_params`). Keras and metarl_tf are blocked from importing: an export stands alone.
"""
import argparse
import os
import sys

for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

HORIZON, MAX_ACTION, TOLERANCE = 100, 0.1, 0.01


def rollout(act, goal, rng, episodes, stochastic=True):
    """Runs ``episodes`` episodes; ``act(obs [E, 2]) -> (mean, log_std)``. Returns padded arrays."""
    obs = np.zeros((episodes, HORIZON, 2), np.float32)
    actions = np.zeros((episodes, HORIZON, 2), np.float32)
    rewards = np.zeros((episodes, HORIZON), np.float32)
    mask = np.zeros((episodes, HORIZON), np.float32)
    pos = np.zeros((episodes, 2), np.float32)
    alive = np.ones(episodes, bool)
    for t in range(HORIZON):
        mean, log_std = act(pos)
        a = mean + (np.exp(log_std) * rng.standard_normal(mean.shape) if stochastic else 0.0)
        obs[:, t], actions[:, t], mask[:, t] = pos, a, alive
        pos = np.where(alive[:, None], pos + np.clip(a, -MAX_ACTION, MAX_ACTION), pos)
        dist = pos - goal
        rewards[:, t] = np.where(alive, -np.linalg.norm(dist, axis=1), 0.0)
        alive &= ~np.all(np.abs(dist) < TOLERANCE, axis=1)
    return obs, actions, rewards, mask


def oracle(goal):
    """The goal-aware straight-line policy's return (an upper reference)."""
    _, _, rewards, _ = rollout(lambda p: (np.clip(goal - p, -MAX_ACTION, MAX_ACTION),
                                          np.zeros_like(p)), goal, None, 1, stochastic=False)
    return float(rewards.sum())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export_dir")
    p.add_argument("--goals", type=int, default=8)
    p.add_argument("--episodes", type=int, default=20, help="episodes per goal used to adapt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", help="plot trajectories before/after adaptation here")
    a = p.parse_args()

    model = tf.saved_model.load(a.export_dir)
    serve, adapt = model.signatures["serving_default"], model.signatures["adapt"]
    act_with = model.signatures["action_with_params"]
    rng = np.random.default_rng(a.seed)
    goals = rng.uniform(-0.5, 0.5, (a.goals, 2)).astype(np.float32)  # new tasks, paper's range

    def meta_act(pos):
        out = serve(observation=tf.constant(pos, tf.float32))
        return out["action"].numpy(), out["log_std"].numpy()

    before, after, best, paths = [], [], [], []
    for goal in goals:
        episodes = rollout(meta_act, goal, rng, a.episodes)
        params = adapt(observations=tf.constant(episodes[0]), actions=tf.constant(episodes[1]),
                       rewards=tf.constant(episodes[2]), mask=tf.constant(episodes[3]),
                       num_steps=tf.constant(1))["params"]

        def adapted_act(pos, params=params):
            out = act_with(observation=tf.constant(pos, tf.float32), params=params)
            return out["action"].numpy(), out["log_std"].numpy()

        post = rollout(adapted_act, goal, rng, a.episodes)
        before.append(float(episodes[2].sum(axis=1).mean()))
        after.append(float(post[2].sum(axis=1).mean()))
        best.append(oracle(goal))
        paths.append((rollout(meta_act, goal, rng, 1, stochastic=False)[0][0],
                      rollout(adapted_act, goal, rng, 1, stochastic=False)[0][0]))
    print(f"goals={a.goals} episodes_per_goal={a.episodes}")
    print(f"return_before_adaptation={np.mean(before):.2f}")
    print(f"return_after_1_step={np.mean(after):.2f}")
    print(f"oracle_return={np.mean(best):.2f}")
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
        for ax, which, title in ((axes[0], 0, "before adaptation"),
                                 (axes[1], 1, "after one adapt step")):
            for i, (goal, path) in enumerate(zip(goals, paths)):
                color = f"C{i % 10}"
                ax.plot(path[which][:, 0], path[which][:, 1], "-", color=color, lw=1)
                ax.plot(goal[0], goal[1], "*", color=color, ms=12)
            ax.set_title(f"{title} (mean policy)")
            ax.set_xlim(-0.6, 0.6)
            ax.set_ylim(-0.6, 0.6)
            ax.set_aspect("equal")
        fig.tight_layout()
        fig.savefig(a.png, dpi=100)
        print(f"plot={a.png}")


if __name__ == "__main__":
    main()
