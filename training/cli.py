"""The ``metarl`` command line.

    metarl presets
    metarl train PRESET|FILE.yaml --out RUN_DIR [--steps N] [--algo ALGO] [--shots K]
                 [--seed S] [--set KEY=VALUE ...] [--threads N] [--quiet]
    metarl train --resume RUN_DIR [--steps N]
    metarl evaluate RUN_DIR [--tasks 600] [--inner-steps 10] [--shots K]
    metarl export RUN_DIR --to EXPORT_BASE [--name NAME] [--version N] [--serving-config [FILE]]
                  [--tflite [FILE]]
    metarl export --to EXPORT_BASE --serving-config [FILE] [--serving-base-path DIR]
    metarl inspect SAVEDMODEL [--no-load]
    metarl adapt SAVEDMODEL [--data FILE.npz|FILE.json] [--num-steps N] [--shots K] [--seed S]
    metarl results [--budget quick|full] [--only NAME ...] [--seeds N] [--first-seed S]
                   [--records DIR] [--runs DIR] [--report FILE] [--rerun] [--report-only]
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect as pyinspect
import json
import os
import re
import sys
import threading

PRESET_DIR = os.path.join(os.path.dirname(__file__), "configs")

# Kept here (not imported from training.config) so that `--help` does not import TensorFlow;
# tests check it equals training.config.ALGORITHMS.
ALGORITHM_NAMES = ("fomaml", "maml", "maml-promp", "maml-trpo", "metasgd", "metasgd-rl", "reptile",
                   "reptile-rl", "metalstm", "metapg", "meta-dqn", "finetune-dqn",
                   "rl2", "pearl")

EPILOG = """examples:
  metarl train maml-sinusoid --out runs/maml --threads 1
  metarl train maml-sinusoid --out runs/msgd --algo metasgd --shots 5 --set steps=20000
  metarl train --resume runs/maml --steps 100000
  metarl evaluate runs/maml
  metarl export runs/maml --to exports --name sinusoid --serving-config
  metarl inspect exports/sinusoid/1
  metarl adapt exports/sinusoid/1 --num-steps 5
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metarl", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Meta-train, evaluate, export and adapt TensorFlow meta-learning models.")
    p.add_argument("--verbose", action="store_true",
                   help="show TensorFlow's start-up log (hidden by default)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("presets", help="list the training presets with a one-line description")

    t = sub.add_parser(
        "train", help="meta-train a preset or YAML config into a run directory",
        description="Meta-train PRESET (see `metarl presets`) or a YAML config file. Writes "
        "config.json, checkpoints/, tensorboard/, summary.json and adaptation_curve.png into the "
        "run directory. `tensorboard --logdir RUN_DIR/tensorboard` shows the curves.")
    t.add_argument("preset", metavar="PRESET|FILE.yaml", nargs="?",
                   help="preset name or YAML file (not with --resume)")
    t.add_argument("--out", metavar="RUN_DIR", help="run directory to create")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue this run from its latest checkpoint (only --steps may change)")
    t.add_argument("--steps", type=int, help="total meta-steps")
    t.add_argument("--algo", choices=ALGORITHM_NAMES, help="switch the preset's algorithm")
    t.add_argument("--shots", type=int, metavar="K", help="support (and query) points per task")
    t.add_argument("--seed", type=int, help="base seed")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. algorithm_config.inner_lr=0.02 or "
                   "network.hidden=[64,64]; repeatable")
    t.add_argument("--threads", type=int, default=0,
                   help="TensorFlow intra- and inter-op threads (0 = TensorFlow's default; "
                   "1 is fastest for small models on few cores)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or config echo")
    t.add_argument("--skip-nonfinite", type=int, default=0, metavar="N",
                   help="skip up to N meta-batches whose loss, gradient or update is NaN/inf "
                   "(the bad update is rolled back; default 0: stop at the first)")

    v = sub.add_parser("evaluate", help="adaptation curve of a run on held-out tasks",
                       description="Query MSE after 0..N inner steps on held-out tasks, from the "
                       "run's latest checkpoint. Writes RUN_DIR/evaluation.json and .png.")
    v.add_argument("run_dir", metavar="RUN_DIR")
    v.add_argument("--tasks", type=int, default=600, help="held-out tasks (default 600)")
    v.add_argument("--inner-steps", type=int, default=10, help="inner steps (default 10)")
    v.add_argument("--shots", type=int, metavar="K", help="support points (default: the run's)")
    v.add_argument("--query", type=int, default=100, help="query points per task (default 100)")
    v.add_argument("--seed", type=int, help="held-out task seed (default: the run's seed)")

    e = sub.add_parser("export", help="export a run as an adaptable SavedModel",
                       description="Writes EXPORT_BASE/NAME/VERSION/ (TF Serving layout) from the "
                       "run's latest checkpoint and prints that directory. Never overwrites.")
    e.add_argument("run_dir", metavar="RUN_DIR", nargs="?",
                   help="run to export (may be left out with --serving-config alone)")
    e.add_argument("--to", required=True, metavar="EXPORT_BASE", help="export base directory")
    e.add_argument("--serving-config", nargs="?", const="", default=None, metavar="FILE",
                   help="also write TF Serving's models.config (default EXPORT_BASE/models.config) "
                   "covering every model exported under EXPORT_BASE")
    e.add_argument("--serving-base-path", metavar="DIR",
                   help="the export base as the server sees it (docker: /models); default: the "
                   "absolute path of EXPORT_BASE")
    e.add_argument("--name", help="model name (default: the run's config name)")
    e.add_argument("--version", type=int, help="version number (default: next free one)")
    e.add_argument("--max-num-steps", type=int, default=1000,
                   help="largest num_steps the adapt signature accepts (default 1000); a "
                   "supervised export lowers it to the largest count that stays finite and not "
                   "worse than fewer steps on validation tasks (export/step_bounds.py)")
    e.add_argument("--jit-compile", action="store_true",
                   help="supervised exports: compile adapt's inner loop with XLA (~3x faster; TF "
                   "Serving then needs --xla_cpu_compilation_enabled=true)")
    e.add_argument("--tflite", nargs="?", const="", default=None, metavar="FILE",
                   help="also convert the export for on-device adaptation (TFLite builtins only; "
                   "regressors, MLP policies, Q-networks); default FILE: "
                   "EXPORT_BASE/NAME/VERSION.tflite, beside the version directory")

    a = sub.add_parser("adapt", help="adapt an exported model to data or a fresh task",
                       description="Calls the SavedModel's `adapt` signature (TensorFlow only). "
                       "With --data: a .npz or .json file holding support_x, support_y, query_x "
                       "(and optionally query_y); prints the query predictions as JSON, and the "
                       "MSE when query_y is given. Without --data: a fresh sinusoid task; prints "
                       "the query MSE before and after adaptation.")
    a.add_argument("saved_model", metavar="SAVEDMODEL", help="a version directory of an export")
    a.add_argument("--data", metavar="FILE", help=".npz or .json with support_x, support_y, query_x")
    a.add_argument("--num-steps", type=int, default=1, help="inner steps (default 1)")
    a.add_argument("--shots", type=int, default=10, help="fresh task: support points (default 10)")
    a.add_argument("--seed", type=int, default=0, help="fresh task: seed (default 0)")

    i = sub.add_parser("inspect", help="print a SavedModel's signatures and check it for TF Serving",
                       description="Prints every signature (named inputs and outputs, dtypes, "
                       "shapes) and checks what TF Serving requires: tag serve, serving_default, "
                       "the predict method, named dense tensors with JSON dtypes, batch dimension "
                       "-1, no Python ops. Exits 1 when a check fails.")
    i.add_argument("saved_model", metavar="SAVEDMODEL", help="a version directory of an export")
    i.add_argument("--no-load", action="store_true",
                   help="skip loading the model with tf.saved_model.load (proto checks only)")
    r = sub.add_parser(
        "results", help="train and score the results registry; regenerate docs/RESULTS.md",
        description="Runs the rows of results/*.yaml (run from the repository root): trains each "
        "row's preset per seed (resuming unfinished runs, skipping seeds already recorded), scores "
        "it on the test split, appends records to RECORDS/<row>/records.jsonl and regenerates the "
        "report (and, at the full budget, the README's results table) from the records alone.")
    r.add_argument("--budget", choices=("quick", "full"), default="full",
                   help="full: the presets' budgets (hours); quick: every row in minutes, to "
                   "check that it runs end to end (default full)")
    r.add_argument("--only", nargs="+", metavar="NAME", help="rows to run (default: all)")
    r.add_argument("--seeds", type=int, help="training seeds per row (default: the row's at the "
                   "full budget, 1 at the quick one)")
    r.add_argument("--first-seed", type=int, default=0, help="first training seed (default 0)")
    r.add_argument("--registry", metavar="DIR", help="row definitions (default ./results)")
    r.add_argument("--records", metavar="DIR", help="records directory (default docs/results at "
                   "the full budget, runs/results-quick/records at the quick one)")
    r.add_argument("--runs", metavar="DIR", help="run directories (default runs/results)")
    r.add_argument("--report", metavar="FILE", help="report to write (default docs/RESULTS.md at "
                   "the full budget, RECORDS/../RESULTS.md at the quick one)")
    r.add_argument("--rerun", action="store_true", help="score recorded seeds again")
    r.add_argument("--report-only", action="store_true", help="regenerate the report only")
    r.add_argument("--threads", type=int, default=1, help="TensorFlow threads (default 1)")
    return p


