"""The Gittins index baseline of the bandit rows: indices worked by hand, published table values,
the index's known properties, the truncation, and the policy against greedy."""
import numpy as np
import pytest

from metarl_tf.tasks.bandits import (BernoulliBanditTasks, bandit_baselines, gittins_discount,
                                     gittins_index_table, run_bandit_strategy)


def test_indices_worked_by_hand_on_a_shallow_truncation():
    # depth 4: Beta states a + b <= 4, those with a + b = 4 valued max(mu, lam) / (1 - gamma).
    # State (s=1, f=0) = Beta(2, 1), mu = 2/3, children Beta(3, 1) (mu 3/4) and Beta(2, 2) (1/2).
    # For lam in [1/2, 3/4], (1 - g) D = (1 - g) 2/3 + g (2/3 * 3/4 + 1/3 * lam) - lam = 0
    # -> lam = ((1 - g) 2/3 + g / 2) / (1 - g / 3) = (0.0667 + 0.45) / 0.7 = 31/42 at g = 0.9.
    # State (0, 1) = Beta(1, 2), mu = 1/3, children Beta(2, 2) (1/2) and Beta(1, 3) (1/4).
    # For lam in [1/4, 1/2]: lam = ((1 - g) / 3 + g / 6) / (1 - 2 g / 3) = 0.18333 / 0.4 = 11/24.
    table = gittins_index_table(1, 0.9, depth=4)
    assert table.index[1, 0] == pytest.approx(31 / 42, abs=1e-9)
    assert table.index[0, 1] == pytest.approx(11 / 24, abs=1e-9)
    assert np.isnan(table.index[1, 1])  # s + f = 2 > num_pulls: not in the table
    # gamma = 0: no future, D = mu - lam, the index is the posterior mean (s + 1) / (s + f + 2)
    myopic = gittins_index_table(4, 0.0)
    s, f = np.meshgrid(np.arange(5), np.arange(5), indexing="ij")
    inside = s + f <= 4
    np.testing.assert_allclose(myopic.index[inside], ((s + 1) / (s + f + 2))[inside], atol=1e-12)


def test_published_table_values():
    # Gittins, Glazebrook and Weber (2011), "Multi-armed Bandit Allocation Indices", 2nd ed.,
    # Bernoulli/Beta(1, 1) tables, as reproduced (4 decimals) in B. Christian and T. Griffiths,
    # "Algorithms to Live By" (2016), ch. 2 (Explore/Exploit): at gamma = 0.9 a 0-0 record has
    # index 0.7029, 1-1 0.6346, 2-2 0.6010, 9 wins 1 loss 0.8695; at gamma = 0.99 0-0 has 0.8699.
    t9 = gittins_index_table(10, 0.9)
    assert t9.error < 1e-5
    for (s, f), value in {(0, 0): 0.7029, (1, 1): 0.6346, (2, 2): 0.6010, (9, 1): 0.8695}.items():
        assert t9.index[s, f] == pytest.approx(value, abs=5e-5 + t9.error), (s, f)
    t99 = gittins_index_table(100, 0.99)
    assert t99.error < 5e-4 and t99.depth == 402  # 102 + ceil(3 / 0.01)
    assert t99.index[0, 0] == pytest.approx(0.8699, abs=5e-5 + t99.error)


def test_index_properties():
    t9, t99 = gittins_index_table(10, 0.9), gittins_index_table(10, 0.99)
    s, f = np.meshgrid(np.arange(11), np.arange(11), indexing="ij")
    inside = s + f <= 10
    mean = (s + 1) / (s + f + 2)
    # the index is at least the posterior mean (retiring at the mean is always available)
    assert np.all(t9.index[inside] >= mean[inside] - t9.error)
    # it falls with each failure and rises with each success (strictly, past the error)
    assert np.all(np.diff(t9.index, axis=1)[(s + f <= 9)[:, :-1]] < -2 * t9.error)
    assert np.all(np.diff(t9.index, axis=0)[(s + f <= 9)[:-1, :]] > 2 * t9.error)
    # and rises with the discount (a longer future makes learning worth more)
    assert np.all(t99.index[inside] > t9.index[inside])


def test_truncation_is_below_the_calibration_error():
    table, deeper = gittins_index_table(10, 0.9), gittins_index_table(10, 0.9, depth=450)
    assert table.depth == 112  # 12 + max(ceil(3 / 0.1), 100)
    assert np.nanmax(np.abs(deeper.index - table.index)) < 1e-6


def test_discount_matches_the_trial_length_and_bad_input_is_named():
    assert gittins_discount(10) == pytest.approx(0.9)  # 1 - 1/n: sum_t gamma^t = n
    assert gittins_discount(100) == pytest.approx(0.99)
    with pytest.raises(ValueError, match="`discount` must be < 1"):
        gittins_index_table(10, 1.0)
    with pytest.raises(ValueError, match=r"`discount` must be a finite number in \[0.0, 1.0\]"):
        gittins_index_table(10, -0.1)
    with pytest.raises(ValueError, match="`depth` must be an integer >= 13"):
        gittins_index_table(10, 0.9, depth=12)
    with pytest.raises(ValueError, match="`num_pulls` must be an integer >= 1"):
        gittins_discount(0)
    with pytest.raises(ValueError, match="`name` must be one of .*'gittins'"):
        run_bandit_strategy("oracle", np.full((2, 3), 0.5), 4)


def test_gittins_beats_greedy_and_thompson_over_100_pulls():
    means = BernoulliBanditTasks(5, 100).sample(500, seed=0, split="validation")
    out = bandit_baselines(means, 100, seed=0)
    for other in ("greedy", "thompson"):
        diff = out["gittins"] - out[other]  # paired: the same bandits
        # a lead of more than 3 standard errors of the paired mean
        assert diff.mean() > 3 * diff.std(ddof=1) / np.sqrt(len(diff)), (other, diff.mean())
    # an arm that always pays and one that never does: Gittins finds the first within a few pulls
    sure = run_bandit_strategy("gittins", np.array([[0.0, 1.0]] * 4), 20, seed=0)
    assert np.all(sure >= 18)
