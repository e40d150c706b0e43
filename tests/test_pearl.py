"""PEARL: the posterior and SAC math worked by hand, the encoder's permutation invariance and
padding, per-task buffers, exact resume, and a learning test on PointNav."""
import math

import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms.pearl import PEARLConfig, PEARLLearner, losses, make_networks
from metarl_tf.algorithms.pearl.buffers import Batch, TaskBuffers
from metarl_tf.algorithms.pearl.networks import context_rows, encode
from metarl_tf.tasks import PointNavTasks


# -- the posterior --------------------------------------------------------------------------------
def test_product_of_gaussians_by_hand_and_padding():
    # factors N(1, 1) and N(3, 3): precision 1 + 1/3 = 4/3 -> var 0.75;
    # mean = 0.75 * (1/1 + 3/3) = 1.5. A third, padded factor N(100, 0.01) changes nothing.
    mu = tf.constant([[[1.0], [3.0], [100.0]]])
    var = tf.constant([[[1.0], [3.0], [0.01]]])
    mean, v = losses.product_of_gaussians(mu, var, tf.constant([[1.0, 1.0, 0.0]]))
    np.testing.assert_allclose(mean.numpy(), [[1.5]], rtol=1e-6)
    np.testing.assert_allclose(v.numpy(), [[0.75]], rtol=1e-6)
    # two equal-variance factors N(1, 1), N(3, 1): var 1/2, mean 2 (the average)
    mean, v = losses.product_of_gaussians(mu[:, :2], tf.ones([1, 2, 1]), tf.ones([1, 2]))
    np.testing.assert_allclose([mean.numpy()[0, 0], v.numpy()[0, 0]], [2.0, 0.5], rtol=1e-6)
    # no real factor: the prior N(0, 1)
    mean, v = losses.product_of_gaussians(mu, var, tf.zeros([1, 3]))
    np.testing.assert_array_equal([mean.numpy()[0, 0], v.numpy()[0, 0]], [0.0, 1.0])


def test_kl_to_unit_prior_by_hand():
    # 0.5 * [(0.5 + 1 - 1 - ln 0.5) + (2 + 0 - 1 - ln 2)] = 0.5 * (0.5 + 1) = 0.75 (the logs cancel)
    kl = losses.kl_to_unit_prior(tf.constant([[1.0, 0.0]]), tf.constant([[0.5, 2.0]]))
    np.testing.assert_allclose(kl.numpy(), [0.75], rtol=1e-6)
    assert float(losses.kl_to_unit_prior(tf.zeros([1, 5]), tf.ones([1, 5]))[0]) == 0.0


def test_tanh_gaussian_log_prob_by_hand():
    # u = 0: log N(0; 0, 1) = -0.5 ln(2 pi) = -0.918939, tanh'(0) = 1 -> -0.918939
    # u = 1: -0.5 - 0.918939 - ln(1 - tanh(1)^2) = -1.418939 - ln(0.419974) = -1.418939 + 0.867562
    #        = -0.551377
    out = losses.tanh_gaussian_log_prob(tf.constant([[0.0, 1.0]]), tf.zeros([1, 2]),
                                        tf.zeros([1, 2]))
    np.testing.assert_allclose(out.numpy(), [-0.918939 - 0.551377], rtol=1e-5)


