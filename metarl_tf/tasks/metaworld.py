"""Meta-World ML1, ML10 and ML45 as task families for the meta-RL samplers.

Meta-World (Yu et al. 2019, arXiv:1910.10897; the ``metaworld`` package 3.1.x, MuJoCo 3.3.0) through
its classic API (see ``PAPERS.md`` section 5)::

    benchmark = metaworld.ML1("reach-v3", seed=0)      # or metaworld.ML10(seed=0)
    benchmark.train_classes / benchmark.test_classes   # {env name: environment class}
    benchmark.train_tasks   / benchmark.test_tasks     # [metaworld.types.Task], 50 goals per class
    env = benchmark.train_classes["reach-v3"]()
    env.set_task(benchmark.train_tasks[0])

* ML1: one manipulation environment; train and test tasks are different goal (and object) positions
  of it (Meta-World draws the test goals with ``seed + 1``).
* ML10: 10 training environments and 5 different held-out test environments; ML45: 45 and 5.
* Splits: ``"train"`` is Meta-World's ``train_tasks`` (what training samples from), ``"test"`` its
  ``test_tasks`` (ML10/ML45: the held-out environment classes; touched only to report), and
  ``"validation"`` this library's tuning split: the TRAIN classes with goals drawn by Meta-World's
  own generator at ``benchmark_seed + VALIDATION_SEED_OFFSET`` (``metaworld.ML10(seed=s + 10000)
  .train_tasks``), so different goal/object positions than any training task. Tune on it, report
  on ``"test"``; it measures within-class goal generalisation, the only held-out data a benchmark
  whose test classes are the test split leaves for tuning.
* Reward: Meta-World's ``reward_function_version="v2"`` (its default; Meta-World+ arXiv:2505.11289
  shows results move between v1 and v2, so it is stated and configurable).
* The goal is hidden from the observation (39 floats, the goal slots zero); the horizon is
  Meta-World's ``max_path_length``, 500 steps; ``info["success"]`` is 1.0 on a step that solves the
  task (an episode counts as a success if it is ever 1, MW ``docs/evaluation/evaluation.md``).

This module gives the two pieces the samplers need:

* ``MetaWorldTasks``: a frozen description of the benchmark (``benchmark``, ``env_name``, the
  ``benchmark_seed`` that fixes the goals, ``num_goals``, ``horizon``) whose ``tasks(split)`` are
  Meta-World's own train / test lists and whose ``sample(num_tasks, seed, split)`` draws from one of
  them, stratified over the environment classes. Train and test are never mixed.
* ``MetaWorldEnv``: a ``gymnasium.Env`` with ``set_task`` / ``get_task`` and a settable ``task``
  property (so ``collect_episodes``'s ``set_attr("task", ...)`` drives it). It holds one Meta-World
  environment per class it has seen and switches between them as the task's class changes, so one
  sub-environment serves every task of ML10/ML45 (keeping at most ``max_cached_envs`` built, each
  MuJoCo model is ~18 MB). Registered as ``metarl_tf/ML1-v0`` (``env_name`` keyword, default
  ``"reach-v3"``), ``metarl_tf/ML10-v0`` and ``metarl_tf/ML45-v0``, with a 500-step ``TimeLimit``.
* ``ML10Tasks()`` / ``ML45Tasks()``: the two official families at the paper settings (500 steps).

Building a benchmark runs Meta-World's goal generation (measured here: ~6 s for ML10, ~30 s for
ML45; ML1 a few seconds); it is done once per process and cached. An environment whose task is set
before its first ``reset`` (the sampler's order) never builds one.

Example::

    tasks = MetaWorldTasks("ML1", "reach-v3")
    train = tasks.sample(20, seed=0)                      # 20 metaworld Tasks from the train split
    envs = make_vector_env(tasks.make_env, num_envs=20)
    episodes = collect_episodes(envs, policy, train, episodes_per_task=10, horizon=500)
"""
from __future__ import annotations

import dataclasses
import pickle
import threading

import gymnasium
import numpy as np

try:
    import metaworld
    from metaworld import env_dict as mw_env_dict
    from metaworld.types import Task
