"""The results registry: interval and verdict by hand, row validation, the report from records,
and every row end to end at the quick budget (the figures are not checked, only that each row runs,
records its metric and baselines, and reports)."""
import json
import os

import pytest

from training.results import registry, report, runner, stats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGISTRY = os.path.join(ROOT, "results")
ROWS = registry.load_registry(REGISTRY)


def test_interval_by_hand():
    # values 1, 2, 3: mean 2, sd 1, t_{0.975,2} = 4.303 -> half width 4.303 / sqrt(3) = 2.4843
    mean, low, high = stats.interval([1.0, 2.0, 3.0])
    assert mean == pytest.approx(2.0)
    assert low == pytest.approx(2.0 - 2.48434, abs=1e-4)
    assert high == pytest.approx(2.0 + 2.48434, abs=1e-4)
    assert stats.interval([5.0]) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError, match="no seed has a record"):
        stats.interval([])


def test_verdicts_by_hand():
    # [0.96, 0.94, 0.95]: mean 0.95, sd 0.01, half width 4.303 * 0.01 / sqrt(3) = 0.0248
    values = [0.96, 0.94, 0.95]
    assert stats.verdict(values, 0.90, "higher") == "met"          # low 0.925 >= 0.90
    assert stats.verdict(values, 0.95, "higher") == "within noise"  # 0.925 < 0.95 <= 0.975
    assert stats.verdict(values, 0.98, "higher") == "missed"       # high 0.975 < 0.98
    assert stats.verdict(values, 0.98, "lower") == "met"           # high 0.975 <= 0.98
    assert stats.verdict(values, 0.92, "lower") == "missed"        # low 0.925 > 0.92
    assert stats.verdict([1.0], 0.5, "higher") == stats.SINGLE
    assert stats.verdict(values, None, "higher") == stats.NO_TARGET
    with pytest.raises(ValueError, match="`direction` must be"):
        stats.verdict(values, 1.0, "up")


def test_registry_rows_resolve_at_both_budgets():
    assert len(ROWS) >= 19
    for row in ROWS:
        for budget in registry.BUDGETS:
            if row.preset is not None:
                config = runner.protocols.resolve_config(row, budget, seed=1)
                assert config.seed == 1 and config.name == row.name
        assert row.budget_seeds("quick") == 1
        # a learning claim (a row with a target) rests on at least 3 training seeds
        assert row.target is None or row.budget_seeds("full") >= 3, row.name


def test_bad_rows_are_refused_by_field(tmp_path):
    good = {"title": "t", "protocol": "supervised", "preset": "maml-sinusoid",
            "metric": "mse_after_1", "direction": "lower"}
    cases = [({"protocol": "magic"}, "`protocol` must be one of"),
             ({"direction": "up"}, "`direction` must be one of"),
             ({"seeds": 0}, "`seeds` must be an integer >= 1"),
             ({"preset": None}, "`preset` is required"),
             ({"budgets": {"huge": {}}}, "budget 'huge' is not one of"),
             ({"target": {"value": "x", "source": "s"}}, "`target` must have a `source`"),
             ({"colour": "red"}, r"unknown key\(s\) \['colour'\]")]
    for change, message in cases:
        path = tmp_path / "row.yaml"
        path.write_text(json.dumps({**good, **change}))
        with pytest.raises(ValueError, match=message):
            registry.load_row(str(path))
    with pytest.raises(ValueError, match=r"unknown result row\(s\) \['nope'\]"):
        registry.load_registry(REGISTRY, only=["nope"])


def _record(row, seed, value, thompson, date="2026-12-08T00:00:00+00:00"):
    return {"row": row, "budget": "full", "seed": seed, "date": date, "commit": "abcdef0123",
            "dirty": False, "wall_s": 10.0, "curve": {"x": [0, 1], "y": [value, value]},
            "figures": {"trial_return": value, "thompson": thompson}}


