"""The pieces of the speed benchmarks that compute figures: HLO FLOP counting, growth exponents,
the serving benchmark's tiny mode (its JSON and the split of adapt's time)."""
import json
import math
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from _hlo import dot_flops  # noqa: E402

HLO = """
ENTRY %main (p0: f32[25,10,40], p1: f32[25,40,40]) -> f32[25,10,40] {
  %x = f32[25,10,40]{2,1,0} parameter(0)
  %w = f32[25,40,40]{2,1,0} parameter(1)
  %d.1 = f32[25,10,40]{2,1,0} dot(%x, %w), lhs_batch_dims={0}, lhs_contracting_dims={2}, rhs_batch_dims={0}, rhs_contracting_dims={1}
  %g.2 = f32[25,40,40]{2,1,0} dot(%x, %d.1), lhs_batch_dims={0}, lhs_contracting_dims={1}, rhs_batch_dims={0}, rhs_contracting_dims={1}
  ROOT %s = f32[25,10,40]{2,1,0} add(%d.1, %d.1)
}
"""


def test_dot_flops_counts_two_flops_per_multiply_add():
    # d.1: out 25*10*40 = 10,000 entries, each a 40-long dot: 2 * 10,000 * 40 = 800,000
    # g.2: out 25*40*40 = 40,000 entries, contracted over x's dim 1 (10): 2 * 40,000 * 10 = 800,000
    assert dot_flops(HLO) == (1_600_000, 2)


def test_growth_exponents():
    sys.modules.pop("cost_curves", None)
    code = ("import sys; sys.path.insert(0, %r); from cost_curves import exponents; "
            "print(exponents([[1, 1.0], [2, 2.0], [4, 16.0]]))" % os.path.join(ROOT, "benchmarks"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # 1 -> 2: twice the work, twice the time (1.0); 2 -> 4: 8x the time for 2x (log2 8 = 3.0)
    assert [round(v, 6) for v in eval(out.stdout.strip().splitlines()[-1])] == [1.0, 3.0]


def test_serving_benchmark_tiny_mode_writes_the_split(tmp_path):
    out_json = tmp_path / "serving.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "serving.py"), "--tiny",
                          "--repeats", "5", "--out", str(tmp_path / "serving.txt"),
                          "--json", str(out_json)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": ROOT})
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out_json.read_text())
    for name in ("plain", "xla"):
        parts = [figures[f"adapt_{name}_split_{k}_ms"] for k in ("call", "checks",
                                                                   "predict_and_setup", "math")]
        parts += [figures.get(f"adapt_{name}_split_loop_ms", 0.0)]
        total = figures["adapt_savedmodel_ms" if name == "plain" else "adapt_savedmodel_xla_ms"]
        # the split is a decomposition of the measured total (differences of medians, so exact)
        assert math.isclose(sum(parts), total, rel_tol=1e-6, abs_tol=1e-9)
    assert figures["xla_max_abs_diff_vs_savedmodel"] < 1e-4
    assert figures["tflite_max_abs_diff_vs_savedmodel"] < 1e-4
    assert "adapt_savedmodel_ms=" in (tmp_path / "serving.txt").read_text()