except ImportError as _err:
    raise ImportError("metarl_tf.tasks.metaworld needs Meta-World: pip install "
                      "'metarl-tf[metaworld]' (metaworld==3.1.1) "
                      f"[{type(_err).__name__}: {_err}]") from _err

from metarl_tf._checks import check_int
from metarl_tf.tasks.splits import split_index
from metarl_tf.tasks._task_env import TaskAttribute

ML1_ID = "metarl_tf/ML1-v0"
ML10_ID = "metarl_tf/ML10-v0"
ML45_ID = "metarl_tf/ML45-v0"
BENCHMARKS = ("ML1", "ML10", "ML45")
VALIDATION_SEED_OFFSET = 10_000  # validation goals: Meta-World's generator at benchmark_seed + this
REWARD_VERSIONS = ("v1", "v2")
MAX_PATH_LENGTH = 500  # metaworld.sawyer_xyz_env.SawyerXYZEnv.max_path_length
OBS_DIM = 39
ACT_DIM = 4

_BENCHMARKS: dict = {}   # (benchmark, env_name, benchmark_seed, num_goals) -> metaworld.Benchmark
_LOCK = threading.Lock()




def ml1_env_names() -> list[str]:
    """The environment names ML1 accepts (all Meta-World v3 environments)."""
    return list(metaworld.ML1.ENV_NAMES)


