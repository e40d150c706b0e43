"""The discrete-action families of Meta-DQN (CartPoleDir, GridWorld, MountainCarLR): the batched TF
environments step like the gymnasium ones, and the task splits."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.tasks import CartPoleDirTasks, GridWorldTasks, MountainCarLRTasks


def test_tf_environments_match_gymnasium():
    rng = np.random.default_rng(0)
    for family, n_actions in ((CartPoleDirTasks(), 2), (GridWorldTasks(), 4),
                              (MountainCarLRTasks(), 3)):
        tasks = np.concatenate([family.sample(2, 0, "train"), family.sample(2, 0, "test")])
        env_tf = family.tf_env()
        state, obs = env_tf.reset(tf.constant(tasks), tf.constant([3, 4], tf.int64))
        for i, task in enumerate(tasks):
            env = family.make_env(task).unwrapped
            env.reset(seed=0)
            if hasattr(env, "_pos"):
                env._pos = state.numpy()[i].astype(np.int64)
            elif isinstance(env, MountainCarLRTasks().make_env().unwrapped.__class__):
                env._state = state.numpy()[i].copy()
            else:
                env.state = state.numpy()[i].astype(np.float64)
            s = state[i:i + 1]
            for _ in range(30):
                a = int(rng.integers(0, n_actions))
                o_gym, r_gym, term_gym, _, _ = env.step(a)
                s, o_tf, r_tf, term_tf = env_tf.step(tf.constant(task[None]), s,
                                                     tf.constant([a], tf.int32))
                np.testing.assert_allclose(o_tf.numpy()[0], o_gym, rtol=1e-4, atol=1e-5)
                assert float(r_tf[0]) == r_gym and bool(term_tf[0]) == term_gym
                if term_gym:
                    break


def test_cartpole_direction_swaps_the_actions():
    tasks = CartPoleDirTasks()
    right, left = [0.5, 0.1, 1.0, 10.0, 1.0], [0.5, 0.1, 1.0, 10.0, -1.0]
    env = tasks.tf_env()
    s0 = tf.zeros([2, 4])
    _, obs, _, _ = env.step(tf.constant([right, left]), s0, tf.constant([1, 0]))
    # the same push: x_dot after one step is identical for (right, a=1) and (left, a=0)
    np.testing.assert_allclose(obs[0], obs[1])
    assert float(obs[0, 1]) > 0
    with pytest.raises(ValueError, match="direction \\+1 or -1"):
        tasks.make_env([0.5, 0.1, 1.0, 10.0, 0.3])
    assert set(tasks.sample(200, 0, "test")[:, 4]) == {-1.0, 1.0}
    assert tasks.sample(50, 0, "test")[:, 0].min() >= 0.7  # held-out poles are longer


def test_gridworld_train_and_test_goals_are_disjoint():
    tasks = GridWorldTasks()
    test = {tuple(g) for g in tasks.goals("test")}
    assert test == {(2, 0), (0, 1), (3, 2), (1, 3), (4, 4)}
    assert not test & {tuple(g) for g in tasks.sample(40, 0, "train")}
    # 40 balanced draws over the 20 train goals: each goal twice
    _, counts = np.unique(tasks.sample(40, 0, "train"), axis=0, return_counts=True)
    assert len(counts) == 20 and set(counts) == {2}
