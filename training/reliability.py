"""Reliability checks: killed runs resume, exports survive hostile input and long use, loading is safe.

    python -m training.reliability [--kills 4] [--fuzz-cases 200] [--soak-calls 10000] [--seed S]
        [--quick] [--json PATH]

prints the table of ``docs/RELIABILITY.md`` (``key=value`` lines, then a Markdown table). The tests
(``tests/test_reliability.py``) call the same functions with smaller budgets.

* ``kill_and_resume``: ``metarl train`` (MAML sinusoid, a tiny budget) is SIGKILLed -- after a
  random delay, or inside a checkpoint write (between the data files and the state file, or a few
  milliseconds into the data write) -- then ``metarl train --resume`` is run until it finishes; the
  final metrics and the held-out curve must equal an uninterrupted run's exactly, and the latest
  checkpoint the state file names must always be complete. ``tf.train.CheckpointManager`` is atomic
  by construction: ``SaveV2`` writes into a temporary prefix that ``MergeV2Checkpoints`` renames
  into place, and only then is the ``checkpoint`` state file replaced
  (``file_io.atomic_write_string_to_file``); these kills check that rather than assume it.
* ``corrupt_and_resume``: the newest checkpoint's data file is truncated; resume falls back to the
  previous one (``training.run.restore_latest``) and still ends equal to the uninterrupted run.
* ``fuzz_export``: hypothesis draws hostile inputs for every input of every signature of an
  export, from the signature's own ``TensorSpec``s (wrong ranks and sizes, empty batches, NaN/Inf,
  huge values, huge or negative ints); each call must return finite outputs or be rejected with
  ``InvalidArgumentError`` (in the graph) or the signature's own ``TypeError``/``ValueError`` for
  a wrong dtype or rank (at the call boundary). Afterwards a valid call must still give the answer
  it gave before. New export kinds join by one entry in ``FUZZ_TARGETS``.
* ``soak``: ``adapt`` calls with random valid inputs on one loaded model; resident memory after a
  warm-up vs at the end.
* ``nonfinite_trials``: NaN/inf injected into the meta-batch of chosen meta-steps of a tiny MAML
  run (``poisoned_sinusoids``); handled = the run stops with ``NonFiniteError`` naming the step,
  no checkpoint past the last good one, the batch saved -- or, with ``skip_nonfinite``, it
  finishes with finite weights and every bad batch saved (``training/nonfinite.py``).
* ``env_fault_trials``: ``FaultyEnv`` (PointNav) raises, returns NaN, or kills its
  ``AsyncVectorEnv`` worker once; handled = ``collect_episodes`` restarts, counts one fault and
  returns well-formed, finite episodes; a fault that persists raises after ``max_env_faults``.
* ``pyfunc_ops`` / ``unsafe_loading``: no PyFunc ops in an export's graph or its functions; no
  unsafe YAML loader, pickle or ``allow_pickle=True`` in the sources.

This module imports ``export`` (to build the exports it checks): it is a check of the pipeline,
like the CLI's ``metarl export``, not part of the training loop.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny MAML sinusoid run: 60 meta-steps, checkpoints every 10, no XLA (compiles cost seconds).
TINY_RUN = ["train", "maml-sinusoid", "--steps", "60", "--quiet", "--threads", "1",
            "--set", "checkpoint_every=10", "--set", "log_every=10", "--set", "eval_tasks=20",
            "--set", "eval_steps=2", "--set", "eval_query=10",
            "--set", "algorithm_config.jit_compile=false",
            "--set", "algorithm_config.steps_per_execution=5",
            "--set", "algorithm_config.meta_batch_size=5"]

# Runs `metarl` in this process after arranging a SIGKILL inside the n-th checkpoint save:
#   state: after the data files are complete, before the `checkpoint` state file is written;
#   data:  a random 0-5 ms into writing the data files.
_KILL_IN_SAVE = r"""
import os, random, signal, sys, threading
mode, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
del sys.argv[1:4]
import tensorflow as tf
from tensorflow.python.checkpoint import checkpoint_management as cm
calls = [0]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if mode == "state":
    record = cm.CheckpointManager._record_state
    def patched(self):
        calls[0] += 1
        if calls[0] == 2 * n - 1:  # two state records per save: the first one of save n
            die()
        return record(self)
    cm.CheckpointManager._record_state = patched
