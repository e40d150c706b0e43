"""RL²: recurrent policy state, GAE over trials, the PPO loss, learning, task families, bad input."""
import dataclasses
from typing import NamedTuple

import gymnasium
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms.rl2 import (RL2Config, RL2Learner, ppo_loss, rl2_policy_for,
                                      trial_advantages, trial_summary)
from metarl_tf.networks.recurrent import RecurrentApply, recurrent_policy, rl2_input
from metarl_tf.tasks.bandits import BernoulliBanditTasks, bandit_baselines
from metarl_tf.tasks.tabular_mdp import (MDPTask, TabularMDPTasks, optimal_return,
                                         uniform_random_return)


# -- a memory toy: only the hidden state can solve it -------------------------------------------
class CueState(NamedTuple):
    cue: tf.Tensor  # [B] int32, the task
    t: tf.Tensor  # [B] int32, the step of the trial


@dataclasses.dataclass(frozen=True)
class CueTF:
    """Episode 1 shows the cue (observation ``[1, cue]``) and pays nothing; episode 2 shows
    ``[0, 0]`` and pays 1 for the action equal to the cue. Both episodes last one step, so the
    only way to score in episode 2 is to remember episode 1's observation across the boundary."""

    supports_trials = True
    obs_dim = 2
    num_actions = 2
    horizon = 1

    def reset(self, cue):
        cue = tf.convert_to_tensor(cue, tf.int32)
        return CueState(cue, tf.zeros_like(cue))

    def observe(self, s):
        first = tf.cast(s.t == 0, tf.float32)
        return tf.stack([first, first * tf.cast(s.cue, tf.float32)], axis=1)

    def step(self, s, action, seed):
        reward = tf.where(s.t == 1, tf.cast(tf.cast(action, tf.int32) == s.cue, tf.float32), 0.0)
        return CueState(s.cue, s.t + 1), reward, tf.ones_like(reward, tf.bool)


@dataclasses.dataclass(frozen=True)
class CueTasks:
    obs_dim = 2
    num_actions = 2
    horizon = 1

    def sample_tf(self, seed, num_tasks, split="train"):
        return tf.random.stateless_uniform([num_tasks], seed, 0, 2, dtype=tf.int32)

    def sample(self, num_tasks, seed, split="train"):
        return list(np.random.default_rng(seed).integers(0, 2, num_tasks))

    def stack(self, tasks):
        return tf.constant(np.asarray(tasks, np.int32))

    def tf_env(self):
        return CueTF()


def test_state_carries_across_episodes_and_resets_across_trials():
    policy = recurrent_policy(6, num_actions=2, units=8, seed=3)
    apply = RecurrentApply(policy)
    params = [tf.convert_to_tensor(v) for v in policy.trainable_variables]
    # Two trials of two one-step episodes, cues 0 and 1: x = (obs, onehot(prev a), prev r, done).
    ep1 = [rl2_input(tf.constant([[1.0, c]]), tf.constant([-1]), tf.constant([0.0]),
                     tf.constant([0.0]), 2) for c in (0.0, 1.0)]
    ep2 = rl2_input(tf.constant([[0.0, 0.0]]), tf.constant([0]), tf.constant([0.0]),
                    tf.constant([1.0]), 2)
    xs = tf.stack([tf.concat([ep1[c], ep2], 0) for c in (0, 1)], 0)  # [2 trials, 2 steps, 6]
    heads, _, states, _ = apply.unroll(params, xs, apply.initial_state(2))
    # Episode 2 sees the same input in both trials, so any difference comes from the carried state.
    assert not np.allclose(heads[0, 1].numpy(), heads[1, 1].numpy(), atol=1e-6)
    assert np.all(states[:, 0].numpy() == 0.0)  # every trial starts from the zero state
    # One sequence holding both trials back to back, with a reset before the second trial, gives
    # the second trial exactly the outputs it has alone.
    joined = tf.concat([xs[0], xs[1]], 0)[None]
    reset = tf.constant([[False, False, True, False]])
    joined_heads, _, _, _ = apply.unroll(params, joined, apply.initial_state(1), reset=reset)
    np.testing.assert_allclose(joined_heads[0, 2:].numpy(), heads[1].numpy(), atol=1e-6)
    no_reset, _, _, _ = apply.unroll(params, joined, apply.initial_state(1))
    assert not np.allclose(no_reset[0, 2:].numpy(), heads[1].numpy(), atol=1e-6)


