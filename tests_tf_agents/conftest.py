"""The TF-Agents suite: runs in .venv-tf-agents (`make test-tf-agents`), never in the core venv.

Its exports are built once per session by the core venv (Keras 3), which `METARL_CORE_PYTHON`
names (the Makefile sets it; default `.venv/bin/python`), with tiny training runs
(build_exports.py). `METARL_TF_AGENTS_EXPORTS=DIR` reuses a DIR that build_exports.py wrote.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported anywhere
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)


def core_python() -> str:
    path = os.environ.get("METARL_CORE_PYTHON") or os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(path):
        pytest.fail(f"the core venv's python ({path}) is missing: run `make venv` or set "
                    "METARL_CORE_PYTHON; the TF-Agents tests build their exports with it")
    return path


def core_env() -> dict:
    """A core-venv subprocess's environment: Keras 3 (no legacy switch), this checkout first."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@pytest.fixture(scope="session")
def exports(tmp_path_factory):
    """``{name: version directory}`` of the PointNav MAML-TRPO, RL² (bandits, PointNav) and
    Meta-DQN exports."""
    out = os.environ.get("METARL_TF_AGENTS_EXPORTS")
    if not out:
        out = str(tmp_path_factory.mktemp("tf_agents_exports"))
        script = os.path.join(ROOT, "tests_tf_agents", "build_exports.py")
        # two processes of one TensorFlow thread each: the PointNav run alone takes the longest
        groups = (["pointnav"], ["rl2-bandits", "rl2-pointnav", "meta-dqn-cartpole"])
        procs = []
        for i, names in enumerate(groups):
            log = open(os.path.join(out, f"build_{i}.log"), "w+")
            procs.append((subprocess.Popen([core_python(), script, out, *names], cwd=ROOT,
                                           env=core_env(), stdout=log, stderr=subprocess.STDOUT),
                          log))
        for proc, log in procs:
            proc.wait()
            log.seek(0)
            text = log.read()
            log.close()
            if proc.returncode:
                pytest.fail(f"building the exports failed:\n{text[-4000:]}")
    paths = {name: os.path.join(out, "exports", name, "1")
             for name in ("pointnav", "rl2-bandits", "rl2-pointnav", "meta-dqn-cartpole")}
    for path in paths.values():
        assert os.path.exists(os.path.join(path, "saved_model.pb")), path
    return paths


@pytest.fixture(scope="session")
def tfa_python():
    return sys.executable
