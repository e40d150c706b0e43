"""Meta-DQN's settings: ``MetaDQNConfig`` and the values every preset shares, fixed here.

DQN settings follow common CartPole DQN practice (Adam, Huber loss with kappa 1, double DQN,
gamma 0.99, linear epsilon decay 1.0 -> 0.05); the context defaults follow CAVIA (Zintgraf et al.
2019, arXiv:1810.03642): z starts at 0 and a few inner steps with a large inner rate adapt it (CAVIA
RL: one step at rate 10; here the rates are meta-learned, one per z dimension, as Meta-SGD).
"""
from __future__ import annotations

import dataclasses

from metarl_tf._checks import check_bool, check_float, check_int

TARGET_UPDATES = ("periodic", "polyak")
SUPPORT_SAMPLINGS = ("uniform", "window")
# what z adapts on: the TD loss, the reward head's error, or the one-step model head's error
INNER_LOSSES = ("td", "reward", "model")
# the reward head's form (inner_loss "reward"): a logistic model of 0/1 rewards (losses.py)
REWARD_HEADS = ("next_logistic",)

# Settings every preset uses at one value, fixed rather than configured.
HUBER_DELTA = 1.0  # Huber kappa of every TD loss.
MAX_GRAD_NORM = 10.0  # Global gradient-norm clip of the meta-gradient.
POLYAK_TAU = 0.005  # Polyak rate per meta-iteration (target_update "polyak").
EPSILON_START = 1.0  # Exploration epsilon at meta-iteration 0 ...
EPSILON_END = 0.05  # ... decayed linearly to this over `epsilon_decay_steps`.
QUERY_BATCH_SIZE = 64  # Transitions per task in the outer TD loss ...
QUERY_RANDOM_FRACTION = 0.5  # ... this share of them from the random buffer, the rest from the
# epsilon-greedy replay: rare rewards stay in the outer loss while the policy finds none.
PREFILL_STEPS = 500  # Random-policy steps per pool task into replay before training.
ACT_REFRESH_EVERY = 10  # Meta-iterations between re-adapting the pool tasks' acting z (the
# network moves slowly; adapting every pool task every iteration would double the cost).
EVAL_EPISODES = 2  # Greedy episodes per held-out task in evaluate().
FINETUNE_LR = 0.01  # SGD rate of the fine-tuning baseline's whole-network steps in evaluate().


def _check_choice(config, name: str, choices) -> None:
    if getattr(config, name) not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {getattr(config, name)!r}")


