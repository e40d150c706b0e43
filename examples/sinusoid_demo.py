"""`make demo`: meta-train MAML on sinusoids, export, and adapt the export in a fresh process.

    python examples/sinusoid_demo.py [--out demo_out] [--steps 40000]

Every step is a command a user would run: `metarl train`, `metarl export`, then
examples/adapt_exported.py, which loads the SavedModel with TensorFlow alone (Keras and metarl_tf
blocked), adapts it to a new sinusoid through the `adapt` signature and plots the fit.
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
    p.add_argument("--steps", type=int, default=40000)
    a = p.parse_args()
    run_dir, export_base = os.path.join(a.out, "run"), os.path.join(a.out, "exports")
    for d in (run_dir, export_base):  # the demo owns these directories; start them afresh
        shutil.rmtree(d, ignore_errors=True)
    metarl = [sys.executable, "-m", "training.cli"]
    run(metarl + ["train", "maml-sinusoid", "--out", run_dir, "--steps", str(a.steps),
                  "--threads", "1"])
    version_dir = run(metarl + ["export", run_dir, "--to", export_base,
                                "--name", "sinusoid"]).strip().splitlines()[-1]
    run([sys.executable, os.path.join(HERE, "adapt_exported.py"), version_dir,
         "--png", os.path.join(a.out, "adaptation.png")])
    print(f"demo done: run in {run_dir}, SavedModel in {version_dir}, plots "
          f"{os.path.join(a.out, 'adaptation.png')} and {os.path.join(run_dir, 'adaptation_curve.png')}")


if __name__ == "__main__":
    main()
