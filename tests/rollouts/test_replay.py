"""TaskReplayBuffer: the ring buffer wraps, samples only filled slots, n-step samples and windows
are consecutive steps of one task."""
import numpy as np
import pytest
import tensorflow as tf

from metarl_tf.rollouts.replay import TaskReplayBuffer, Transitions

COMPILED = [False, True]


def maybe_compiled(fn, compiled):
    return tf.function(fn) if compiled else fn


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
