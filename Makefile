# `make demo` and `make test` set everything up on a fresh machine: a .venv in the repo root with the
# package and its pinned dependencies (constraints.txt), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metarl-installed
PYTEST_ARGS ?= -n 2

.PHONY: demo demo-rl demo-sinusoid test bench venv clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,mujoco,metaworld,serving,ray]"
	touch $(STAMP)

# The RL story: meta-train MAML-TRPO on PointNav, export, adapt the SavedModel to new goals.
demo: $(STAMP)
	$(PY) examples/pointnav_demo.py --out demo_out

demo-rl: demo

demo-sinusoid: $(STAMP)
	$(PY) examples/sinusoid_demo.py --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/maml_sinusoid.py
	$(PY) benchmarks/maml_sinusoid_quality.py

clean:
	rm -rf demo_out .pytest_cache
