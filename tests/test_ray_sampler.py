"""RaySampler on a local 2-CPU Ray cluster (one per module: Ray takes seconds to start)."""
import importlib
import os
import signal
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ray = pytest.importorskip("ray")
pytest.importorskip("metaworld")

from metarl_tf.networks import gaussian_mlp_policy, policy_apply_fn  # noqa: E402
from metarl_tf.params import FunctionalModel  # noqa: E402
from metarl_tf.rollouts import EnvFaults, LocalSampler, make_vector_env  # noqa: E402
from metarl_tf.rollouts.ray_sampler import RaySampler, chunks  # noqa: E402
from metarl_tf.tasks.metaworld import ML10Tasks  # noqa: E402

FAMILY = ML10Tasks(num_goals=5, horizon=8)   # 5 goals per class: a quick benchmark build
N, H = 2, 8


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup():
    model = gaussian_mlp_policy(39, 4, hidden=(16,), activation="tanh", seed=3)
    fmodel = FunctionalModel(model)
    tasks = FAMILY.sample(3, seed=0)           # 3 ML10 classes
    params = [p + 0.01 * tf.random.stateless_normal(p.shape, [i, 0])   # a different row per task
              for i, p in enumerate(fmodel.tile(fmodel.params(), 3))]
    local = LocalSampler(make_vector_env(FAMILY.make_env, num_envs=3), keyed=True)
    reference = local.collect(policy_apply_fn(model), "gaussian", params, tasks, N, H, seed=11)
    return policy_apply_fn(model), params, tasks, reference


@pytest.fixture(scope="module")
def sampler(cluster):
    """2 workers with one sub-env each, shared by the tests (an actor takes seconds to start)."""
    sampler = RaySampler(FAMILY.make_env, num_workers=2, envs_per_worker=1)
    yield sampler
    sampler.close()


def test_chunks_by_hand():
    assert chunks(3, 2) == [[0, 1], [2]]           # round(1.5) = 2
    assert chunks(20, 3) == [list(range(0, 7)), list(range(7, 13)), list(range(13, 20))]
    assert chunks(2, 5) == [[0], [1]]              # never an empty chunk


def test_ray_sampler_returns_the_local_samplers_episodes(sampler, setup):
    apply_fn, params, tasks, reference = setup
    assert reference.observations.shape == (3, N, H, 39)
    # ML10 training episodes never end early: every step of every episode is real.
    np.testing.assert_array_equal(reference.mask, np.ones((3, N, H)))
    assert np.abs(reference.rewards).sum() > 0
    # 2 workers (chunks [0, 1] and [2]) with one sub-env each: other waves, same episodes.
    episodes = sampler.collect(apply_fn, "gaussian", params, tasks, N, H, seed=11)
    for got, want in zip(episodes, reference):
        np.testing.assert_array_equal(got, want)
    assert not sampler.started_ray                  # it joined the module's cluster
    other = sampler.collect(apply_fn, "gaussian", params, tasks, N, H, seed=12)
    assert not np.array_equal(other.actions, reference.actions)


def test_a_killed_worker_is_replaced_and_its_tasks_collected_again(sampler, setup):
    apply_fn, params, tasks, reference = setup
    faults = EnvFaults()
    pids = sampler.worker_pids()
    os.kill(pids[1], signal.SIGKILL)                # the process of the actor with task 2
    time.sleep(0.5)
    episodes = sampler.collect(apply_fn, "gaussian", params, tasks, N, H, seed=11, faults=faults)
    for got, want in zip(episodes, reference):
        np.testing.assert_array_equal(got, want)
    assert faults.count == 1 and sampler.restarts == 1
    assert "worker 1 died while collecting tasks [2]" in faults.messages[0]
    new_pids = sampler.worker_pids()
    assert new_pids[0] == pids[0] and new_pids[1] != pids[1]


def test_bad_arguments_are_named(cluster, setup):
    apply_fn, params, tasks, _ = setup
    with pytest.raises(ValueError, match="`num_workers` must be an integer >= 1, got 0"):
        RaySampler(FAMILY.make_env, num_workers=0)
    with pytest.raises(ValueError, match="`num_cpus` sizes a local cluster"):
        RaySampler(FAMILY.make_env, address="auto", num_cpus=2)
    sampler = RaySampler(FAMILY.make_env, num_workers=1)   # actors start at the first collect
    with pytest.raises(ValueError, match="task-batched with 2 rows"):
        sampler.collect(apply_fn, "gaussian", params, tasks[:2], N, H, seed=0)
    with pytest.raises(ValueError, match="Gaussian MLP policy with a NumPy forward"):
        sampler.collect(lambda p, o: o, "gaussian", params, tasks, N, H, seed=0)
    assert sampler.workers == []


def test_missing_ray_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # `import ray` now fails
    monkeypatch.delitem(sys.modules, "metarl_tf.rollouts.ray_sampler")
    with pytest.raises(ImportError, match=r"pip install 'metarl-tf\[ray\]'"):
        importlib.import_module("metarl_tf.rollouts.ray_sampler")


def test_worker_deaths_beyond_the_limit_raise(sampler, setup):
    """Last: leaves the shared sampler with a dead worker."""
    apply_fn, params, tasks, _ = setup
    sampler.max_worker_restarts = 0
    os.kill(sampler.worker_pids()[0], signal.SIGKILL)
    time.sleep(0.5)
    with pytest.raises(RuntimeError, match="more than max_worker_restarts=0"):
        sampler.collect(apply_fn, "gaussian", params, tasks, N, H, seed=11)
