"""TF-Agents interop: task families as TF-Agents environments, exports as TF-Agents policies.

TF-Agents (0.19, its last release) runs only under legacy Keras (``tf-keras`` with
``TF_USE_LEGACY_KERAS=1``) and pins ``typing_extensions==4.5.0``, so it lives in an environment of
its own (``make venv-tf-agents``; the extra ``metarl-tf[tf-agents]``; docs/TF_AGENTS.md). It meets
this library where no Keras is involved: the gymnasium task environments and the exported
SavedModels, loaded with plain ``tf.saved_model.load``.

* ``TaskPyEnvironment``: any task family (``PointNavTasks``, ``HalfCheetahVelTasks``,
  ``MetaWorldTasks``, ``CartPoleDirTasks``, ``BernoulliBanditTasks``, ...) or task environment as a
  ``PyEnvironment`` with ``set_task``; ``set_tasks`` gives each environment of a batched,
  parallel or TF environment its task.
* ``ExportedPolicy`` (an ``AdaptablePolicy`` export: acts with the meta-learned weights until
  ``adapt``, then with the adapted ones), ``ExportedRL2Policy`` (the RL² export: its recurrent state
  is the TF-Agents policy state) and ``ExportedQPolicy`` (the Meta-DQN export: greedy or
  epsilon-greedy over Q with an adapted z): ``TFPolicy`` objects that drivers, metrics and
  ``PolicySaver`` take as they are.
* ``adapt_from_trajectories``: TF-Agents ``Trajectory`` batches -> an export's ``adapt`` inputs.

The loop::

    env = tf_py_environment.TFPyEnvironment(batched_py_environment.BatchedPyEnvironment(
        [TaskPyEnvironment(PointNavTasks()) for _ in range(20)]))
    set_tasks(env, goal, same=True)                       # one task for all 20
    policy = ExportedPolicy("exports/pointnav/1", env.time_step_spec(), env.action_spec())
    steps = []
    dynamic_episode_driver.DynamicEpisodeDriver(env, policy, [steps.append],
                                                num_episodes=20).run()
    policy.adapt(steps, num_steps=1)                      # now acts with the adapted weights
"""
from __future__ import annotations

import os

_LEGACY_KERAS = ("1", "true", "True")
if os.environ.get("TF_USE_LEGACY_KERAS") not in _LEGACY_KERAS:
    raise ImportError(
        "metarl_tf.integrations.tf_agents needs TF_USE_LEGACY_KERAS=1 in the environment before "
        "TensorFlow is imported (TF-Agents 0.19 and TensorFlow Probability 0.23 run only on "
        "legacy Keras); run e.g. `TF_USE_LEGACY_KERAS=1 .venv-tf-agents/bin/python ...` "
        "(docs/TF_AGENTS.md)")
try:
    import tf_agents  # noqa: F401
    from tf_agents.environments import py_environment, tf_py_environment
    from tf_agents.policies import tf_policy
    from tf_agents.specs import array_spec, tensor_spec
    from tf_agents.trajectories import policy_step
    from tf_agents.trajectories import time_step as ts
except ImportError as error:
    raise ImportError(
        "metarl_tf.integrations.tf_agents needs TF-Agents: install the extra "
        "`metarl-tf[tf-agents]` in an environment of its own (`make venv-tf-agents` builds "
        ".venv-tf-agents with constraints-tf-agents.txt) and run it with TF_USE_LEGACY_KERAS=1; "
        f"the import failed with: {error}") from error

from collections.abc import Mapping, Sequence  # noqa: E402

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_probability as tfp  # noqa: E402

__all__ = ["TaskPyEnvironment", "set_tasks", "spec_from_space", "ExportedPolicy",
           "ExportedRL2Policy", "ExportedQPolicy", "adapt_from_trajectories"]


# -- environments ------------------------------------------------------------------------------

