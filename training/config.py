"""Experiment configuration: the task family, algorithm, network and budget of one run, as data.

An ``ExperimentConfig`` is built from a YAML preset (``training/configs/<name>.yaml``) or a dict;
unknown keys and bad values are refused with an error that names the field and lists what is valid.
The resolved config is written into every run directory (``config.json``) and is all that
``metarl export`` needs to rebuild the learner.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import tensorflow as tf
import yaml

from metarl_tf import tasks as task_families
from metarl_tf._checks import check_bool, check_int
from metarl_tf.algorithms import (MAMLConfig, MAMLLearner, MetaSGDConfig, MetaSGDLearner,
                                  ReptileConfig, ReptileLearner)
from metarl_tf.algorithms.maml_rl import (MAMLRLConfig, MAMLRLLearner, MetaSGDRLLearner,
                                          ReptileRLConfig, ReptileRLLearner)
from metarl_tf.algorithms.meta_dqn import FineTuneDQNLearner, MetaDQNConfig, MetaDQNLearner
from metarl_tf.algorithms.rl2 import RL2Config, RL2Learner, rl2_policy_for
from metarl_tf.networks import gaussian_mlp_policy, mlp
from metarl_tf.networks.q_network import TaskConditionedQNetwork
from metarl_tf.networks.mlp import check_mlp_args

PRESET_DIR = os.path.join(os.path.dirname(__file__), "configs")

# name -> (config class, learner class, fields forced by the name, kind)
ALGORITHMS = {
    "maml": (MAMLConfig, MAMLLearner, {"first_order": False}, "supervised"),
    "fomaml": (MAMLConfig, MAMLLearner, {"first_order": True}, "supervised"),
    "metasgd": (MetaSGDConfig, MetaSGDLearner, {}, "supervised"),
    "reptile": (ReptileConfig, ReptileLearner, {}, "supervised"),
    "maml-trpo": (MAMLRLConfig, MAMLRLLearner, {"outer": "trpo"}, "rl"),
    "maml-promp": (MAMLRLConfig, MAMLRLLearner, {"outer": "promp"}, "rl"),
    "metasgd-rl": (MAMLRLConfig, MetaSGDRLLearner, {"update_rule": "metasgd"}, "rl"),
    # learned update rules (metarl_tf.update_rules): the Meta-LSTM, and the meta-policy gradient
    "metalstm": (MAMLConfig, MAMLLearner, {"update_rule": "meta_lstm"}, "supervised"),
    "metapg": (MAMLRLConfig, MAMLRLLearner, {"update_rule": "meta_lstm"}, "rl"),
    "reptile-rl": (ReptileRLConfig, ReptileRLLearner, {}, "rl"),
    "meta-dqn": (MetaDQNConfig, MetaDQNLearner, {}, "dqn"),
    # the fine-tuning baseline: a task-agnostic DQN on all train tasks, fine-tuned whole at test
    "finetune-dqn": (MetaDQNConfig, FineTuneDQNLearner, {"inner_steps": 0}, "dqn"),
    "rl2": (RL2Config, RL2Learner, {}, "rl2"),
}
# name -> (attribute of metarl_tf.tasks, kind or tuple of kinds); MuJoCo / Meta-World families
# load on first use.
TASKS = {
    "sinusoid": ("SinusoidTasks", "supervised"),
    "pointnav": ("PointNavTasks", ("rl", "rl2")),
    "halfcheetah-vel": ("HalfCheetahVelTasks", "rl"),
    "halfcheetah-dir": ("HalfCheetahDirTasks", "rl"),
    "ant-dir": ("AntDirTasks", "rl"),
    "cartpole-dir": ("CartPoleDirTasks", "dqn"),
    "gridworld": ("GridWorldTasks", "dqn"),
    "mountaincar-lr": ("MountainCarLRTasks", "dqn"),
    "bandits": ("BernoulliBanditTasks", "rl2"),
    "tabular-mdp": ("TabularMDPTasks", "rl2"),
    "ml1": ("MetaWorldTasks", "rl2"),
    "ml10": ("ML10Tasks", ("rl", "rl2")),   # Meta-World's official ML10 / ML45 (500-step episodes)
    "ml45": ("ML45Tasks", ("rl", "rl2")),
}
DISTRIBUTE = ("none", "mirrored", "multi_worker")
# kind -> builder(config, tasks, strategy) -> learner, for kinds beyond "supervised" and "rl" (RL²,
# Meta-DQN, ...). Each algorithm module registers its own entry here; build_learner dispatches.
LEARNER_BUILDERS: dict = {}
# kind -> "module:function" of the exporter ``f(learner, base, name, version=, max_num_steps=,
# extra_metadata=) -> path`` that `metarl export` calls (imported lazily: export imports TF Serving
# helpers the training loop does not need).
EXPORTERS = {
    "supervised": "export.saved_model:export_learner",
    "rl": "export.policy:export_policy_learner",
    "dqn": "export.qnetwork:export_qnetwork_learner",
    "rl2": "export.recurrent:export_rl2_learner",
}
# Fields every supervised algorithm config has; they carry over when --algo switches algorithm.
SHARED_FIELDS = ("meta_batch_size", "num_support", "num_query", "jit_compile", "steps_per_execution")


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """The MLP meta-learned by the run (regressor, or the mean network of a Gaussian policy).

    Policies always use Keras' default (Glorot) kernels and a learned log-std starting at 0; ``init``
    applies to regressors.
    """

    hidden: tuple[int, ...] = (40, 40)  # Hidden widths (MAML sinusoid: 40, 40).
    activation: str = "relu"  # Hidden activation.
    init: str = "maml"  # "maml" (truncated normal, std 0.01), "glorot_uniform" or "he_normal".

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(self.hidden))
        check_mlp_args(1, 1, self.hidden, self.activation, self.init)


SAMPLER_BACKENDS = ("local", "ray")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Where the gymnasium RL learners (MAML-TRPO, ProMP, ...) step their environments.

    ``backend: ray`` moves the stepping to Ray actors (``metarl_tf.rollouts.ray_sampler``,
    ``pip install 'metarl-tf[ray]'``); the learner stays in this process. Ray seeds every episode
    by (seed, task, episode), and so does ``keyed: true`` locally: a keyed local run and a Ray run
    of the same config give the same episodes, so a run may move between them on resume.
    """

    backend: str = "local"  # "local" (this process) or "ray" (Ray actors).
    keyed: bool = False  # Local: seed each episode by (seed, task, episode), as Ray always does.
    num_workers: int = 2  # Ray actors, one CPU each.
    envs_per_worker: int = 0  # Sub-environments per actor; 0 = ceil(meta_batch_size / num_workers).
    address: Any = None  # A running Ray cluster ("auto", "ray://head:10001"); None = start one here.
    num_cpus: int = 0  # CPUs of the Ray cluster started here; 0 = Ray counts the machine's.
    max_worker_restarts: int = 3  # Ray actor deaths recovered per collection before raising.

    def __post_init__(self):
        if self.backend not in SAMPLER_BACKENDS:
            raise ValueError(f"`sampler.backend` must be one of {list(SAMPLER_BACKENDS)}, got "
                             f"{self.backend!r}")
        check_bool(self, "keyed")
        check_int(self, "num_workers")
        check_int(self, "envs_per_worker", minimum=0)
        check_int(self, "num_cpus", minimum=0)
        check_int(self, "max_worker_restarts", minimum=0)
        if self.address is not None and (not isinstance(self.address, str) or not self.address):
            raise ValueError(f"`sampler.address` must be a Ray address string or null, got "
                             f"{self.address!r}")
        if self.address is not None and self.num_cpus:
            raise ValueError("`sampler.num_cpus` sizes a Ray cluster started by the run; a cluster "
                             "at `sampler.address` has its own CPUs (set num_cpus: 0)")

    @property
    def episodes_keyed(self) -> bool:
        """Whether episodes are seeded per (seed, task, episode) (Ray, or ``keyed`` locally)."""
        return self.backend == "ray" or self.keyed


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One training run."""

    name: str = "maml-sinusoid"  # Preset or run name.
    description: str = ""  # One line, shown by `metarl presets`.
    task: str = "sinusoid"  # Task family, one of TASKS.
    algorithm: str = "maml"  # One of ALGORITHMS.
    algorithm_config: Any = None  # The algorithm's config dataclass (or a dict of its fields).
    network: Any = None  # NetworkConfig (or a dict of its fields).
    steps: int = 70000  # Meta-steps in total (MAML sinusoid command: 70,000).
    seed: int = 0  # Base seed: network init and every task sample derive from it.
    log_every: int = 1000  # Meta-steps between TensorBoard scalars / progress lines.
    checkpoint_every: int = 10000  # Meta-steps between checkpoints.
    keep_checkpoints: int = 3  # Checkpoints kept by the CheckpointManager.
    eval_tasks: int = 600  # Held-out tasks in the final adaptation curve.
    eval_query: int = 100  # Query points per held-out task.
    eval_steps: int = 10  # Inner steps in the final adaptation curve.
    deterministic: bool = False  # tf.config.experimental.enable_op_determinism() for the run.
    distribute: str = "none"  # "none", "mirrored" (all local devices) or "multi_worker" (TF_CONFIG).
    sampler: Any = None  # SamplerConfig (or a dict of its fields): local or Ray env stepping.

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"`task` must be one of {sorted(TASKS)}, got {self.task!r}")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"`algorithm` must be one of {sorted(ALGORITHMS)}, got {self.algorithm!r}")
        cls, _, forced, kind = ALGORITHMS[self.algorithm]
        task_kinds = TASKS[self.task][1]
        task_kinds = (task_kinds,) if isinstance(task_kinds, str) else tuple(task_kinds)
        if kind not in task_kinds:
            valid = sorted(a for a, spec in ALGORITHMS.items() if spec[3] in task_kinds)
            raise ValueError(f"`algorithm` {self.algorithm!r} does not apply to task {self.task!r}; "
                             f"algorithms for it: {valid}")
        algo = self.algorithm_config
        if algo is None:
            algo = cls(**forced)
        elif isinstance(algo, dict):
            algo = _from_dict(cls, {**algo, **forced}, "algorithm_config")
        elif type(algo) is not cls:
            raise ValueError(f"`algorithm_config` must be a {cls.__name__} for algorithm "
                             f"{self.algorithm!r}, got {type(algo).__name__}")
        object.__setattr__(self, "algorithm_config", algo)
        net = self.network
        if net is None:
            net = NetworkConfig()
        elif isinstance(net, dict):
            net = _from_dict(NetworkConfig, net, "network")
        object.__setattr__(self, "network", net)
        sampler = self.sampler
        if sampler is None:
            sampler = SamplerConfig()
        elif isinstance(sampler, dict):
            sampler = _from_dict(SamplerConfig, sampler, "sampler")
        elif not isinstance(sampler, SamplerConfig):
            raise ValueError(f"`sampler` must be a SamplerConfig or a mapping, got "
                             f"{type(sampler).__name__}")
        object.__setattr__(self, "sampler", sampler)
        if sampler != SamplerConfig() and kind != "rl":
            raise ValueError(f"`sampler` applies to the gymnasium RL learners (MAML-TRPO, ProMP, "
                             f"...); algorithm {self.algorithm!r} collects its own episodes "
                             "(leave `sampler` at its defaults)")
        for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "eval_tasks",
                     "eval_query"):
            check_int(self, name)
        check_int(self, "eval_steps", minimum=0)
        check_int(self, "seed", minimum=0)
        check_bool(self, "deterministic")
        if self.distribute not in DISTRIBUTE:
            raise ValueError(f"`distribute` must be one of {list(DISTRIBUTE)}, got {self.distribute!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ExperimentConfig":
        return _from_dict(cls, data, "config")

    def with_algorithm(self, algorithm: str) -> "ExperimentConfig":
        """The same experiment with another algorithm; shared fields (meta-batch, shots) carry over."""
        if algorithm not in ALGORITHMS:
            raise ValueError(f"`algorithm` must be one of {sorted(ALGORITHMS)}, got {algorithm!r}")
        if algorithm == self.algorithm:
            return self
        old = dataclasses.asdict(self.algorithm_config)
        new_cls = ALGORITHMS[algorithm][0]
        if new_cls is type(self.algorithm_config):  # same config class: keep every field
            keep = {k: v for k, v in old.items() if k not in ALGORITHMS[self.algorithm][2]}
            return dataclasses.replace(self, algorithm=algorithm, algorithm_config=keep)
        same_family = issubclass(new_cls, type(self.algorithm_config)) or issubclass(
            type(self.algorithm_config), new_cls)
        names = {f.name for f in dataclasses.fields(new_cls)}
        keep = {k: v for k, v in old.items() if k in names and (same_family or k in SHARED_FIELDS)}
        keep.pop("first_order", None)
        keep.pop("update_rule", None)  # a rule belongs to its algorithm (metasgd, metalstm)
        return dataclasses.replace(self, algorithm=algorithm, algorithm_config=keep)

    def with_shots(self, shots: int) -> "ExperimentConfig":
        """K support and K query points per task (cbfinn/maml draws 2K points and splits them)."""
        if kind_of(self) != "supervised":
            raise ValueError("--shots applies to supervised tasks; for RL set "
                             "algorithm_config.episodes_per_task")
        algo = dataclasses.replace(self.algorithm_config, num_support=shots, num_query=shots)
        return dataclasses.replace(self, algorithm_config=algo)


def _from_dict(cls, data: dict, where: str):
    if not isinstance(data, dict):
        raise ValueError(f"`{where}` must be a mapping, got {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    if hasattr(cls, "upgrade_fields"):  # a config that dropped fields reads older files
        data = cls.upgrade_fields(data)
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in `{where}`; valid keys: {names}")
    data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**data)


def apply_overrides(config: ExperimentConfig, overrides: list[str]) -> ExperimentConfig:
    """Applies ``--set`` overrides such as ``algorithm_config.inner_lr=0.02`` or ``network.hidden=[64,64]``.

    Values are parsed as YAML scalars/lists (safe loader); the result is validated like any config.
    """
    data = config.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE (e.g. algorithm_config.inner_lr=0.02), got {item!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {key}: cannot parse value {raw!r}: {err}") from None
        node, parts = data, key.split(".")
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                where = ".".join(parts[:depth + 1])
                valid = sorted(k for k, v in node.items() if isinstance(v, dict))
                raise ValueError(f"--set {key}: `{where}` is not a section; sections: {valid}")
            node = node[part]
        if parts[-1] not in node:
            raise ValueError(f"--set {key}: unknown key `{parts[-1]}`; valid keys: {sorted(node)}")
        node[parts[-1]] = value
        if key == "algorithm":  # a new algorithm keeps only the fields it shares with the old one
            return apply_overrides(config.with_algorithm(value), [o for o in overrides if o != item])
    return ExperimentConfig.from_dict(data)


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description."""
    out = {}
    for fn in sorted(os.listdir(PRESET_DIR)):
        if fn.endswith(".yaml"):
            out[fn[:-5]] = load_config(os.path.join(PRESET_DIR, fn)).description
    return out