# -- SAC's losses ---------------------------------------------------------------------------------
def test_sac_losses_by_hand():
    # y_1 = 2 * 1 + 0.9 * (min(3, 4) - 0.5 * 0.5) = 2 + 0.9 * 2.75 = 4.475;  y_2 = 2 * 2 (terminal)
    y = losses.soft_q_target(tf.constant([1.0, 2.0]), tf.constant([0.0, 1.0]),
                             tf.constant([3.0, 5.0]), tf.constant([4.0, 1.0]),
                             tf.constant([0.5, 0.2]), discount=0.9, reward_scale=2.0, alpha=0.5)
    np.testing.assert_allclose(y.numpy(), [4.475, 4.0], rtol=1e-6)
    # mean(0.475^2, 1) + mean(0.525^2, 1) = 0.6128125 + 0.6378125 = 1.250625
    lq = losses.critic_loss(tf.constant([4.0, 3.0]), tf.constant([5.0, 5.0]), y)
    np.testing.assert_allclose(float(lq), 1.250625, rtol=1e-6)
    # mean(0.5 * 0.5 - min(2, 1), 0.5 * -1 - min(1, 3)) = mean(-0.75, -1.5) = -1.125;
    # + 0.1 * mean(mu^2) = 0.1 * 5/4 = 0.125; + 0.01 * mean(log_std^2) = 0.01 * 3/4 = 0.0075
    lpi = losses.actor_loss(tf.constant([0.5, -1.0]), tf.constant([2.0, 1.0]),
                            tf.constant([1.0, 3.0]), 0.5, tf.constant([[1.0, 0.0], [0.0, 2.0]]),
                            tf.constant([[0.0, 1.0], [1.0, 1.0]]), 0.1, 0.01)
    np.testing.assert_allclose(float(lpi), -0.9925, rtol=1e-6)
    # -mean(0.5 * (1 - 2), 0.5 * (-3 - 2)) = -mean(-0.5, -2.5) = 1.5
    la = losses.alpha_loss(tf.constant(0.5), tf.constant([1.0, -3.0]), target_entropy=-2.0)
    np.testing.assert_allclose(float(la), 1.5, rtol=1e-6)


def test_critic_target_carries_no_gradient():
    q = tf.Variable([1.0, 2.0])
    with tf.GradientTape() as tape:
        y = losses.soft_q_target(tf.ones(2), tf.zeros(2), q, q, tf.zeros(2), 0.9, 1.0, 1.0)
    assert tape.gradient(y, q) is None


# -- the encoder ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bottleneck", [True, False])
def test_encoder_is_permutation_invariant_and_ignores_padding(bottleneck):
    nets = make_networks(3, 2, -1.0, 1.0, latent_dim=4, hidden=(8,), encoder_hidden=(16, 16),
                         information_bottleneck=bottleneck, seed=3)
    params = [tf.convert_to_tensor(v) for v in nets.encoder.trainable_variables]
    rng = np.random.default_rng(0)
    ctx = rng.normal(size=(2, 10, nets.context_dim)).astype(np.float32)
    mean, var = encode(params, ctx, np.ones((2, 10), np.float32), 4, bottleneck)
    perm = rng.permutation(10)
    mean_p, var_p = encode(params, ctx[:, perm], np.ones((2, 10), np.float32), 4, bottleneck)
    np.testing.assert_allclose(mean_p.numpy(), mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var_p.numpy(), var.numpy(), rtol=1e-5, atol=1e-7)
    padded = np.concatenate([ctx, 50.0 * rng.normal(size=(2, 6, nets.context_dim))], 1)
    mask = np.concatenate([np.ones((2, 10)), np.zeros((2, 6))], 1).astype(np.float32)
    mean_m, var_m = encode(params, padded.astype(np.float32), mask, 4, bottleneck)
    np.testing.assert_allclose(mean_m.numpy(), mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var_m.numpy(), var.numpy(), rtol=1e-5, atol=1e-7)
    # a different context gives a different posterior (the check above can fail)
    other, _ = encode(params, ctx[:, :5], np.ones((2, 5), np.float32), 4, bottleneck)
    assert not np.allclose(other.numpy(), mean.numpy(), atol=1e-4)
    if bottleneck:   # more evidence, less variance: every factor adds precision
        assert np.all(var.numpy() < encode(params, ctx[:, :5], np.ones((2, 5), np.float32), 4,
                                           True)[1].numpy())
    else:
        assert np.all(var.numpy() == 0.0)


def test_context_rows_layout():
    rows = context_rows(np.ones((1, 2, 3)), 2 * np.ones((1, 2, 2)), 3 * np.ones((1, 2)),
                        4 * np.ones((1, 2, 3)))
    assert rows.shape == (1, 2, 9)
    np.testing.assert_array_equal(rows.numpy()[0, 0], [1, 1, 1, 2, 2, 3, 4, 4, 4])


# -- buffers and config ---------------------------------------------------------------------------
def _batch(values):
    v = np.asarray(values, np.float32)
    return Batch(v[:, None], v[:, None], v, v[:, None], np.zeros_like(v))


