"""Meta-DQN: DQN math by hand, the TF ring buffer, the z-only inner loop and its meta-gradient, the
TF environments against gymnasium, bad input by its message, a tiny grid-world learning run."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms import dqn
from metarl_tf.algorithms.meta_dqn import (MetaDQNConfig, MetaDQNLearner, adapt_embedding,
                                           collect_support, embedding_rule, inner_td_loss,
                                           model_loss, outer_td_loss, reward_head_kind,
                                           reward_loss, reward_prediction, without_rewards)
from metarl_tf.networks.q_network import TaskConditionedQNetwork, q_values
from metarl_tf.rollouts.replay import TaskReplayBuffer, Transitions
from metarl_tf.tasks import CartPoleDirTasks, GridWorldTasks, MountainCarLRTasks

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


def steps(first, count, num_tasks=2):
    """``count`` transitions per task whose observation is (step index + 100 * task)."""
    idx = np.arange(first, first + count, dtype=np.float32)[:, None] + 100 * np.arange(num_tasks)
    return Transitions(idx[..., None], np.zeros(idx.shape, np.int32), idx, idx[..., None] + 1,
                       np.zeros(idx.shape, np.float32), np.zeros(idx.shape, np.float32))


@pytest.mark.parametrize("compiled", COMPILED)
def test_replay_buffer_wraps_around_and_samples_only_filled_slots(compiled):
    buf = TaskReplayBuffer(num_tasks=2, capacity=4, obs_dim=1)
    add = maybe_compiled(buf.add, compiled)
    sample = maybe_compiled(lambda s: buf.sample(s, 200), compiled)
    add(steps(0, 3))  # slots 0..2 filled with steps 0, 1, 2; slot 3 still empty (zeros)
    obs = sample(tf.constant([1, 1], tf.int64)).observation.numpy()[..., 0]
    assert obs.shape == (2, 200)
    assert set(np.unique(obs[0])) == {0.0, 1.0, 2.0}  # all filled slots, never the empty one
    assert set(np.unique(obs[1])) == {100.0, 101.0, 102.0}  # task 1 samples its own buffer
    add(steps(3, 3))  # steps 3, 4, 5 -> slots 3, 0, 1: the buffer keeps steps 2..5
    assert int(buf.pointer) == 2 and int(buf.size) == 4
    np.testing.assert_array_equal(buf.all().observation.numpy()[0, :, 0], [2, 3, 4, 5])
    obs = sample(tf.constant([2, 2], tf.int64)).observation.numpy()[..., 0]
    assert set(np.unique(obs[0])) == {2.0, 3.0, 4.0, 5.0}
    # 2-step samples are consecutive steps of the same task, never across the write pointer
    pairs = buf.sample(tf.constant([3, 3], tf.int64), 200, n=2, tasks=[1]).observation.numpy()
    assert pairs.shape == (1, 200, 2, 1)
    np.testing.assert_array_equal(pairs[0, :, 1, 0] - pairs[0, :, 0, 0], 1.0)
    assert set(np.unique(pairs[0, :, 0, 0])) == {102.0, 103.0, 104.0}


@pytest.mark.parametrize("compiled", COMPILED)
def test_replay_buffer_windows_are_consecutive_filled_slots_across_the_wrap(compiled):
    buf = TaskReplayBuffer(num_tasks=2, capacity=5, obs_dim=1)
    window = maybe_compiled(lambda s, t: buf.sample_window(s, 3, t), compiled)
    buf.add(steps(0, 4))  # steps 0..3 in slots 0..3; slot 4 empty
    starts = set()
    for i in range(40):
        obs = window(tf.constant([i, 0], tf.int64), tf.constant([0, 1])).observation.numpy()[..., 0]
        assert obs.shape == (2, 3)
        np.testing.assert_array_equal(np.diff(obs, axis=1), 1.0)  # consecutive steps
        assert obs[0, 0] in (0.0, 1.0) and obs[1, 0] in (100.0, 101.0)  # never the empty slot
        starts.add(obs[0, 0])
    assert starts == {0.0, 1.0}  # both possible starts are drawn
    buf.add(steps(4, 3))  # steps 4, 5, 6 -> slots 4, 0, 1: the buffer keeps steps 2..6
    for i in range(40):
        obs = window(tf.constant([i, 1], tf.int64), tf.constant([1])).observation.numpy()[0, :, 0]
        np.testing.assert_array_equal(np.diff(obs), 1.0)  # windows run across the ring's end
        assert 102.0 <= obs[0] <= 104.0
    with pytest.raises(tf.errors.InvalidArgumentError, match="fewer than n=9"):
        buf.sample_window(tf.constant([0, 0], tf.int64), 9)
    assert buf.sample_window(tf.constant([0, 0], tf.int64), 1).observation.shape == (2, 1, 1)


def test_without_rewards_replaces_rewarded_transitions_of_masked_tasks_only():
    obs = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    reward = np.array([[0, 1, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]], np.float32)
    zeros = np.zeros((3, 4), np.float32)
    support = Transitions(obs, np.zeros((3, 4), np.int32), reward, obs + 0.5, zeros, zeros)
    out = without_rewards(support, tf.constant([True, False, True]))
    # task 0: a rewarded position j takes the (j mod 2)-th of the unrewarded slots (0, 2)
    # so position 1 -> slot 2 and position 3 -> slot 2
    np.testing.assert_array_equal(out.observation.numpy()[0, :, 0], [0, 2, 2, 2])
    np.testing.assert_array_equal(out.reward.numpy()[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(out.next_observation.numpy()[0, :, 0], [0.5, 2.5, 2.5, 2.5])
    np.testing.assert_array_equal(out.reward.numpy()[1], reward[1])  # not masked: unchanged
    np.testing.assert_array_equal(out.observation.numpy()[2], obs[2])  # nothing to swap in
    with pytest.raises(ValueError, match="`support_reward_dropout` must be"):
        MetaDQNConfig(support_reward_dropout=1.5)


def test_q_values_equal_the_keras_model_shared_and_per_task():
    net = TaskConditionedQNetwork(obs_dim=3, num_actions=4, z_dim=2, hidden=(8, 8), seed=1)
    obs = tf.random.stateless_normal([2, 5, 3], [0, 1])
    z = tf.random.stateless_normal([2, 2], [0, 2])
    params = net.params()
    expected = np.stack([net([obs[t], tf.tile(z[t:t + 1], [5, 1])]).numpy() for t in range(2)])
    np.testing.assert_allclose(q_values(params, obs, z), expected, rtol=1e-5, atol=1e-6)
    batched = [tf.stack([p, p]) for p in params]
    np.testing.assert_allclose(q_values(batched, obs, z), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="`num_actions` must be an integer >= 2"):
        TaskConditionedQNetwork(3, 1)


def random_batch(num_tasks=3, k=16, obs_dim=3, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(num_tasks, k, obs_dim)).astype(np.float32)
    return Transitions(tf.constant(obs), tf.constant(rng.integers(0, 2, (num_tasks, k)), tf.int32),
                       tf.constant(rng.normal(size=(num_tasks, k)).astype(np.float32)),
                       tf.constant(obs + 0.1), tf.constant((rng.uniform(size=(num_tasks, k)) < 0.2)
                                                           .astype(np.float32)),
                       tf.zeros([num_tasks, k]))


@pytest.mark.parametrize("compiled", COMPILED)
def test_inner_loop_changes_z_and_nothing_else_and_the_meta_gradient_flows_through_it(compiled):
    net = TaskConditionedQNetwork(obs_dim=3, num_actions=2, z_dim=4, hidden=(16,), seed=2)
    before = [v.numpy().copy() for v in net.trainable_variables]
    support, query = random_batch(seed=1), random_batch(seed=2)
    rule = embedding_rule(0.5)
    cfg = MetaDQNConfig(double_dqn=True)

    def run(first_order):
        params = [tf.convert_to_tensor(v) for v in net.trainable_variables]
        z0 = tf.constant([0.1, -0.2, 0.3, 0.0])
        with tf.GradientTape() as tape:
            tape.watch(params + [z0])
            adapted = adapt_embedding(params, z0, support, rule, 2, 0.9, first_order=first_order)
            z = adapted.params[0]
            # the outer network is a constant here, so theta reaches this loss only through z
            fixed = [tf.stop_gradient(p) for p in params]
            loss = tf.reduce_mean(outer_td_loss(fixed, fixed, z, query, cfg))
        grads = tape.gradient(loss, params + [z0],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return z, adapted.support_loss, grads

    run = maybe_compiled(run, compiled)
    z, first_loss, grads = run(False)
    assert len(z.shape) == 2 and z.shape == (3, 4)
    assert np.all(np.abs(z.numpy() - [0.1, -0.2, 0.3, 0.0]) > 0)  # z moved, in every task
    for b, v in zip(before, net.trainable_variables):  # the network itself did not
        np.testing.assert_array_equal(b, v.numpy())
    assert all(float(tf.norm(g)) > 0 for g in grads)  # second order: theta gets a gradient via z
    _, _, fo_grads = run(True)
    for g in fo_grads[:-1]:  # first order: the path through the inner gradient is cut
        assert float(tf.norm(g)) == 0.0
    assert float(tf.norm(fo_grads[-1])) > 0  # z_0 still gets the identity path
    # one step is z_1 = z_0 - 0.5 * d/dz mean huber(y - Q(s, a; z)) at z_0, y held constant
    params = [tf.convert_to_tensor(v) for v in net.trainable_variables]
    z0 = tf.tile(tf.constant([[0.1, -0.2, 0.3, 0.0]]), [3, 1])
    with tf.GradientTape() as tape:
        tape.watch(z0)
        loss = tf.reduce_sum(inner_td_loss(params, z0, support, 0.9))
    one = adapt_embedding(params, z0[0], support, rule, 1, 0.9).params[0]
    np.testing.assert_allclose(one, z0 - 0.5 * tape.gradient(loss, z0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(first_loss, inner_td_loss(params, z0, support, 0.9), rtol=1e-5)


@pytest.mark.parametrize("compiled", COMPILED)
def test_reward_inner_loss_step_by_hand_and_its_meta_gradient_reaches_the_head(compiled):
    net = TaskConditionedQNetwork(obs_dim=3, num_actions=2, z_dim=4, hidden=(16,), seed=2)
    head = TaskConditionedQNetwork(obs_dim=6, num_actions=2, z_dim=4, hidden=(8, 8), seed=3)
    support, query = random_batch(seed=1), random_batch(seed=2)
    z0 = tf.constant([0.1, -0.2, 0.3, 0.0])
    rule = embedding_rule(0.5)

    def run():
        params, rparams = net.params(), head.params()
        with tf.GradientTape() as tape:
            tape.watch(params + rparams)
            z = adapt_embedding(params, z0, support, rule, 2, 0.9, inner_loss_kind="reward",
                                reward_params=rparams, reward_weight=2.0).params[0]
            # only the Q-network's TD loss on the query: the head is reached through z alone
            loss = tf.reduce_mean(outer_td_loss(params, params, z, query, MetaDQNConfig()))
        return z, tape.gradient(loss, rparams, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    z, head_grads = maybe_compiled(run, compiled)()
    assert all(float(tf.norm(g)) > 0 for g in head_grads)  # second order, through the inner steps
    # one step: z_1 = z_0 - 0.5 * d/dz 2 * mean_k (r_hat(s_k, a_k, s'_k, z) - r_k)^2 at z_0, with
    # r_hat = head(concat(s, s'), z)[a] (the TD loss plays no part in "reward")
    zt = tf.tile(z0[None], [3, 1])
    with tf.GradientTape() as tape:
        tape.watch(zt)
        pair = tf.concat([support.observation, support.next_observation], -1)
        pred = dqn.select(q_values(head.params(), pair, zt), support.action)
        loss = tf.reduce_sum(2.0 * tf.reduce_mean(tf.square(pred - support.reward), -1))
    one = adapt_embedding(net.params(), z0, support, rule, 1, 0.9, inner_loss_kind="reward",
                          reward_params=head.params(), reward_weight=2.0).params[0]
    np.testing.assert_allclose(one, zt - 0.5 * tape.gradient(loss, zt), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(reward_loss(head.params(), zt, support),
                               tf.reduce_mean(tf.square(pred - support.reward), -1), rtol=1e-6)
    both = adapt_embedding(net.params(), z0, support, rule, 1, 0.9, inner_loss_kind="td+reward",
                           reward_params=head.params(), reward_weight=2.0).support_loss
    np.testing.assert_allclose(both, inner_td_loss(net.params(), zt, support, 0.9)
                               + 2.0 * reward_loss(head.params(), zt, support), rtol=1e-5)
    with pytest.raises(ValueError, match="`inner_loss` 'reward' needs `reward_params`"):
        adapt_embedding(net.params(), z0, support, rule, 1, 0.9, inner_loss_kind="reward")


def test_model_inner_loss_by_hand_and_its_meta_gradient_reaches_the_model_head():
    """inner_loss "model": the head on s has num_actions * (obs_dim + 1) outputs; for the taken
    action they predict (r, s' - s). Worked on one transition: obs_dim 1, 2 actions, so outputs
    (r_0, ds_0, r_1, ds_1); with action 1 the prediction is (out[2], out[3])."""
    head = TaskConditionedQNetwork(obs_dim=1, num_actions=4, z_dim=2, hidden=(8,), seed=5)
    obs, nxt = np.array([[[0.5]]], np.float32), np.array([[[0.8]]], np.float32)
    one = Transitions(tf.constant(obs), tf.constant([[1]], tf.int32), tf.constant([[2.0]]),
                      tf.constant(nxt), tf.zeros([1, 1]), tf.zeros([1, 1]))
    z = tf.constant([[0.3, -0.1]])
    out = q_values(head.params(), tf.constant(obs), z)[0, 0].numpy()
    by_hand = (out[2] - 2.0) ** 2 + (out[3] - (0.8 - 0.5)) ** 2
    np.testing.assert_allclose(model_loss(head.params(), z, one), [by_hand], rtol=1e-5)
    # a head of the wrong width is refused with the width it needs
    bad = TaskConditionedQNetwork(obs_dim=1, num_actions=3, z_dim=2, hidden=(8,), seed=5)
    with pytest.raises(ValueError, match=r"num_actions \* \(obs_dim \+ 1\) = num_actions \* 2"):
        model_loss(bad.params(), z, one)
    # the adapted z (normalised steps on the model error) carries the meta-gradient into the head
    net = TaskConditionedQNetwork(obs_dim=3, num_actions=2, z_dim=4, hidden=(16,), seed=2)
    mhead = TaskConditionedQNetwork(obs_dim=3, num_actions=2 * 4, z_dim=4, hidden=(8,), seed=3)
    support, query = random_batch(seed=1), random_batch(seed=2)
    params, mparams = net.params(), mhead.params()
    with tf.GradientTape() as tape:
        tape.watch(mparams)
        z = adapt_embedding(params, tf.zeros([4]), support, embedding_rule(0.5), 2, 0.9,
                            inner_loss_kind="model", reward_params=mparams,
                            normalize_grad=True).params[0]
        loss = tf.reduce_mean(outer_td_loss(params, params, z, query, MetaDQNConfig()))
    grads = tape.gradient(loss, mparams, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert all(float(tf.norm(g)) > 0 for g in grads)
    z1 = adapt_embedding(params, tf.zeros([4]), support, embedding_rule(0.5), 1, 0.9,
                         inner_loss_kind="model", reward_params=mparams,
                         normalize_grad=True).params[0]
    np.testing.assert_allclose(tf.norm(z1, axis=-1), [0.5] * 3, rtol=1e-4)  # a step of length 0.5


def test_model_inner_loss_learner_adapts_z_on_cartpole_dynamics():
    cfg = MetaDQNConfig(**{**TINY, "inner_loss": "model", "normalize_inner_grad": True,
                           "reward_hidden": 8, "inner_lr": 0.5, "learn_z_init": False,
                           "learn_inner_lr": False})
    learner = MetaDQNLearner(TaskConditionedQNetwork(4, 2, 2, (8,), seed=0), CartPoleDirTasks(),
                             cfg)
    assert learner.reward_network.num_actions == 2 * 5  # (r, 4 state deltas) per action
    metrics = learner.train(4)
    assert np.isfinite(metrics["reward_loss"]) and metrics["support_loss_after"] < \
        metrics["support_loss_before"]
    task = CartPoleDirTasks().sample(1, 3, "test")
    sup = collect_support(CartPoleDirTasks().tf_env(), tf.constant(task), 16, 200, 2,
                          tf.constant([1, 2], tf.int64))
    z = learner.adapt(sup.observation[0].numpy(), sup.action[0].numpy(), sup.reward[0].numpy(),
                      sup.next_observation[0].numpy(), sup.terminated[0].numpy())
    np.testing.assert_allclose(np.linalg.norm(z), 0.5, rtol=1e-4)  # one normalised step of 0.5
    with pytest.raises(ValueError, match="`reward_head` must be 'mlp' with `inner_loss` 'model'"):
        MetaDQNConfig(inner_loss="model", reward_head="distance")


@pytest.mark.parametrize("compiled", COMPILED)
def test_structured_reward_heads_and_a_normalised_step_by_hand(compiled):
    # r_hat(s, a, s', z) = [s, s', 1]^T M [z, 1]; obs_dim 3, z_dim 4 -> M [7, 5]
    support = random_batch(seed=1)  # 3 tasks x 16 transitions, normal rewards
    rng = np.random.default_rng(4)
    m = tf.constant(rng.normal(size=(7, 5)).astype(np.float32))
    z = tf.constant(rng.normal(size=(3, 4)).astype(np.float32))
    x = np.concatenate([support.observation.numpy(), support.next_observation.numpy(),
                        np.ones((3, 16, 1), np.float32)], -1)
    zt = np.concatenate([z.numpy(), np.ones((3, 1), np.float32)], -1)
    pred = np.einsum("tki,ij,tj->tk", x, m.numpy(), zt)
    np.testing.assert_allclose(maybe_compiled(reward_prediction, compiled)([m], z, support), pred,
                               rtol=1e-5, atol=1e-5)
    # one normalised step from z_0 = 0 at rate 0.5 (reward_weight 1):
    #   g = d/dz mean_k (r_hat_k - r_k)^2 = (2/K) sum_k (r_hat_k - r_k) M[:, :4]^T x_k
    #   z_1 = -0.5 g / |g|
    z0 = tf.zeros([4])
    res = np.einsum("tki,i->tk", x, m.numpy()[:, 4]) - support.reward.numpy()  # r_hat at z = 0
    g = 2.0 / 16 * np.einsum("tk,tki,ij->tj", res, x, m.numpy()[:, :4])
    one = adapt_embedding([], z0, support, embedding_rule(0.5), 1, 0.9, inner_loss_kind="reward",
                          reward_params=[m], normalize_grad=True).params[0]
    np.testing.assert_allclose(one, -0.5 * g / np.linalg.norm(g, axis=-1, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"the bilinear reward head `M` \[7, 5\] does not fit"):
        reward_prediction([m], tf.zeros([3, 2]), support)
    # the distance head: r_hat = a exp(-|x^T P - z|^2) + b, P [7, 4]
    p = tf.constant(rng.normal(size=(7, 4)).astype(np.float32) * 0.3)
    ab = tf.constant([2.0, -0.5])
    e = np.einsum("tki,ij->tkj", x, p.numpy())
    want = 2.0 * np.exp(-np.sum((e - z.numpy()[:, None]) ** 2, -1)) - 0.5
    np.testing.assert_allclose(maybe_compiled(reward_prediction, compiled)([p, ab], z, support),
                               want, rtol=1e-4, atol=1e-6)
    # the next_distance head: the same on x = [s', 1] alone, P [4, 4] (obs_dim + 1 rows)
    pn = tf.constant(rng.normal(size=(4, 4)).astype(np.float32) * 0.3)
    xn = np.concatenate([support.next_observation.numpy(), np.ones((3, 16, 1), np.float32)], -1)
    en = np.einsum("tki,ij->tkj", xn, pn.numpy())
    want = 2.0 * np.exp(-np.sum((en - z.numpy()[:, None]) ** 2, -1)) - 0.5
    np.testing.assert_allclose(maybe_compiled(reward_prediction, compiled)([pn, ab], z, support),
                               want, rtol=1e-4, atol=1e-6)
    assert reward_head_kind([pn, ab], obs_dim=3) == "next_distance"
    assert reward_head_kind([p, ab], obs_dim=3) == "distance"
    # told the form, the head is read as that form, not guessed from the shapes
    np.testing.assert_allclose(reward_prediction([pn, ab], z, support, reward_head="next_distance"),
                               want, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"the next_distance reward head `P` \[7, 4\] does not fit"):
        reward_prediction([p, ab], z, support, reward_head="next_distance")
    with pytest.raises(ValueError, match="`reward_head` must be one of"):
        reward_prediction([p, ab], z, support, reward_head="linear")


@pytest.mark.parametrize("compiled", COMPILED)
def test_next_logistic_head_by_hand(compiled):
    """P(r = 1 | s', z) = sigmoid(u), u = c - |[s', 1] P - z|^2; the loss is the cross-entropy
    r softplus(-u) + (1 - r) softplus(u); its gradient on z is (2/K) sum_k (sigmoid(u_k) - r_k)
    (e_k - z) with e_k = [s'_k, 1] P: a rewarded transition the head gives ~0 pulls z towards
    e_k by a step proportional to the distance (the squared error of a bump head would vanish)."""
    support = random_batch(seed=2)  # obs_dim 3: P [4, 2]
    support = support._replace(reward=tf.constant(
        np.random.default_rng(0).uniform(size=(3, 16)).astype(np.float32)))
    rng = np.random.default_rng(5)
    p = tf.constant(rng.normal(size=(4, 2)).astype(np.float32) * 0.5)
    c = tf.constant([0.7])
    z = tf.constant(rng.normal(size=(3, 2)).astype(np.float32))
    x = np.concatenate([support.next_observation.numpy(), np.ones((3, 16, 1), np.float32)], -1)
    e = np.einsum("tki,ij->tkj", x, p.numpy())
    u = 0.7 - np.sum((e - z.numpy()[:, None]) ** 2, -1)
    sig = 1.0 / (1.0 + np.exp(-u))
    r = support.reward.numpy()
    np.testing.assert_allclose(
        maybe_compiled(reward_prediction, compiled)([p, c], z, support, "relu", "next_logistic"),
        sig, rtol=1e-5, atol=1e-6)
    want = np.mean(r * np.log1p(np.exp(-u)) + (1 - r) * np.log1p(np.exp(u)), -1)
    np.testing.assert_allclose(
        maybe_compiled(reward_loss, compiled)([p, c], z, support, "relu", "next_logistic"), want,
        rtol=1e-5)
    with tf.GradientTape() as tape:
        tape.watch(z)
        loss = tf.reduce_sum(reward_loss([p, c], z, support, reward_head="next_logistic"))
    grad = 2.0 / 16 * np.einsum("tk,tkj->tj", sig - r, e - z.numpy()[:, None])
    np.testing.assert_allclose(tape.gradient(loss, z), grad, rtol=1e-4, atol=1e-6)
    assert reward_head_kind([p, c], obs_dim=3) == "next_logistic"
    with pytest.raises(ValueError, match=r"the next_logistic reward head `P` \[3, 2\]"):
        reward_loss([p[:3], c], z, support, reward_head="next_logistic")


def test_bilinear_reward_head_step_points_at_any_goal_cell_held_out_ones_included():
    """Why the bilinear head can generalise: with M mapping s' onto z's first two coordinates and
    no bias, the first normalised step from z = 0 points at the goal's observation coordinates,
    for every cell (the MLP head can instead learn "never rewarded" for the held-out cells)."""
    tasks = GridWorldTasks()
    goals = np.concatenate([tasks.goals("train"), tasks.goals("test")])
    m = np.zeros((5, 4), np.float32)  # x^T M [z, 1]: the last column (z's constant 1) stays 0
    m[2, 0] = m[3, 1] = 1.0  # x = [s, s', 1]: rows 2, 3 are s'
    sup = collect_support(tasks.tf_env(), tf.constant(goals), 200, tasks.horizon, 4,
                          tf.constant([3, 4], tf.int64))
    seen = sup.reward.numpy().sum(1) > 0
    z = adapt_embedding([], tf.zeros([3]), sup, embedding_rule(1.0), 1, 0.9,
                        inner_loss_kind="reward", reward_params=[tf.constant(m)],
                        normalize_grad=True).params[0].numpy()
    goal_obs = 2.0 * goals / (tasks.size - 1) - 1.0
    centre = np.all(goal_obs == 0.0, axis=1)  # the centre cell's direction is undefined
    keep = seen & ~centre
    assert keep.sum() >= 20
    cos = np.sum(z[keep, :2] * goal_obs[keep], 1) / (
        np.linalg.norm(z[keep, :2], axis=1) * np.linalg.norm(goal_obs[keep], axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)
    np.testing.assert_allclose(z[:, 2], 0.0, atol=1e-6)


def test_normalized_inner_step_moves_each_task_by_its_rate():
    net = TaskConditionedQNetwork(obs_dim=3, num_actions=2, z_dim=4, hidden=(16,), seed=2)
    support = random_batch(seed=1)
    z0 = tf.constant([0.1, -0.2, 0.3, 0.0])
    plain = adapt_embedding(net.params(), z0, support, embedding_rule(0.5), 1, 0.9).params[0]
    unit = adapt_embedding(net.params(), z0, support, embedding_rule(0.5), 1, 0.9,
                           normalize_grad=True).params[0]
    # the step is the plain one's direction with length 0.5 (the rate), in every task
    np.testing.assert_allclose(tf.norm(unit - z0, axis=-1), [0.5] * 3, rtol=1e-5)
    cos = tf.reduce_sum((unit - z0) * (plain - z0), -1) / (
        tf.norm(unit - z0, axis=-1) * tf.norm(plain - z0, axis=-1))
    np.testing.assert_allclose(cos, [1.0] * 3, rtol=1e-5)
    # per-dimension rates scale the unit direction elementwise
    rates = tf.constant([1.0, 2.0, 0.0, 1.0])
    per_dim = adapt_embedding(net.params(), z0, support, embedding_rule(None, rates), 1, 0.9,
                              normalize_grad=True).params[0]
    np.testing.assert_allclose(per_dim - z0, (unit - z0) / 0.5 * rates, rtol=1e-5, atol=1e-7)


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


def test_config_and_learner_refuse_bad_values_by_name():
    with pytest.raises(ValueError, match=r"`meta_batch_size` \(8\) must be <= `num_train_tasks` \(4\)"):
        MetaDQNConfig(num_train_tasks=4, meta_batch_size=8)
    with pytest.raises(ValueError, match="`target_update` must be one of"):
        MetaDQNConfig(target_update="soft")
    with pytest.raises(ValueError, match="`z_dim` must be an integer >= 0"):
        MetaDQNConfig(z_dim=-1)
    with pytest.raises(ValueError, match="`inner_loss` must be one of"):
        MetaDQNConfig(inner_loss="reward_prediction")
    with pytest.raises(ValueError, match="`reward_loss_weight` must be a finite number"):
        MetaDQNConfig(reward_loss_weight=0.0)
    with pytest.raises(ValueError, match="`reward_hidden` must be an integer >= 1"):
        MetaDQNConfig(reward_hidden=0)
    with pytest.raises(ValueError, match="`reward_head` must be one of"):
        MetaDQNConfig(reward_head="linear")
    with pytest.raises(ValueError, match="`support_sampling` must be one of"):
        MetaDQNConfig(support_sampling="walk")
    with pytest.raises(ValueError, match="`per_step_inner_lr` needs `learn_inner_lr`"):
        MetaDQNConfig(per_step_inner_lr=True, learn_inner_lr=False)
    with pytest.raises(ValueError, match="`inner_lr_decay` \\(0.5\\) needs `per_step_inner_lr`"):
        MetaDQNConfig(inner_lr_decay=0.5)
    with pytest.raises(ValueError, match="`inner_lr_decay` must be"):
        MetaDQNConfig(per_step_inner_lr=True, inner_lr_decay=0.0)
    with pytest.raises(ValueError, match="`outer_loss_steps` \\(4\\) must be <= `inner_steps` \\(3\\)"):
        MetaDQNConfig(inner_steps=3, outer_loss_steps=4)
    with pytest.raises(ValueError, match=r"`task_loss_weight` must be a finite number in \[0"):
        MetaDQNConfig(task_loss_weight=-1.0)
    with pytest.raises(ValueError, match="`normalize_inner_grad` must be True or False"):
        MetaDQNConfig(normalize_inner_grad="yes")
    net = TaskConditionedQNetwork(2, 4, z_dim=3, hidden=(8,))
    with pytest.raises(ValueError, match=r"`network.z_dim` \(3\) must equal `z_dim` \(4\)"):
        MetaDQNLearner(net, GridWorldTasks(), MetaDQNConfig(z_dim=4))


TINY = dict(z_dim=2, inner_steps=1, num_train_tasks=2, meta_batch_size=2, support_size=16,
            query_batch_size=8, replay_capacity=64, prefill_steps=16, steps_per_execution=4)


@pytest.fixture(scope="module")
def tiny_learner():
    cfg = MetaDQNConfig(**TINY, discount=0.9)
    return MetaDQNLearner(TaskConditionedQNetwork(2, 4, 2, (8,), seed=0), GridWorldTasks(), cfg)


def test_python_adapt_refuses_bad_transitions_by_name(tiny_learner):
    obs = np.zeros((5, 2), np.float32)
    good = dict(observations=obs, actions=np.zeros(5, np.int64), rewards=np.zeros(5),
                next_observations=obs, dones=np.zeros(5))
    assert tiny_learner.adapt(**good).shape == (2,)
    with pytest.raises(ValueError, match=r"`actions` must have shape \[5\]"):
        tiny_learner.adapt(**{**good, "actions": np.zeros(4, np.int64)})
    with pytest.raises(ValueError, match=r"`next_observations` must have shape \[5, 2\]"):
        tiny_learner.adapt(**{**good, "next_observations": np.zeros((6, 2))})
    with pytest.raises(ValueError, match=r"`actions` must be integers in \[0, 4\)"):
        tiny_learner.adapt(**{**good, "actions": np.array([0, 1, 2, 3, 4])})
    with pytest.raises(ValueError, match="`rewards` must be finite"):
        tiny_learner.adapt(**{**good, "rewards": np.array([0, np.nan, 0, 0, 0])})
    with pytest.raises(ValueError, match="`dones` must hold only 0 and 1"):
        tiny_learner.adapt(**{**good, "dones": np.full(5, 0.5)})


def test_reward_head_learner_trains_the_head_and_adapts_on_it():
    cfg = MetaDQNConfig(**TINY, discount=0.9, inner_loss="reward", normalize_inner_grad=True,
                        reward_hidden=8)
    learner = MetaDQNLearner(TaskConditionedQNetwork(2, 4, 2, (8,), seed=0), GridWorldTasks(), cfg)
    assert learner.reward_network is not None and learner.reward_network.obs_dim == 4
    before = [v.numpy().copy() for v in learner.meta_variables]
    metrics = learner.train(4)
    assert "reward_loss" in metrics and np.isfinite(metrics["reward_loss"])
    for b, v in zip(before, learner.meta_variables):
        assert not np.allclose(b, v.numpy()), v.name  # the head's weights are meta-learned too
    obs = np.zeros((5, 2), np.float32)
    z = learner.adapt(obs, np.zeros(5, np.int64), np.array([0, 0, 1, 0, 0]), obs + 0.5,
                      np.array([0, 0, 1, 0, 0]), num_steps=1)
    # one normalised step of the learned per-dimension rates
    np.testing.assert_allclose(np.linalg.norm((z - learner.z_init.numpy())
                                              / learner.inner_rates.numpy()), 1.0, rtol=1e-4)
    assert "reward_network" in learner.checkpoint_items()


@pytest.mark.parametrize("head", ["bilinear", "distance"])
def test_structured_reward_head_learner_meta_learns_its_parameters(head):
    cfg = MetaDQNConfig(**TINY, discount=0.9, inner_loss="reward", reward_head=head,
                        normalize_inner_grad=True)
    learner = MetaDQNLearner(TaskConditionedQNetwork(2, 4, 2, (8,), seed=0), GridWorldTasks(), cfg)
    shapes = {"bilinear": [(5, 3)], "distance": [(5, 2), (2,)]}[head]
    assert learner.reward_network is None
    assert [tuple(v.shape) for v in learner.reward_params] == shapes
    before = [v.numpy().copy() for v in learner.reward_params]
    metrics = learner.train(4)
    assert np.isfinite(metrics["reward_loss"])
    for b, v in zip(before, learner.reward_params):
        assert not np.allclose(b, v.numpy()), v.name
    assert "reward_head" in learner.checkpoint_items()


def test_task_loss_meta_learns_a_decoder_of_the_adapted_z():
    cfg = MetaDQNConfig(**TINY, discount=0.9, inner_loss="reward", reward_head="distance",
                        normalize_inner_grad=True, task_loss_weight=2.0)
    learner = MetaDQNLearner(TaskConditionedQNetwork(2, 4, 2, (8,), seed=0), GridWorldTasks(), cfg)
    assert learner.task_decoder.shape == (3, 2)  # [z_dim + 1, task_dim]
    assert learner.meta_variables[-1] is learner.task_decoder
    before = [v.numpy().copy() for v in learner.meta_variables]
    metrics = learner.train(4)
    assert np.isfinite(metrics["task_loss"]) and metrics["task_loss"] > 0
    for b, v in zip(before, learner.meta_variables):
        assert not np.allclose(b, v.numpy()), v.name
    assert "task_decoder" in learner.checkpoint_items()
    # off by default: no decoder, no metric
    plain = MetaDQNLearner(TaskConditionedQNetwork(2, 4, 2, (8,), seed=0), GridWorldTasks(),
                           MetaDQNConfig(**TINY, discount=0.9))
    assert plain.task_decoder is None and "task_loss" not in plain.train(1)


def test_train_step_updates_network_z0_rates_and_the_target_copy(tiny_learner):
    before = [v.numpy().copy() for v in tiny_learner.meta_variables]
    metrics = tiny_learner.train(4)
    assert {"td_loss", "support_loss_before", "support_loss_after", "episode_return",
            "env_steps"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    for b, v in zip(before, tiny_learner.meta_variables):
        assert not np.allclose(b, v.numpy()), v.name  # every meta-parameter moved, rates included
    assert tiny_learner.step == 4
    curve = tiny_learner.evaluate(num_tasks=2, num_steps=1, episodes=1, support_size=40)
    assert len(curve["returns"]) == 2 and len(curve["ci95"]) == 2
    # each task's count of rewarded support transitions: the support evaluate draws
    from metarl_tf.algorithms.meta_dqn import _fold
    goals = tf.constant(tiny_learner.tasks.sample(2, tiny_learner.seed, "test"))
    support = collect_support(tiny_learner.env, goals, 40, tiny_learner.horizon,
                              tiny_learner.num_actions,
                              _fold(tf.constant([tiny_learner.seed, 11], tf.int64), 0))
    assert curve["support_rewarded"] == np.sum(support.reward.numpy() != 0, 1).tolist()


def test_gridworld_meta_dqn_learns_with_a_tiny_budget():
    """A 4x4 grid (4 held-out goals, 12 train goals), z adapted on the reward head's error by 2
    normalised steps: after 600 meta-iterations the adapted z reaches the goal far more often than
    the unadapted z_0, on the train goals and on the held-out goals (seen in development: held-out
    success 0.19-0.41 after 400-800 iterations against 0.03-0.12 unadapted; train 0.87-0.93
    against 0.07-0.13)."""
    tasks = GridWorldTasks(size=4, horizon=12)
    cfg = MetaDQNConfig(z_dim=4, inner_steps=2, inner_lr=0.5, inner_loss="reward",
                        normalize_inner_grad=True, learn_z_init=False, reward_hidden=32,
                        num_train_tasks=12, meta_batch_size=12, support_size=100,
                        random_buffer_size=300, query_batch_size=32, replay_capacity=2000,
                        prefill_steps=100, discount=0.9, epsilon_decay_steps=300,
                        target_update_period=50, steps_per_execution=200)
    learner = MetaDQNLearner(TaskConditionedQNetwork(2, 4, 4, (64, 64), seed=0), tasks, cfg)
    learner.train(600)
    # success rates (reward 1 at the goal), [unadapted, 1 step, 2 steps], 3 support sets per goal
    held_out = learner.evaluate(tasks=np.repeat(tasks.goals("test"), 3, 0), num_steps=2,
                                episodes=10, seed=1)["returns"]
    train = learner.evaluate(tasks=tasks.goals("train"), num_steps=2, episodes=10,
                             seed=1)["returns"]
    assert train[-1] > 0.7 and train[-1] > train[0] + 0.4, train
    assert held_out[-1] > held_out[0] + 0.1, held_out
