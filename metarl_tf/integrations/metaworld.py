"""Meta-World's official meta-RL protocol for ML10 / ML45, run by Meta-World's own evaluator.

The score is ``metaworld.evaluation.metalearning_evaluation`` (Meta-World 3.1.1) on Meta-World's own
vector environments::

    envs = gymnasium.make_vec("Meta-World/ML10-test", seed=0, meta_batch_size=20,
                              total_tasks_per_cls=40)   # 5 test classes x 4 sub-envs x 10 goals
    success, mean_return, per_task = metalearning_evaluation(agent, envs, num_evals=10,
        adaptation_steps=1, adaptation_episodes=10, evaluation_episodes=3)

Per round, every sub-environment takes its next goal (``sample_tasks``), the agent explores for
``adaptation_episodes`` episodes of 500 steps, adapts once per ``adaptation_steps``, then Meta-World
runs the adapted agent with terminate-on-success until each test class has ``evaluation_episodes``
finished episodes and scores the fraction that succeeded (``info["success"]`` ever 1); the result
is the mean over classes and ``num_evals`` rounds.

``ML_PROTOCOL`` holds the settings: the evaluator's code defaults (``num_evals=10``,
``adaptation_steps=1``, ``adaptation_episodes=10``, ``evaluation_episodes=3``) with the meta-batch
and goal count its docs give for ML10/ML45 (``meta_batch_size=20``, 40 goals per test class,
``docs/evaluation/evaluation.md``; the code comment beside ``num_evals``: "40 goals per test task and
meta batch size of 20"), 500-step episodes (``max_path_length``) and reward version v2 (Meta-World's
default; Meta-World+ arXiv:2505.11289 shows scores move between v1 and v2).

``evaluate_protocol`` scores one agent on the splits asked for, each twice with the same goals
(fresh environments from the same seed): **adapted** (the protocol above) and **unadapted**
(``adaptation_steps=0``: ``init`` and straight to the evaluation, so the meta-learned policy acts
without having seen the task), so that what adaptation adds is visible. The splits:

* ``"test"``: ``Meta-World/<bench>-test``, the 5 held-out classes: **meta-test success**;
* ``"train"``: ``Meta-World/<bench>-train`` at the benchmark seed, the training classes and goals:
  **meta-train success**;
* ``"validation"``: ``Meta-World/<bench>-train`` at ``benchmark_seed + VALIDATION_SEED_OFFSET``:
  the training classes with goals never trained on (``MetaWorldTasks``' validation split) -- what
  to tune on, since the test classes are the test split.

Example::

    from metarl_tf.tasks.metaworld import MAMLMetaWorldAgent
    result = evaluate_protocol(lambda n: MAMLMetaWorldAgent(learner, num_envs=n),
                               ProtocolConfig("ML10"), splits=("test", "train"))
    result["test"]["success"], result["test"]["unadapted_success"], result["test"]["per_task"]
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import time
from typing import Callable, Sequence

try:
    import gymnasium
    import metaworld
    from metaworld.evaluation import metalearning_evaluation
except ImportError as _err:
    raise ImportError("metarl_tf.integrations.metaworld needs Meta-World: pip install "
                      "'metarl-tf[metaworld]' (metaworld==3.1.1) "
                      f"[{type(_err).__name__}: {_err}]") from _err

from metarl_tf._checks import check_int
from metarl_tf.tasks.metaworld import MAX_PATH_LENGTH, REWARD_VERSIONS, VALIDATION_SEED_OFFSET

PROTOCOL_BENCHMARKS = ("ML10", "ML45")
PROTOCOL_SPLITS = ("test", "train", "validation")
NUM_TRAIN_CLASSES = {"ML10": 10, "ML45": 45}
NUM_TEST_CLASSES = 5


@dataclasses.dataclass(frozen=True)
class ProtocolConfig:
    """Settings of Meta-World's meta-RL evaluation; the defaults are its ML10/ML45 protocol.

    ``meta_batch_size`` is the test split's number of sub-environments; the train and validation
    splits use the smallest multiple of the number of train classes that is at least it (ML10: 20,
    ML45: 45; Meta-World requires whole sub-environments per class).
    """

    benchmark: str = "ML10"  # "ML10" or "ML45".
    benchmark_seed: int = 0  # Goal seed (Meta-World's `seed`): test and train goals, env seeds.
    meta_batch_size: int = 20  # Test sub-environments (MW docs: 20 for ML10/ML45).
    total_tasks_per_cls: int = 40  # Goals used per class (MW docs: 40 per test task).
    num_evals: int = 10  # Rounds, a new goal per sub-environment each (MW default 10).
    adaptation_steps: int = 1  # Adapt calls per round (MW default 1).
    adaptation_episodes: int = 10  # Exploration episodes per sub-environment per adapt (MW: 10).
    evaluation_episodes: int = 3  # Finished episodes scored per class per round (MW default 3).
    max_episode_steps: int = MAX_PATH_LENGTH  # Episode length (MW: max_path_length, 500).
    reward_function_version: str = "v2"  # Meta-World's reward version (its default, v2).
    num_goals: int = 50  # Goals generated per class (Meta-World's _N_GOALS, 50; fewer: tests).

    def __post_init__(self):
        if self.benchmark not in PROTOCOL_BENCHMARKS:
            raise ValueError(f"`benchmark` must be one of {PROTOCOL_BENCHMARKS}, got "
                             f"{self.benchmark!r}")
        check_int(self, "benchmark_seed", minimum=0)
        for name in ("meta_batch_size", "total_tasks_per_cls", "num_evals", "adaptation_episodes",
                     "evaluation_episodes", "max_episode_steps", "num_goals"):
            check_int(self, name)
        check_int(self, "adaptation_steps", minimum=0)
        if self.max_episode_steps > MAX_PATH_LENGTH:
            raise ValueError(f"`max_episode_steps` must be <= {MAX_PATH_LENGTH} (Meta-World's "
                             f"max_path_length), got {self.max_episode_steps}")
        if self.reward_function_version not in REWARD_VERSIONS:
            raise ValueError(f"`reward_function_version` must be one of {REWARD_VERSIONS}, got "
                             f"{self.reward_function_version!r}")
        if self.total_tasks_per_cls > self.num_goals:
            raise ValueError(f"`total_tasks_per_cls` ({self.total_tasks_per_cls}) must be <= "
                             f"`num_goals` ({self.num_goals})")
        if self.meta_batch_size % NUM_TEST_CLASSES:
            raise ValueError(f"`meta_batch_size` must be a multiple of the {NUM_TEST_CLASSES} test "
                             f"classes, got {self.meta_batch_size}")
        for split in PROTOCOL_SPLITS:
            classes = NUM_TEST_CLASSES if split == "test" else NUM_TRAIN_CLASSES[self.benchmark]
            batch = self.split_meta_batch_size(split)
            per_class = batch // classes
            if self.total_tasks_per_cls % per_class:
                raise ValueError(
                    f"`total_tasks_per_cls` ({self.total_tasks_per_cls}) must be a multiple of "
                    f"the sub-environments per class of the {split} split ({batch} sub-envs / "
                    f"{classes} classes = {per_class}); Meta-World splits a class's goals evenly")

    def split_meta_batch_size(self, split: str) -> int:
        """Sub-environments of a split's vector env (see the class docstring)."""
        if split == "test":
            return self.meta_batch_size
        classes = NUM_TRAIN_CLASSES[self.benchmark]
        return classes * -(-self.meta_batch_size // classes)

    def split_seed(self, split: str) -> int:
        """The Meta-World seed of a split's vector env (validation: the offset goal seed)."""
        if split == "validation":
            return self.benchmark_seed + VALIDATION_SEED_OFFSET
        return self.benchmark_seed


ML_PROTOCOL = {"ML10": ProtocolConfig("ML10"), "ML45": ProtocolConfig("ML45")}


def make_protocol_envs(config: ProtocolConfig, split: str = "test",
                       env_kwargs: dict | None = None) -> gymnasium.vector.VectorEnv:
    """Meta-World's own vector env of a split: what ``gymnasium.make_vec("Meta-World/ML10-test",
    seed=..., meta_batch_size=..., total_tasks_per_cls=..., max_episode_steps=...)`` builds.

    It is built by the function that entry point calls (``make_ml_envs``' body, with the test /
    train entry's ``terminate_on_success`` and ``task_select="pseudorandom"``) from the benchmark
    object ``MetaWorldTasks.build`` caches, so that scoring twice per split does not regenerate the
    goals (~6 s for ML10, ~30 s for ML45 each time); the sub-environments' goal lists are the same
    (checked in ``tests/test_metaworld_protocol.py``). ``env_kwargs`` go to Meta-World's env
    builder (e.g. ``recurrent_info_in_obs``).
    """
    from metarl_tf.tasks.metaworld import MetaWorldTasks

    if split not in PROTOCOL_SPLITS:
        raise ValueError(f"`split` must be one of {PROTOCOL_SPLITS}, got {split!r}")
    mw_split = "test" if split == "test" else "train"
    seed = config.split_seed(split)
    benchmark = MetaWorldTasks(config.benchmark, None, num_goals=config.num_goals).build(seed)
    return metaworld._make_ml_envs_inner(
        benchmark, meta_batch_size=config.split_meta_batch_size(split), seed=seed,
        total_tasks_per_cls=config.total_tasks_per_cls, split=mw_split,
        terminate_on_success=(mw_split == "test"), task_select="pseudorandom",
        max_episode_steps=config.max_episode_steps,
        reward_function_version=config.reward_function_version, **(env_kwargs or {}))


def evaluate_protocol(make_agent: Callable[[int], object], config: ProtocolConfig | None = None,
                      splits: Sequence[str] = ("test",), unadapted: bool = True,
                      env_kwargs: dict | None = None) -> dict:
    """Scores an agent with ``metalearning_evaluation`` on each split, adapted and unadapted.

    Args:
      make_agent: ``num_envs -> agent`` implementing ``metaworld.evaluation.MetaLearningAgent``
        (``MAMLMetaWorldAgent``, ``RL2MetaWorldAgent``); a fresh agent per evaluation.
      config: the protocol (default: ``ML_PROTOCOL["ML10"]``).
      splits: any of ``"test"`` (meta-test success), ``"train"`` (meta-train success),
        ``"validation"`` (train classes, unseen goals).
      unadapted: also score the agent with ``adaptation_steps=0`` on the same goals.
      env_kwargs: extra arguments of Meta-World's env builder.

    Returns:
      ``{"protocol": {...settings, evaluator, metaworld version}, split: {"success",
      "mean_return", "per_task" {class: success}, "unadapted_success", "unadapted_mean_return",
      "unadapted_per_task", "seconds"}}``.
    """
    config = ML_PROTOCOL["ML10"] if config is None else config
    if not isinstance(config, ProtocolConfig):
        raise TypeError(f"`config` must be a ProtocolConfig, got {type(config).__name__}")
    if not callable(make_agent):
        raise TypeError(f"`make_agent` must be a callable num_envs -> agent, got "
                        f"{type(make_agent).__name__}")
    splits = list(splits)
    bad = [s for s in splits if s not in PROTOCOL_SPLITS]
    if bad or not splits:
        raise ValueError(f"`splits` must be a non-empty list of {PROTOCOL_SPLITS}, got {splits}")
    out = {"protocol": {**dataclasses.asdict(config),
                        "evaluator": "metaworld.evaluation.metalearning_evaluation",
                        "metaworld": importlib.metadata.version("metaworld"),
                        "unadapted": "the same evaluator with adaptation_steps=0"}}
    modes = [("", config.adaptation_steps)] + ([("unadapted_", 0)] if unadapted else [])
    for split in splits:
        row = {"meta_batch_size": config.split_meta_batch_size(split),
               "seed": config.split_seed(split)}
        start = time.perf_counter()
        for prefix, steps in modes:
            envs = make_protocol_envs(config, split, env_kwargs)   # fresh: the same goals
            try:
                agent = make_agent(envs.num_envs)
                success, mean_return, per_task = metalearning_evaluation(
                    agent, envs, num_evals=config.num_evals, adaptation_steps=steps,
                    adaptation_episodes=config.adaptation_episodes,
                    evaluation_episodes=config.evaluation_episodes)
            finally:
                envs.close()
            row[f"{prefix}success"] = float(success)
            row[f"{prefix}mean_return"] = float(mean_return)
            row[f"{prefix}per_task"] = {str(k): float(v) for k, v in sorted(per_task.items())}
        row["seconds"] = time.perf_counter() - start
        out[split] = row
    return out


def format_protocol(result: dict) -> str:
    """A few lines of text: per split the adapted and unadapted success and per-task success."""
    lines = []
    p = result["protocol"]
    lines.append(f"# {p['benchmark']} protocol: metalearning_evaluation num_evals={p['num_evals']} "
                 f"adaptation_steps={p['adaptation_steps']} adaptation_episodes="
                 f"{p['adaptation_episodes']} evaluation_episodes={p['evaluation_episodes']} "
                 f"meta_batch_size={p['meta_batch_size']} total_tasks_per_cls="
                 f"{p['total_tasks_per_cls']} episode_steps={p['max_episode_steps']} reward="
                 f"{p['reward_function_version']} seed={p['benchmark_seed']}")
    for split in PROTOCOL_SPLITS:
        if split not in result:
            continue
        r = result[split]
        line = f"split={split} success={r['success']:.4f}"
        if "unadapted_success" in r:
            line += f" unadapted_success={r['unadapted_success']:.4f}"
        line += f" mean_return={r['mean_return']:.1f}"
        if "unadapted_mean_return" in r:
            line += f" unadapted_mean_return={r['unadapted_mean_return']:.1f}"
        line += f" seconds={r['seconds']:.0f}"
        lines.append(line)
        for name, value in r["per_task"].items():
            extra = (f" unadapted={r['unadapted_per_task'][name]:.4f}"
                     if "unadapted_per_task" in r else "")
            lines.append(f"  {split}/{name} success={value:.4f}{extra}")
    return "\n".join(lines)


__all__ = ["ML_PROTOCOL", "ProtocolConfig", "evaluate_protocol", "format_protocol",
           "make_protocol_envs"]