def spec_from_space(space: gymnasium.Space, name: str = "observation"):
    """The TF-Agents array spec of a gymnasium space.

    ``Box`` -> ``BoundedArraySpec`` with the space's dtype and bounds (one scalar bound where all
    are equal; an ``ArraySpec`` when every bound is infinite, as for most observations);
    ``Discrete(n, start)`` -> a scalar int64 ``BoundedArraySpec`` over ``[start, start + n - 1]``;
    ``MultiDiscrete`` -> int64 bounded per entry; ``MultiBinary`` -> int8 in ``[0, 1]``;
    ``Dict`` and ``Tuple`` -> dicts and tuples of these. Other spaces raise ``TypeError``.
    """
    spaces = gymnasium.spaces
    if isinstance(space, spaces.Box):
        low, high = np.asarray(space.low), np.asarray(space.high)
        if np.all(np.isinf(low)) and np.all(np.isinf(high)):
            return array_spec.ArraySpec(space.shape, space.dtype, name=name)
        if np.issubdtype(space.dtype, np.floating):
            # A half-open box: the infinite side at the dtype's largest finite value.
            info = np.finfo(space.dtype)
            low = np.where(np.isneginf(low), info.min, low)
            high = np.where(np.isposinf(high), info.max, high)
        low = low.flat[0] if np.all(low == low.flat[0]) else low
        high = high.flat[0] if np.all(high == high.flat[0]) else high
        return array_spec.BoundedArraySpec(space.shape, space.dtype, low, high, name=name)
    if isinstance(space, spaces.Discrete):
        start = int(space.start)
        return array_spec.BoundedArraySpec((), np.int64, start, start + int(space.n) - 1, name=name)
    if isinstance(space, spaces.MultiDiscrete):
        start = np.asarray(space.start, np.int64)
        return array_spec.BoundedArraySpec(space.shape, np.int64, start,
                                           start + np.asarray(space.nvec, np.int64) - 1, name=name)
    if isinstance(space, spaces.MultiBinary):
        return array_spec.BoundedArraySpec(space.shape, np.int8, 0, 1, name=name)
    if isinstance(space, spaces.Dict):
        return {key: spec_from_space(sub, f"{name}/{key}") for key, sub in space.spaces.items()}
    if isinstance(space, spaces.Tuple):
        return tuple(spec_from_space(sub, f"{name}/{i}") for i, sub in enumerate(space.spaces))
    raise TypeError(f"`{name}` space {space!r} has no TF-Agents spec here: expected Box, Discrete, "
                    "MultiDiscrete, MultiBinary, Dict or Tuple")


def _to_spec(value, spec):
    """``value`` (a gymnasium observation/action) as arrays of ``spec``'s dtypes."""
    return tf.nest.map_structure(lambda v, s: np.asarray(v, dtype=s.dtype), value, spec)


def _to_space(action, space: gymnasium.Space):
    """A TF-Agents action (NumPy arrays) in the form ``space.contains`` expects."""
    if isinstance(space, gymnasium.spaces.Discrete):
        return int(np.asarray(action))
    if isinstance(space, gymnasium.spaces.Box):
        return np.asarray(action, dtype=space.dtype).reshape(space.shape)
    if isinstance(space, gymnasium.spaces.Dict):
        return {key: _to_space(action[key], sub) for key, sub in space.spaces.items()}
    if isinstance(space, gymnasium.spaces.Tuple):
        return tuple(_to_space(a, sub) for a, sub in zip(action, space.spaces))
    return np.asarray(action, dtype=space.dtype)