def test_rl2_learns_the_memory_toy():
    """Without memory episode 2 pays 0.5 on average; RL² must remember the cue (about 20 s)."""
    tasks = CueTasks()
    cfg = RL2Config(episodes_per_trial=2, meta_batch_size=256, num_epochs=4, num_minibatches=2,
                    learning_rate=0.01, entropy_coef=0.0)
    learner = RL2Learner(rl2_policy_for(tasks, units=8, seed=0), tasks, cfg, seed=0)
    before = learner.evaluate(tasks=list(range(2)) * 100, greedy=True)["trial_return"]
    learner.train(40)
    after = learner.evaluate(tasks=[0, 1] * 100, greedy=True)
    assert after["trial_return"] >= 0.95, (before, after)  # 1 = always the cue's action
    assert after["returns"][0] == 0.0  # episode 1 pays nothing by construction


# -- the math -------------------------------------------------------------------------------------
def test_gae_runs_across_episode_boundaries_by_hand():
    # Three one-step episodes of one trial; gamma 0.9, lambda 0.5; only the trial end is terminal.
    rewards = tf.constant([[1.0, 0.0, 2.0]])
    values = tf.constant([[0.5, 1.0, 0.0]])
    adv, ret = trial_advantages(rewards, values, 0.9, 0.5)
    # delta_2 = 2 - 0 = 2                       A_2 = 2
    # delta_1 = 0 + 0.9 * 0.0 - 1.0 = -1        A_1 = -1 + 0.45 * 2 = -0.1
    # delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4       A_0 = 1.4 + 0.45 * (-0.1) = 1.355
    np.testing.assert_allclose(adv.numpy(), [[1.355, -0.1, 2.0]], atol=1e-6)
    np.testing.assert_allclose(ret.numpy(), [[1.855, 0.9, 2.0]], atol=1e-6)
    # Had the episode ends been terminal, A_0 would have been r_0 - v_0 = 0.5: they are not.


@pytest.mark.parametrize("compiled", [False, True])
def test_ppo_loss_on_a_hand_made_batch(compiled):
    fn = tf.function(ppo_loss, jit_compile=False) if compiled else ppo_loss
    out = fn(tf.math.log([0.5, 0.2]), tf.math.log([0.25, 0.4]), tf.constant([1.0, -1.0]),
             tf.constant([1.0, 0.0]), tf.constant([2.0, 1.0]), tf.constant([0.6, 0.4]),
             clip=0.2, value_coef=0.5, entropy_coef=0.01)
    # rho = [2.0, 0.5]; step 0: min(2.0 * 1, 1.2 * 1) = 1.2; step 1: min(0.5 * -1, 0.8 * -1) = -0.8
    # policy_loss = -(1.2 - 0.8) / 2 = -0.2
    # value_loss = ((1 - 2)^2 + (0 - 1)^2) / 2 / 2 = 0.5;  entropy = 0.5
    # loss = -0.2 + 0.5 * 0.5 - 0.01 * 0.5 = 0.045
    np.testing.assert_allclose(out["policy_loss"].numpy(), -0.2, atol=1e-6)
    np.testing.assert_allclose(out["value_loss"].numpy(), 0.5, atol=1e-6)
    np.testing.assert_allclose(out["entropy"].numpy(), 0.5, atol=1e-6)
    np.testing.assert_allclose(out["loss"].numpy(), 0.045, atol=1e-6)
    np.testing.assert_allclose(out["clip_fraction"].numpy(), 1.0)  # |2 - 1| and |0.5 - 1| > 0.2
    np.testing.assert_allclose(out["approx_kl"].numpy(), 0.0, atol=1e-6)  # (log 2 - log 2) / 2


def test_trial_summary_splits_episodes_at_done_flags():
    rewards = np.array([[1.0, 2.0, 3.0, 4.0]])
    dones = np.array([[0.0, 1.0, 0.0, 1.0]])  # two episodes of two steps
    out = trial_summary(rewards, dones, 2)
    assert out["returns"] == [3.0, 7.0] and out["trial_return"] == 10.0