@dataclasses.dataclass(frozen=True)
class MetaWorldTasks:
    """A Meta-World meta-learning benchmark as a task family with a train and a test split.

    Args:
      benchmark: ``"ML1"``, ``"ML10"`` or ``"ML45"``.
      env_name: the ML1 environment (e.g. ``"reach-v3"``; ``ml1_env_names()`` lists them); must be
        ``None`` for ML10 / ML45.
      benchmark_seed: the seed passed to ``metaworld.ML1(env_name, seed=...)`` /
        ``metaworld.ML10(seed=...)``; it fixes the goal positions of both splits (the same seed
        given to ``gym.make_vec("Meta-World/ML1-test", seed=...)`` yields the same test goals).
      num_goals: goal variations generated per environment class (Meta-World's ``_N_GOALS``, 50;
        fewer builds faster).
      horizon: episode length, at most Meta-World's ``max_path_length`` (500).
      reward_function_version: Meta-World's reward (``"v2"``, its default, or ``"v1"``).
      max_cached_envs: built Meta-World environments each sub-environment keeps (least recently
        used dropped; one per class of a meta-batch would be 200 MuJoCo models for ML10).
    """

    benchmark: str = "ML1"  # "ML1", "ML10" or "ML45".
    env_name: str | None = "reach-v3"  # The ML1 environment; None for ML10 / ML45.
    benchmark_seed: int = 0  # Seed of Meta-World's goal generation (both splits).
    num_goals: int = 50  # Goals per environment class (Meta-World's _N_GOALS).
    horizon: int = MAX_PATH_LENGTH  # Episode length (the TimeLimit), <= 500.
    reward_function_version: str = "v2"  # Meta-World's reward version (stated in results).
    max_cached_envs: int = 2  # Built Meta-World envs kept per sub-environment (LRU).
    obs_dim = OBS_DIM
    act_dim = ACT_DIM

    def __post_init__(self):
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"`benchmark` must be one of {BENCHMARKS}, got {self.benchmark!r}")
        if self.benchmark == "ML1":
            if self.env_name not in metaworld.ML1.ENV_NAMES:
                raise ValueError(f"`env_name` {self.env_name!r} is not a Meta-World v3 "
                                 f"environment; valid names: {', '.join(ml1_env_names())}")
        elif self.env_name is not None:
            raise ValueError(f"`env_name` must be None for {self.benchmark} (its environments are "
                             f"fixed), got {self.env_name!r}")
        check_int(self, "benchmark_seed", minimum=0)
        check_int(self, "num_goals")
        check_int(self, "horizon")
        check_int(self, "max_cached_envs")
        if self.reward_function_version not in REWARD_VERSIONS:
            raise ValueError(f"`reward_function_version` must be one of {REWARD_VERSIONS}, got "
                             f"{self.reward_function_version!r}")
        if self.horizon > MAX_PATH_LENGTH:
            raise ValueError(f"`horizon` must be <= {MAX_PATH_LENGTH} (Meta-World's "
                             f"max_path_length), got {self.horizon}")

    # -- the benchmark -------------------------------------------------------------------------
    @property
    def validation_seed(self) -> int:
        """The goal-generation seed of the ``"validation"`` split."""
        return self.benchmark_seed + VALIDATION_SEED_OFFSET

    def build(self, seed: int | None = None) -> "metaworld.Benchmark":
        """The ``metaworld.ML1`` / ``ML10`` / ``ML45`` object at ``seed`` (default
        ``benchmark_seed``), built once per process and cached."""
        seed = self.benchmark_seed if seed is None else int(seed)
        key = (self.benchmark, self.env_name, seed, self.num_goals)
        with _LOCK:
            if key not in _BENCHMARKS:
                saved = metaworld._N_GOALS               # Meta-World's own knob (its MT entry
                metaworld._N_GOALS = self.num_goals      # points set it from `num_goals` too)
                try:
                    if self.benchmark == "ML1":
                        _BENCHMARKS[key] = metaworld.ML1(self.env_name, seed=seed)
                    else:
                        _BENCHMARKS[key] = getattr(metaworld, self.benchmark)(seed=seed)
                finally:
                    metaworld._N_GOALS = saved
            return _BENCHMARKS[key]

    def classes(self, split: str = "train") -> dict:
        """``{env name: Meta-World environment class}`` of a split (no benchmark build needed);
        ``"validation"`` has the train classes."""
        split_index(split)
        if self.benchmark == "ML1":            # metaworld.ML1: the same class in both splits
            return {self.env_name: mw_env_dict.ALL_V3_ENVIRONMENTS[self.env_name]}
        table = mw_env_dict.ML10_V3 if self.benchmark == "ML10" else mw_env_dict.ML45_V3
        return dict(table["test" if split == "test" else "train"])

    def env_names(self, split: str = "train") -> list[str]:
        """The environment names of a split (ML1: the one environment in both)."""
        return list(self.classes(split))

    def tasks(self, split: str = "train") -> list[Task]:
        """Meta-World's task list of a split, in its order: ``train_tasks``, ``test_tasks``, or
        for ``"validation"`` the ``train_tasks`` generated at ``validation_seed``."""
        split_index(split)
        if split == "validation":
            return list(self.build(self.validation_seed).train_tasks)
        bench = self.build()
        return list(bench.train_tasks if split == "train" else bench.test_tasks)

    def sample(self, num_tasks: int, seed: int, split: str = "train") -> list[Task]:
        """``num_tasks`` tasks of one split, stratified over its environment classes.

        Task ``i`` belongs to class ``order[i % C]`` (a seeded permutation of the ``C`` classes, so
        a meta-batch that is a multiple of ``C`` holds every class equally often, as Meta-World's
        ``make_ml_envs`` does); within a class the goals are drawn without replacement and
        reshuffled once all have been used.
        """
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, (int, np.integer)) \
                or num_tasks < 1:
            raise ValueError(f"`num_tasks` must be an integer >= 1, got {num_tasks!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"`seed` must be an integer, got {seed!r}")
        key = split_index(split)
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(key,)))
        by_class: dict[str, list[Task]] = {}
        for task in self.tasks(split):
            by_class.setdefault(task.env_name, []).append(task)
        names = list(by_class)
        order = [names[i] for i in rng.permutation(len(names))]
        queues: dict[str, list[int]] = {name: [] for name in names}
        out = []
        for i in range(int(num_tasks)):
            name = order[i % len(order)]
            if not queues[name]:
                queues[name] = list(rng.permutation(len(by_class[name])))
            out.append(by_class[name][queues[name].pop()])
        return out

    def make_env(self, task: Task | None = None, split: str = "train",
                 **kwargs) -> gymnasium.Env:
        """A ``MetaWorldEnv`` of this benchmark inside a ``TimeLimit(horizon)``."""
        kwargs.setdefault("reward_function_version", self.reward_function_version)
        kwargs.setdefault("max_cached_envs", self.max_cached_envs)
        env = MetaWorldEnv(benchmark=self.benchmark, env_name=self.env_name,
                           benchmark_seed=self.benchmark_seed, num_goals=self.num_goals,
                           split=split, task=task, **kwargs)
        return gymnasium.wrappers.TimeLimit(env, max_episode_steps=self.horizon)


