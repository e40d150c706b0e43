"""`make demo`: meta-train MAML-TRPO on 2D point navigation, export, adapt the export to new goals.

    python examples/pointnav_demo.py [--out demo_out] [--steps 20]

Every step is a command a user would run: `metarl train maml-trpo-pointnav`, `metarl export`, then
examples/adapt_policy_exported.py, which loads the AdaptablePolicy with TensorFlow alone, rolls out
episodes on new goals, adapts through the `adapt` signature, acts with `action_with_params`, and
prints the returns before and after adaptation next to the oracle's (and plots trajectories).
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd):
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    print(out, end="", flush=True)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="demo_out")
    p.add_argument("--steps", type=int, default=20,
                   help="meta-iterations (20: one step closes ~0.65 of the gap to the oracle, docs/notes/benchmarks/maml_rl_pointnav.txt)")
    a = p.parse_args()
    run_dir, export_base = os.path.join(a.out, "pointnav_run"), os.path.join(a.out, "exports")
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo owns its run directory
    metarl = [sys.executable, "-m", "training.cli"]
    run(metarl + ["train", "maml-trpo-pointnav", "--out", run_dir, "--steps", str(a.steps),
                  "--threads", "1", "--set", "log_every=5", "--set", "checkpoint_every=20"])
    version_dir = run(metarl + ["export", run_dir, "--to", export_base, "--name", "pointnav",
                                "--max-num-steps", "10"]).strip().splitlines()[-1]
    run([sys.executable, os.path.join(HERE, "adapt_policy_exported.py"), version_dir,
         "--png", os.path.join(a.out, "pointnav_trajectories.png")])
    print(f"demo done: run in {run_dir}, SavedModel in {version_dir}, plot "
          f"{os.path.join(a.out, 'pointnav_trajectories.png')}")


if __name__ == "__main__":
    main()