# -- learning ---------------------------------------------------------------------------------------
def test_two_armed_bandit_learns_on_a_tiny_budget():
    tasks = BernoulliBanditTasks(num_arms=2, num_pulls=10)
    cfg = RL2Config(episodes_per_trial=10, num_arms=2, meta_batch_size=256, num_epochs=4,
                    num_minibatches=2, learning_rate=0.01, entropy_coef=0.0)
    learner = RL2Learner(rl2_policy_for(tasks, units=16, seed=0), tasks, cfg, seed=0)
    means = tasks.sample(500, seed=5, split="test")
    before = learner.evaluate(tasks=means, seed=1)["trial_return"]
    learner.train(50)
    after = learner.evaluate(tasks=means, seed=1)["trial_return"]
    # Random play earns 10 * 0.5 = 5 on average (CI about +-0.17 on 500 trials); the best arm
    # earns 10 * E[max(p1, p2)] = 6.67.
    assert before < 5.4
    assert after > 5.6, (before, after)  # measured 5.82 after 40 iterations


# -- task families ----------------------------------------------------------------------------------
def test_gymnasium_families_are_registered_and_follow_the_task():
    env = gymnasium.make("metarl_tf/BernoulliBandit-v0", num_arms=3)
    env.unwrapped.set_task([0.0, 1.0, 0.0])
    env.reset(seed=0)
    _, reward, terminated, _, _ = env.step(1)
    assert reward == 1.0 and terminated  # arm 1 always pays; an episode is one pull
    assert env.step(0)[1] == 0.0
    mdp = TabularMDPTasks(num_states=3, num_actions=2, horizon=4)
    task = mdp.sample(1, seed=0)[0]
    env = gymnasium.make("metarl_tf/TabularMDP-v0", num_states=3, num_actions=2,
                         max_episode_steps=4)
    env.unwrapped.set_task(task)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [1.0, 0.0, 0.0]  # every episode starts in state 0
    ends = [env.step(0)[3] for _ in range(4)]
    assert ends == [False, False, False, True]  # TimeLimit(horizon)


def test_tabular_mdp_tf_env_and_value_iteration():
    fam = TabularMDPTasks(num_states=2, num_actions=2, horizon=2)
    # Deterministic toy: action 1 moves to state 1, action 0 stays; state 1 pays 1 for action 0.
    p = np.zeros((2, 2, 2), np.float32)
    p[:, 0, :] = np.eye(2)
    p[:, 1, 1] = 1.0
    mu = np.array([[0.0, 0.0], [1.0, 0.5]], np.float32)
    task = MDPTask(p, mu)
    # V_1 = max_a mu = [0, 1]; Q_0(0) = [0 + V_1(0), 0 + V_1(1)] = [0, 1] -> V_0(0) = 1
    assert optimal_return(task, horizon=2) == pytest.approx(1.0)
    # random: V_1 = [0, 0.75]; Q_0(0, .) = [0, 0.75] -> mean 0.375
    assert uniform_random_return(task, horizon=2) == pytest.approx(0.375)
    env = fam.tf_env()
    state = env.reset(fam.stack([task]))
    dones = []
    for action in (1, 0, 1):
        state, _, done = env.step(state, tf.constant([action]), tf.constant([0, 1], tf.int64))
        dones.append(bool(done[0]))
    assert dones == [False, True, False]  # episodes of horizon 2, then state 0 again
    assert int(state.state[0]) == 1 and int(state.t[0]) == 1
    batch = fam.sample_tf(tf.constant([1, 2], tf.int64), 4)
    np.testing.assert_allclose(tf.reduce_sum(batch.transitions, -1).numpy(), 1.0, atol=1e-5)


def test_bandit_baselines_rank_as_expected():
    means = BernoulliBanditTasks(5, 100).sample(300, seed=0, split="test")
    out = {k: v.mean() for k, v in bandit_baselines(means, 100, seed=0).items()}
    assert abs(out["random"] - 50.0) < 2.0  # E = 100 * 0.5
    assert out["thompson"] > out["ucb1"] > out["random"] + 15


def test_gymnasium_path_trains_a_gaussian_policy_on_pointnav():
    from metarl_tf.tasks import PointNavTasks

    tasks = PointNavTasks()
    cfg = RL2Config(episodes_per_trial=2, horizon=5, meta_batch_size=4, num_epochs=1,
                    num_minibatches=2, bptt_chunk=5)
    learner = RL2Learner(rl2_policy_for(tasks, units=8), tasks, cfg)
    metrics = learner.train(1)
    assert learner.step == 1 and np.isfinite(metrics["loss"])
    ev = learner.evaluate(num_tasks=3)
    assert len(ev["returns"]) == 2 and ev["trial_return"] < 0  # rewards are -distance