def load_config(name_or_path: str) -> ExperimentConfig:
    """A preset name (``maml-sinusoid``) or a YAML file path -> ExperimentConfig (safe YAML loader)."""
    path = name_or_path
    if not os.path.exists(path):
        path = os.path.join(PRESET_DIR, f"{name_or_path}.yaml")
        if not os.path.exists(path):
            presets = sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".yaml"))
            raise ValueError(f"unknown preset {name_or_path!r}; presets: {presets} "
                             "(or give a path to a YAML file)")
    try:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
    except OSError as err:
        raise ValueError(f"cannot read config file {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ValueError(f"config file {path} is not valid YAML: {err}") from None
    data.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return ExperimentConfig.from_dict(data)


def make_strategy(name: str) -> tf.distribute.Strategy | None:
    """``none`` -> None (one device, the whole meta-step in one XLA call); ``mirrored`` -> all local
    GPUs (or the CPU); ``multi_worker`` -> the cluster described by the ``TF_CONFIG`` variable."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("`distribute: multi_worker` needs the TF_CONFIG environment variable "
                             "(see docs/DISTRIBUTED.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return None


def kind_of(config: ExperimentConfig) -> str:
    """``"supervised"`` (regression learners), ``"rl"`` (gradient-based policy learners) or a kind
    registered in ``LEARNER_BUILDERS``."""
    return ALGORITHMS[config.algorithm][3]


def exporter_for(config: ExperimentConfig):
    """The export function for a run of ``config``'s kind (see ``EXPORTERS``)."""
    import importlib

    kind = kind_of(config)
    if kind not in EXPORTERS:
        raise ValueError(f"runs of kind {kind!r} have no exporter; kinds that export: {sorted(EXPORTERS)}")
    module, _, fn = EXPORTERS[kind].partition(":")
    return getattr(importlib.import_module(module), fn)


def build_learner(config: ExperimentConfig, strategy: tf.distribute.Strategy | None = None):
    """The task distribution, network and learner a config describes (fresh weights).

    The model is built inside ``strategy``'s scope when one is given (supervised learners; the RL
    learners run on one device).
    """
    tasks = getattr(task_families, TASKS[config.task][0])()
    net = config.network
    learner_cls = ALGORITHMS[config.algorithm][1]
    if kind_of(config) in LEARNER_BUILDERS:
        return LEARNER_BUILDERS[kind_of(config)](config, tasks, strategy)
    if kind_of(config) == "rl":
        if strategy is not None:
            raise ValueError("`distribute` applies to the supervised learners only; the RL "
                             "learners run on one device (set distribute: none)")
        env = tasks.make_env()
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        env.close()
        policy = gaussian_mlp_policy(obs_dim, act_dim, net.hidden, net.activation,
                                     seed=config.seed)
        return learner_cls(policy, tasks, config.algorithm_config, seed=config.seed,
                           sampler=build_sampler(config, tasks))
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = mlp(tasks.input_dim, tasks.output_dim, net.hidden, net.activation, net.init,
                    seed=config.seed)
    return learner_cls(model, tasks, config.algorithm_config, seed=config.seed, strategy=strategy)


def build_sampler(config: ExperimentConfig, tasks):
    """The episode sampler ``config.sampler`` describes: ``None`` (the learner's own local vector
    env, one noise stream per collection), a keyed ``LocalSampler``, or a ``RaySampler`` (starts or
    joins the Ray cluster)."""
    import math

    from metarl_tf.rollouts.sampler import LocalSampler, make_vector_env

    spec = config.sampler
    batch = config.algorithm_config.meta_batch_size
    if spec.backend == "local":
        if not spec.keyed:
            return None
        return LocalSampler(make_vector_env(tasks.make_env, num_envs=batch), keyed=True)
    from metarl_tf.rollouts.ray_sampler import RaySampler   # needs the `ray` extra
    return RaySampler(tasks.make_env, num_workers=spec.num_workers,
                      envs_per_worker=spec.envs_per_worker or math.ceil(batch / spec.num_workers),
                      address=spec.address, num_cpus=spec.num_cpus or None,
                      max_worker_restarts=spec.max_worker_restarts)


def _build_dqn_learner(config: ExperimentConfig, tasks, strategy=None):
    """Meta-DQN / fine-tuning baseline: a TaskConditionedQNetwork sized by the task family."""
    if strategy is not None:
        raise ValueError("`distribute` applies to the supervised learners only; Meta-DQN runs on "
                         "one device (set distribute: none)")
    net = config.network
    network = TaskConditionedQNetwork(tasks.obs_dim, tasks.num_actions,
                                      config.algorithm_config.z_dim, net.hidden, net.activation,
                                      seed=config.seed)
    learner_cls = ALGORITHMS[config.algorithm][1]
    return learner_cls(network, tasks, config.algorithm_config, seed=config.seed)


LEARNER_BUILDERS["dqn"] = _build_dqn_learner


def _build_rl2_learner(config: ExperimentConfig, tasks, strategy=None):
    """RL²: a recurrent policy sized by the task family; ``network.hidden[-1]`` is the cell width,
    the widths before it an MLP in front of the cell; the bandit family takes ``num_arms`` and the
    trial length from the algorithm config."""
    if strategy is not None:
        raise ValueError("`distribute` applies to the supervised learners only; RL² runs on one "
                         "device (set distribute: none)")
    cfg, net = config.algorithm_config, config.network
    if type(tasks).__name__ == "BernoulliBanditTasks":
        tasks = type(tasks)(num_arms=cfg.num_arms, num_pulls=cfg.episodes_per_trial)
    elif type(tasks).__name__ == "TabularMDPTasks":
        tasks = type(tasks)(num_episodes=cfg.episodes_per_trial, horizon=cfg.horizon or 10)
    elif type(tasks).__name__ in ("MetaWorldTasks", "PointNavTasks") and cfg.horizon:
        # the episode length is the family's TimeLimit: the trial's horizon must be the env's
        tasks = dataclasses.replace(tasks, horizon=cfg.horizon)
    policy = rl2_policy_for(tasks, units=net.hidden[-1], cell=cfg.cell, hidden=net.hidden[:-1],
                            activation=net.activation, seed=config.seed,
                            separate_value=cfg.separate_value)
    return RL2Learner(policy, tasks, cfg, seed=config.seed)


LEARNER_BUILDERS["rl2"] = _build_rl2_learner


# -- PEARL (off-policy meta-RL with a probabilistic context encoder) -----------------------------
from metarl_tf.algorithms.pearl import PEARLConfig, PEARLLearner, make_networks  # noqa: E402

ALGORITHMS["pearl"] = (PEARLConfig, PEARLLearner, {}, "pearl")
EXPORTERS["pearl"] = "export.context_policy:export_context_policy_learner"
for _task in ("pointnav", "halfcheetah-vel", "halfcheetah-dir", "ant-dir", "ml1"):
    _kinds = TASKS[_task][1]
    TASKS[_task] = (TASKS[_task][0], ((_kinds,) if isinstance(_kinds, str) else tuple(_kinds))
                    + ("pearl",))


def _build_pearl_learner(config: ExperimentConfig, tasks, strategy=None):
    """PEARL: encoder, actor and twin critics sized by the family's spaces; ``network`` sets the
    actor's and critics' widths, ``algorithm_config.encoder_hidden`` the encoder's."""
    if strategy is not None:
        raise ValueError("`distribute` applies to the supervised learners only; PEARL runs on one "
                         "device (set distribute: none)")
    cfg, net = config.algorithm_config, config.network
    if cfg.horizon:
        tasks = dataclasses.replace(tasks, horizon=cfg.horizon)
    env = tasks.make_env()
    space, obs_dim = env.action_space, int(env.observation_space.shape[0])
    env.close()
    networks = make_networks(obs_dim, int(space.shape[0]), space.low, space.high, cfg.latent_dim,
                             net.hidden, cfg.encoder_hidden, net.activation,
                             cfg.use_information_bottleneck, cfg.use_next_obs_in_context,
                             seed=config.seed)
    return PEARLLearner(networks, tasks, cfg, seed=config.seed)


LEARNER_BUILDERS["pearl"] = _build_pearl_learner
