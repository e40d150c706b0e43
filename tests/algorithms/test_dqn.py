"""DQN math worked by hand (double-DQN targets, Huber loss, n-step returns, target updates,
epsilon), and the per-task from-scratch DQNs against their own and each other's tasks."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms import dqn
from metarl_tf.algorithms.dqn import PerTaskDQNConfig, PerTaskDQNLearner
from metarl_tf.tasks import GridWorldTasks

COMPILED = [False, True]


def maybe_compiled(fn, compiled):
    return tf.function(fn) if compiled else fn


@pytest.mark.parametrize("compiled", COMPILED)
def test_double_dqn_target_and_huber_loss_by_hand(compiled):
    r_t = tf.constant([1.0, 0.0])
    discount_t = tf.constant([0.9, 0.0])  # the second transition is terminal
    q_online_t = tf.constant([[1.0, 3.0], [2.0, 0.0]])
    q_target_t = tf.constant([[5.0, 4.0], [7.0, 9.0]])
    q_tm1 = tf.constant([[4.0, 2.0], [0.5, 2.5]])
    a_tm1 = tf.constant([0, 1])

    def run():
        y = dqn.double_q_learning_target(r_t, discount_t, q_online_t, q_target_t)
        y_dqn = dqn.q_learning_target(r_t, discount_t, q_target_t)
        return y, y_dqn, dqn.td_loss(q_tm1, a_tm1, y, delta=1.0)

    y, y_dqn, loss = maybe_compiled(run, compiled)()
    # double DQN: the online net picks a* = [1, 0]; the target net values them [4, 7]:
    #   y = [1 + 0.9 * 4, 0 + 0 * 7] = [4.6, 0]     (plain DQN: [1 + 0.9 * max(5, 4), 0] = [5.5, 0])
    np.testing.assert_allclose(y, [4.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(y_dqn, [5.5, 0.0], rtol=1e-6)
    # TD errors y - q_tm1[a] = [4.6 - 4, 0 - 2.5] = [0.6, -2.5]
    # Huber (kappa 1): 0.6^2 / 2 = 0.18;  1 * (2.5 - 0.5) = 2.0;  mean = 1.09
    np.testing.assert_allclose(loss, 1.09, rtol=1e-6)


def test_n_step_return_stops_at_the_episode_end_by_hand():
    # gamma 0.5. Row 0: r = [1, 2, 4], the episode terminates at step 1:
    #   reward 1 + 0.5 * 2 = 2, discount 0.5^2 * (1 - 1) = 0, bootstrap from step 1.
    # Row 1: no end: 1 + 0.5 * 2 + 0.25 * 4 = 3, discount 0.5^3 = 0.125, bootstrap from step 2.
    # Row 2: truncated (time limit) at step 0: reward 1, discount 0.5 (not terminal), step 0.
    r = tf.constant([[1.0, 2.0, 4.0]] * 3)
    terminated = tf.constant([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    boundary = tf.constant([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    out = dqn.n_step_return(r, terminated, boundary, 0.5)
    np.testing.assert_allclose(out.reward, [2.0, 3.0, 1.0])
    np.testing.assert_allclose(out.discount, [0.0, 0.125, 0.5])
    np.testing.assert_array_equal(out.last, [1, 2, 0])
    batched = dqn.n_step_return(r[None], terminated[None], boundary[None], 0.5)  # [T, B, n]
    np.testing.assert_allclose(batched.discount, [[0.0, 0.125, 0.5]])
    np.testing.assert_array_equal(batched.last, [[1, 2, 0]])


def test_target_updates_and_epsilon_schedule():
    target, online = [tf.constant([0.0, 10.0])], [tf.constant([1.0, 0.0])]
    # Polyak tau 0.1: 0.9 * [0, 10] + 0.1 * [1, 0] = [0.1, 9]
    np.testing.assert_allclose(dqn.polyak_update(target, online, 0.1)[0], [0.1, 9.0], rtol=1e-6)
    np.testing.assert_allclose(dqn.periodic_update(target, online, 200, 100)[0], [1.0, 0.0])
    np.testing.assert_allclose(dqn.periodic_update(target, online, 201, 100)[0], [0.0, 10.0])
    # 1.0 -> 0.1 over 100 steps: step 50 gives 0.55; after 100 it stays at 0.1
    assert float(dqn.linear_epsilon(50, 1.0, 0.1, 100)) == pytest.approx(0.55)
    assert float(dqn.linear_epsilon(500, 1.0, 0.1, 100)) == pytest.approx(0.1)
    q = tf.constant([[0.0, 1.0, 0.0]] * 1000)
    greedy = dqn.epsilon_greedy(q, 0.0, tf.constant([1, 2], tf.int64))
    assert np.all(greedy.numpy() == 1)
    explored = dqn.epsilon_greedy(q, 1.0, tf.constant([1, 2], tf.int64)).numpy()
    assert set(np.unique(explored)) == {0, 1, 2}


def test_per_task_dqns_each_learn_their_own_goal():
    """Two from-scratch DQNs on a 4x4 grid-world, goals in opposite corners: after 400 steps each
    reaches its own goal in every greedy episode and never the other's (its greedy policy heads
    for its own corner). Seen in development: [1, 1] on their own goals, [0, 0] swapped, from
    400 to 2000 steps."""
    family = GridWorldTasks(size=4, horizon=12)
    goals = np.array([[0, 0], [3, 3]], np.float32)
    config = PerTaskDQNConfig(discount=0.9, prefill_steps=200, epsilon_decay_steps=300,
                              target_update_period=100, replay_capacity=2000,
                              steps_per_execution=400)
    learner = PerTaskDQNLearner(family, goals, config, hidden=(32, 32))
    metrics = learner.train(400)
    assert learner.step == 400 and metrics["epsilon"] == pytest.approx(0.05)
    np.testing.assert_array_equal(learner.evaluate(episodes=10, seed=1), [1.0, 1.0])
    np.testing.assert_array_equal(learner.evaluate(episodes=10, seed=1, tasks=goals[::-1]),
                                  [0.0, 0.0])
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        PerTaskDQNConfig(batch_size=0)
