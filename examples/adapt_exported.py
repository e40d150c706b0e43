"""Adapts an exported AdaptableRegressor to a new sinusoid, using nothing but TensorFlow.

    python examples/adapt_exported.py EXPORT_DIR [--shots 10] [--seed 0] [--png fit.png]

Keras and metarl_tf are blocked from importing here on purpose: an export must stand on its own.
"""
import argparse
import json
import os
import sys

for blocked in ("keras", "metarl_tf", "training", "export"):
    sys.modules[blocked] = None  # any `import keras` now raises ImportError
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("export_dir")
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--png", help="write a plot of the fit before/after adaptation here")
    a = p.parse_args()

    model = tf.saved_model.load(a.export_dir)
    adapt = model.signatures["adapt"]
    rng = np.random.default_rng(a.seed)
    amp, phase = rng.uniform(0.1, 5.0), rng.uniform(0.0, np.pi)  # a new task, MAML paper ranges
    f = lambda x: amp * np.sin(x - phase)
    support_x = rng.uniform(-5, 5, (a.shots, 1)).astype(np.float32)
    query_x = np.linspace(-5, 5, 200, dtype=np.float32)[:, None]
    print(f"new task: amplitude={amp:.3f} phase={phase:.3f}, {a.shots} support points")

    # The export refuses counts above its validated bound (assets.extra/metarl_tf.json).
    with open(os.path.join(a.export_dir, "assets.extra", "metarl_tf.json")) as fh:
        bound = json.load(fh)["max_num_steps"]
    counts = sorted({min(k, bound) for k in (0, 1, 10)})
    if bound < 10:
        print(f"the export accepts at most {bound} steps (max_num_steps, validated at export)")
    preds = {}
    for steps in counts:
        y = adapt(support_x=tf.constant(support_x), support_y=tf.constant(f(support_x)),
                  query_x=tf.constant(query_x), num_steps=tf.constant(steps, tf.int32))["y"]
        preds[steps] = y.numpy()
        mse = float(np.mean((preds[steps] - f(query_x)) ** 2))
        print(f"query_mse_after_{steps}_steps={mse:.4f}")

    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(query_x, f(query_x), "k-", label="true function")
        ax.plot(support_x, f(support_x), "k^", label=f"{a.shots} support points")
        for steps, style in zip(counts, ("b:", "r--", "g-.")):
            ax.plot(query_x, preds[steps], style, label=f"after {steps} adapt steps")
        ax.legend(fontsize=8)
        ax.set_title("exported model adapted through its `adapt` signature")
        fig.tight_layout()
        fig.savefig(a.png, dpi=100)
        print(f"plot={a.png}")


if __name__ == "__main__":
    main()