@dataclasses.dataclass(frozen=True)
class MetaDQNConfig:
    """Meta-DQN settings (defaults: the CartPoleDir family's scale; presets in
    ``training/configs/meta-dqn-*.yaml``)."""

    # -- the task embedding z and its inner loop
    z_dim: int = 8  # Task-embedding size.
    inner_steps: int = 3  # Gradient steps on z in training and evaluation (0: task-agnostic DQN).
    inner_lr: float = 1.0  # Initial value of the learned inner rates (one per z dimension).
    per_step_inner_lr: bool = False  # One learned rate per inner step and z dimension (MAML++,
    # arXiv:1810.09502), so the steps can go coarse to fine.
    inner_lr_decay: float = 1.0  # With per_step_inner_lr: step k's rates start at
    # inner_lr * inner_lr_decay**k (< 1: a long inner loop settles instead of oscillating).
    learn_z_init: bool = True  # Meta-learn z_0 (False: z_0 stays 0, CAVIA's context reset).
    inner_loss: str = "td"  # What z adapts on: "td" (the support's TD loss, bootstrapped from the
    # online network), "reward" (the cross-entropy of a z-conditioned reward head, reward_head)
    # or "model" (the squared error of a z-conditioned one-step model head predicting (r, s' - s),
    # for families whose tasks differ in their dynamics, as CartPoleDir). With a head the outer
    # loss adds the head's error of the adapted z on the query.
    reward_head: str = "next_logistic"  # The reward head's form (inner_loss "reward"):
    # "next_logistic", P(r = 1 | s', z) = sigmoid(c - |[s', 1] P - z|^2) (rewards in [0, 1]).
    normalize_inner_grad: bool = False  # Each inner step moves z along its gradient scaled to
    # unit norm per task (z <- z - alpha (*) g / |g|): the step no longer scales with the loss.
    outer_loss_steps: int = 1  # The outer loss averages over the z of the last outer_loss_steps
    # inner steps (MAML++'s multi-step loss on the final steps: z must get good and stay good).
    task_loss_weight: float = 0.0  # Weight of a privileged meta-training loss: a linear decoder of
    # the adapted z predicts the task's parameters (standardised over the pool), as Humplik et al.
    # 2019 (arXiv:1905.06424) supervise task inference; adaptation never sees them. 0: off.
    # -- tasks, support sets and replay
    num_train_tasks: int = 32  # Pool of training tasks, each with its own replay buffer.
    meta_batch_size: int = 16  # Pool tasks per meta-update.
    support_size: int = 200  # Random-policy transitions per task that z adapts on.
    random_buffer_size: int = 1000  # Random-policy transitions kept per pool task (one walk);
    # each support set is a fresh draw of support_size of them (support_sampling).
    support_sampling: str = "uniform"  # "uniform" (support_size independent slots of the random
    # buffer) or "window" (support_size consecutive slots: a random walk, as evaluation and
    # deployment collect one, so supports with few or no rare rewards occur at their real rate).
    replay_capacity: int = 20000  # Epsilon-greedy transitions kept per pool task.
    # -- DQN
    discount: float = 0.99  # gamma.
    n_step: int = 1  # n-step targets in the outer loss (1: one-step).
    learning_rate: float = 1e-3  # Adam rate for the network, z_0, the rates and the heads.
    target_update: str = "periodic"  # "periodic" (hard copy) or "polyak" (rate POLYAK_TAU).
    target_update_period: int = 250  # Meta-iterations between hard copies.
    epsilon_decay_steps: int = 5000  # Meta-iterations of linear epsilon decay.
    # -- execution
    steps_per_execution: int = 50  # Meta-iterations per compiled call.
    jit_compile: bool = False  # XLA-compile the train step.

    def __post_init__(self):
        check_int(self, "z_dim", minimum=0)
        check_int(self, "inner_steps", minimum=0)
        check_float(self, "inner_lr")
        check_float(self, "inner_lr_decay")
        for name in ("per_step_inner_lr", "learn_z_init", "normalize_inner_grad", "jit_compile"):
            check_bool(self, name)
        for name in ("outer_loss_steps", "num_train_tasks", "meta_batch_size", "support_size",
                     "random_buffer_size", "replay_capacity", "n_step", "target_update_period",
                     "epsilon_decay_steps", "steps_per_execution"):
            check_int(self, name)
        _check_choice(self, "inner_loss", INNER_LOSSES)
        _check_choice(self, "reward_head", REWARD_HEADS)
        _check_choice(self, "support_sampling", SUPPORT_SAMPLINGS)
        _check_choice(self, "target_update", TARGET_UPDATES)
        check_float(self, "task_loss_weight", low_inclusive=True)
        check_float(self, "discount", 0.0, 1.0)
        check_float(self, "learning_rate")
        if self.inner_lr_decay != 1.0 and not self.per_step_inner_lr:
            raise ValueError(f"`inner_lr_decay` ({self.inner_lr_decay}) needs "
                             "`per_step_inner_lr` (it sets the per-step rates' start)")
        if self.per_step_inner_lr and self.inner_steps < 1:
            raise ValueError("`per_step_inner_lr` needs `inner_steps` >= 1")
        if self.outer_loss_steps > max(self.inner_steps, 1):
            raise ValueError(f"`outer_loss_steps` ({self.outer_loss_steps}) must be <= "
                             f"`inner_steps` ({self.inner_steps}) (or 1 with no inner step)")
        if self.support_size > self.random_buffer_size:
            raise ValueError(f"`support_size` ({self.support_size}) must be <= "
                             f"`random_buffer_size` ({self.random_buffer_size})")
        if self.meta_batch_size > self.num_train_tasks:
            raise ValueError(f"`meta_batch_size` ({self.meta_batch_size}) must be <= "
                             f"`num_train_tasks` ({self.num_train_tasks})")
        if self.n_step > min(PREFILL_STEPS + 1, self.replay_capacity):
            raise ValueError(f"`n_step` ({self.n_step}) must be <= `replay_capacity` "
                             f"({self.replay_capacity}) and <= {PREFILL_STEPS + 1} (the "
                             "transitions in replay after the first meta-iteration)")

    @staticmethod
    def upgrade_fields(data: dict) -> dict:
        """``data`` (a config dict, e.g. a run directory's ``config.json`` written before the
        fields in ``DROPPED`` were fixed) without those fields, when each holds the value the
        learner now always uses; a ValueError names a field that held another value."""
        data = dict(data)
        if data.get("inner_loss", "td") != "reward" and data.get("reward_head") == "mlp":
            data.pop("reward_head")  # the old default, unused without the reward inner loss
        for name, allowed in DROPPED.items():
            if name in data:
                value = data.pop(name)
                if value not in allowed:
                    raise ValueError(
                        f"`{name}` is no longer a MetaDQNConfig field: it is fixed at "
                        f"{allowed[0]!r}, and this config sets it to {value!r}")
        return data


# Fields of earlier MetaDQNConfigs, now fixed: name -> the values that mean today's behaviour.
DROPPED = {
    "learn_inner_lr": (True,), "first_order": (False,), "double_dqn": (True,),
    "reward_loss_weight": (1.0,), "reward_hidden": (64,),  # heads now take the network's widths
    "huber_delta": (HUBER_DELTA,), "max_grad_norm": (MAX_GRAD_NORM,), "polyak_tau": (POLYAK_TAU,),
    "epsilon_start": (EPSILON_START,), "epsilon_end": (EPSILON_END,),
    "query_batch_size": (QUERY_BATCH_SIZE,), "query_random_fraction": (QUERY_RANDOM_FRACTION,),
    "prefill_steps": (PREFILL_STEPS,), "act_refresh_every": (ACT_REFRESH_EVERY,),
    "env_steps_per_iteration": (1,), "support_reward_dropout": (0.0,),
    "eval_episodes": (EVAL_EPISODES,), "finetune_lr": (FINETUNE_LR,),
    # the algorithm now decides: meta-dqn adapts z, finetune-dqn fine-tunes the network
    "eval_adaptation": ("z", "finetune"),
}
