"""MetaDQNConfig: bad values refused by name, at most 25 fields, the presets load, and config files
written before fields were fixed load when those fields hold the fixed values."""
import dataclasses

import pytest

from metarl_tf.algorithms.meta_dqn import FineTuneDQNLearner, MetaDQNConfig, MetaDQNLearner
from metarl_tf.algorithms.meta_dqn import config as C
from training.config import ALGORITHMS, ExperimentConfig, load_config


def test_config_refuses_bad_values_by_name():
    cases = [
        (dict(num_train_tasks=4, meta_batch_size=8),
         r"`meta_batch_size` \(8\) must be <= `num_train_tasks` \(4\)"),
        (dict(target_update="soft"), "`target_update` must be one of"),
        (dict(z_dim=-1), "`z_dim` must be an integer >= 0"),
        (dict(inner_loss="td+reward"), "`inner_loss` must be one of"),
        (dict(reward_head="mlp"), r"`reward_head` must be one of \('next_logistic',\)"),
        (dict(support_sampling="walk"), "`support_sampling` must be one of"),
        (dict(inner_lr_decay=0.5), r"`inner_lr_decay` \(0.5\) needs `per_step_inner_lr`"),
        (dict(per_step_inner_lr=True, inner_lr_decay=0.0), "`inner_lr_decay` must be"),
        (dict(per_step_inner_lr=True, inner_steps=0), "`per_step_inner_lr` needs `inner_steps`"),
        (dict(inner_steps=3, outer_loss_steps=4),
         r"`outer_loss_steps` \(4\) must be <= `inner_steps` \(3\)"),
        (dict(task_loss_weight=-1.0), r"`task_loss_weight` must be a finite number in \[0"),
        (dict(normalize_inner_grad="yes"), "`normalize_inner_grad` must be True or False"),
        (dict(support_size=1200), r"`support_size` \(1200\) must be <= `random_buffer_size`"),
        (dict(n_step=600), r"`n_step` \(600\) must be <= `replay_capacity` \(20000\) and <= 501"),
        (dict(discount=1.5), r"`discount` must be a finite number in \(0.0, 1.0\]"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            MetaDQNConfig(**kwargs)


def test_at_most_25_fields_each_with_a_comment():
    fields = dataclasses.fields(MetaDQNConfig)
    assert len(fields) <= 25
    source = open(C.__file__).read()
    for f in fields:  # "name: type = default  # comment"
        line = next(ln for ln in source.splitlines() if ln.strip().startswith(f"{f.name}:"))
        assert "  # " in line, f.name


@pytest.mark.parametrize("preset", ["meta-dqn-gridworld", "meta-dqn-cartpole",
                                    "meta-dqn-mountaincar", "finetune-dqn-cartpole"])
def test_presets_load(preset):
    config = load_config(preset)
    assert isinstance(config.algorithm_config, MetaDQNConfig)
    learner_cls = ALGORITHMS[config.algorithm][1]
    assert learner_cls is (FineTuneDQNLearner if preset.startswith("finetune") else MetaDQNLearner)
    if preset == "finetune-dqn-cartpole":
        assert config.algorithm_config.inner_steps == 0  # forced: a task-agnostic DQN


OLD_GRIDWORLD = {  # a run's config.json as written before the fields were fixed (defaults
    # of that time, plus the meta-dqn-gridworld preset)
    "z_dim": 4, "inner_steps": 10, "inner_lr": 1.0, "learn_inner_lr": True,
    "per_step_inner_lr": True, "inner_lr_decay": 0.7, "learn_z_init": False, "first_order": False,
    "inner_loss": "reward", "reward_loss_weight": 1.0, "reward_hidden": 64,
    "reward_head": "next_logistic", "task_loss_weight": 1.0, "normalize_inner_grad": True,
    "outer_loss_steps": 3, "num_train_tasks": 20, "meta_batch_size": 20, "support_size": 200,
    "random_buffer_size": 2000, "support_sampling": "window", "support_reward_dropout": 0.0,
    "query_random_fraction": 0.5, "query_batch_size": 64, "replay_capacity": 5000,
    "prefill_steps": 500, "env_steps_per_iteration": 1, "act_refresh_every": 10,
    "discount": 0.9, "n_step": 1, "double_dqn": True, "huber_delta": 1.0, "learning_rate": 0.001,
    "max_grad_norm": 10.0, "target_update": "periodic", "target_update_period": 100,
    "polyak_tau": 0.005, "epsilon_start": 1.0, "epsilon_end": 0.05, "epsilon_decay_steps": 1000,
    "eval_episodes": 2, "eval_adaptation": "z", "finetune_lr": 0.01, "steps_per_execution": 100,
    "jit_compile": True}


def test_old_config_files_load_when_the_dropped_fields_hold_the_fixed_values():
    old = {"name": "meta-dqn-gridworld", "task": "gridworld", "algorithm": "meta-dqn",
           "algorithm_config": OLD_GRIDWORLD, "network": {"hidden": [64, 64]}}
    config = ExperimentConfig.from_dict(old).algorithm_config
    assert config == load_config("meta-dqn-gridworld").algorithm_config
    # the old default head form, unused by the TD and model inner losses, is dropped
    td = {**OLD_GRIDWORLD, "inner_loss": "model", "reward_head": "mlp", "per_step_inner_lr": False,
          "inner_lr_decay": 1.0, "inner_steps": 3, "outer_loss_steps": 1}
    assert MetaDQNConfig(**MetaDQNConfig.upgrade_fields(td)).inner_loss == "model"
    with pytest.raises(ValueError, match="`act_refresh_every` is no longer a MetaDQNConfig field: "
                                         "it is fixed at 10, and this config sets it to 5"):
        ExperimentConfig.from_dict({**old, "algorithm_config": {**OLD_GRIDWORLD,
                                                                "act_refresh_every": 5}})
    with pytest.raises(ValueError, match="`reward_head` must be one of"):
        MetaDQNConfig(**MetaDQNConfig.upgrade_fields({**OLD_GRIDWORLD, "reward_head": "distance"}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['replay_size'\]"):
        ExperimentConfig.from_dict({**old, "algorithm_config": {"replay_size": 5}})
