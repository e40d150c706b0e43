"""ML10 / ML45 families, the validation split, and Meta-World's evaluator wired on a tiny budget."""
import gymnasium
import numpy as np
import pytest

pytest.importorskip("metaworld")

from metarl_tf.algorithms.maml_rl import MAMLRLConfig, MAMLRLLearner  # noqa: E402
from metarl_tf.integrations.metaworld import (ML_PROTOCOL, ProtocolConfig,  # noqa: E402
                                              evaluate_protocol, format_protocol,
                                              make_protocol_envs)
from metarl_tf.networks import gaussian_mlp_policy  # noqa: E402
from metarl_tf.tasks.metaworld import (ML10Tasks, ML45Tasks, MAMLMetaWorldAgent,  # noqa: E402
                                       MetaWorldEnv, VALIDATION_SEED_OFFSET, task_goal)

ML10_TEST = ["door-close-v3", "drawer-open-v3", "lever-pull-v3", "shelf-place-v3",
             "sweep-into-v3"]
TINY = ProtocolConfig("ML10", meta_batch_size=5, total_tasks_per_cls=2, num_evals=2,
                      adaptation_episodes=1, evaluation_episodes=1, max_episode_steps=10,
                      num_goals=3)      # 3 goals per class: a quick benchmark build


def _keys(tasks):
    return {(name, tuple(vec)) for name, vec in map(task_goal, tasks)}


@pytest.fixture(scope="module")
def ml10():
    return ML10Tasks(num_goals=3)


def test_ml10_and_ml45_classes_without_a_build():
    ml10, ml45 = ML10Tasks(), ML45Tasks()
    assert (len(ml10.env_names("train")), len(ml10.env_names("test"))) == (10, 5)
    assert (len(ml45.env_names("train")), len(ml45.env_names("test"))) == (45, 5)
    assert sorted(ml10.env_names("test")) == ML10_TEST
    assert ml10.env_names("validation") == ml10.env_names("train")
    assert not set(ml45.env_names("train")) & set(ml45.env_names("test"))
    assert (ml10.horizon, ml10.reward_function_version) == (500, "v2")    # the official protocol


def test_validation_is_train_classes_with_goals_never_trained_on(ml10):
    train, validation = ml10.tasks("train"), ml10.tasks("validation")
    assert len(train) == len(validation) == 30                      # 10 classes x 3 goals
    assert {t.env_name for t in validation} == set(ml10.env_names("train"))
    assert not _keys(train) & _keys(validation)
    assert ml10.validation_seed == VALIDATION_SEED_OFFSET            # benchmark seed 0
    drawn = ml10.sample(20, seed=4, split="validation")
    assert _keys(drawn) <= _keys(validation)
    assert sorted(t.env_name for t in drawn) == sorted(ml10.env_names("train") * 2)  # stratified
    with pytest.raises(ValueError, match="`split` must be one of .*'validation'"):
        ml10.sample(2, seed=0, split="valid")


def test_env_keeps_at_most_max_cached_envs(ml10):
    env = MetaWorldEnv(env_name=None, benchmark="ML10", num_goals=3, max_cached_envs=2)
    seen = []
    for task in ml10.sample(3, seed=0):                # 3 different classes
        env.set_task(task)
        obs, _ = env.reset()
        assert obs.shape == (39,)
        seen.append(task.env_name)
    assert len(env._envs) == 2 and list(env._envs) == seen[1:]   # the oldest one was dropped
    env.close()
    with pytest.raises(ValueError, match="`max_cached_envs` must be an integer >= 1"):
        ML10Tasks(max_cached_envs=0)
    with pytest.raises(ValueError, match="`reward_function_version` must be one of"):
        ML10Tasks(reward_function_version="v3")


def test_protocol_defaults_and_validation():
    p = ML_PROTOCOL["ML10"]
    # Meta-World's metalearning_evaluation defaults, 20 sub-envs, 40 goals per test class.
    assert (p.num_evals, p.adaptation_steps, p.adaptation_episodes, p.evaluation_episodes) == \
        (10, 1, 10, 3)
    assert (p.meta_batch_size, p.total_tasks_per_cls, p.max_episode_steps) == (20, 40, 500)
    assert [p.split_meta_batch_size(s) for s in ("test", "train")] == [20, 20]
    assert ML_PROTOCOL["ML45"].split_meta_batch_size("train") == 45     # one sub-env per class
    assert p.split_seed("validation") == VALIDATION_SEED_OFFSET
    with pytest.raises(ValueError, match="`total_tasks_per_cls` \\(30\\) must be a multiple"):
        ProtocolConfig("ML10", total_tasks_per_cls=30)              # 20 / 5 = 4 per test class
    with pytest.raises(ValueError, match="`benchmark` must be one of"):
        ProtocolConfig("ML1")
    with pytest.raises(ValueError, match="`splits` must be a non-empty list"):
        evaluate_protocol(lambda n: None, TINY, splits=("dev",))


def test_protocol_envs_are_metaworlds_own(monkeypatch):
    import metaworld
    ours = make_protocol_envs(TINY, "test")
    monkeypatch.setattr(metaworld, "_N_GOALS", 3)            # the official build at TINY's goals
    official = gymnasium.make_vec("Meta-World/ML10-test", seed=0, meta_batch_size=5,
                                  total_tasks_per_cls=2, max_episode_steps=10)
    try:
        assert [_keys(t) for t in ours.get_attr("tasks")] == \
            [_keys(t) for t in official.get_attr("tasks")]
        assert all(ours.get_attr("terminate_on_success"))
    finally:
        ours.close()
        official.close()


def test_evaluator_scores_adapted_and_unadapted_on_the_test_classes():
    learner = MAMLRLLearner(gaussian_mlp_policy(39, 4, (8,), "tanh"), ML10Tasks(num_goals=3),
                            MAMLRLConfig(meta_batch_size=2, episodes_per_task=1, horizon=10))
    agents = []

    def make_agent(num_envs):
        agents.append(MAMLMetaWorldAgent(learner, num_envs))
        return agents[-1]

    result = evaluate_protocol(make_agent, TINY, splits=("test",))
    row = result["test"]
    assert sorted(row["per_task"]) == sorted(row["unadapted_per_task"]) == ML10_TEST
    # 2 rounds x 1 scored episode per class: each class's success is 0, 0.5 or 1.
    for value in list(row["per_task"].values()) + list(row["unadapted_per_task"].values()):
        assert value in (0.0, 0.5, 1.0)
    assert row["success"] == pytest.approx(np.mean(list(row["per_task"].values())))
    # adapted: one adapt per round (2 rounds); unadapted: none (adaptation_steps=0).
    assert [a.adapt_calls for a in agents] == [2, 0]
    assert [a.num_envs for a in agents] == [5, 5]
    assert result["protocol"]["evaluator"] == "metaworld.evaluation.metalearning_evaluation"
    text = format_protocol(result)
    assert "split=test success=" in text and "test/door-close-v3 success=" in text