class TaskPyEnvironment(py_environment.PyEnvironment):
    """A metarl-tf task environment (gymnasium) as a TF-Agents ``PyEnvironment``.

    Args:
      env: a task family (anything with ``make_env``, e.g. ``PointNavTasks()``,
        ``MetaWorldTasks(benchmark="ML10", env_name=None)``), a registered id (``"metarl_tf/
        PointNav-v0"``), or a gymnasium environment whose ``unwrapped`` has ``set_task``.
      task: the first task (``None``: the family's default, drawn at the first reset).
      max_episode_steps: an extra time limit on top of the family's own horizon (the shorter
        wins), e.g. to keep a Meta-World episode (500 steps) short.
      discount: the discount of non-terminal steps (terminal steps have 0).
      seed: seeds the first reset (gymnasium's ``reset(seed=...)``); later resets continue the
        environment's random stream. ``seed()`` sets it again.
      env_kwargs: keyword arguments of the family's ``make_env`` (e.g. ``split="test"``).

    Steps follow TF-Agents: ``reset`` gives a ``FIRST`` step; a gymnasium ``terminated`` gives a
    ``LAST`` step with discount 0, ``truncated`` (the time limit) a ``LAST`` step with ``discount``
    (so that bootstrapping agents treat it as a cut, not an end); the ``step`` after a ``LAST``
    resets and ignores its action (TF-Agents' auto-reset). ``set_task`` takes effect at the next
    episode: the next ``step`` starts one. Specs come from the gymnasium spaces
    (``spec_from_space``); observations are cast to the observation space's dtype. To run in a
    ``ParallelPyEnvironment``, pass a constructor, e.g. ``functools.partial(TaskPyEnvironment,
    PointNavTasks())``: the family is pickled, the environment is built in the worker.
    """

    def __init__(self, env, task=None, *, max_episode_steps: int | None = None,
                 discount: float = 1.0, seed: int | None = None, env_kwargs: dict | None = None):
        super().__init__(handle_auto_reset=False)
        if max_episode_steps is not None and (isinstance(max_episode_steps, bool) or not
                                              isinstance(max_episode_steps, int)
                                              or max_episode_steps < 1):
            raise ValueError(f"`max_episode_steps` must be an integer >= 1 or None, got "
                             f"{max_episode_steps!r}")
        if isinstance(discount, bool) or not isinstance(discount, (int, float)) or not (
                0.0 <= discount <= 1.0):
            raise ValueError(f"`discount` must be a number in [0, 1], got {discount!r}")
        if env_kwargs and not hasattr(env, "make_env"):
            raise ValueError("`env_kwargs` applies only to a task family (an object with make_env)")
        if hasattr(env, "make_env"):
            env = env.make_env(**(env_kwargs or {}))
        elif isinstance(env, str):
            import metarl_tf.tasks  # noqa: F401  (registers the metarl_tf/ ids)
            env = gymnasium.make(env)
        if not isinstance(env, gymnasium.Env):
            raise TypeError(f"`env` must be a task family (with make_env), a registered gymnasium "
                            f"id or a gymnasium.Env, got {type(env).__name__}")
        if max_episode_steps is not None:
            env = gymnasium.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
        self.gym_env = env
        self._discount = np.asarray(discount, np.float32)
        self._seed = seed
        self._observation_spec = spec_from_space(env.observation_space, "observation")
        self._action_spec = spec_from_space(env.action_space, "action")
        self._task_changed = False
        self._info: dict = {}
        if task is not None:
            self.set_task(task)

    # -- the task protocol
    def set_task(self, task) -> None:
        """Sets the task of the environment; it applies from the next episode on."""
        target = self.gym_env.unwrapped
        if not hasattr(target, "set_task"):
            raise TypeError(f"{type(target).__name__} has no set_task: not a metarl-tf task "
                            "environment")
        target.set_task(task)
        self._task_changed = True

    def get_task(self):
        return self.gym_env.unwrapped.get_task()

    def should_reset(self, current_time_step: ts.TimeStep) -> bool:
        # A new task starts a new episode, as does the step after a LAST one.
        return self._task_changed or bool(np.all(current_time_step.is_last()))

    # -- PyEnvironment
    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self._action_spec

    def seed(self, seed: int | None) -> None:
        """Seeds the next reset (and so the environment's random stream from there on)."""
        self._seed = seed

    def get_info(self) -> dict:
        """The ``info`` dict gymnasium returned with the last ``reset`` or ``step``."""
        return self._info

    def _reset(self) -> ts.TimeStep:
        seed, self._seed = self._seed, None
        observation, self._info = self.gym_env.reset(seed=seed)
        self._task_changed = False
        return ts.restart(_to_spec(observation, self._observation_spec))

    def _step(self, action) -> ts.TimeStep:
        observation, reward, terminated, truncated, self._info = self.gym_env.step(
            _to_space(action, self.gym_env.action_space))
        observation = _to_spec(observation, self._observation_spec)
        reward = np.asarray(reward, np.float32)
        if terminated:
            return ts.termination(observation, reward)
        if truncated:
            return ts.truncation(observation, reward, self._discount)
        return ts.transition(observation, reward, self._discount)

    def render(self, mode: str = "rgb_array"):
        del mode  # gymnasium fixes the render mode when the environment is made
        return self.gym_env.render()

    def close(self) -> None:
        self.gym_env.close()


def set_tasks(env, tasks, *, same: bool = False) -> None:
    """Gives the environments of ``env`` their tasks (applied from their next episode).

    ``env``: a ``TaskPyEnvironment`` (a batch of one), a ``BatchedPyEnvironment`` or
    ``ParallelPyEnvironment`` of them, or a ``TFPyEnvironment`` around any of these. ``tasks``: one
    task per environment of the batch, in order (a sequence, or an array with a leading batch
    dimension); with ``same=True``, one task that every environment gets.
    """
    if isinstance(env, tf_py_environment.TFPyEnvironment):
        env = env.pyenv
    if isinstance(env, TaskPyEnvironment):
        subenvs = [env]
    else:
        subenvs = getattr(env, "envs", None)
        if subenvs is None:
            raise TypeError(f"`env` must be a TaskPyEnvironment, a batched or parallel environment "
                            f"of them, or a TFPyEnvironment around one; got {type(env).__name__}")
    if not same:
        if isinstance(tasks, (str, bytes)) or not hasattr(tasks, "__len__") or len(tasks) != len(
                subenvs):
            raise ValueError(f"`tasks` must hold one task per environment ({len(subenvs)}), or "
                             f"pass one task with same=True; got {type(tasks).__name__} of length "
                             f"{len(tasks) if hasattr(tasks, '__len__') else 'none'}")
    for i, sub in enumerate(subenvs):
        task = tasks if same else tasks[i]
        if hasattr(sub, "call"):     # a ProcessPyEnvironment: the environment is in its worker
            sub.call("set_task", task)()
        elif isinstance(sub, TaskPyEnvironment):
            sub.set_task(task)
        else:
            set_tasks(sub, task, same=True)