else:
    write = tf.train.Checkpoint._write
    def patched(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            threading.Timer(random.Random(seed).uniform(0, 0.005), die).start()
        return write(self, *args, **kwargs)
    tf.train.Checkpoint._write = patched
from training.cli import main
sys.exit(main())
"""


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}


def _metarl(args, prefix=(), timeout=600):
    cmd = [sys.executable, *prefix] if prefix else [sys.executable, "-m", "training.cli"]
    return subprocess.run([*cmd, *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        s = json.load(f)
    return {"steps": s["steps"], "final_metrics": s["final_metrics"], "eval_mse": s["eval"]["mse"]}


def checkpoint_state(run_dir) -> dict:
    """The checkpoints the state file lists, and whether each is complete (index + data)."""
    import tensorflow as tf

    ckpt_dir = os.path.join(run_dir, "checkpoints")
    state = tf.train.get_checkpoint_state(ckpt_dir)
    listed = list(state.all_model_checkpoint_paths) if state else []
    complete = {p: os.path.exists(p + ".index") and bool(glob.glob(p + ".data-*")) for p in listed}
    return {"latest": state.model_checkpoint_path if state else None, "complete": complete,
            "temp_dirs": glob.glob(os.path.join(ckpt_dir, "*_temp*"))}


def uninterrupted(base) -> dict:
    run_dir = os.path.join(base, "reference")
    proc = _metarl([*TINY_RUN, "--out", run_dir])
    if proc.returncode:
        raise RuntimeError(f"reference run failed: {proc.stderr[-2000:]}")
    return _summary(run_dir)


def _finish(run_dir, max_resumes=6) -> int:
    """Resumes a killed run until it completes; returns the number of resumes."""
    for resumes in range(1, max_resumes + 1):
        if os.path.exists(os.path.join(run_dir, "config.json")):
            proc = _metarl(["train", "--resume", run_dir, "--quiet", "--threads", "1"])
        else:  # killed before the run directory held a config: start it again
            proc = _metarl([*TINY_RUN, "--out", run_dir])
        if proc.returncode == 0:
            return resumes
        raise RuntimeError(f"resume of {run_dir} failed: {proc.stderr[-2000:]}")
    raise RuntimeError(f"{run_dir} did not finish after {max_resumes} resumes")


def kill_and_resume(base, reference, how: str, seed: int) -> dict:
    """One kill of ``metarl train`` (``how``: "timer", "state" or "data"), then resume to the end.

    Returns ``{"killed": bool, "equal": bool, "half_written_picked": bool, ...}``.
    """
    rng = random.Random(seed)
    run_dir = os.path.join(base, f"{how}-{seed}")
    args = [*TINY_RUN, "--out", run_dir]
    if how == "timer":
        proc = subprocess.Popen([sys.executable, "-m", "training.cli", *args], cwd=REPO,
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # TensorFlow's import takes ~3-6 s here, the 60 steps ~1-3 s: kill somewhere in between.
        time.sleep(rng.uniform(3.0, 9.0))
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    else:
        # Checkpoint saves: steps 10, 20, ..., 60; kill inside save 2..5.
        n = rng.randint(2, 5)
        proc = _metarl(args, prefix=("-c", _KILL_IN_SAVE, how, str(n), str(seed)))
        killed = proc.returncode == -signal.SIGKILL
    state = checkpoint_state(run_dir) if os.path.isdir(os.path.join(run_dir, "checkpoints")) else {
        "latest": None, "complete": {}, "temp_dirs": []}
    half_written_listed = not all(state["complete"].values())
    resumes = _finish(run_dir) if not os.path.exists(os.path.join(run_dir, "summary.json")) else 0
    result = _summary(run_dir)
    return {"how": how, "seed": seed, "killed": killed, "resumes": resumes,
            "latest_after_kill": os.path.basename(state["latest"] or "none"),
            "half_written_picked": half_written_listed, "equal": result == reference}


def corrupt_and_resume(base, reference, seed: int) -> dict:
    """Stops a run after 30 steps, truncates its newest checkpoint, resumes to the end."""
    run_dir = os.path.join(base, f"corrupt-{seed}")
    args = [a if a != "60" else "30" for a in TINY_RUN]
    proc = _metarl([*args, "--out", run_dir])
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    latest = checkpoint_state(run_dir)["latest"]
    data = sorted(glob.glob(latest + ".data-*"))[0]
    size = os.path.getsize(data)
    with open(data, "r+b") as f:  # cut the data file at a random point
        f.truncate(random.Random(seed).randint(0, max(size - 1, 0)))
    os.remove(os.path.join(run_dir, "summary.json"))
    proc = _metarl(["train", "--resume", run_dir, "--steps", "60", "--quiet", "--threads", "1"])
    recovered = proc.returncode == 0 and "could not be restored" in proc.stderr
    return {"recovered": recovered, "equal": recovered and _summary(run_dir) == reference,
            "warning": next((line for line in proc.stderr.splitlines() if "warning" in line), "")}


# -- exports ------------------------------------------------------------------------------------
def _regressor_export(path):
    """A small Meta-SGD AdaptableRegressor (learned rates), and a valid adapt call."""
    import tensorflow as tf

    from export.saved_model import AdaptableRegressor
    from metarl_tf import adaptation
    from metarl_tf.networks import mlp
    from metarl_tf.params import FunctionalModel

    f = FunctionalModel(mlp(1, 1, (16,), init="glorot_uniform", seed=0))
    rates = [tf.fill(tf.shape(p), 0.05) for p in f.params()]
    AdaptableRegressor(f, f.params(), adaptation.PerParameterSGD(rates), max_num_steps=50).save(path)
    rng = np.random.default_rng(0)
    xs = rng.uniform(-5, 5, (10, 1)).astype(np.float32)
    valid = {"adapt": dict(support_x=xs, support_y=np.sin(xs), query_x=xs[:4],
                           num_steps=np.int32(3)),
             "serving_default": dict(x=xs)}
    return valid


def _policy_export(path):
    """A small AdaptablePolicy (2-d observations, 2-d actions), and valid calls."""
    import tensorflow as tf

    from export.policy import AdaptablePolicy
    from metarl_tf import adaptation
    from metarl_tf.networks import gaussian_mlp_policy

    policy = gaussian_mlp_policy(2, 2, hidden=(8,), seed=0)
    module = AdaptablePolicy(policy, [tf.convert_to_tensor(v) for v in policy.trainable_variables],
                             adaptation.SGD(0.1), max_num_steps=10)
    module.save(path)
    loaded = tf.saved_model.load(path)
    valid = {}
    for key, fn in loaded.signatures.items():
        valid[key] = {name: _valid_value(spec, episodes=3, horizon=5)
                      for name, spec in fn.structured_input_signature[1].items()}
    for name in loaded.signatures["action_with_params"].structured_input_signature[1]:
        if name == "params":  # the flat parameters that adapt returns
            valid["action_with_params"][name] = loaded.signatures["adapt"](
                **valid["adapt"])["params"].numpy()
    return valid


def _valid_value(spec, episodes, horizon):
    """A plausible valid value for a policy signature input (static dims kept, -1 dims filled)."""
    rng = np.random.default_rng(len(spec.name))
    if spec.dtype.is_integer:
        return np.array(1, spec.dtype.as_numpy_dtype) if spec.shape.rank == 0 else np.ones(
            [d if d is not None else 2 for d in spec.shape], spec.dtype.as_numpy_dtype)
    fill = [episodes, horizon]
    shape = [d if d is not None else fill[min(i, 1)] for i, d in enumerate(spec.shape)]
    value = rng.normal(size=shape).astype(spec.dtype.as_numpy_dtype)
    if spec.name == "mask":
        value = np.ones(shape, spec.dtype.as_numpy_dtype)
    return value


# name -> builder(path) -> {signature: valid kwargs}. One entry per export kind (RL² policies,
# Meta-DQN Q-networks join here).
FUZZ_TARGETS = {
    "AdaptableRegressor": _regressor_export,
    "AdaptablePolicy": _policy_export,
}


def _hostile(draw, spec, valid):
    """One hostile value for an input with TensorSpec ``spec`` (hypothesis ``draw``)."""
    from hypothesis import strategies as st

    kind = draw(st.sampled_from(["shape", "empty", "nonfinite", "huge", "dtype", "valid_shape"]))
    shape = list(np.shape(valid))
    if kind == "shape":
        shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
    elif kind == "empty" and shape:
        shape[0] = 0
    if spec.dtype.is_integer:
        value = np.full(shape, draw(st.sampled_from(
            [-1, -2**31, 2**31 - 1, 10**6, 0, 1, 2**20])), np.int64 if kind == "dtype" else np.int32)
        return value
    dtype = np.float64 if kind == "dtype" else np.float32
    value = np.asarray(valid, np.float32).copy() if list(np.shape(valid)) == shape else \
        np.random.default_rng(draw(st.integers(0, 2**16))).normal(size=shape).astype(np.float32)
    if kind in ("nonfinite", "huge") and value.size:
        special = [np.nan, np.inf, -np.inf] if kind == "nonfinite" else [3e38, -3e38, 1e30]
        idx = draw(st.integers(0, value.size - 1))
        value.flat[idx] = draw(st.sampled_from(special))
    return value.astype(dtype)


def fuzz_export(kind: str, cases: int = 200, seed: int = 0) -> dict:
    """Hostile calls to every signature of a ``FUZZ_TARGETS[kind]`` export.

    Returns per signature ``{"tried", "rejected", "accepted_finite", "bad", "still_right"}``:
    ``bad`` counts calls that neither returned finite outputs nor were rejected cleanly.
    """
    import tensorflow as tf
    from hypothesis import HealthCheck, given, settings, strategies as st

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "1")
        valid = FUZZ_TARGETS[kind](path)
        pyfunc = pyfunc_ops(path)
        model = tf.saved_model.load(path)
        for key, fn in model.signatures.items():
            specs = fn.structured_input_signature[1]
            before = {k: v.numpy() for k, v in fn(**_as_tensors(valid[key], specs)).items()}
            counts = {"tried": 0, "rejected": 0, "accepted_finite": 0, "bad": 0}
            examples = []

            @st.composite
            def calls(draw):
                args = dict(valid[key])
                targets = draw(st.lists(st.sampled_from(sorted(specs)), min_size=1, unique=True))
                for name in targets:
                    args[name] = _hostile(draw, specs[name], valid[key][name])
                return args

            @settings(max_examples=cases, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(calls())
            def run(args):
                counts["tried"] += 1
                try:
                    result = fn(**{k: tf.constant(v) for k, v in args.items()})
                except tf.errors.InvalidArgumentError:
                    counts["rejected"] += 1
                    return
                except (TypeError, ValueError) as err:  # the signature's own dtype/rank check
                    if re.search("|".join(map(re.escape, specs)), str(err)) or "Tensor" in str(err):
                        counts["rejected"] += 1
                    else:
                        counts["bad"] += 1
                        examples.append(repr(err)[:200])
                    return
                if all(np.all(np.isfinite(v.numpy())) for v in result.values()):
                    counts["accepted_finite"] += 1
                else:
                    counts["bad"] += 1
                    examples.append(f"non-finite output for {sorted(args)}")

            run()
            after = {k: v.numpy() for k, v in fn(**_as_tensors(valid[key], specs)).items()}
            counts["still_right"] = all(np.array_equal(before[k], after[k]) for k in before)
            counts["examples"] = examples[:3]
            counts["pyfunc_ops"] = pyfunc
            out[key] = counts
    return out


def _as_tensors(args, specs):
    import tensorflow as tf

    return {k: tf.constant(v, specs[k].dtype) for k, v in args.items()}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def soak(calls: int = 10000, warmup: int = 1000, seed: int = 0) -> dict:
    """``calls`` adapt calls with random valid inputs on one loaded AdaptableRegressor."""
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "1")
        _regressor_export(path)
        adapt = tf.saved_model.load(path).signatures["adapt"]
        rng = np.random.default_rng(seed)
        rss_warm = None
        start = time.perf_counter()
        for i in range(calls):
            if i == warmup:
                rss_warm = _rss_bytes()
            k, q = int(rng.integers(1, 20)), int(rng.integers(1, 50))
            xs = rng.uniform(-5, 5, (k, 1)).astype(np.float32)
            adapt(support_x=tf.constant(xs), support_y=tf.constant(np.sin(xs)),
                  query_x=tf.constant(rng.uniform(-5, 5, (q, 1)).astype(np.float32)),
                  num_steps=tf.constant(int(rng.integers(0, 6)), tf.int32))
        rss_end = _rss_bytes()
    return {"calls": calls, "warmup": warmup, "rss_after_warmup_mb": rss_warm / 2**20,
            "rss_end_mb": rss_end / 2**20, "growth_pct": 100.0 * (rss_end - rss_warm) / rss_warm,
            "calls_per_s": calls / (time.perf_counter() - start)}


PYFUNC_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def pyfunc_ops(saved_model_dir: str) -> list[str]:
    """PyFunc ops anywhere in a SavedModel's graph or function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    found = []
    for mg in sm.meta_graphs:
        found += [n.op for n in mg.graph_def.node if n.op in PYFUNC_OPS]
        for fn in mg.graph_def.library.function:
            found += [n.op for n in fn.node_def if n.op in PYFUNC_OPS]
    return found


_UNSAFE = [(r"yaml\.load\((?![^)]*SafeLoader)", "yaml.load without SafeLoader"),
           (r"yaml\.unsafe_load|yaml\.full_load", "unsafe YAML loader"),
           (r"^\s*(import pickle|from pickle|import cloudpickle|import dill)", "pickle import"),
           (r"allow_pickle\s*=\s*True", "np.load(allow_pickle=True)")]


# Reviewed exceptions: file -> why it is safe.
UNSAFE_ALLOWED = {
    "metarl_tf/tasks/metaworld.py": "unpickles Meta-World's own Task.data, which metaworld pickles "
                                    "in-process when it builds its benchmark (never user input)",
}


def unsafe_loading() -> list[str]:
    """Unsafe deserialisation in the library, pipeline and export sources (file:line: what), bar
    the reviewed ``UNSAFE_ALLOWED`` files."""
    found = []
    for package in ("metarl_tf", "training", "export"):
        for path in glob.glob(os.path.join(REPO, package, "**", "*.py"), recursive=True):
            if (os.path.abspath(path) == os.path.abspath(__file__)
                    or os.path.relpath(path, REPO) in UNSAFE_ALLOWED):
                continue
            with open(path) as f:
                for lineno, line in enumerate(f, 1):
                    for pattern, what in _UNSAFE:
                        if re.search(pattern, line):
                            found.append(f"{os.path.relpath(path, REPO)}:{lineno}: {what}")
    return found


# -- non-finite values and environment faults (points 2 and 3) ---------------------------------
def poisoned_sinusoids(bad_steps, base_seed: int, value: float = float("nan")):
    """A ``SinusoidTasks`` subclass giving meta-steps ``bad_steps`` ``value`` (NaN/inf) amplitudes.

    A learner samples meta-step n with the stateless seed ``(base_seed, n)`` and
    ``sample_task_batch`` draws the task parameters with the first half of its split.
    """
    import tensorflow as tf

    from metarl_tf import tasks as task_families

    class PoisonedSinusoids(task_families.SinusoidTasks):
        def sample_task_params(self, seed, num_tasks):
            params = super().sample_task_params(seed, num_tasks)
            bad_seeds = tf.stack([tf.random.experimental.stateless_split(
                tf.constant([base_seed, n], tf.int64), 2)[0] for n in bad_steps])
            bad = tf.reduce_any(tf.reduce_all(
                tf.equal(tf.cast(seed, tf.int64)[None], bad_seeds), -1))
            return tf.where(bad, params * value, params)

    return PoisonedSinusoids


def tiny_maml_config(steps: int = 20):
    """20 meta-steps, checkpoints every 10, compiled executions of 5 meta-steps, no XLA."""
    from training.config import apply_overrides, load_config
    return apply_overrides(load_config("maml-sinusoid"), [
        f"steps={steps}", "checkpoint_every=10", "log_every=10", "eval_tasks=5", "eval_steps=1",
        "eval_query=5", "algorithm_config.jit_compile=false",
        "algorithm_config.steps_per_execution=5", "algorithm_config.meta_batch_size=4"])


def nonfinite_trial(base, bad_steps, value, skip: int) -> dict:
    """One tiny MAML run with ``value`` injected at ``bad_steps``; see the module docstring."""
    from metarl_tf import tasks as task_families
    from training.nonfinite import NonFiniteError
    from training.run import train

    config = tiny_maml_config()
    run_dir = tempfile.mkdtemp(dir=base, prefix="nonfinite-")
    original = task_families.SinusoidTasks
    task_families.SinusoidTasks = poisoned_sinusoids(bad_steps, config.seed, value)
    error = None
    try:
        train(config, run_dir, quiet=True, skip_nonfinite=skip)
    except NonFiniteError as err:
        error = str(err)
    finally:
        task_families.SinusoidTasks = original
    saved = sorted(os.listdir(os.path.join(run_dir, "nonfinite"))) \
        if os.path.isdir(os.path.join(run_dir, "nonfinite")) else []
    latest = checkpoint_state(run_dir).get("latest")
    first_bad = min(bad_steps)
    if skip >= len(bad_steps):
        import numpy as np

        from training.run import restore_learner
        _, learner = restore_learner(run_dir)      # the final checkpoint's weights are finite
        finite = all(np.isfinite(v.numpy()).all() for v in learner.model.variables)
        handled = (error is None and finite and learner.step == config.steps
                   and saved == sorted(f"step_{n}.npz" for n in bad_steps))
    else:
        stop = sorted(bad_steps)[skip]
        handled = (error is not None and f"at meta-step {stop};" in error
                   and f"step_{stop}.npz" in saved
                   and (latest is None or int(latest.rsplit("-", 1)[1]) <= stop))
    return {"bad_steps": list(bad_steps), "value": str(value), "skip": skip, "error": error,
            "saved": saved, "latest_checkpoint": latest and os.path.basename(latest),
            "first_bad": first_bad, "handled": bool(handled)}


def faulty_env(env, how: str, at: int = 3, marker: str | None = None):
    """Wraps ``env`` so that step ``at`` of an episode raises (``"raise"``), returns a NaN
    observation (``"nan"``) or kills its process (``"exit"``, an ``AsyncVectorEnv`` worker). With
    ``marker`` (a file path) only the first env to get there faults, across processes and restarts;
    without, every episode does."""
    import gymnasium
    import numpy as np

    class _Faulty(gymnasium.Wrapper):
        def reset(self, **kwargs):
            self.t = 0
            return self.env.reset(**kwargs)

        def step(self, action):
            self.t += 1
            out = self.env.step(action)
            if self.t == at and (marker is None or not os.path.exists(marker)):
                if marker is not None:
                    open(marker, "w").close()
                if how == "raise":
                    raise RuntimeError("simulator exploded")
                if how == "exit":
                    os._exit(3)
                if how == "nan":
                    return (np.full_like(out[0], np.nan),) + tuple(out[1:])
            return out

    return _Faulty(env)


def env_fault_trial(base, how: str, persistent: bool = False) -> dict:
    """PointNav, 2 sub-envs, 2 tasks x 2 episodes of 5 steps; one (or a persistent) fault."""
    import warnings

    import numpy as np

    from metarl_tf.rollouts.sampler import EnvFaults, collect_episodes, make_vector_env
    from metarl_tf.tasks import PointNavTasks

    family = PointNavTasks()
    marker = None if persistent else tempfile.mktemp(dir=base, prefix="fault-")
    asynchronous = how == "exit"
    envs = make_vector_env(lambda: faulty_env(family.make_env(), how, marker=marker), num_envs=2,
                           asynchronous=asynchronous, context="fork" if asynchronous else None)
    faults, error, ok = EnvFaults(), None, False
    policy = lambda obs, ids: np.zeros((len(obs), 2), np.float32)  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = collect_episodes(envs, policy, family.sample(2, seed=0), episodes_per_task=2,
                                  horizon=5, seed=0, faults=faults, max_env_faults=3)
        ok = (ep.mask.sum() == 20 and bool(np.isfinite(ep.observations).all()))
    except (RuntimeError, ValueError) as err:
        error = str(err)
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            envs.close(terminate=True) if asynchronous else envs.close()
    if persistent:
        handled = (error is not None and "more than max_env_faults=3" in error
                   and "step 3" in error and faults.count == 3)
    else:
        handled = ok and faults.count == 1 and error is None
    return {"how": how, "persistent": persistent, "faults": faults.count, "error": error,
            "handled": bool(handled)}


NONFINITE_TRIALS = [((13,), float("nan"), 0), ((13,), float("inf"), 0), ((3, 7), float("nan"), 2),
                    ((3, 7), float("nan"), 1)]
ENV_FAULT_TRIALS = [("raise", False), ("nan", False), ("exit", False), ("raise", True),
                    ("nan", True)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=2, help="seeds per kind of kill (timer, state, data)")
    p.add_argument("--corruptions", type=int, default=2, help="corrupted-checkpoint resumes")
    p.add_argument("--fuzz-cases", type=int, default=200, help="hypothesis cases per signature")
    p.add_argument("--soak-calls", type=int, default=10000, help="adapt calls in the soak")
    p.add_argument("--only", choices=("all", "faults"), default="all",
                   help="faults: only the non-finite and env-fault rows (about a minute)")
    p.add_argument("--seed", type=int, default=0,
                   help="offsets the kills' and corruptions' seeds (seed * count ..) and the "
                   "soak's inputs: another seed tries other kill times, kill points and cut "
                   "points (the fuzz draws are derandomized, the same for every seed)")
    p.add_argument("--quick", action="store_true",
                   help="one kill inside a checkpoint's state write, one corruption, 3 fuzz cases "
                   "per signature, 100 soak calls, one non-finite and one env-fault trial: checks "
                   "that every check runs, not the figures")
    p.add_argument("--json", metavar="PATH",
                   help="also write the figures as one flat JSON dict (the `metarl results` "
                   "script protocol): counts tried/handled per check, `unhandled` (their sum), "
                   "and the soak's RSS growth")
    a = p.parse_args(argv)
    for name in ("kills", "corruptions", "fuzz_cases", "soak_calls", "seed"):
        if getattr(a, name) < (0 if name == "seed" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'seed' else 1}, "
                    f"got {getattr(a, name)}")
    if a.quick:
        a.kills, a.corruptions, a.fuzz_cases, a.soak_calls = 1, 1, 3, 100
    emit = lambda k, v: print(f"{k}={v}", flush=True)  # noqa: E731
    figures: dict = {}
    rows = []
    if a.only == "all":
        rows += _kill_fuzz_soak_rows(a, emit, figures)
    rows += _fault_rows(emit, figures, quick=a.quick)
    # Every trial that was not handled as specified, over all checks (0 is the target).
    # A valid call answering differently after the fuzzing, a PyFunc op in an export and an
    # unsafe loading site count as failures too.
    figures["unhandled"] = sum(figures[f"{k}_tried"] - figures[f"{k}_handled"]
                               for k in ("kills", "corruptions", "fuzz", "nonfinite", "env_faults")
                               if f"{k}_tried" in figures) + sum(
        figures.get(k, 0) for k in ("fuzz_not_still_right", "fuzz_pyfunc_ops",
                                    "unsafe_loading_sites"))
    print("\n| check | result | notes |\n| --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({k: float(v) for k, v in figures.items()}, f, indent=1, sort_keys=True)
    return 0


def _kill_fuzz_soak_rows(a, emit, figures) -> list:
    rows = []
    kinds = ("state",) if a.quick else ("timer", "state", "data")
    first = a.seed * a.kills
    with tempfile.TemporaryDirectory() as base:
        reference = uninterrupted(base)
        kills = [kill_and_resume(base, reference, how, seed)
                 for how in kinds for seed in range(first, first + a.kills)]
        for k in kills:
            emit(f"kill_{k['how']}_{k['seed']}", json.dumps(k))
        landed = [k for k in kills if k["killed"]]
        survived = [k for k in landed if k["equal"] and not k["half_written_picked"]]
        figures.update(kills_tried=len(landed), kills_handled=len(survived),
                       kills_not_landed=len(kills) - len(landed))
        rows.append(("kills survived / tried (SIGKILL: random time, in checkpoint write)",
                     f"{len(survived)} / {len(landed)}",
                     f"{len(kills) - len(landed)} runs finished before their kill landed"))
        first = a.seed * a.corruptions
        corrupt = [corrupt_and_resume(base, reference, seed)
                   for seed in range(first, first + a.corruptions)]
        for i, c in enumerate(corrupt):
            emit(f"corrupt_{i}", json.dumps(c))
        figures.update(corruptions_tried=len(corrupt),
                       corruptions_handled=sum(c["equal"] for c in corrupt))
        rows.append(("corrupted checkpoints recovered / tried",
                     f"{sum(c['equal'] for c in corrupt)} / {len(corrupt)}",
                     "newest checkpoint truncated; resume falls back and ends equal"))
    fuzz = {"fuzz_tried": 0, "fuzz_handled": 0, "fuzz_rejected": 0, "fuzz_not_still_right": 0,
            "fuzz_pyfunc_ops": 0}
    for kind in FUZZ_TARGETS:
        for key, c in fuzz_export(kind, a.fuzz_cases, seed=a.seed).items():
            emit(f"fuzz_{kind}_{key}", json.dumps(c))
            fuzz["fuzz_tried"] += c["tried"]
            fuzz["fuzz_handled"] += c["tried"] - c["bad"]
            fuzz["fuzz_rejected"] += c["rejected"]
            fuzz["fuzz_not_still_right"] += not c["still_right"]
            fuzz["fuzz_pyfunc_ops"] += len(c["pyfunc_ops"])
            rows.append((f"fuzz {kind}.{key}: handled cleanly / tried",
                         f"{c['tried'] - c['bad']} / {c['tried']}",
                         f"{c['rejected']} rejected, {c['accepted_finite']} finite answers; "
                         f"valid call unchanged after: {c['still_right']}; "
                         f"PyFunc ops: {len(c['pyfunc_ops'])}"))
    figures.update(fuzz)
    s = soak(a.soak_calls, warmup=max(a.soak_calls // 10, 1), seed=a.seed)
    emit("soak", json.dumps(s))
    figures.update(soak_calls=s["calls"], soak_rss_growth_pct=s["growth_pct"],
                   soak_rss_end_mb=s["rss_end_mb"])
    rows.append((f"soak: RSS growth after warm-up ({s['calls']} adapt calls)",
                 f"{s['growth_pct']:.2f}%",
                 f"{s['rss_after_warmup_mb']:.1f} -> {s['rss_end_mb']:.1f} MB, target < 5%"))
    unsafe = unsafe_loading()
    emit("unsafe_loading", json.dumps(unsafe))
    figures["unsafe_loading_sites"] = len(unsafe)
    rows.append(("unsafe loading sites (yaml.load, pickle, allow_pickle)", str(len(unsafe)),
                 "; ".join(unsafe) or "none; reviewed: " + "; ".join(
                     f"{k}: {v}" for k, v in UNSAFE_ALLOWED.items())))
    return rows


def _fault_rows(emit, figures=None, quick: bool = False) -> list:
    figures = {} if figures is None else figures
    rows = []
    with tempfile.TemporaryDirectory() as base:
        nonfinite = [nonfinite_trial(base, *t)
                     for t in (NONFINITE_TRIALS[:1] if quick else NONFINITE_TRIALS)]
        env_faults = [env_fault_trial(base, *t)
                      for t in (ENV_FAULT_TRIALS[:1] if quick else ENV_FAULT_TRIALS)]
    for i, t in enumerate(nonfinite):
        emit(f"nonfinite_{i}", json.dumps(t))
    figures.update(nonfinite_tried=len(nonfinite),
                   nonfinite_handled=sum(t["handled"] for t in nonfinite),
                   env_faults_tried=len(env_faults),
                   env_faults_handled=sum(t["handled"] for t in env_faults))
    rows.append(("non-finite batches injected: handled / tried",
                 f"{sum(t['handled'] for t in nonfinite)} / {len(nonfinite)}",
                 "NaN/inf meta-batches in a tiny MAML run: stop naming step and tensor, last good "
                 "checkpoint kept, batch saved; or skipped (--skip-nonfinite) with finite weights"))
    for i, t in enumerate(env_faults):
        emit(f"env_fault_{i}", json.dumps(t))
    rows.append(("env faults injected: handled / tried",
                 f"{sum(t['handled'] for t in env_faults)} / {len(env_faults)}",
                 "PointNav raising, NaN observation, AsyncVectorEnv worker os._exit: restarted, "
                 "counted, episodes re-collected; persistent faults stop after max_env_faults=3"))
    return rows

if __name__ == "__main__":
    sys.exit(main())