def test_task_buffers_wrap_clear_and_sample_filled_slots_only():
    buf = TaskBuffers(num_tasks=2, capacity=4, obs_dim=1, act_dim=1)
    buf.add(0, _batch([1, 2, 3]))
    buf.add(0, _batch([4, 5]))            # wraps: slots hold 5, 2, 3, 4
    buf.add(1, _batch([7]))
    np.testing.assert_array_equal(buf.reward.numpy()[0], [5, 2, 3, 4])
    assert buf.size.numpy().tolist() == [4, 1] and buf.pointer.numpy().tolist() == [1, 1]
    out = buf.sample(tf.constant([0, 1]), 200, tf.constant([1, 2], tf.int64))
    assert set(out.reward.numpy()[0].tolist()) == {2.0, 3.0, 4.0, 5.0}
    assert set(out.reward.numpy()[1].tolist()) == {7.0}   # only the filled slot of task 1
    buf.clear(0)
    buf.add(0, _batch([9]))
    out = buf.sample(tf.constant([0]), 50, tf.constant([3, 4], tf.int64))
    assert set(out.reward.numpy()[0].tolist()) == {9.0}
    with pytest.raises(ValueError, match=r"`task` must be in \[0, 2\), got 2"):
        buf.add(2, _batch([1]))


@pytest.mark.parametrize("kwargs, message", [
    ({"latent_dim": 0}, "`latent_dim` must be an integer >= 1, got 0"),
    ({"kl_lambda": -1.0}, r"`kl_lambda` must be a finite number in \[0.0"),
    ({"encoder_hidden": ()}, "`encoder_hidden` must be a non-empty sequence"),
    ({"meta_batch_size": 8, "num_train_tasks": 4},
     r"`meta_batch_size` \(8\) must be <= `num_train_tasks` \(4\)"),
    ({"discount": 1.5}, "`discount` must be a finite number"),
    ({"num_initial_steps": 0}, "`num_initial_steps` must be an integer >= 1, got 0"),
    ({"use_information_bottleneck": 1}, "`use_information_bottleneck` must be True or False"),
])
def test_config_refuses_bad_values_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PEARLConfig(**kwargs)


# -- the learner ----------------------------------------------------------------------------------
def tiny(num_train_tasks=6, **kw):
    base = dict(latent_dim=2, encoder_hidden=(16,), num_train_tasks=num_train_tasks,
                meta_batch_size=3, num_initial_steps=20, num_tasks_sample=2, num_steps_prior=20,
                num_extra_rl_steps_posterior=20, num_train_steps_per_itr=6, batch_size=8,
                embedding_batch_size=8, replay_capacity=200, train_steps_per_call=4, num_envs=2)
    return PEARLConfig(**{**base, **kw})


def make_learner(cfg, tasks=None, hidden=(16,), seed=0):
    tasks = PointNavTasks(horizon=10) if tasks is None else tasks
    env = tasks.make_env()
    nets = make_networks(2, 2, env.action_space.low, env.action_space.high, cfg.latent_dim,
                         hidden, cfg.encoder_hidden, seed=seed)
    return PEARLLearner(nets, tasks, cfg, seed=seed)


def test_iteration_counts_steps_and_fills_buffers():
    learner = make_learner(tiny())
    m = learner.train(1)
    # initial: 6 tasks x 2 episodes x 10 steps = 120; then 2 tasks x (20 prior + 20 posterior)
    assert m["env_steps"] == 120 + 80 and m["grad_steps"] == 6 and learner.step == 1
    sizes = learner.rl_buffer.size.numpy()
    assert sorted(sizes.tolist()) == [20, 20, 20, 20, 60, 60]
    # the encoder buffers of the two refreshed tasks hold their 20 new prior steps only
    assert sorted(learner.enc_buffer.size.numpy().tolist()) == [20] * 6
    assert all(math.isfinite(v) for v in m.values())