# -- trajectories -> adapt inputs --------------------------------------------------------------

_FIRST, _MID, _LAST = (int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST))


def _batched_numpy(trajectories):
    """A ``Trajectory`` with ``[B, T]`` leading dims as NumPy, from the forms drivers give."""
    if isinstance(trajectories, Sequence) and not hasattr(trajectories, "step_type"):
        if not trajectories:
            raise ValueError("`trajectories` is empty")
        # Observer output: one Trajectory per driver step, each [B] (or unbatched).
        steps = [tf.nest.map_structure(np.asarray, t) for t in trajectories]
        axis = 0 if np.ndim(steps[0].step_type) == 0 else 1      # time after the batch dim
        out = tf.nest.map_structure(lambda *xs: np.stack(xs, axis=axis), *steps)
    else:
        out = tf.nest.map_structure(np.asarray, trajectories)
    rank = np.ndim(out.step_type)
    if rank == 1:
        out = tf.nest.map_structure(lambda x: x[None], out)
    elif rank != 2:
        raise ValueError(f"`trajectories` must have step_type [T] or [B, T], got shape "
                         f"{np.shape(out.step_type)}")
    return out


def adapt_from_trajectories(trajectories, form: str = "episodes") -> dict:
    """Turns TF-Agents trajectories into the ``adapt`` inputs of an export.

    Args:
      trajectories: a ``Trajectory`` with leading dims ``[B, T]`` (a replay buffer's
        ``gather_all()``) or ``[T]``, or a list of per-step ``Trajectory`` batches ``[B]`` in time
        order (what a driver's observer receives; ``observers=[steps.append]``).
      form: ``"episodes"`` for an ``AdaptablePolicy``: ``observations`` ``[E, S, obs_dim]``,
        ``actions`` (``[E, S, act_dim]`` float32 or ``[E, S]`` int32), ``rewards`` and ``mask``
        ``[E, S]``, the complete episodes of every batch row padded to the longest (an episode
        still running at the end of a row is left out: its return is unknown).
        ``"transitions"`` for an ``AdaptableQNetwork``: ``observations``, ``actions``,
        ``rewards``, ``next_observations``, ``dones`` (1 where the next step is terminal, i.e.
        ``LAST`` with discount 0; a time-limit cut is not terminal), one per step whose next
        observation is in the batch.

    Returns a dict of NumPy arrays keyed by the ``adapt`` signature's input names (without
    ``num_steps``). Raises ``ValueError`` when no complete episode (or transition) is found.
    """
    if form not in ("episodes", "transitions"):
        raise ValueError(f"`form` must be 'episodes' or 'transitions', got {form!r}")
    traj = _batched_numpy(trajectories)
    if not isinstance(traj.observation, np.ndarray) or not isinstance(traj.action, np.ndarray):
        raise ValueError("`trajectories` must have one observation array and one action array per "
                         "step (the exports take flat observations), got "
                         f"{type(traj.observation).__name__} observations")
    step_type, next_type = traj.step_type.astype(np.int64), traj.next_step_type.astype(np.int64)
    obs = np.asarray(traj.observation, np.float32)
    obs = obs.reshape(obs.shape[:2] + (-1,))
    actions, rewards = np.asarray(traj.action), np.asarray(traj.reward, np.float32)
    actions = (actions.astype(np.float32).reshape(actions.shape[:2] + (-1,))
               if np.issubdtype(actions.dtype, np.floating) else actions.astype(np.int32))
    if rewards.ndim != 2:
        raise ValueError(f"`trajectories` reward must be a scalar per step, got shape "
                         f"{rewards.shape[2:]}")
    batch, length = step_type.shape
    if form == "transitions":
        valid = step_type[:, :-1] != _LAST           # a LAST step's action is never taken
        done = (next_type[:, :-1] == _LAST) & (np.asarray(traj.discount)[:, :-1] == 0.0)
        rows, cols = np.nonzero(valid)
        if rows.size == 0:
            raise ValueError("`trajectories` hold no transition (need two consecutive steps "
                             "within an episode)")
        return {"observations": obs[rows, cols], "actions": actions[rows, cols],
                "rewards": rewards[rows, cols], "next_observations": obs[rows, cols + 1],
                "dones": done[rows, cols].astype(np.float32)}
    episodes = []                                  # (row, first column, last column) inclusive
    for b in range(batch):
        start = None
        for t in range(length):
            if step_type[b, t] == _FIRST:
                start = t
            if start is not None and step_type[b, t] != _LAST and next_type[b, t] == _LAST:
                episodes.append((b, start, t))
                start = None
    if not episodes:
        raise ValueError("`trajectories` hold no complete episode (from a FIRST step to the step "
                         "before a LAST one); run the driver for whole episodes")
    steps = max(end - first + 1 for _, first, end in episodes)
    shape = (len(episodes), steps)
    out = {"observations": np.zeros(shape + obs.shape[2:], np.float32),
           "actions": np.zeros(shape + actions.shape[2:], actions.dtype),
           "rewards": np.zeros(shape, np.float32), "mask": np.zeros(shape, np.float32)}
    for e, (b, first, end) in enumerate(episodes):
        n = end - first + 1
        out["observations"][e, :n] = obs[b, first:end + 1]
        out["actions"][e, :n] = actions[b, first:end + 1]
        out["rewards"][e, :n] = rewards[b, first:end + 1]
        out["mask"][e, :n] = 1.0
    return out


