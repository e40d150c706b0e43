"""PEARL's settings: a frozen, validated dataclass whose defaults are oyster's.

Sources: katerakelly/oyster ``configs/default.py`` (``OY:default``), its per-environment JSON files
(``OY:cheetah-vel.json``, ``OY:ant-dir.json``, ``OY:point-robot.json``) and
``launch_experiment.py`` (network sizes). ``docs/algorithms/pearl.md`` lists them with the places
where this implementation deviates.
"""
from __future__ import annotations

import dataclasses

from metarl_tf._checks import check_bool, check_float, check_int


@dataclasses.dataclass(frozen=True)
class PEARLConfig:
    """PEARL (Rakelly et al. 2019, arXiv:1903.08254): SAC with a probabilistic context encoder.

    The actor and critics' widths come from ``ExperimentConfig.network`` (oyster's ``net_size``
    300, three layers: ``network.hidden: [300, 300, 300]``); the encoder's from
    ``encoder_hidden``. One *iteration* (``ExperimentConfig.steps`` counts them) is oyster's: data
    collection for ``num_tasks_sample`` training tasks, then ``num_train_steps_per_itr`` gradient
    steps.
    """

    latent_dim: int = 5  # Size of the task latent z (OY:default latent_size).
    encoder_hidden: tuple[int, ...] = (200, 200, 200)  # Context encoder widths (OY:
    # launch_experiment.py, hidden_sizes=[200, 200, 200]).
    use_information_bottleneck: bool = True  # Gaussian posterior with a KL to N(0, I) (True), or a
    # deterministic z = the mean of the per-transition encodings (False) (OY:default).
    use_next_obs_in_context: bool = False  # Context rows are (s, a, r) (False) or (s, a, r, s')
    # (True): next observations matter when tasks differ in dynamics (OY:default).
    num_train_tasks: int = 100  # Fixed pool of training tasks, one replay buffer each (OY:
    # cheetah-vel.json n_train_tasks 100; default.py's 2 is cheetah-dir's).
    meta_batch_size: int = 16  # Tasks per gradient step (OY:default meta_batch; 4 for ant-dir).
    num_initial_steps: int = 2000  # Transitions per training task collected with z ~ prior
    # before the first iteration (OY:default); >= 1, so every task has data when sampled.
    num_tasks_sample: int = 5  # Training tasks whose data is refreshed per iteration (OY:default).
    num_steps_prior: int = 400  # Transitions per sampled task with z ~ prior; they also refill
    # the task's encoder buffer (OY:default).
    num_steps_posterior: int = 0  # Transitions per sampled task with z ~ posterior that go to
    # both buffers (OY:default 0).
    num_extra_rl_steps_posterior: int = 400  # Transitions per sampled task with z ~ posterior
    # for the RL buffer only (OY:default 400; cheetah-vel and ant-dir 600).
    num_train_steps_per_itr: int = 2000  # Gradient steps per iteration (OY:default; ant-dir 4000).
    batch_size: int = 256  # RL transitions per task per gradient step (OY:default).
    embedding_batch_size: int = 64  # Context transitions per task per gradient step, drawn from
    # the task's encoder buffer (recent prior data) (OY:default; cheetah-vel 100, ant-dir 256).
    replay_capacity: int = 30000  # Transitions kept per training task in the RL buffer (oyster
    # allocates 1e6 per task; at its budgets a cheetah-vel task receives about 27k, so 30000
    # keeps everything while bounding memory and checkpoint size).
    discount: float = 0.99  # gamma (OY:default).
    soft_target_tau: float = 0.005  # Polyak rate of the target critics per step (OY:default).
    policy_lr: float = 3e-4  # Adam rate of the actor (OY:default).
    qf_lr: float = 3e-4  # Adam rate of the twin critics (OY:default).
    context_lr: float = 3e-4  # Adam rate of the context encoder (OY:default).
    reward_scale: float = 5.0  # Rewards are multiplied by this in the Bellman target; with the
    # entropy weight fixed at 1 it sets the reward/entropy trade-off (OY:default 5; point-robot 100).
    kl_lambda: float = 0.1  # Weight of KL(q(z|c) || N(0, I)) in the encoder loss (OY:default).
    policy_mean_reg_weight: float = 1e-3  # Weight of mean(mu^2) in the actor loss (OY:sac.py).
    policy_std_reg_weight: float = 1e-3  # Weight of mean(log_std^2) in the actor loss (OY:sac.py).
    auto_entropy: bool = False  # Tune the entropy weight alpha to target_entropy (SAC v2) instead
    # of oyster's fixed alpha = 1 with reward_scale.
    alpha: float = 1.0  # Fixed entropy weight (auto_entropy False), or alpha's start (True).
    target_entropy: float | None = None  # Entropy target of auto_entropy; None: -act_dim.
    alpha_lr: float = 3e-4  # Adam rate of log(alpha) (auto_entropy only).
    horizon: int = 0  # Episode length; 0 keeps the task family's (200 locomotion, 100 PointNav;
    # OY:default max_path_length 200, point-robot 20).
    num_exp_traj_eval: int = 2  # evaluate(): exploration episodes whose context the posterior
    # uses, the first with z ~ prior, then posterior sampling (OY:default 1; cheetah-vel and
    # ant-dir 2). ExperimentConfig.eval_steps overrides it for `metarl evaluate`.
    num_envs: int = 5  # Sub-environments stepped together during collection and evaluation.
    train_steps_per_call: int = 50  # Gradient steps per compiled call (a tf.while_loop).
    jit_compile: bool = False  # XLA-compile the gradient steps.

    def __post_init__(self):
        object.__setattr__(self, "encoder_hidden", tuple(self.encoder_hidden))
        if not self.encoder_hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                                          for h in self.encoder_hidden):
            raise ValueError("`encoder_hidden` must be a non-empty sequence of integers >= 1, got "
                             f"{self.encoder_hidden!r}")
        for name in ("latent_dim", "num_train_tasks", "meta_batch_size", "num_tasks_sample",
                     "num_steps_prior", "num_train_steps_per_itr", "batch_size",
                     "embedding_batch_size", "replay_capacity", "num_envs", "num_initial_steps",
                     "train_steps_per_call"):
            check_int(self, name)
        for name in ("num_steps_posterior", "num_extra_rl_steps_posterior",
                     "horizon", "num_exp_traj_eval"):
            check_int(self, name, minimum=0)
        for name in ("use_information_bottleneck", "use_next_obs_in_context", "auto_entropy",
                     "jit_compile"):
            check_bool(self, name)
        check_float(self, "discount", 0.0, 1.0)
        check_float(self, "soft_target_tau", 0.0, 1.0)
        for name in ("policy_lr", "qf_lr", "context_lr", "alpha_lr", "reward_scale", "alpha"):
            check_float(self, name)
        for name in ("kl_lambda", "policy_mean_reg_weight", "policy_std_reg_weight"):
            check_float(self, name, low_inclusive=True)
        if self.target_entropy is not None:
            check_float(self, "target_entropy", low=-float("inf"))
        if self.meta_batch_size > self.num_train_tasks:
            raise ValueError(f"`meta_batch_size` ({self.meta_batch_size}) must be <= "
                             f"`num_train_tasks` ({self.num_train_tasks})")
        if self.num_tasks_sample > self.num_train_tasks:
            raise ValueError(f"`num_tasks_sample` ({self.num_tasks_sample}) must be <= "
                             f"`num_train_tasks` ({self.num_train_tasks})")
