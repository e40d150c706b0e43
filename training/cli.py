"""The ``metarl`` command line.

    metarl presets
    metarl train maml-sinusoid --out runs/maml [--steps N] [--algo maml|fomaml|metasgd|reptile]
                 [--shots K] [--seed S] [--quiet] [--resume]
    metarl export runs/maml --to exports [--name sinusoid] [--version N]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parser() -> argparse.ArgumentParser:
    from training.config import ALGORITHMS

    p = argparse.ArgumentParser(prog="metarl", description="Meta-train, evaluate and export "
                                "adaptable TensorFlow models.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("presets", help="list the training presets")

    t = sub.add_parser("train", help="meta-train a preset or a YAML config into a run directory",
                       description="Meta-train PRESET (see `metarl presets`) or a YAML config file. "
                       "Writes config.json, checkpoints/, tensorboard/, summary.json and "
                       "adaptation_curve.png into --out.")
    t.add_argument("preset", metavar="PRESET|FILE.yaml", nargs="?",
                   help="preset name or YAML file (omit with --resume)")
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create")
    t.add_argument("--steps", type=int, help="total meta-steps (overrides the preset)")
    t.add_argument("--algo", choices=sorted(ALGORITHMS), help="algorithm (overrides the preset)")
    t.add_argument("--shots", type=int, metavar="K", help="support (and query) points per task")
    t.add_argument("--seed", type=int, help="base seed")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its latest checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.add_argument("--threads", type=int, default=0,
                   help="TensorFlow intra- and inter-op threads (0 = TensorFlow's default; "
                   "1 is fastest for small models on few cores)")

    e = sub.add_parser("export", help="export a run as an adaptable SavedModel",
                       description="Writes <BASE>/<NAME>/<VERSION>/ (TF Serving layout) from the "
                       "run's latest checkpoint and prints that directory. Never overwrites.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--to", required=True, metavar="EXPORT_BASE", help="export base directory")
    e.add_argument("--name", help="model name (default: the run's config name)")
    e.add_argument("--version", type=int, help="version number (default: next free one)")
    e.add_argument("--max-num-steps", type=int, default=1000,
                   help="largest num_steps the adapt signature accepts (default 1000)")
    return p


def _train(args) -> int:
    import json

    import tensorflow as tf

    from training.config import ExperimentConfig, load_config
    from training.run import train

    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    if args.resume:
        path = os.path.join(args.out, "config.json")
        if not os.path.exists(path):
            raise SystemExit(f"metarl train: --resume needs a run directory, {path} is missing")
        with open(path) as f:
            config = ExperimentConfig.from_dict(json.load(f))
    else:
        if args.preset is None:
            raise SystemExit("metarl train: give a PRESET or FILE.yaml (see `metarl presets`)")
        config = load_config(args.preset)
    if args.algo:
        config = config.with_algorithm(args.algo)
    if args.shots is not None:
        config = config.with_shots(args.shots)
    updates = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    if updates:
        config = dataclasses.replace(config, **updates)
    summary = train(config, args.out, quiet=args.quiet, resume=args.resume)
    curve = summary["eval"]["mse"]
    print(f"run_dir={args.out}")
    print(f"steps={summary['steps']} train_seconds={summary['train_seconds']:.1f}")
    print(" ".join(f"mse_after_{k}_steps={v:.4f}" for k, v in enumerate(curve)))
    return 0


def _export(args) -> int:
    from export import export_learner
    from training.run import restore_learner

    config, learner = restore_learner(args.run_dir)
    meta = {"algorithm": config.algorithm, "run_name": config.name, "meta_steps": learner.step}
    path = export_learner(learner, args.to, args.name or config.name, version=args.version,
                          max_num_steps=args.max_num_steps, extra_metadata=meta)
    print(path)
    return 0


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "presets":
            from training.config import list_presets
            for name, description in list_presets().items():
                print(f"{name:24s} {description}")
            return 0
        if args.command == "train":
            return _train(args)
        return _export(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"metarl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