# -- policies ----------------------------------------------------------------------------------

def _load(export):
    """A loaded SavedModel from a path (plain ``tf.saved_model.load``) or a loaded object."""
    if isinstance(export, (str, os.PathLike)):
        return tf.saved_model.load(os.fspath(export))
    if not hasattr(export, "signatures"):
        raise TypeError(f"`export` must be a SavedModel directory or a loaded SavedModel, got "
                        f"{type(export).__name__}")
    return export


def _signature(model, key: str, kind: str):
    if key not in model.signatures:
        raise ValueError(f"`export` is not {kind}: it has no {key!r} signature (it has "
                         f"{sorted(model.signatures)})")
    return model.signatures[key]


def _input_specs(fn) -> dict:
    return fn.structured_input_signature[1]


def _time_step_spec(time_step_spec, obs_dim: int):
    """The given time-step spec (checked against the export's width) or a float32 one."""
    if time_step_spec is None:
        return ts.time_step_spec(tf.TensorSpec([obs_dim], tf.float32, name="observation"))
    spec = tensor_spec.from_spec(time_step_spec)
    observation = spec.observation
    if not isinstance(observation, tf.TensorSpec) or observation.shape.rank != 1 or int(
            observation.shape[0]) != obs_dim:
        raise ValueError(f"`time_step_spec` observation must be one tensor of shape [{obs_dim}] "
                         f"(the export's observation width), got {observation}")
    return spec


def _action_spec(action_spec, default, what: str):
    if action_spec is None:
        return default
    spec = tensor_spec.from_spec(action_spec)
    if not isinstance(spec, tf.TensorSpec) or spec.shape != default.shape or (
            spec.dtype.is_integer != default.dtype.is_integer):
        raise ValueError(f"`action_spec` must be a tensor spec like {default} ({what}), got {spec}")
    return spec


def _flat_observation(time_step):
    """The observations as float32 ``[N, obs_dim]`` and the outer shape to restore."""
    obs = tf.convert_to_tensor(time_step.observation)
    outer = tf.shape(obs)[:-1]
    return tf.reshape(tf.cast(obs, tf.float32), [-1, obs.shape[-1]]), outer


def _restore(x, outer):
    return tf.reshape(x, tf.concat([outer, tf.shape(x)[1:]], axis=0))