def _results(args) -> int:
    from training.results import registry

    if args.seeds is not None and args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    if args.first_seed < 0:
        raise ValueError(f"--first-seed must be >= 0, got {args.first_seed}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    rows = registry.load_registry(args.registry, args.only)
    full = args.budget == "full"
    records = args.records or (os.path.join("docs", "results") if full
                               else os.path.join("runs", "results-quick", "records"))
    report = args.report or (os.path.join("docs", "RESULTS.md") if full
                             else os.path.join(os.path.dirname(records), "RESULTS.md"))
    if not args.report_only:
        import tensorflow as tf

        from training.results.runner import command_line, run_rows

        if args.threads:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        run_rows(rows, args.budget, records, args.runs or os.path.join("runs", "results"),
                 seeds=args.seeds, first_seed=args.first_seed, rerun=args.rerun,
                 command=command_line(), log=lambda m: print(m, flush=True))
    from training.results.report import write_report

    # The report always covers the whole registry, not only the rows just run.
    all_rows = registry.load_registry(args.registry)
    readme = "README.md" if full and args.report is None and os.path.exists("README.md") else None
    write_report(all_rows, records, report, budget=args.budget, readme=readme)
    print(f"wrote {report}" + (f" and the results table of {readme}" if readme else ""))
    return 0


def _train(args) -> int:
    import tensorflow as tf

    from training.config import apply_overrides, load_config
    from training.run import read_run_config, train

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.resume:
        if args.preset or args.out or args.algo or args.shots or args.seed is not None or args.set:
            raise ValueError("--resume RUN_DIR continues a run as it was configured; only --steps "
                             "may be given with it")
        run_dir = args.resume
        config = read_run_config(run_dir)
    else:
        if args.preset is None or args.out is None:
            raise ValueError("give PRESET|FILE.yaml and --out RUN_DIR (or --resume RUN_DIR)")
        run_dir = args.out
        config = load_config(args.preset)
        if args.algo:
            config = config.with_algorithm(args.algo)
        if args.shots is not None:
            config = config.with_shots(args.shots)
        if args.seed is not None:
            config = dataclasses.replace(config, seed=args.seed)
        config = apply_overrides(config, args.set)
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    if args.skip_nonfinite < 0:
        raise ValueError(f"--skip-nonfinite must be >= 0, got {args.skip_nonfinite}")
    summary = train(config, run_dir, quiet=args.quiet, resume=bool(args.resume),
                    skip_nonfinite=args.skip_nonfinite)
    print(f"run_dir={run_dir}")
    print(f"steps={summary['steps']} train_seconds={summary['train_seconds']:.1f}")
    print(_curve_line(summary["eval"]))
    return 0


def _curve_line(curve: dict) -> str:
    from training.run import CURVE_NAMES, curve_key

    key = curve_key(curve)
    line = " ".join(f"{CURVE_NAMES[key]}_after_{k}_steps={v:.4f}" for k, v in enumerate(curve[key]))
    if curve.get("oracle_return") is not None:
        line += f" oracle_return={curve['oracle_return']:.4f}"
    return line


def _evaluate(args) -> int:
    from training.run import evaluate_run

    curve = evaluate_run(args.run_dir, num_tasks=args.tasks, num_steps=args.inner_steps,
                         num_support=args.shots, num_query=args.query, seed=args.seed)
    print(_curve_line(curve))
    print(f"wrote {os.path.join(args.run_dir, 'evaluation.json')}")
    return 0


def _export(args) -> int:
    if args.run_dir is None:
        if args.serving_config is None:
            raise ValueError("give RUN_DIR to export, or --serving-config to (re)write the "
                             "models.config of EXPORT_BASE")
        return _serving_config(args)
    from training.config import exporter_for
    from training.run import restore_learner

    config, learner = restore_learner(args.run_dir)
    meta = {"algorithm": config.algorithm, "task": config.task, "run_name": config.name,
            "meta_steps": learner.step}
    exporter = exporter_for(config)
    jit = {"jit_compile": True} if getattr(args, "jit_compile", False) else {}
    if jit and "jit_compile" not in pyinspect.signature(exporter).parameters:
        raise ValueError(f"--jit-compile applies to supervised exports; {config.algorithm} "
                         "exports have no XLA option")
    path = exporter(learner, args.to, args.name or config.name, version=args.version,
                    max_num_steps=args.max_num_steps, extra_metadata=meta, **jit)
    print(path)
    if args.tflite is not None:
        from export import tflite

        # Checked against the SavedModel on random inputs before anything is written.
        module = tflite.module_from_saved_model(path)
        target = args.tflite or os.path.normpath(path) + ".tflite"
        for written in tflite.convert(module, target):
            print(written)
    if args.serving_config is not None:
        _serving_config(args)
    return 0


def _serving_config(args) -> int:
    from export.serving_config import write_serving_config

    path = write_serving_config(args.to, args.serving_config or None, args.serving_base_path)
    print(f"wrote {path}")
    return 0


def _inspect(args) -> int:
    from export.inspect import inspect

    text, report = inspect(args.saved_model, load=not args.no_load)
    print(text)
    return 0 if report.ok else 1


def _load_data(path: str) -> dict:
    import numpy as np

    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    elif path.endswith(".json"):
        with open(path) as f:
            data = json.load(f)
    else:
        raise ValueError(f"--data must be a .npz or .json file, got {path!r}")
    missing = [k for k in ("support_x", "support_y", "query_x") if k not in data]
    if missing:
        raise ValueError(f"--data {path} lacks {missing}; it needs support_x, support_y, query_x")
    out = {}
    for k, v in data.items():
        arr = np.asarray(v, dtype=np.float32)
        out[k] = arr[:, None] if arr.ndim == 1 else arr
    return out


def _adapt(args) -> int:
    import numpy as np
    import tensorflow as tf

    if not os.path.exists(os.path.join(args.saved_model, "saved_model.pb")):
        raise FileNotFoundError(f"{args.saved_model} is not a SavedModel directory")
    model = tf.saved_model.load(args.saved_model)
    if "adapt" not in model.signatures:
        raise ValueError(f"{args.saved_model} has no `adapt` signature")
    adapt = model.signatures["adapt"]

    def call(d, steps):
        return adapt(support_x=tf.constant(d["support_x"]), support_y=tf.constant(d["support_y"]),
                     query_x=tf.constant(d["query_x"]),
                     num_steps=tf.constant(steps, tf.int32))["y"].numpy()

    if args.data:
        data = _load_data(args.data)
        y = call(data, args.num_steps)
        print(json.dumps({"y": y.tolist()}))
        if "query_y" in data:
            print(f"query_mse_after_{args.num_steps}_steps="
                  f"{float(np.mean((y - data['query_y']) ** 2)):.6f}")
        return 0
    rng = np.random.default_rng(args.seed)  # a fresh sinusoid with the MAML paper's ranges
    amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)
    xs = rng.uniform(-5, 5, (args.shots, 1)).astype(np.float32)
    xq = rng.uniform(-5, 5, (100, 1)).astype(np.float32)
    data = {"support_x": xs, "support_y": (amp * np.sin(xs - phase)).astype(np.float32),
            "query_x": xq}
    target = amp * np.sin(xq - phase)
    print(f"task: sinusoid amplitude={amp:.4f} phase={phase:.4f} shots={args.shots}")
    for steps in sorted({0, args.num_steps}):
        print(f"query_mse_after_{steps}_steps={float(np.mean((call(data, steps) - target) ** 2)):.6f}")
    return 0