def ML10Tasks(**kwargs) -> MetaWorldTasks:
    """Meta-World ML10 (10 train classes, 5 test classes, 500-step episodes, reward v2)."""
    return MetaWorldTasks(benchmark="ML10", env_name=None, **kwargs)


def ML45Tasks(**kwargs) -> MetaWorldTasks:
    """Meta-World ML45 (45 train classes, 5 test classes, 500-step episodes, reward v2)."""
    return MetaWorldTasks(benchmark="ML45", env_name=None, **kwargs)


def task_goal(task: Task) -> tuple[str, np.ndarray]:
    """``(env_name, rand_vec)`` of a Meta-World task: its class and its goal/object positions."""
    _check_task(task)
    return task.env_name, np.asarray(pickle.loads(task.data)["rand_vec"], np.float64)


def _check_task(task) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"a Meta-World task must be a metaworld.types.Task (from "
                        f"MetaWorldTasks.sample / .tasks), got {type(task).__name__}")




class MetaWorldEnv(TaskAttribute, gymnasium.Env):
    """One sub-environment for any task of a Meta-World ML benchmark.

    Args:
      env_name: the ML1 environment (``None`` for ML10 / ML45).
      benchmark: ``"ML1"``, ``"ML10"`` or ``"ML45"``.
      benchmark_seed: the benchmark seed (only used to draw a default task, see below).
      num_goals: goals per class of that benchmark (idem).
      split: the split a default task is drawn from.
      task: the initial task; ``None`` draws one from ``split`` with the env's ``np_random`` at the
        first reset (which builds the benchmark: slow, see the module docstring).
      terminate_on_success: end the episode (``terminated``) on the first successful step, as
        Meta-World's evaluation does; off by default (training runs the full horizon).
      reward_function_version: Meta-World's reward version (``"v2"``, its default).
      max_cached_envs: built Meta-World environments kept (least recently used closed first).

    Observations are float64 ``[39]``, actions float32 ``[4]`` in ``[-1, 1]`` (all v3 environments
    share them). ``info`` is Meta-World's (``success`` as a float, ``near_object``,
    ``grasp_success``, ``grasp_reward``, ``in_place_reward``, ``obj_to_target``,
    ``unscaled_reward``). ``set_task`` takes effect at the next ``reset`` (Meta-World applies the
    goal when it resets).
    """

    metadata = {"render_modes": []}

    def __init__(self, env_name: str | None = "reach-v3", benchmark: str = "ML1",
                 benchmark_seed: int = 0, num_goals: int = 50, split: str = "train",
                 task: Task | None = None, terminate_on_success: bool = False,
                 reward_function_version: str = "v2", max_cached_envs: int = 2):
        self.family = MetaWorldTasks(benchmark=benchmark, env_name=env_name,
                                     benchmark_seed=benchmark_seed, num_goals=num_goals,
                                     reward_function_version=reward_function_version,
                                     max_cached_envs=max_cached_envs)
        split_index(split)
        self.split = split
        self.terminate_on_success = bool(terminate_on_success)
        self._reward_version = reward_function_version
        self._classes = {**self.family.classes("train"), **self.family.classes("test")}
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(OBS_DIM,),
                                                      dtype=np.float64)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(ACT_DIM,), dtype=np.float32)
        self._envs: dict = {}           # env name -> Meta-World environment instance
        self._env = None                # the active one
        self._task: Task | None = None
        self._pending = True            # the task changed since the last reset
        self._seed: int | None = None
        if task is not None:
            self.set_task(task)

    # -- the task protocol ---------------------------------------------------------------------
    def set_task(self, task: Task) -> None:
        """Sets the task (a ``metaworld.types.Task`` of this benchmark); applies at next reset."""
        _check_task(task)
        if task.env_name not in self._classes:
            raise ValueError(f"task of environment {task.env_name!r} does not belong to "
                             f"{self.family.benchmark}; valid environments: "
                             f"{', '.join(self._classes)}")
        env = self._envs.pop(task.env_name, None)
        if env is None:
            while len(self._envs) >= self.family.max_cached_envs:   # least recently used first
                self._envs.pop(next(iter(self._envs))).close()
            env = self._classes[task.env_name](reward_function_version=self._reward_version)
            if self._seed is not None:
                env.seed(self._seed)
        self._envs[task.env_name] = env             # most recently used last
        env.set_task(task)
        self._env, self._task, self._pending = env, task, True

    def get_task(self) -> Task | None:
        return self._task

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "task" in options:
            self.set_task(options["task"])
        if self._task is None:
            pool = self.family.tasks(self.split)
            self.set_task(pool[int(self.np_random.integers(len(pool)))])
        if seed is not None:
            self._seed = int(seed)
            self._env.seed(int(seed))
        obs, info = self._env.reset()
        self._pending = False
        return obs, info

    def step(self, action):
        if self._env is None or self._pending:
            raise RuntimeError("MetaWorldEnv.step called before reset (a new task applies at "
                               "reset)")
        action = np.asarray(action, np.float32)
        if action.shape != (ACT_DIM,) or not np.isfinite(action).all():
            raise ValueError(f"`action` must be a finite vector of shape ({ACT_DIM},), got {action!r}")
        obs, reward, terminated, truncated, info = self._env.step(action)
        info = dict(info)
        info["success"] = float(info.get("success", 0.0))
        if self.terminate_on_success and info["success"] > 0:
            terminated = True
        return obs, float(reward), bool(terminated), bool(truncated), info

    def close(self):
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self._env = None