class ExportedPolicy(tf_policy.TFPolicy):
    """An exported ``AdaptablePolicy`` (export/policy.py) as a TF-Agents ``TFPolicy``.

    Before ``adapt`` it acts as the export's ``serving_default`` (the meta-learned policy), after it
    as ``action_with_params`` with the adapted weights, which it keeps in a variable (so
    ``PolicySaver`` saves them). ``adapt`` always starts from the meta-learned weights and wants
    episodes of the meta-learned stochastic policy, as in training: collect with a
    ``greedy=False`` policy before adapting (or after ``reset_adaptation``); greedy actions, at the
    mean, give the mean's weights no policy gradient. ``set_params`` hands adapted weights to
    another wrapper (e.g. a greedy one for evaluation).

    Args:
      export: the version directory of the export, or the object ``tf.saved_model.load`` returned.
      time_step_spec, action_spec: the environment's (e.g. ``TFPyEnvironment.time_step_spec()``);
        default: float32 observations of the export's width, unbounded actions of its size
        (Gaussian) or int32 actions in ``[0, num_actions)`` (categorical). Observations of another
        dtype (Meta-World's float64) are cast to float32.
      greedy: act with the mean (Gaussian) or the most likely action (categorical) instead of
        sampling. The ``distribution`` is then deterministic too.

    Actions are not clipped to the action spec: the environment clips (every Box family here
    does), and ``adapt`` needs the actions as sampled, whose log-probabilities the inner
    policy-gradient step reweights.
    """

    def __init__(self, export, time_step_spec=None, action_spec=None, greedy: bool = False,
                 name: str | None = None):
        model = _load(export)
        serving = _signature(model, "serving_default", "an AdaptablePolicy export")
        self._serving = serving
        self._adapt_fn = _signature(model, "adapt", "an AdaptablePolicy export")
        self._with_params = _signature(model, "action_with_params", "an AdaptablePolicy export")
        specs = _input_specs(self._with_params)
        obs_dim, num_params = int(specs["observation"].shape[-1]), int(specs["params"].shape[0])
        outputs = serving.structured_outputs
        self.gaussian = "log_std" in outputs
        if self.gaussian:
            act_dim = int(outputs["action"].shape[-1])
            default = tf.TensorSpec([act_dim], tf.float32, name="action")
        else:
            num_actions = int(outputs["logits"].shape[-1])
            default = tensor_spec.BoundedTensorSpec([], tf.int32, 0, num_actions - 1, name="action")
        self._actions_dtype = _input_specs(self._adapt_fn)["actions"].dtype
        self._model = model
        self.greedy = bool(greedy)
        self.num_params = num_params
        self._params = tf.Variable(tf.zeros([num_params]), trainable=False, name="adapted_params")
        self._adapted = tf.Variable(False, trainable=False, name="adapted")
        super().__init__(_time_step_spec(time_step_spec, obs_dim),
                         _action_spec(action_spec, default,
                                      "Gaussian [act_dim]" if self.gaussian else "categorical []"),
                         clip=False, name=name)

    @property
    def adapted(self) -> bool:
        """Whether the policy acts with adapted weights."""
        return bool(self._adapted.numpy())

    @property
    def params(self) -> tf.Tensor:
        """The adapted weights (flat ``[num_params]``; zeros before ``adapt``)."""
        return tf.convert_to_tensor(self._params)

    def adapt(self, trajectories, num_steps: int = 1) -> tf.Tensor:
        """Adapts from episodes of the meta-learned policy; returns the flat adapted weights.

        ``trajectories``: what ``adapt_from_trajectories`` takes (a driver's observed steps, or a
        replay buffer's ``gather_all()``). ``num_steps`` inner policy-gradient steps (at most the
        export's ``max_num_steps``). The export refuses bad episodes by name (no valid step,
        NaN, ...).
        """
        inputs = adapt_from_trajectories(trajectories, "episodes")
        return self.adapt_with_inputs(inputs, num_steps)

    def adapt_with_inputs(self, inputs: Mapping, num_steps: int = 1) -> tf.Tensor:
        """``adapt`` from ready ``adapt`` inputs (``observations``, ``actions``, ``rewards``,
        ``mask``), e.g. ``adapt_from_trajectories``'s output."""
        params = self._adapt_fn(
            observations=tf.constant(inputs["observations"], tf.float32),
            actions=tf.cast(inputs["actions"], self._actions_dtype),
            rewards=tf.constant(inputs["rewards"], tf.float32),
            mask=tf.constant(inputs["mask"], tf.float32),
            num_steps=tf.constant(num_steps, tf.int32))["params"]
        self.set_params(params)
        return params

    def set_params(self, params) -> None:
        """Acts with these flat weights from now on (e.g. weights a server's ``adapt`` returned)."""
        params = tf.convert_to_tensor(params, tf.float32)
        if params.shape != (self.num_params,):
            raise ValueError(f"`params` must be a flat vector of {self.num_params} weights, got "
                             f"shape {params.shape}")
        self._params.assign(params)
        self._adapted.assign(True)

    def reset_adaptation(self) -> None:
        """Acts with the meta-learned weights again."""
        self._adapted.assign(False)

    def _outputs(self, observation):
        return tf.cond(
            self._adapted,
            lambda: self._with_params(observation=observation, params=self._params),
            lambda: self._serving(observation=observation))

    def _distribution(self, time_step, policy_state):
        observation, outer = _flat_observation(time_step)
        out = self._outputs(observation)
        if self.gaussian:
            mean = _restore(out["action"], outer)
            if self.greedy:
                dist = tfp.distributions.Deterministic(mean)
            else:
                dist = tfp.distributions.MultivariateNormalDiag(
                    loc=mean, scale_diag=_restore(tf.exp(out["log_std"]), outer))
        else:
            if self.greedy:
                dist = tfp.distributions.Deterministic(
                    tf.cast(_restore(out["action"], outer), self.action_spec.dtype))
            else:
                dist = tfp.distributions.Categorical(logits=_restore(out["logits"], outer),
                                                     dtype=self.action_spec.dtype)
        return policy_step.PolicyStep(dist, policy_state, ())


