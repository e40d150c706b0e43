"""Train, validation and test task splits are disjoint for every family (metarl_tf/tasks/splits.py)."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.tasks import splits
from metarl_tf.tasks.bandits import BernoulliBanditTasks
from metarl_tf.tasks.pointnav import PointNavTasks
from metarl_tf.tasks.regression import SinusoidTasks
from metarl_tf.tasks.tabular_mdp import TabularMDPTasks


def _rows(a):
    return {tuple(np.round(np.asarray(r, np.float64).reshape(-1), 6)) for r in a}


@pytest.mark.parametrize("family", [PointNavTasks(), BernoulliBanditTasks(num_arms=5)],
                         ids=["pointnav", "bandits"])
def test_continuous_families_share_no_task_across_splits(family):
    drawn = {s: family.sample(200, seed=3, split=s) for s in splits.SPLITS}
    for a in splits.SPLITS:
        for b in splits.SPLITS:
            if a < b:
                assert not (_rows(drawn[a]) & _rows(drawn[b])), (a, b)
    # the in-graph draws too
    graph = {s: family.sample_tf(tf.constant([3, 0], tf.int64), 200, s).numpy()
             for s in splits.SPLITS}
    assert not (_rows(graph["train"]) & _rows(graph["validation"]))
    assert not (_rows(graph["test"]) & _rows(graph["validation"]))


def test_tabular_mdps_share_no_task_across_splits():
    family = TabularMDPTasks()
    drawn = {s: [t.reward_means for t in family.sample(50, seed=3, split=s)] for s in splits.SPLITS}
    assert not (_rows(drawn["train"]) & _rows(drawn["validation"]))
    assert not (_rows(drawn["test"]) & _rows(drawn["validation"]))
    assert not (_rows(drawn["train"]) & _rows(drawn["test"]))


def test_train_and_test_streams_are_unchanged_by_the_validation_split():
    # train (key 0) and test (key 1) keep the streams they had before validation (key 2) existed
    expect = np.random.default_rng(np.random.SeedSequence(7, spawn_key=(1,))).uniform(
        -0.5, 0.5, size=(3, 2)).astype(np.float32)
    np.testing.assert_array_equal(PointNavTasks().sample(3, seed=7, split="test"), expect)


def test_regression_held_out_seeds():
    tasks = SinusoidTasks()
    test = tasks.sample_task_params(splits.split_seed(0, "test"), 100).numpy()
    val = tasks.sample_task_params(splits.split_seed(0, "validation"), 100).numpy()
    train = np.concatenate([tasks.sample_task_params(tf.constant([0, n], tf.int64), 25).numpy()
                            for n in range(20)])
    assert not (_rows(test) & _rows(val)) and not (_rows(train) & _rows(test))
    assert not (_rows(train) & _rows(val))
    np.testing.assert_array_equal(splits.split_seed(4, "test").numpy(), [4, -1])
    np.testing.assert_array_equal(splits.split_seed(4, "validation").numpy(), [4, -2])
    with pytest.raises(ValueError, match="held-out evaluation must be one of"):
        splits.split_seed(4, "train")


def test_bad_split_is_refused_by_name():
    with pytest.raises(ValueError, match=r"`split` must be one of \('train', 'test', 'validation'\)"):
        PointNavTasks().sample(2, seed=0, split="dev")


def test_gridworld_and_metaworld_splits_are_disjoint():
    from metarl_tf.tasks.gridworld import GridWorldTasks

    grid = GridWorldTasks()
    assert not (_rows(grid.goals("train")) & _rows(grid.goals("test")))
    mw = pytest.importorskip("metaworld")
    del mw
    from metarl_tf.tasks.metaworld import MetaWorldTasks

    ml10 = MetaWorldTasks(benchmark="ML10", env_name=None)
    assert not set(ml10.env_names("train")) & set(ml10.env_names("test"))
    # validation: the train classes, with goals of their own (tests/test_metaworld_protocol.py)
    assert ml10.env_names("validation") == ml10.env_names("train")