# -- Meta-World's evaluation protocol ------------------------------------------------------------
class MAMLMetaWorldAgent:
    """A gradient-based meta-learner as Meta-World's ``metaworld.evaluation.MetaLearningAgent``.

    Meta-World scores meta-RL with its own loop (``metaworld.evaluation.metalearning_evaluation``,
    PAPERS.md section 5)::

        for each evaluation round:
            envs.call("sample_tasks"); agent.init()              # a new test goal per sub-env
            repeat adaptation_steps times:
                run adaptation_episodes episodes per sub-env:
                    actions, aux = agent.adapt_action(obs); ...; agent.step(Timestep(...))
                agent.adapt()
            evaluation(agent, envs, evaluation_episodes)       # agent.eval_action / agent.reset

    Here sub-environment ``e`` is task ``e`` of a task-batched policy: ``init`` tiles the
    meta-parameters over the ``num_envs`` sub-environments, ``step`` cuts each sub-environment's
    stream of timesteps into episodes, and ``adapt`` takes ONE inner step per sub-environment on
    its episodes with the learner's own inner update (``learner._prepare_and_adapt``: advantages
    over the linear feature baseline, the LVC/DiCE policy gradient, ``adaptation.adapt`` with the
    learner's rule -- the step ``MAMLRLLearner.evaluate`` and the exported ``adapt`` signature
    take). Actions come from ``policy_from_params`` (NumPy forward for Gaussian MLPs): sampled
    while adapting, the mean (``deterministic_eval``) while evaluating.

    Args:
      learner: a trained ``MAMLRLLearner`` (or subclass) whose policy fits the environments.
      num_envs: sub-environments of the evaluation vector env (its ``meta_batch_size``).
      seed: seeds the exploration noise (round ``k`` of ``init`` uses ``(seed, k)``).
      deterministic_eval: act with the policy mean in ``eval_action`` (else sample).

    Example::

        envs = gymnasium.make_vec("Meta-World/ML1-test", env_name="reach-v3", meta_batch_size=10)
        agent = MAMLMetaWorldAgent(learner, num_envs=10)
        success, mean_return, per_task = metalearning_evaluation(
            agent, envs, num_evals=5, evaluation_episodes=10)
    """

    def __init__(self, learner, num_envs: int, seed: int = 0, deterministic_eval: bool = True):
        for name in ("fmodel", "apply_fn", "distribution", "_prepare_and_adapt", "_theta"):
            if not hasattr(learner, name):
                raise TypeError(f"`learner` must be a MAMLRLLearner (missing `{name}`), got "
                                f"{type(learner).__name__}")
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"`num_envs` must be an integer >= 1, got {num_envs!r}")
        import tensorflow as tf
        self.learner, self.num_envs, self.seed = learner, num_envs, int(seed)
        self.deterministic_eval = bool(deterministic_eval)
        self._adapt_fn = tf.function(learner._prepare_and_adapt)
        self._round = 0
        self.params = None
        self.adapt_calls = 0

    # -- MetaLearningAgent ----------------------------------------------------------------------
    def init(self) -> None:
        """New tasks: back to the meta-learned parameters, empty episode buffers."""
        theta = self.learner._theta()
        policy, extra = self.learner._split(theta)
        self._extra = extra
        self.params = self.learner.fmodel.tile(policy, self.num_envs)
        self._round += 1
        self._start_buffers()
        self._make_policies()

    def adapt_action(self, observations):
        """Exploration actions ``[num_envs, act_dim]`` (sampled) and an (empty) aux dict."""
        self._check_init()
        return np.asarray(self._explore(self._obs(observations), self._ids), np.float64), {}

    def step(self, timestep) -> None:
        """Records one vector step (``metaworld.evaluation.Timestep``), closing ended episodes."""
        self._check_init()
        obs = self._obs(timestep.observation)
        done = np.logical_or(timestep.terminated, timestep.truncated)
        for e in range(self.num_envs):
            current = self._current[e]
            current[0].append(obs[e])
            current[1].append(np.asarray(timestep.action[e], np.float32))
            current[2].append(float(timestep.reward[e]))
            if done[e]:
                self._episodes[e].append(tuple(np.asarray(x, np.float32) for x in current))
                self._current[e] = ([], [], [])

    def adapt(self) -> None:
        """One inner step per sub-environment on the episodes recorded since the last adapt."""
        self._check_init()
        episodes = self.recorded_episodes()
        _, self.params = self._adapt_fn(self.params, episodes, self._extra)
        self.adapt_calls += 1
        self._start_buffers()
        self._make_policies()

    def eval_action(self, observations):
        """Actions of the (adapted) policy: its mean unless ``deterministic_eval=False``."""
        self._check_init()
        return np.asarray(self._act(self._obs(observations), self._ids), np.float64)

    def reset(self, env_mask) -> None:
        """Episode boundaries of the evaluation: nothing to reset (the policy is feed-forward)."""

    # -- helpers --------------------------------------------------------------------------------
    def recorded_episodes(self):
        """The completed episodes since the last ``init``/``adapt`` as ``Episodes`` ``[E, N, H]``.

        ``N`` is the smallest number of completed episodes over the sub-environments (each keeps
        its first ``N``), ``H`` the longest of them; shorter episodes are zero-padded and masked.
        Raises ``ValueError`` if some sub-environment has no completed episode, or the episodes
        hold NaN/inf (``check_episodes``).
        """
        from metarl_tf.rollouts.episodes import Episodes, check_episodes
        counts = [len(eps) for eps in self._episodes]
        if min(counts) < 1:
            empty = [e for e, c in enumerate(counts) if c < 1]
            raise ValueError(f"sub-environments {empty} have no completed episode to adapt on; "
                             "run whole episodes through `step` before `adapt`")
        n = min(counts)
        h = max(len(ep[2]) for eps in self._episodes for ep in eps[:n])
        obs_dim = self._episodes[0][0][0].shape[-1]
        act_dim = self._episodes[0][0][1].shape[-1]
        obs = np.zeros((self.num_envs, n, h, obs_dim), np.float32)
        act = np.zeros((self.num_envs, n, h, act_dim), np.float32)
        rew = np.zeros((self.num_envs, n, h), np.float32)
        mask = np.zeros((self.num_envs, n, h), np.float32)
        for e, eps in enumerate(self._episodes):
            for i, (o, a, r) in enumerate(eps[:n]):
                t = len(r)
                obs[e, i, :t], act[e, i, :t], rew[e, i, :t], mask[e, i, :t] = o, a, r, 1.0
        episodes = Episodes(obs, act, rew, mask)
        check_episodes(episodes)
        return episodes

    def _check_init(self):
        if self.params is None:
            raise RuntimeError("MAMLMetaWorldAgent: call init() before acting (Meta-World's "
                               "metalearning_evaluation does)")

    def _start_buffers(self):
        self._episodes = [[] for _ in range(self.num_envs)]
        self._current = [([], [], []) for _ in range(self.num_envs)]

    def _make_policies(self):
        from metarl_tf.rollouts.sampler import policy_from_params
        self._ids = np.arange(self.num_envs, dtype=np.int32)
        noise_seed = int(np.random.SeedSequence([self.seed, self._round, self.adapt_calls])
                         .generate_state(1)[0] & 0x7FFFFFFF)
        self._explore = policy_from_params(self.learner.apply_fn, self.params,
                                           self.learner.distribution, seed=noise_seed)
        self._act = policy_from_params(self.learner.apply_fn, self.params,
                                       self.learner.distribution, seed=noise_seed + 1,
                                       deterministic=self.deterministic_eval)

    def _obs(self, observations):
        obs = np.asarray(observations, np.float32)
        if obs.shape[0] != self.num_envs:
            raise ValueError(f"expected observations for {self.num_envs} sub-environments, got "
                             f"shape {obs.shape}")
        return obs