def _presets() -> int:
    """Lists the presets from their YAML alone (no TensorFlow import: instant)."""
    import yaml

    for fn in sorted(os.listdir(PRESET_DIR)):
        if fn.endswith(".yaml"):
            with open(os.path.join(PRESET_DIR, fn)) as f:
                data = yaml.safe_load(f) or {}
            print(f"{fn[:-5]:28s} {data.get('description', '')}")
    return 0


class _TensorFlowLogFilter:
    """Drops TensorFlow's C++ log lines (absl's "All log messages before absl::InitializeLog()"
    notice, the I/W/E lines of the oneDNN, CUDA and CPU-feature probes) from file descriptor 2 and
    passes everything else through, for the whole command.

    Those lines are written to the descriptor directly, many before any log-level setting applies
    (TF_CPP_MIN_LOG_LEVEL does not hide them in TensorFlow 2.21), and some only when the runtime
    first starts, which must happen inside the command (a multi-worker strategy needs a fresh
    runtime). So the descriptor goes through a pipe whose reader thread filters by line.
    Fatal (F) lines and Python's own output are kept.
    """

    _DROP = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|"
                       r"[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] |"
                       r"To enable the following instructions:)")

    def __enter__(self):
        sys.stderr.flush()
        self._saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._reader = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self._reader.start()
        return self

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb") as pipe, os.fdopen(os.dup(self._saved), "wb", 0) as out:
            for line in pipe:
                if not self._DROP.match(line.decode("utf-8", "replace")):
                    out.write(line)

    def __exit__(self, *exc):
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the reader sees EOF
        os.close(self._saved)
        self._reader.join(timeout=5)
        return False


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            return _presets()
        command = {"train": _train, "evaluate": _evaluate, "export": _export,
                   "adapt": _adapt, "inspect": _inspect, "results": _results}[args.command]
        if args.verbose:
            return command(args)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _TensorFlowLogFilter():
            return command(args)
    except (ValueError, FileExistsError, FileNotFoundError, FloatingPointError) as err:
        print(f"metarl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