class ExportedRL2Policy(tf_policy.TFPolicy):
    """The RL² export (``AdaptiveRecurrentPolicy``, export/recurrent.py) as a TF-Agents ``TFPolicy``.

    The policy state is the export's: ``get_initial_state`` calls the export's
    ``get_initial_state`` and ``action`` its ``action``, one call each. Next to the recurrent
    ``state`` it holds the other inputs the export reads that a TF-Agents ``TimeStep`` does not
    carry: ``prev_action`` (``-1`` / zeros at the start of a trial), ``prev_reward`` and ``done``
    (the reward of the step that ended the previous episode, and 1 once one has).

    A trial (one task, several episodes) runs on one state: this policy does not reset its state
    when an episode starts (``automatic_state_reset=False``); a new trial starts from
    ``get_initial_state`` (what a driver's ``run()`` does when given no policy state). On a
    ``LAST`` time step, whose action TF-Agents discards, it records the reward and the episode's
    end and leaves the recurrent state as it is, so the next episode's first step sees
    ``(prev_action, prev_reward, done=1)`` as in training.

    Args:
      export, time_step_spec, action_spec: as for ``ExportedPolicy``.
      greedy: the most likely action (categorical) / the mean (Gaussian) instead of a sample.

    ``distribution`` is not available: the next state depends on the action drawn.
    """

    def __init__(self, export, time_step_spec=None, action_spec=None, greedy: bool = False,
                 name: str | None = None):
        model = _load(export)
        self._export_initial = _signature(model, "get_initial_state", "an RL² export")
        self._export_action = _signature(model, "action", "an RL² export")
        specs = _input_specs(self._export_action)
        obs_dim = int(specs["observation"].shape[-1])
        outputs = self._export_action.structured_outputs
        self.state_size = int(outputs["state"].shape[-1])
        self.categorical = "logits" in outputs
        if self.categorical:
            num_actions = int(outputs["logits"].shape[-1])
            default = tensor_spec.BoundedTensorSpec([], tf.int32, 0, num_actions - 1, name="action")
            prev = tf.TensorSpec([], tf.int32, name="prev_action")
        else:
            act_dim = int(outputs["mean"].shape[-1])
            default = tf.TensorSpec([act_dim], tf.float32, name="action")
            prev = tf.TensorSpec([act_dim], tf.float32, name="prev_action")
        self._model = model
        self.greedy = bool(greedy)
        state_spec = {"state": tf.TensorSpec([self.state_size], tf.float32, name="state"),
                      "prev_action": prev,
                      "prev_reward": tf.TensorSpec([], tf.float32, name="prev_reward"),
                      "done": tf.TensorSpec([], tf.float32, name="done")}
        super().__init__(_time_step_spec(time_step_spec, obs_dim),
                         _action_spec(action_spec, default, "categorical []" if self.categorical
                                      else "Gaussian [act_dim]"),
                         policy_state_spec=state_spec, clip=False, automatic_state_reset=False,
                         name=name)

    def _get_initial_state(self, batch_size):
        batch_size = tf.cast(batch_size if batch_size is not None else 1, tf.int32)
        state = self._export_initial(batch_size=batch_size)["state"]
        prev_shape = tf.concat([[batch_size], self.policy_state_spec["prev_action"].shape], 0)
        prev = (-tf.ones(prev_shape, tf.int32) if self.categorical
                else tf.zeros(prev_shape, tf.float32))
        zeros = tf.zeros([batch_size], tf.float32)
        return {"state": state, "prev_action": prev, "prev_reward": zeros, "done": zeros}

    def _action(self, time_step, policy_state, seed):
        observation = tf.cast(time_step.observation, tf.float32)
        reward = tf.cast(time_step.reward, tf.float32)
        first, last = time_step.is_first(), time_step.is_last()
        prev_action = policy_state["prev_action"]
        out = self._export_action(
            observation=observation, prev_action=prev_action,
            prev_reward=tf.where(first, policy_state["prev_reward"], reward),
            done=tf.where(first, policy_state["done"], tf.zeros_like(reward)),
            state=policy_state["state"])
        if self.categorical:
            if self.greedy:
                action = out["action"]
            else:
                action = tfp.distributions.Categorical(logits=out["logits"],
                                                       dtype=tf.int32).sample(seed=seed)
        else:
            action = out["mean"]
            if not self.greedy:
                action = tfp.distributions.MultivariateNormalDiag(
                    loc=out["mean"], scale_diag=tf.exp(out["log_std"])).sample(seed=seed)

        def keep(new, old):
            """Per batch entry: ``old`` on LAST steps, ``new`` otherwise."""
            cond = tf.reshape(last, tf.concat([tf.shape(last), tf.ones(tf.rank(new) - 1,
                                                                       tf.int32)], 0))
            return tf.where(cond, old, new)

        ones, zeros = tf.ones_like(reward), tf.zeros_like(reward)
        next_state = {"state": keep(out["state"], policy_state["state"]),
                      "prev_action": keep(action, prev_action),
                      "prev_reward": tf.where(last, reward, zeros),
                      "done": tf.where(last, ones, zeros)}
        return policy_step.PolicyStep(tf.cast(action, self.action_spec.dtype), next_state, ())

    def _distribution(self, time_step, policy_state):
        raise NotImplementedError("ExportedRL2Policy has no distribution(): its next state depends "
                                  "on the action drawn; use action()")


