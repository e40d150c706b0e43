# `make demo` and `make test` set everything up on a fresh machine: a .venv in the repo root with the
# package and its pinned dependencies (constraints.txt), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metarl-installed
PYTEST_ARGS ?= -n 2

.PHONY: demo demo-rl demo-sinusoid test lint bench results results-quick venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,mujoco,metaworld,serving]"
	touch $(STAMP)

# The RL story: meta-train MAML-TRPO on PointNav, export, adapt the SavedModel to new goals.
demo: $(STAMP)
	$(PY) examples/pointnav_demo.py --out demo_out

demo-rl: demo

demo-sinusoid: $(STAMP)
	$(PY) examples/sinusoid_demo.py --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff (configured in pyproject.toml), lint only.
lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/maml_sinusoid.py

# Every reported figure: trains the registry's rows (results/*.yaml) at their full budgets (hours;
# resumable: rerun the same command after a kill), then regenerates docs/RESULTS.md and the README's
# results table from the records in docs/results/.
results: $(STAMP)
	$(PY) -m training.cli results --budget full

# Every row end to end at a tiny budget (minutes), records and report under runs/results-quick/.
results-quick: $(STAMP)
	$(PY) -m training.cli results --budget quick --rerun

clean:
	rm -rf demo_out .pytest_cache
