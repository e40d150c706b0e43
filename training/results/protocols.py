"""How a results row trains and scores one training seed.

Every protocol trains the row's preset (with the row's and the budget's overrides) through the same
``training.run.train`` that ``metarl train`` uses, resuming the run directory when it holds an
unfinished run, then scores the trained learner on the family's **test** split only. The test tasks
are drawn from the test stream of ``params.eval_seed`` (default 0) for every training seed, so the
seeds are scored on the same tasks. Each protocol returns ``(figures, curve)``: a flat dict of
named floats (the metric and the baselines) and an optional adaptation curve for the plots.

    supervised  MAML / FOMAML / Meta-SGD / Reptile on a regression family: query MSE after 0..N
                inner steps; the "pretrained" baseline of the MAML paper (one network fit to all
                tasks, then fine-tuned with the same steps).
    maml_rl     MAML-RL (TRPO/ProMP) on a gymnasium or in-graph family: return after 0..N inner
                steps (0 = unadapted), the oracle's where the family has one, the gap closed;
                with ``params.pretrained``, the MAML paper's pretrained baseline too: the same
                preset and budget trained with ``inner_steps=0`` (one policy for all tasks), then
                fine-tuned by the same inner steps on the same test tasks.
    rl2         RL² trials: total reward per trial, beside the Gittins index policy, Thompson
                sampling, UCB1, greedy and random (bandits) or the value-iteration optimum and
                random (tabular MDPs), all on the same test tasks.
    meta_dqn    Meta-DQN: greedy return and success after adapting z on the test tasks.
    metaworld   Meta-World ML10 / ML45: ``metaworld.evaluation.metalearning_evaluation`` at its
                defaults (``metarl_tf.integrations.metaworld``), adapted and unadapted on the same
                goals: meta-test success (the held-out classes), meta-train success, per test class.
    pearl       PEARL (oyster's protocol): deterministic return under the prior (z = its mean) and
                after each exploration episode of posterior sampling, on the test tasks.
    script      a benchmark script that writes its figures as JSON (speed, serving, ...).

``supervised`` and ``maml_rl`` also train a comparison learner when ``params.compare_preset`` is
set (``train_comparator``: another preset at equal meta-steps or at equal training time, e.g. a
learned update rule against MAML's SGD) and score it on the same test tasks; its figures carry
the prefix ``params.compare_name``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np


def resolve_config(row, budget: str, seed: int):
    """The ExperimentConfig one seed of ``row`` trains at ``budget``."""
    from training.config import apply_overrides, load_config

    config = load_config(row.preset)
    overrides = [f"{k}={json.dumps(v)}" for k, v in row.budget_set(budget).items()]
    return dataclasses.replace(apply_overrides(config, overrides), seed=int(seed), name=row.name)


def train_or_resume(config, run_dir: str):
    """Trains ``config`` into ``run_dir`` (resuming an unfinished run of the same config; a run
    directory of another config is started afresh) and returns the restored learner."""
    import shutil

    from training.run import read_run_config, restore_learner, train

    resume = os.path.exists(os.path.join(run_dir, "config.json"))
    if resume:
        saved = read_run_config(run_dir)
        if dataclasses.replace(saved, steps=config.steps) != config:
            shutil.rmtree(run_dir)
            resume = False
    train(config, run_dir, quiet=True, resume=resume, final_eval=False)
    return restore_learner(run_dir)[1]


def seconds_per_step(config, steps: int) -> float:
    """Seconds per meta-step of a fresh learner of ``config`` in this process: ``steps`` meta-steps
    timed after ``steps`` more that compile and warm up (one TF thread when the CLI set it)."""
    from training.config import build_learner

    learner = build_learner(config)
    learner.train(steps)
    start = time.perf_counter()
    learner.train(steps)
    return (time.perf_counter() - start) / steps


def train_comparator(row, budget, seed, run_dir, params, config):
    """Trains the comparison learner of a row (``params.compare_preset``) beside the row's own and
    returns ``(name, learner, figures)``.

    ``compare_preset`` with ``compare_set`` overrides, the row's seed, and a meta-step budget set
    by ``compare_compute``: ``steps`` gives it the row learner's meta-steps (equal steps);
    ``wall`` gives it the meta-steps that take the row learner's training time, from both
    learners' seconds per meta-step timed in this process (``timing_steps`` each, after as many to
    compile), so a costlier rule is compared at equal compute. The matched step count is stored
    beside the comparator's run directory, so that a resumed run trains to the same count. Figures:
    ``<name>_steps`` and, for ``wall``, both seconds per meta-step and their ratio
    ``compute_ratio``.
    """
    from training.config import apply_overrides, load_config

    name = str(params.get("compare_name", "compare"))
    mode = params.get("compare_compute", "steps")
    if mode not in ("steps", "wall"):
        raise ValueError(f"results/{row.name}.yaml: `params.compare_compute` must be 'steps' or "
                         f"'wall', got {mode!r}")
    base = load_config(params["compare_preset"])
    overrides = [f"{k}={json.dumps(v)}" for k, v in params.get("compare_set", {}).items()]
    other = dataclasses.replace(apply_overrides(base, overrides), seed=int(seed),
                                name=f"{row.name}-{name}")
    other_dir = f"{run_dir}-{name}"
    match_path = f"{other_dir}.match.json"  # beside the run: a restarted run keeps it
    timing = int(params.get("timing_steps", 20))
    # What the match was measured for: a change of either config or of the timing re-measures.
    key = json.dumps([config.to_dict(), other.to_dict(), timing], sort_keys=True, default=str)
    extra = {}
    if mode == "steps":
        steps = config.steps
    else:
        stored = None
        if os.path.exists(match_path):
            with open(match_path) as f:
                stored = json.load(f)
        if stored is not None and stored.get("key") == key:
            extra = stored["figures"]
        else:
            own = seconds_per_step(dataclasses.replace(config, name=f"{row.name}-timing"), timing)
            theirs = seconds_per_step(dataclasses.replace(other, name=f"{row.name}-timing"),
                                      timing)
            extra = {"seconds_per_step": own, f"{name}_seconds_per_step": theirs,
                     "compute_ratio": own / theirs,
                     f"{name}_steps": max(1, round(config.steps * own / theirs))}
            os.makedirs(os.path.dirname(match_path), exist_ok=True)
            with open(match_path + ".tmp", "w") as f:
                json.dump({"key": key, "figures": extra}, f)
            os.replace(match_path + ".tmp", match_path)
        steps = int(extra[f"{name}_steps"])
    extra = {**extra, f"{name}_steps": float(steps)}
    other = dataclasses.replace(other, steps=steps)
    return name, train_or_resume(other, other_dir), extra


def _curve_figures(prefix: str, values, steps=None) -> dict:
    steps = range(len(values)) if steps is None else steps
    return {f"{prefix}_after_{k}": float(v) for k, v in zip(steps, values)}


def supervised(row, budget, seed, run_dir, params):
    from metarl_tf import adaptation, evaluation
    from training.config import build_learner

    config = resolve_config(row, budget, seed)
    learner = train_or_resume(config, run_dir)
    n_tasks = int(params.get("eval_tasks", 600))
    n_steps = int(params.get("eval_steps", 10))
    eval_seed = int(params.get("eval_seed", 0))

    def score(trained):
        return trained.evaluate(num_tasks=n_tasks, num_query=int(params.get("eval_query", 100)),
                                num_steps=n_steps, seed=eval_seed, split="test")["mse"]

    curve = {"mse": score(learner)}
    figures = _curve_figures("mse", curve["mse"])
    if "compare_preset" in params:
        name, other, extra = train_comparator(row, budget, seed, run_dir, params, config)
        figures.update(_curve_figures(f"{name}_mse", score(other)))
        figures.update(extra)
    pretrain_steps = int(params.get("pretrain_steps", 0))
    if pretrain_steps:
        # The MAML paper's baseline: one network regressed on all tasks, then fine-tuned by the
        # same number of SGD steps at the row's inner rate (the paper's "pretrained, step").
        fresh = build_learner(config)
        pre = _pretrained_params(fresh, config, pretrain_steps, seed, run_dir)
        rate = float(params.get("pretrained_inner_lr", getattr(config.algorithm_config,
                                                                 "inner_lr", 0.01)))
        base = evaluation.adaptation_curve(
            fresh.fmodel, pre, fresh.tasks, adaptation.SGD(rate), num_tasks=n_tasks,
            num_support=config.algorithm_config.num_support,
            num_query=int(params.get("eval_query", 100)), num_steps=n_steps, seed=eval_seed,
            split="test")
        figures.update(_curve_figures("pretrained_mse", base["mse"]))
    return figures, {"x": list(range(n_steps + 1)), "y": curve["mse"], "label": "query MSE",
                     "xlabel": "inner steps"}


def _pretrained_params(learner, config, steps: int, seed: int, run_dir: str) -> list:
    """The jointly pretrained parameters, cached beside the run directories: they depend on the
    family, the network, the seed and the steps only, so every algorithm's and every K's row of a
    seed shares one pretraining."""
    from metarl_tf import evaluation

    net = config.network
    key = f"pretrained-{config.task}-{'x'.join(map(str, net.hidden))}-{net.activation}-" \
          f"{net.init}-seed{seed}-{steps}.npz"
    path = os.path.join(os.path.dirname(os.path.dirname(run_dir)), "_shared", key)
    if os.path.exists(path):
        with np.load(path) as f:
            return [f[f"p{i}"] for i in range(len(f.files))]
    params = [np.asarray(p) for p in evaluation.pretrain_jointly(
        learner.model, learner.tasks, steps, seed=seed)]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez(path + ".tmp.npz", **{f"p{i}": p for i, p in enumerate(params)})
    os.replace(path + ".tmp.npz", path)
    return params


def maml_rl(row, budget, seed, run_dir, params):
    config = resolve_config(row, budget, seed)
    learner = train_or_resume(config, run_dir)
    n_steps = int(params.get("eval_steps", 1))
    tasks = learner.tasks.sample(int(params.get("eval_tasks", 40)),
                                 int(params.get("eval_seed", 0)), "test")

    def score(trained, prefix=""):
        curve = trained.evaluate(num_steps=n_steps, tasks=tasks, seed=seed)
        figures = _curve_figures(f"{prefix}return", curve["returns"])
        oracle = curve.get("oracle_return")
        if oracle is not None:
            figures[f"{prefix}oracle_return"] = float(oracle)
            r0 = curve["returns"][0]
            for k in range(1, n_steps + 1):
                # The share of the unadapted policy's distance to the oracle that k steps close.
                figures[f"{prefix}gap_closed_{k}"] = float((curve["returns"][k] - r0)
                                                           / (oracle - r0))
        return curve, figures

    curve, figures = score(learner)
    if "compare_preset" in params:
        name, other, extra = train_comparator(row, budget, seed, run_dir, params, config)
        figures.update(score(other, f"{name}_")[1])
        figures.update(extra)
    if params.get("pretrained"):
        joint = dataclasses.replace(config, algorithm_config=dataclasses.replace(
            config.algorithm_config, inner_steps=0))
        pretrained = train_or_resume(joint, run_dir + "-pretrained")
        figures.update(score(pretrained, "pretrained_")[1])
    return figures, {"x": list(range(n_steps + 1)), "y": curve["returns"], "label": "return",
                     "xlabel": "inner steps"}


def rl2(row, budget, seed, run_dir, params):
    config = resolve_config(row, budget, seed)
    learner = train_or_resume(config, run_dir)
    family = learner.tasks
    tasks = family.sample(int(params.get("eval_tasks", 1000)), int(params.get("eval_seed", 0)),
                          "test")
    summary = learner.evaluate(tasks=tasks, seed=seed)
    figures = {"trial_return": summary["trial_return"]}
    n = config.algorithm_config.episodes_per_trial
    if config.task == "bandits":
        from metarl_tf.tasks.bandits import bandit_baselines

        # The Gittins baseline runs at params.gittins_discount (default 1 - 1/n, the discount
        # whose geometric horizon has the trial's mean length; metarl_tf.tasks.bandits).
        discount = params.get("gittins_discount")
        for name, totals in bandit_baselines(np.asarray(tasks), n, seed=0,
                                             discount=discount).items():
            figures[name] = float(np.mean(totals))
    elif config.task == "tabular-mdp":
        from metarl_tf.tasks.tabular_mdp import optimal_return, uniform_random_return

        figures["vi_optimum"] = float(np.mean([n * optimal_return(t, family.horizon)
                                               for t in tasks]))
        figures["random"] = float(np.mean([n * uniform_random_return(t, family.horizon)
                                           for t in tasks]))
    return figures, {"x": list(range(1, n + 1)), "y": summary["returns"],
                     "label": "episode return", "xlabel": "episode of the trial"}


def meta_dqn(row, budget, seed, run_dir, params):
    config = resolve_config(row, budget, seed)
    learner = train_or_resume(config, run_dir)
    tasks = learner.tasks.sample(int(params.get("eval_tasks", 20)),
                                 int(params.get("eval_seed", 0)), "test")
    curve = learner.evaluate(tasks=tasks, seed=seed)
    steps = len(curve["returns"])
    figures = _curve_figures("return", curve["returns"])
    figures.update(_curve_figures("success", curve["success"]))
    figures["return_adapted"] = float(curve["returns"][-1])
    figures["success_adapted"] = float(curve["success"][-1])
    return figures, {"x": list(range(steps)), "y": curve["returns"], "label": "greedy return",
                     "xlabel": "inner steps on z"}


def metaworld(row, budget, seed, run_dir, params):
    from metarl_tf.integrations.metaworld import ProtocolConfig, evaluate_protocol
    from training.config import kind_of

    config = resolve_config(row, budget, seed)
    learner = train_or_resume(config, run_dir)  # scoring steps Meta-World's own environments
    eval_seed = int(params.get("eval_seed", 0))
    protocol = ProtocolConfig(config.task.upper(), benchmark_seed=eval_seed,
                              **params.get("protocol", {}))
    env_kwargs = None
    if kind_of(config) == "rl2":
        from metarl_tf.algorithms.rl2_metaworld import RL2MetaWorldAgent

        env_kwargs = {"recurrent_info_in_obs": True, "normalize_reward_in_recurrent_info": False}
        make_agent = lambda n: RL2MetaWorldAgent(learner, n, seed=eval_seed)  # noqa: E731
    else:
        from metarl_tf.tasks.metaworld import MAMLMetaWorldAgent

        make_agent = lambda n: MAMLMetaWorldAgent(learner, n, seed=eval_seed)  # noqa: E731
    result = evaluate_protocol(make_agent, protocol, splits=params.get("splits", ["test", "train"]),
                               env_kwargs=env_kwargs)
    figures = {}
    for split in ("test", "train", "validation"):
        if split in result:
            got = result[split]
            figures[f"{split}_success"] = float(got["success"])
            figures[f"{split}_unadapted_success"] = float(got["unadapted_success"])
            figures[f"{split}_mean_return"] = float(got["mean_return"])
    for name, value in result["test"]["per_task"].items():
        figures[f"test_success_{name}"] = float(value)
    return figures, None


def pearl(row, budget, seed, run_dir, params):
    config = resolve_config(row, budget, seed)
    learner = train_or_resume(config, run_dir)
    tasks = learner.tasks.sample(int(params.get("eval_tasks", 30)),
                                 int(params.get("eval_seed", 0)), "test")
    curve = learner.evaluate(num_steps=params.get("eval_steps"), tasks=tasks, seed=seed)
    figures = _curve_figures("return", curve["returns"])
    figures["return_prior"] = float(curve["returns"][0])
    figures["return_posterior"] = float(curve["returns"][-1])
    figures["env_steps"] = float(learner.env_steps.numpy())  # training steps used (the cost)
    return figures, {"x": list(range(len(curve["returns"]))), "y": curve["returns"],
                     "label": "return", "xlabel": "exploration episodes of context"}


PEERS_PYTHON = os.environ.get("METARL_PEERS_PYTHON", os.path.join(".venv-peers", "venv", "bin",
                                                                   "python"))


def script(row, budget, seed, run_dir, params):
    """Runs ``params.script`` with ``params.args`` in a fresh interpreter; the script writes a
    flat JSON dict of figures to ``{json}``. Substituted: ``{seed}``, ``{json}``, ``{dir}`` (the
    run directory) and ``{peers}``, the interpreter of the peer implementations
    (``../shared/peers/setup.sh``; ``$METARL_PEERS_PYTHON`` or ``.venv-peers/venv/bin/python``).
    Without that interpreter ``params.peer_args`` are left out and the record says
    ``peers_missing: 1`` (the row's ratio is then absent, never invented)."""
    os.makedirs(run_dir, exist_ok=True)
    out = os.path.join(run_dir, "figures.json")
    raw = list(params.get("args", []))
    peers_missing = bool(params.get("peer_args")) and not os.path.exists(PEERS_PYTHON)
    if params.get("peer_args") and not peers_missing:
        raw += list(params["peer_args"])
    args = [str(a).format(seed=seed, json=out, dir=run_dir, peers=PEERS_PYTHON) for a in raw]
    cmd = [sys.executable, params["script"], *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    with open(out) as f:
        figures = json.load(f)
    curve = figures.pop("curve", None)
    numbers = {k: float(v) for k, v in figures.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if peers_missing:
        numbers["peers_missing"] = 1.0
    return numbers, curve


PROTOCOL_FNS = {"supervised": supervised, "maml_rl": maml_rl, "rl2": rl2, "meta_dqn": meta_dqn,
                "metaworld": metaworld, "pearl": pearl, "script": script}
