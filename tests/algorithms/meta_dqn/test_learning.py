"""MetaDQNLearner: what one meta-update changes, by value (Adam's first step, z_0 frozen, the target
copy); adaptation that reaches held-out goals after a short meta-training; the fine-tuning
baseline; bad input refused by name; a checkpoint round trip."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.algorithms.dqn import collect_support, fold_seed
from metarl_tf.algorithms.meta_dqn import (FineTuneDQNLearner, MetaDQNConfig, MetaDQNLearner,
                                           config as C)
from metarl_tf.algorithms.meta_dqn.losses import reward_logits
from metarl_tf.networks.q_network import TaskConditionedQNetwork
from metarl_tf.rollouts.replay import Transitions
from metarl_tf.tasks import CartPoleDirTasks, GridWorldTasks

TINY = dict(z_dim=2, inner_steps=1, num_train_tasks=2, meta_batch_size=2, support_size=16,
            random_buffer_size=32, replay_capacity=64, steps_per_execution=4, discount=0.9)


def grid_learner(**config):
    cfg = MetaDQNConfig(**{**TINY, **config})
    return MetaDQNLearner(TaskConditionedQNetwork(2, 4, cfg.z_dim, (8,), seed=0), GridWorldTasks(),
                          cfg)


@pytest.fixture(scope="module")
def tiny_learner():
    """The TD inner loss, Polyak target updates, z_0 meta-learned."""
    return grid_learner(target_update="polyak", learning_rate=1e-2)


def test_adapt_refuses_bad_transitions_by_name(tiny_learner):
    obs = np.zeros((5, 2), np.float32)
    good = dict(observations=obs, actions=np.zeros(5, np.int64), rewards=np.zeros(5),
                next_observations=obs, dones=np.zeros(5))
    assert tiny_learner.adapt(**good, num_steps=0).tolist() == [0.0, 0.0]  # z_0 starts at 0
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
    with pytest.raises(ValueError, match="`num_steps` must be an integer >= 0"):
        tiny_learner.adapt(**good, num_steps=-1)
    with pytest.raises(TypeError, match="`config` must be a MetaDQNConfig"):
        MetaDQNLearner(TaskConditionedQNetwork(2, 4, 2, (8,)), GridWorldTasks(), dict(TINY))
    with pytest.raises(ValueError, match=r"`network.z_dim` \(3\) must equal `z_dim` \(2\)"):
        MetaDQNLearner(TaskConditionedQNetwork(2, 4, 3, (8,)), GridWorldTasks(),
                       MetaDQNConfig(**TINY))


HEAD = dict(inner_loss="reward", task_loss_weight=1.0, per_step_inner_lr=True,
            learn_z_init=False, target_update_period=1, learning_rate=1e-3)


def test_one_meta_update_by_value_and_a_checkpoint_round_trip(tmp_path):
    """Adam's first step moves every element with a nonzero meta-gradient g by
    lr * g / (|g| + 1e-7), i.e. by lr up to the epsilon: no element moves more than lr, each
    meta-parameter (network, per-step rates, reward head, task decoder) has elements that moved
    by lr, and with learn_z_init False z_0 stays exactly 0. With target_update_period 1 the
    target network is the updated network. A checkpoint restores every meta-variable."""
    learner = grid_learner(**HEAD)
    groups = {"network": learner.meta.network, "inner_rates": [learner.meta.inner_rates],
              "head": learner.meta.head, "task_decoder": learner.meta.task_decoder}
    assert learner.meta.inner_rates.shape == (1, 2)  # [inner_steps, z_dim]
    assert [v.shape for v in learner.meta.head] == [(3, 2), (1,)]  # P [obs_dim + 1, z_dim], c
    assert learner.meta.task_decoder[0].shape == (3, 2)  # [z_dim + 1, task_dim]
    before = {k: [v.numpy().copy() for v in vs] for k, vs in groups.items()}
    env_steps = int(learner.env_steps.numpy())
    metrics = learner.train(1)
    for name, variables in groups.items():
        if not variables:
            continue
        moved = np.concatenate([np.abs(v.numpy() - b).ravel()
                                for v, b in zip(variables, before[name])])
        assert moved.max() <= 1e-3 * (1 + 1e-5), name
        assert np.isclose(moved.max(), 1e-3, rtol=1e-2), name
    assert learner.meta.z_init.numpy().tolist() == [0.0, 0.0]
    for target, online in zip(learner.target, learner.meta.network):
        np.testing.assert_array_equal(target.numpy(), online.numpy())
    # one environment step per pool task per meta-iteration
    assert int(learner.env_steps.numpy()) - env_steps == 2 == metrics["env_steps"] - env_steps
    assert {"reward_loss", "task_loss"} <= set(metrics) and np.isfinite(metrics["task_loss"])
    assert metrics["epsilon"] == pytest.approx(C.EPSILON_START)  # at iteration 0
    path = tf.train.Checkpoint(**learner.checkpoint_items()).save(str(tmp_path / "ckpt"))
    fresh = grid_learner(**HEAD)
    tf.train.Checkpoint(**fresh.checkpoint_items()).restore(path).assert_consumed()
    for a, b in zip(fresh.meta_variables, learner.meta_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert fresh.step == 1


def test_polyak_target_and_learned_z0(tiny_learner):
    """Polyak: target <- (1 - 0.005) target + 0.005 online after the update; with learn_z_init
    z_0 is meta-learned too (Adam's first step: each element moves by at most lr)."""
    learner = tiny_learner
    target = [v.numpy().copy() for v in learner.target]
    z0 = learner.meta.z_init.numpy().copy()
    learner.train(1)
    for t, new, online in zip(target, learner.target, learner.meta.network):
        np.testing.assert_allclose(new.numpy(), (1 - C.POLYAK_TAU) * t
                                   + C.POLYAK_TAU * online.numpy(), rtol=1e-6, atol=1e-7)
    if learner.step == 1:  # Adam's first step (else a later one: moved, by less than 10 lr)
        moved = np.abs(learner.meta.z_init.numpy() - z0)
        assert moved.max() <= 1e-2 * (1 + 1e-5) and np.isclose(moved.max(), 1e-2, rtol=1e-2)
    assert not np.array_equal(learner.meta.z_init.numpy(), z0)


def test_meta_training_adapts_z_to_held_out_goals():
    """A 4x4 grid-world (12 train goals, 4 held-out goals), z (4 dims) adapted by 5 normalised
    steps with per-step rates on the logistic reward head's cross-entropy, the outer loss on the
    last 2 steps' z, support windows (the meta-dqn-gridworld preset's settings, scaled down):
    after 500 meta-iterations the adapted z reaches the goal far more often than z_0, on the
    train goals and on the held-out ones, and the head with the adapted z ranks the goal cell
    first (this test, seed 0: held-out success 0.33 unadapted -> 1.00 after the 5 steps, train
    0.42 -> 1.00; the head ranked each of the 4 held-out goals first)."""
    tasks = GridWorldTasks(size=4, horizon=12)
    cfg = MetaDQNConfig(z_dim=4, inner_steps=5, inner_lr=1.0, per_step_inner_lr=True,
                        inner_lr_decay=0.7, outer_loss_steps=2, inner_loss="reward",
                        normalize_inner_grad=True, learn_z_init=False, task_loss_weight=1.0,
                        num_train_tasks=12, meta_batch_size=12, support_size=100,
                        random_buffer_size=300, support_sampling="window", replay_capacity=2000,
                        discount=0.9, epsilon_decay_steps=300, target_update_period=50,
                        steps_per_execution=250)
    learner = MetaDQNLearner(TaskConditionedQNetwork(2, 4, 4, (64, 64), seed=0), tasks, cfg)
    learner.train(500)
    # success (reward 1 at the goal) after 0 .. 5 steps, 3 support sets per held-out goal
    held_out = learner.evaluate(tasks=np.repeat(tasks.goals("test"), 3, 0), episodes=10,
                                seed=1)["success"]
    train = learner.evaluate(tasks=tasks.goals("train"), episodes=10, seed=1)["success"]
    assert held_out[-1] >= max(0.8, held_out[0] + 0.4), held_out
    assert train[-1] >= max(0.8, train[0] + 0.3), train
    # the reward head: P(r = 1 | s' = cell, z) with each held-out goal's adapted z is highest at
    # that goal's cell for most goals (a support with the goal in it)
    goals = tasks.goals("test")
    support = collect_support(tasks.tf_env(), tf.constant(goals), 200, tasks.horizon, 4,
                              tf.constant([5, 6], tf.int64))
    z = learner.adapt_batch(support).params[0]
    cells = np.array([(x, y) for y in range(4) for x in range(4)], np.float32)
    obs = tf.constant(np.tile((2 * cells / 3 - 1)[None], [len(goals), 1, 1]))
    probe = Transitions(obs, tf.zeros(obs.shape[:2], tf.int32), tf.zeros(obs.shape[:2]), obs,
                        tf.zeros(obs.shape[:2]), tf.zeros(obs.shape[:2]))
    logits = reward_logits([tf.convert_to_tensor(v) for v in learner.meta.head], z, probe)
    best = cells[np.argmax(logits.numpy(), axis=1)]
    seen = support.reward.numpy().sum(1) > 0
    hits = np.all(best == goals, axis=1)[seen]
    assert seen.sum() >= 3 and hits.mean() >= 0.75, (best, goals, seen)


def test_model_head_adapts_z_on_cartpole_dynamics():
    """inner_loss "model" on CartPoleDir: the head has (r, 4 state deltas) per action and the
    network's widths; a normalised step moves z by exactly the learned rates (|dz / rates| = 1);
    a meta-update lowers the support loss by its inner steps."""
    cfg = MetaDQNConfig(**{**TINY, "inner_loss": "model", "normalize_inner_grad": True,
                           "inner_lr": 0.5, "learn_z_init": False})
    learner = MetaDQNLearner(TaskConditionedQNetwork(4, 2, 2, (8,), seed=0), CartPoleDirTasks(),
                             cfg)
    assert learner.head_network.num_actions == 2 * 5 and learner.head_network.hidden == (8,)
    metrics = learner.train(4)
    assert metrics["support_loss_after"] < metrics["support_loss_before"]
    task = CartPoleDirTasks().sample(1, 3, "test")
    sup = collect_support(CartPoleDirTasks().tf_env(), tf.constant(task), 16, 200, 2,
                          tf.constant([1, 2], tf.int64))
    z = learner.adapt(sup.observation[0].numpy(), sup.action[0].numpy(), sup.reward[0].numpy(),
                      sup.next_observation[0].numpy(), sup.terminated[0].numpy())
    np.testing.assert_allclose(np.linalg.norm(z / learner.meta.inner_rates.numpy()), 1.0,
                               rtol=1e-4)
    assert "reward_network" in learner.checkpoint_items()  # the name earlier checkpoints use


def test_evaluate_counts_the_support_it_adapts_on_and_the_finetune_baseline(tiny_learner):
    curve = tiny_learner.evaluate(num_tasks=2, num_steps=1, episodes=1, support_size=40)
    assert len(curve["returns"]) == 2 and len(curve["ci95"]) == 2 and curve["adaptation"] == "z"
    # each task's count of rewarded support transitions: the support evaluate draws
    goals = tf.constant(tiny_learner.tasks.sample(2, tiny_learner.seed, "test"))
    support = collect_support(tiny_learner.env, goals, 40, tiny_learner.horizon,
                              tiny_learner.num_actions,
                              fold_seed(tf.constant([tiny_learner.seed, 11], tf.int64), 0))
    assert curve["support_rewarded"] == np.sum(support.reward.numpy() != 0, 1).tolist()
    # the fine-tuning baseline evaluates by whole-network SGD; with no step it is the same policy
    cfg = MetaDQNConfig(**{**TINY, "inner_steps": 0})
    net = lambda: TaskConditionedQNetwork(2, 4, 2, (8,), seed=0)  # noqa: E731
    base = FineTuneDQNLearner(net(), GridWorldTasks(), cfg)
    plain = MetaDQNLearner(net(), GridWorldTasks(), cfg)
    fine = base.evaluate(num_tasks=3, num_steps=2, episodes=2)
    z = plain.evaluate(num_tasks=3, num_steps=0, episodes=2)
    assert fine["adaptation"] == "finetune" and len(fine["returns"]) == 3
    assert fine["per_task"][0] == z["per_task"][0]
    with pytest.raises(ValueError, match="`adaptation_mode` must be one of"):
        base.evaluate(num_tasks=1, adaptation_mode="maml")


def test_no_other_module_reaches_into_the_learners_private_members(repo_root):
    """Private members of the Meta-DQN learners (``_name`` methods and attributes) are used only
    through ``self`` inside ``metarl_tf/algorithms/meta_dqn/``: everything else (training, export,
    benchmarks, tests) uses the public surface (``adapt``, ``adapt_batch``, ``q_values``,
    ``update_rule``, ``meta``, ``checkpoint_items``, ``evaluate``)."""
    import ast
    import glob
    import os

    package = os.path.join(repo_root, "metarl_tf", "algorithms", "meta_dqn")
    private = set()
    for path in glob.glob(os.path.join(package, "*.py")):
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ClassDef):
                for item in ast.walk(node):
                    name = (item.name if isinstance(item, ast.FunctionDef) else
                            item.attr if isinstance(item, ast.Attribute)
                            and isinstance(item.value, ast.Name) and item.value.id == "self"
                            else "")
                    if name.startswith("_") and not name.startswith("__"):
                        private.add(name)
    assert {"_iteration", "_train_fn", "_support_sample"} <= private  # the scan finds them
    offenders = []
    for folder in ("metarl_tf", "training", "export", "benchmarks", "tests"):
        for path in glob.glob(os.path.join(repo_root, folder, "**", "*.py"), recursive=True):
            if os.path.commonpath([path, package]) == package:
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                if (isinstance(node, ast.Attribute) and node.attr in private
                        and not (isinstance(node.value, ast.Name)
                                 and node.value.id in ("self", "cls"))):
                    offenders.append(f"{os.path.relpath(path, repo_root)}:{node.lineno} "
                                     f".{node.attr}")
    assert not offenders, offenders
