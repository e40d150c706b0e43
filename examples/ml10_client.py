"""Scores an exported ML10 policy with Meta-World's own evaluator, with only TensorFlow + Meta-World.

    python examples/ml10_client.py EXPORT_DIR [--num-evals 10] [--meta-batch-size 20]
        [--total-tasks-per-cls 40] [--max-episode-steps 500] [--seed 0] [--unadapted]

The client side of a served ML10 policy (``metarl export`` of a ``maml-trpo-ml10`` run writes an
``AdaptablePolicy``): ``ExportedAgent`` implements Meta-World's ``MetaLearningAgent`` protocol with
the SavedModel's three signatures and nothing else --

* explore: actions from ``serving_default`` (its mean and log-std; the client draws the noise),
* adapt: each sub-environment's recorded episodes go to ``adapt`` (one inner step,
  ``num_steps=1``) and come back as that sub-environment's weights,
* act: ``action_with_params`` with those weights (its mean);

and ``metaworld.evaluation.metalearning_evaluation`` runs the official protocol on
``gym.make_vec("Meta-World/ML10-test", ...)`` (defaults: Meta-World's ML10 settings, 10 rounds,
10 exploration episodes, 3 scored episodes per class, 20 sub-environments, 40 goals per class,
500 steps). ``--unadapted`` also scores ``serving_default`` without adaptation
(``adaptation_steps=0``). Keras and metarl_tf are blocked from importing: the export stands alone.
"""
import argparse
import os
import sys

for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MUJOCO_GL", "disable")

import gymnasium as gym  # noqa: E402
import metaworld  # noqa: E402,F401  (registers the Meta-World/* environments)
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from metaworld.evaluation import metalearning_evaluation  # noqa: E402


class ExportedAgent:
    """Meta-World's ``MetaLearningAgent`` around an exported ``AdaptablePolicy``."""

    def __init__(self, model, num_envs: int, seed: int = 0):
        self.serve = model.signatures["serving_default"]
        self.adapt_fn = model.signatures["adapt"]
        self.act_with = model.signatures["action_with_params"]
        self.num_envs = num_envs
        self.rng = np.random.default_rng(seed)
        self.params = None

    def init(self):
        """A new goal per sub-environment: back to the meta-learned policy, empty buffers."""
        self.params = [None] * self.num_envs       # None: serving_default's weights
        self._start_buffers()

    def _start_buffers(self):
        self.episodes = [[] for _ in range(self.num_envs)]
        self.current = [([], [], []) for _ in range(self.num_envs)]

    def adapt_action(self, observations):
        out = self.serve(observation=tf.constant(observations, tf.float32))
        mean, log_std = out["action"].numpy(), out["log_std"].numpy()
        action = mean + np.exp(log_std) * self.rng.standard_normal(mean.shape).astype(np.float32)
        return action.astype(np.float64), {}

    def step(self, timestep):
        done = np.logical_or(timestep.terminated, timestep.truncated)
        for e in range(self.num_envs):
            obs, act, rew = self.current[e]
            obs.append(np.asarray(timestep.observation[e], np.float32))
            act.append(np.asarray(timestep.action[e], np.float32))
            rew.append(float(timestep.reward[e]))
            if done[e]:
                self.episodes[e].append((np.stack(obs), np.stack(act), np.asarray(rew, np.float32)))
                self.current[e] = ([], [], [])

    def adapt(self):
        """One ``adapt`` call per sub-environment on its episodes (padded, masked)."""
        for e, episodes in enumerate(self.episodes):
            h = max(len(r) for _, _, r in episodes)
            n = len(episodes)
            obs = np.zeros((n, h, episodes[0][0].shape[-1]), np.float32)
            act = np.zeros((n, h, episodes[0][1].shape[-1]), np.float32)
            rew, mask = np.zeros((n, h), np.float32), np.zeros((n, h), np.float32)
            for i, (o, a, r) in enumerate(episodes):
                t = len(r)
                obs[i, :t], act[i, :t], rew[i, :t], mask[i, :t] = o, a, r, 1.0
            self.params[e] = self.adapt_fn(
                observations=tf.constant(obs), actions=tf.constant(act), rewards=tf.constant(rew),
                mask=tf.constant(mask), num_steps=tf.constant(1))["params"]
        self._start_buffers()

    def eval_action(self, observations):
        obs = tf.constant(observations, tf.float32)
        if all(p is None for p in self.params):                 # never adapted
            return self.serve(observation=obs)["action"].numpy().astype(np.float64)
        rows = [self.act_with(observation=obs[e:e + 1], params=p)["action"].numpy()[0]
                for e, p in enumerate(self.params)]
        return np.stack(rows).astype(np.float64)

    def reset(self, env_mask):
        """Episode boundaries: nothing to reset (a feed-forward policy)."""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export_dir")
    p.add_argument("--num-evals", type=int, default=10)
    p.add_argument("--meta-batch-size", type=int, default=20)
    p.add_argument("--total-tasks-per-cls", type=int, default=40)
    p.add_argument("--adaptation-episodes", type=int, default=10)
    p.add_argument("--evaluation-episodes", type=int, default=3)
    p.add_argument("--max-episode-steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unadapted", action="store_true", help="also score without adaptation")
    a = p.parse_args()

    model = tf.saved_model.load(a.export_dir)
    modes = [("adapted", 1)] + ([("unadapted", 0)] if a.unadapted else [])
    for label, steps in modes:
        envs = gym.make_vec("Meta-World/ML10-test", seed=a.seed, meta_batch_size=a.meta_batch_size,
                            total_tasks_per_cls=a.total_tasks_per_cls,
                            max_episode_steps=a.max_episode_steps)
        agent = ExportedAgent(model, envs.num_envs, seed=a.seed)
        success, mean_return, per_task = metalearning_evaluation(
            agent, envs, num_evals=a.num_evals, adaptation_steps=steps,
            adaptation_episodes=a.adaptation_episodes, evaluation_episodes=a.evaluation_episodes)
        envs.close()
        print(f"{label}: meta-test success {success:.4f}, mean return {mean_return:.6f}")
        for name, value in sorted(per_task.items()):
            print(f"  {name}: {value:.4f}")


if __name__ == "__main__":
    main()