def test_gymnasium_and_in_graph_bandit_paths_agree_in_distribution():
    tasks = BernoulliBanditTasks(num_arms=2, num_pulls=4)
    means = np.array([[1.0, 0.0]] * 200, np.float32)  # arm 0 always pays, arm 1 never
    results = []
    for in_graph in (True, False):
        cfg = RL2Config(episodes_per_trial=4, num_arms=2, meta_batch_size=8, in_graph=in_graph)
        learner = RL2Learner(rl2_policy_for(tasks, units=4, seed=1), tasks, cfg)
        assert learner.in_graph is in_graph
        results.append(learner.evaluate(tasks=means, greedy=True)["trial_return"])
    # The same greedy policy on deterministic bandits: the same total on both paths.
    assert results[0] == results[1]


# -- bad input --------------------------------------------------------------------------------------
def test_bad_configs_are_refused_by_name():
    with pytest.raises(ValueError, match="`episodes_per_trial` must be an integer >= 1, got 0"):
        RL2Config(episodes_per_trial=0)
    with pytest.raises(ValueError, match="`num_arms` must be an integer >= 2, got 1"):
        RL2Config(num_arms=1)
    with pytest.raises(ValueError, match="`num_arms` must be an integer >= 2, got 1"):
        BernoulliBanditTasks(num_arms=1)
    with pytest.raises(ValueError, match="`num_pulls` must be an integer >= 1, got 0"):
        BernoulliBanditTasks(num_pulls=0)
    with pytest.raises(ValueError, match="`cell` must be one of"):
        RL2Config(cell="rnn")
    tasks = BernoulliBanditTasks(3, 4)
    with pytest.raises(ValueError, match="`horizon` must be 0 or the task family's"):
        RL2Learner(rl2_policy_for(tasks, units=4), tasks, RL2Config(horizon=5))
    with pytest.raises(ValueError, match="`bptt_chunk` \\(3\\) must divide"):
        RL2Learner(rl2_policy_for(tasks, units=4), tasks,
                   RL2Config(episodes_per_trial=4, bptt_chunk=3))


# -- what the policy sees, and the replay in the PPO loss (issue #4 bug hunt) ---------------------
def _mdp_learner(bptt_chunk=0, seed=0):
    tasks = TabularMDPTasks(num_states=4, num_actions=3, horizon=3, num_episodes=4)
    cfg = RL2Config(episodes_per_trial=4, meta_batch_size=64, num_epochs=1, num_minibatches=2,
                    bptt_chunk=bptt_chunk)
    return RL2Learner(rl2_policy_for(tasks, units=8, seed=seed), tasks, cfg, seed=seed)


@pytest.mark.parametrize("in_graph", [True, False])
def test_input_at_step_t_carries_the_previous_action_reward_and_done(in_graph):
    learner = _mdp_learner()
    if in_graph:
        task = learner.tasks.sample_tf(tf.constant([4, 5], tf.int64), 64)
        b = learner._rollout_tf(learner._params(), task, tf.constant([6, 7], tf.int64), 64)
    else:
        b = learner.collect_trials_gym(learner.tasks.sample(64, seed=3), seed=3)
    x, a, r, d = (np.asarray(v) for v in (b.inputs, b.actions, b.rewards, b.dones))
    s_dim, n_act = 4, 3
    obs, prev_a, prev_r, prev_d = (x[..., :s_dim], x[..., s_dim:s_dim + n_act],
                                   x[..., s_dim + n_act], x[..., s_dim + n_act + 1])
    # x_t = (o_t, onehot(a_t-1), r_t-1, d_t-1); nothing before the first step of a trial.
    np.testing.assert_array_equal(prev_a[:, 1:], np.eye(n_act)[a[:, :-1]])
    np.testing.assert_array_equal(prev_r[:, 1:], r[:, :-1])
    np.testing.assert_array_equal(prev_d[:, 1:], d[:, :-1])
    assert not x[:, 0, s_dim:].any()
    # Episodes of 3 steps inside the 12-step trial; each one (the first too) starts in state 0.
    np.testing.assert_array_equal(d, np.tile([0.0, 0.0, 1.0], 4)[None].repeat(64, 0))
    starts = np.concatenate([[True], d[0, :-1] == 1.0])
    np.testing.assert_array_equal(obs[:, starts], np.eye(s_dim)[np.zeros(4, int)][None].repeat(64, 0))
    assert np.all(obs.sum(-1) == 1.0)