def test_report_from_records_alone(tmp_path):
    row = registry.Row(name="demo", title="demo row", protocol="rl2", preset="rl2-bandits",
                       metric="trial_return", direction="higher", baselines=("thompson",),
                       target={"baseline": "thompson", "source": "by hand"})
    plain = registry.Row(name="plain", title="plain row", protocol="rl2", preset="rl2-bandits",
                         metric="trial_return", direction="higher",
                         target={"value": 7.0, "source": "by hand"})
    records = str(tmp_path / "records")
    # seed 0 is recorded twice: the newer record (6.0) replaces the older (1.0)
    for rec in (_record("demo", 0, 1.0, 5.0, date="2026-12-01T00:00:00+00:00"),
                _record("demo", 0, 6.0, 5.0), _record("demo", 1, 6.5, 5.0),
                _record("demo", 2, 7.0, 5.0)):
        runner.append_record(records, rec)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\nrest\n")
    text = report.write_report([row, plain], records, str(tmp_path / "RESULTS.md"),
                               readme=str(readme), head="0123456789")
    assert "abcdef01, 2026-12-08 (not rerun at this commit)" in text
    # 6.0, 6.5, 7.0: mean 6.5, sd 0.5, half width 4.303 * 0.5 / sqrt(3) = 1.2422;
    # differences to Thompson 1.0, 1.5, 2.0: low 1.5 - 1.2422 = 0.258 > 0 -> met
    assert "| 6.000, 6.500, 7.000 | 6.500 [5.258, 7.742] (3 seeds) |" in text
    assert "**met**" in text and "thompson 5.000" in text
    assert "`plain`: plain row" in text  # no record: listed as not yet run
    assert os.path.exists(os.path.join(records, "demo", "curve-full.png"))
    readme_text = readme.read_text()
    assert readme_text.startswith("intro\n") and readme_text.endswith("rest\n")
    assert "old" not in readme_text and "| demo row | 6.500 [5.258, 7.742] (3 seeds) |" in readme_text


def test_torn_record_is_named(tmp_path):
    path = tmp_path / "r" / "records.jsonl"
    path.parent.mkdir()
    path.write_text('{"row": "r"}\n{"row": \n')
    with pytest.raises(ValueError, match="records.jsonl:2 is not a JSON record"):
        runner.read_records(str(tmp_path), "r")


@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_every_row_runs_at_the_quick_budget(row, tmp_path):
    records = str(tmp_path / "records")
    new = runner.run_rows([row], "quick", records, str(tmp_path / "runs"), log=lambda m: None)
    assert [r["seed"] for r in new] == [0]
    (rec,) = runner.read_records(records, row.name)
    if rec["figures"].get("peers_missing"):
        # a speed row run where the JAX peer is not installed: its ratios are absent, not invented
        assert not any(k.startswith("ratio_vs_jax") for k in rec["figures"])
        return
    assert row.metric in rec["figures"]
    for name in row.baselines:
        assert name in rec["figures"], name
    if row.target is not None and row.target.baseline:
        assert row.target.baseline in rec["figures"]
    assert rec["versions"]["tensorflow"]
    if row.preset is not None:  # a script row has no config, only its parameters
        assert rec["config"]["name"] == row.name
    else:
        assert "config" not in rec and rec["params"] == row.budget_params("quick")
    # a second call finds the seed recorded and runs nothing
    assert runner.run_rows([row], "quick", records, str(tmp_path / "runs"),
                           log=lambda m: None) == []
    text = report.write_report([row], records, str(tmp_path / "RESULTS.md"), budget="quick")
    assert row.name in text


def test_a_live_lock_skips_the_seed_and_a_dead_one_is_taken_over(tmp_path):
    row = next(r for r in ROWS if r.name == "rl2-bandits-n10-k5")
    runs, records = tmp_path / "runs", str(tmp_path / "records")
    lock = runs / "quick" / row.name / "seed0.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(str(os.getpid()))  # this test's own process: alive
    logged = []
    assert runner.run_rows([row], "quick", records, str(runs), log=logged.append) == []
    assert logged == [f"{row.name} seed 0: another process is running it, skipped"]
    lock.write_text("999999999")  # no such process: a killed run's stale lock
    assert len(runner.run_rows([row], "quick", records, str(runs), log=lambda m: None)) == 1
    assert not lock.exists()