class ExportedQPolicy(tf_policy.TFPolicy):
    """The Meta-DQN export (``AdaptableQNetwork``, export/qnetwork.py) as a TF-Agents ``TFPolicy``.

    Acts greedily (``epsilon=0``) or epsilon-greedily over Q with the meta-learned initial z until
    ``adapt``, then with the adapted z (kept in a variable, so ``PolicySaver`` saves it). The
    ``distribution`` is the epsilon-greedy one: ``1 - epsilon + epsilon / A`` on the greedy action,
    ``epsilon / A`` on each other.

    Args:
      export, time_step_spec, action_spec: as for ``ExportedPolicy`` (default action spec: int32
        in ``[0, num_actions)``).
      epsilon: exploration rate in [0, 1]; change it later with ``set_epsilon``.
    """

    def __init__(self, export, time_step_spec=None, action_spec=None, epsilon: float = 0.0,
                 name: str | None = None):
        model = _load(export)
        self._serving = _signature(model, "serving_default", "a Meta-DQN export")
        self._adapt_fn = _signature(model, "adapt", "a Meta-DQN export")
        self._with_z = _signature(model, "action_with_z", "a Meta-DQN export")
        specs = _input_specs(self._with_z)
        obs_dim, self.z_dim = int(specs["observation"].shape[-1]), int(specs["z"].shape[0])
        self.num_actions = int(self._with_z.structured_outputs["q_values"].shape[-1])
        default = tensor_spec.BoundedTensorSpec([], tf.int32, 0, self.num_actions - 1,
                                                name="action")
        self._model = model
        self._z = tf.Variable(tf.zeros([self.z_dim]), trainable=False, name="adapted_z")
        self._adapted = tf.Variable(False, trainable=False, name="adapted")
        self._epsilon = tf.Variable(0.0, trainable=False, name="epsilon")
        self.set_epsilon(epsilon)
        super().__init__(_time_step_spec(time_step_spec, obs_dim),
                         _action_spec(action_spec, default, "categorical []"), name=name)

    @property
    def adapted(self) -> bool:
        return bool(self._adapted.numpy())

    @property
    def z(self) -> tf.Tensor:
        """The adapted task embedding (zeros before ``adapt``)."""
        return tf.convert_to_tensor(self._z)

    def set_epsilon(self, epsilon: float) -> None:
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not (
                0.0 <= epsilon <= 1.0):
            raise ValueError(f"`epsilon` must be a number in [0, 1], got {epsilon!r}")
        self._epsilon.assign(float(epsilon))

    def adapt(self, trajectories, num_steps: int = 1) -> tf.Tensor:
        """Adapts z from the transitions in ``trajectories`` (any behaviour policy); returns z."""
        return self.adapt_with_inputs(adapt_from_trajectories(trajectories, "transitions"),
                                      num_steps)

    def adapt_with_inputs(self, inputs: Mapping, num_steps: int = 1) -> tf.Tensor:
        """``adapt`` from ready transition arrays (``adapt_from_trajectories`` "transitions")."""
        z = self._adapt_fn(
            observations=tf.constant(inputs["observations"], tf.float32),
            actions=tf.cast(inputs["actions"], tf.int32),
            rewards=tf.constant(inputs["rewards"], tf.float32),
            next_observations=tf.constant(inputs["next_observations"], tf.float32),
            dones=tf.constant(inputs["dones"], tf.float32),
            num_steps=tf.constant(num_steps, tf.int32))["z"]
        self.set_z(z)
        return z

    def set_z(self, z) -> None:
        """Acts with this task embedding from now on."""
        z = tf.convert_to_tensor(z, tf.float32)
        if z.shape != (self.z_dim,):
            raise ValueError(f"`z` must be a vector of {self.z_dim}, got shape {z.shape}")
        self._z.assign(z)
        self._adapted.assign(True)

    def reset_adaptation(self) -> None:
        """Acts with the meta-learned initial z again."""
        self._adapted.assign(False)

    def q_values(self, observation) -> tf.Tensor:
        """Q of the current z for float ``[N, obs_dim]`` observations."""
        observation = tf.cast(observation, tf.float32)
        return tf.cond(self._adapted,
                       lambda: self._with_z(observation=observation, z=self._z)["q_values"],
                       lambda: self._serving(observation=observation)["q_values"])

    def _distribution(self, time_step, policy_state):
        observation, outer = _flat_observation(time_step)
        q = self.q_values(observation)
        greedy = tf.one_hot(tf.argmax(q, axis=-1), self.num_actions)
        probs = (1.0 - self._epsilon) * greedy + self._epsilon / self.num_actions
        dist = tfp.distributions.Categorical(probs=_restore(probs, outer),
                                             dtype=self.action_spec.dtype)
        return policy_step.PolicyStep(dist, policy_state, ())