def test_resume_continues_exactly(tmp_path):
    cfg = tiny()
    straight = make_learner(cfg)
    straight.train(1)
    path = tf.train.Checkpoint(**straight.checkpoint_items()).save(str(tmp_path / "ckpt"))
    straight.train(1)                       # the uninterrupted run: iterations 1 and 2
    resumed = make_learner(cfg)
    tf.train.Checkpoint(**resumed.checkpoint_items()).restore(path).assert_existing_objects_matched()
    assert resumed.step == 1 and bool(resumed.initialized.numpy())
    resumed.train(1)
    assert int(resumed.env_steps.numpy()) == int(straight.env_steps.numpy()) == 120 + 2 * 80
    for a, b in zip(straight.actor + straight.encoder + straight.target_q1
                    + list(straight.rl_buffer.variables) + list(straight.enc_buffer.variables),
                    resumed.actor + resumed.encoder + resumed.target_q1
                    + list(resumed.rl_buffer.variables) + list(resumed.enc_buffer.variables)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_posterior_after_context_beats_the_prior_on_pointnav():
    """PointNav (dense reward -||s - g||), 20-step episodes, 8 training goals: the prior mean
    policy cannot know which goal; after exploration episodes (the first with z from the prior,
    the second by posterior sampling) the posterior mean's episode must be clearly better."""
    cfg = PEARLConfig(latent_dim=2, encoder_hidden=(32, 32), num_train_tasks=8,
                      meta_batch_size=8, num_initial_steps=40, num_tasks_sample=4,
                      num_steps_prior=40, num_extra_rl_steps_posterior=40,
                      num_train_steps_per_itr=200, batch_size=64, embedding_batch_size=32,
                      replay_capacity=2000, reward_scale=10.0, discount=0.9, policy_lr=1e-3,
                      qf_lr=1e-3, context_lr=1e-3, train_steps_per_call=100)
    learner = make_learner(cfg, PointNavTasks(horizon=20), hidden=(64, 64))
    learner.train(40)
    # each goal three times (the exploration draws of z differ), 24 trials
    curve = learner.evaluate(num_steps=2, seed=5, tasks=list(learner.train_tasks) * 3)
    prior, after = curve["returns"][0], curve["returns"][-1]
    # seed 0: prior -10.8 +- 1.4, after two exploration episodes -5.6 +- 1.8 (ci95)
    assert after > prior + 2.0, curve["returns"]


def test_presets_carry_oysters_settings():
    from training.config import load_config

    cheetah = load_config("pearl-halfcheetah-vel").algorithm_config
    # OY:configs/cheetah-vel.json (ee4fe88): 100 train tasks, 2000/400/600 steps, context 100
    assert (cheetah.num_train_tasks, cheetah.num_initial_steps, cheetah.num_steps_prior,
            cheetah.num_extra_rl_steps_posterior, cheetah.embedding_batch_size) == (
        100, 2000, 400, 600, 100)
    # OY:configs/default.py: latent 5, meta-batch 16, kl 0.1, reward scale 5, 2000 steps / iter
    assert (cheetah.latent_dim, cheetah.meta_batch_size, cheetah.kl_lambda, cheetah.reward_scale,
            cheetah.num_train_steps_per_itr, cheetah.encoder_hidden) == (
        5, 16, 0.1, 5.0, 2000, (200, 200, 200))
    assert load_config("pearl-halfcheetah-vel").network.hidden == (300, 300, 300)
    ant = load_config("pearl-ant-dir").algorithm_config   # OY:configs/ant-dir.json
    assert (ant.meta_batch_size, ant.num_train_steps_per_itr, ant.embedding_batch_size) == (
        4, 4000, 256)
    point = load_config("pearl-pointnav").algorithm_config  # OY:configs/point-robot.json
    assert (point.horizon, point.reward_scale, point.num_train_steps_per_itr) == (20, 100.0, 1000)
    assert load_config("pearl-ml1-reach").task == "ml1"


def test_nonfinite_guard_rolls_back_a_bad_iteration():
    from training.nonfinite import NonFiniteError, NonFiniteGuard

    learner = make_learner(tiny())
    learner.train(1)
    before = [v.numpy().copy() for v in learner.actor + learner.q1]
    # a corrupted reward in every task's buffer makes the critic loss NaN on the next update
    learner.rl_buffer.reward.assign(tf.fill(tf.shape(learner.rl_buffer.reward), np.nan))
    guard = NonFiniteGuard(learner, None)
    with pytest.raises(NonFiniteError, match="qf_loss is nan at meta-step 1; the update was not "
                                             "applied"):
        guard.train(1)
    assert learner.step == 1
    for a, b in zip(before, learner.actor + learner.q1):
        np.testing.assert_array_equal(a, b.numpy())