def test_reward_of_step_t_belongs_to_the_state_shown_at_step_t():
    # r_t ~ N(mu(s_t, a_t), 1) with s_t the observation of the same step: the residuals
    # r_t - mu(o_t, a_t) are standard normal. Misaligned by one step they would have std ~1.4.
    learner = _mdp_learner()
    tasks = learner.tasks.sample(64, seed=11)
    mu = np.stack([t.reward_means for t in tasks])
    b = learner._rollout_tf(learner._params(), learner.tasks.stack(tasks),
                            tf.constant([1, 2], tf.int64), 64)
    s = np.asarray(b.inputs)[..., :4].argmax(-1)
    a = np.asarray(b.actions)
    resid = np.asarray(b.rewards) - mu[np.arange(64)[:, None], s, a]
    assert abs(resid.mean()) < 0.15 and 0.9 < resid.std() < 1.1, (resid.mean(), resid.std())


@pytest.mark.parametrize("bptt_chunk", [0, 3])
def test_ppo_replay_reproduces_the_sampling_log_probs_and_values(bptt_chunk):
    # The update re-runs each trial (or chunk) from the state the rollout had at its start with
    # the same inputs: before any gradient step the recomputed log-probs and values are exactly
    # those of sampling, so the first PPO ratio is 1.
    learner = _mdp_learner(bptt_chunk=bptt_chunk)
    learner.train(1)  # trained weights, not the initialisation
    task = learner.tasks.sample_tf(tf.constant([8, 9], tf.int64), 64)
    b = learner._rollout_tf(learner._params(), task, tf.constant([2, 3], tf.int64), 64)
    adv, ret = trial_advantages(b.rewards, b.values, 0.99, 0.3)
    inputs, actions, old_lp, _, _, starts = learner._chunks(b, adv, ret)
    assert inputs.shape[0] == 64 * (12 // (bptt_chunk or 12))
    heads, values, _, _ = learner.apply.unroll(learner._params(), inputs, starts)
    log_probs, _ = learner._log_prob_entropy(heads, actions)
    np.testing.assert_allclose(log_probs.numpy(), old_lp.numpy(), atol=1e-5)
    np.testing.assert_allclose(values.numpy().reshape(64, 12), b.values.numpy(), atol=1e-5)
    out = learner._loss(learner._params(), *learner._chunks(b, adv, ret))
    assert abs(float(out["approx_kl"])) < 1e-6 and float(out["clip_fraction"]) == 0.0


def test_tabular_mdp_distribution_and_random_baseline_agree_with_the_env():
    fam = TabularMDPTasks()  # the RL² paper's sizes: 10 states, 5 actions, horizon 10
    tf_tasks = fam.sample_tf(tf.constant([3, 1], tf.int64), 400)
    np_tasks = fam.sample(400, seed=3)
    for p, mu in ((tf_tasks.transitions.numpy(), tf_tasks.reward_means.numpy()),
                  (np.stack([t.transitions for t in np_tasks]),
                   np.stack([t.reward_means for t in np_tasks]))):
        # Dirichlet(1) over 10 states: mean 0.1, variance 9 / (100 * 11); mu(s, a) ~ N(1, 1).
        assert abs(p.mean() - 0.1) < 1e-3 and abs(p.var() - 9 / 1100) < 6e-4
        assert abs(mu.mean() - 1.0) < 0.03 and abs(mu.std() - 1.0) < 0.03
    # The exact random-policy expectation is what uniformly random play earns in TabularMDPTF.
    tasks = np_tasks[:100]
    env = fam.tf_env()
    batched = fam.stack(tasks * 20)
    state, total = env.reset(batched), np.zeros(2000)
    for t in range(10):
        seed = tf.constant([t, 5], tf.int64)
        action = tf.random.stateless_uniform([2000], seed, 0, 5, dtype=tf.int32)
        state, reward, _ = env.step(state, action, tf.constant([t, 6], tf.int64))
        total += reward.numpy()
    exact = np.mean([uniform_random_return(t) for t in tasks])
    assert abs(total.mean() - exact) < 0.25, (total.mean(), exact)  # CI ~ +-0.15
    assert np.mean([optimal_return(t) for t in tasks]) > exact + 5


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_separate_value_cell_has_its_own_state_and_weights(cell):
    shared = recurrent_policy(6, num_actions=2, units=4, cell=cell, seed=1)
    policy = recurrent_policy(6, num_actions=2, units=4, cell=cell, seed=1, separate_value=True)
    assert policy.state_size == 2 * shared.state_size and policy.separate_value
    apply = RecurrentApply(policy)
    xs = tf.random.stateless_normal([3, 5, 6], [1, 2])
    variables = policy.trainable_variables
    params = [tf.convert_to_tensor(v) for v in variables]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(params)
        heads, values, _, _ = apply.unroll(params, xs, apply.initial_state(3))
        logit_sum, value_sum = tf.reduce_sum(heads), tf.reduce_sum(values)
    zero = tf.UnconnectedGradients.ZERO
    g_pi = tape.gradient(logit_sum, params, unconnected_gradients=zero)
    g_v = tape.gradient(value_sum, params, unconnected_gradients=zero)
    for v, a, b in zip(variables, g_pi, g_v):
        # every weight serves exactly one of the two heads
        assert (float(tf.norm(a)) > 0) != (float(tf.norm(b)) > 0), v.path
        assert (float(tf.norm(b)) > 0) == v.path.startswith("value"), v.path
    # The policy half of the state evolves exactly as a shared-cell policy with the same weights.
    half = shared.state_size
    for v_shared in shared.trainable_variables:
        [match] = [v for v in variables if v.path == v_shared.path]  # gru/..., logits/..., value/...
        match.assign(v_shared)
    heads2, _, states2, _ = apply.unroll(policy.trainable_variables, xs, apply.initial_state(3))
    ref = RecurrentApply(shared)
    heads1, _, states1, _ = ref.unroll(shared.trainable_variables, xs, ref.initial_state(3))
    np.testing.assert_allclose(heads2.numpy(), heads1.numpy(), atol=1e-6)
    np.testing.assert_allclose(states2[..., :half].numpy(), states1.numpy(), atol=1e-6)


@pytest.mark.parametrize("family", ["bandit", "mdp"])
def test_xla_minibatch_step_trains_as_the_graph_step(family):
    # jit_minibatch (the PPO minibatch step as an XLA cluster, the fast default) against the
    # plain graph step: same rollouts, same updates up to float rounding, so the same learner.
    if family == "bandit":
        tasks, kw = BernoulliBanditTasks(3, 6), dict(episodes_per_trial=6, num_arms=3)
    else:
        tasks = TabularMDPTasks(num_states=4, num_actions=3, horizon=3, num_episodes=4)
        kw = dict(episodes_per_trial=4, bptt_chunk=3, max_grad_norm=0.5)
    runs = []
    for jit in (False, True):
        cfg = RL2Config(meta_batch_size=32, num_epochs=2, num_minibatches=2, jit_minibatch=jit,
                        **kw)
        learner = RL2Learner(rl2_policy_for(tasks, units=8, seed=1, separate_value=True), tasks,
                             cfg, seed=4)
        assert (learner._minibatch_fn == learner._minibatch_step) != jit
        metrics = learner.train(2)
        runs.append((metrics, [v.numpy() for v in learner.policy.trainable_variables]))
    (m0, p0), (m1, p1) = runs
    assert m0["trial_return"] == m1["trial_return"]  # the second rollout used the updated weights
    for key in ("loss", "policy_loss", "value_loss", "entropy"):
        assert abs(m0[key] - m1[key]) < 1e-5 * max(1.0, abs(m0[key])), key
    start = RL2Learner(rl2_policy_for(tasks, units=8, seed=1, separate_value=True), tasks,
                       RL2Config(meta_batch_size=32, **kw), seed=4).policy.trainable_variables
    assert max(float(np.abs(a - v.numpy()).max()) for a, v in zip(p0, start)) > 1e-3  # it trained
    for a, b in zip(p0, p1):
        np.testing.assert_allclose(a, b, atol=1e-6)