def first_episode_success(agent, envs, num_evals: int = 5, adaptation_steps: int = 1,
                          adaptation_episodes: int = 10):
    """Meta-World's adaptation protocol, scored on exactly ONE evaluation episode per test goal.

    ``metalearning_evaluation`` counts the first ``evaluation_episodes`` episodes that end, pooled
    over a task's sub-environments; with terminate-on-success the successful ones end first, so
    quick solvers can be counted twice and slow failures not at all. This runs the same
    adaptation (``sample_tasks``, ``init``, ``adaptation_steps`` x ``adaptation_episodes``,
    ``adapt``) and then one episode per sub-environment (terminate-on-success on, as Meta-World),
    an episode succeeding if ``info["success"]`` is ever 1.

    Returns:
      ``(success_rate, per_goal)``: the mean over the ``num_evals * num_envs`` goals and each
      goal's 0/1 outcome.
    """
    envs.call("toggle_sample_tasks_on_reset", False)
    outcomes = []
    for _ in range(num_evals):
        envs.call("toggle_terminate_on_success", False)
        envs.call("sample_tasks")
        agent.init()
        for _ in range(adaptation_steps):
            obs, _ = envs.reset()
            elapsed = np.zeros(envs.num_envs, np.int64)
            while not (elapsed >= adaptation_episodes).all():
                actions, aux = agent.adapt_action(obs)
                next_obs, rewards, terminated, truncated, _ = envs.step(actions)
                from metaworld.evaluation import Timestep
                agent.step(Timestep(obs, actions, rewards, terminated, truncated, aux))
                elapsed += np.logical_or(terminated, truncated)
                obs = next_obs
            agent.adapt()
        envs.call("toggle_terminate_on_success", True)
        obs, _ = envs.reset()
        agent.reset(np.ones(envs.num_envs, bool))
        result = np.full(envs.num_envs, -1)
        while (result < 0).any():
            obs, _, terminated, truncated, _ = envs.step(agent.eval_action(obs))
            ended = np.logical_or(terminated, truncated) & (result < 0)
            result[ended] = np.asarray(terminated)[ended].astype(int)   # terminated = success
        outcomes.extend(result.tolist())
    envs.call("toggle_terminate_on_success", False)
    return float(np.mean(outcomes)), outcomes
