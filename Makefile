# `make demo` and `make test` set everything up on a fresh machine: a .venv in the repo root with the
# package and its pinned dependencies (constraints.txt), then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.metarl-installed
PYTEST_ARGS ?= -n 2

.PHONY: demo demo-rl demo-sinusoid test lint bench results results-quick venv clean

# TF-Agents interop lives in a second venv (docs/TF_AGENTS.md): TF-Agents 0.19 needs legacy Keras
# (tf-keras, TF_USE_LEGACY_KERAS=1) and pins typing_extensions==4.5.0, which the core venv outgrew.
TFA_VENV := .venv-tf-agents
TFA_PY := $(TFA_VENV)/bin/python
TFA_STAMP := $(TFA_VENV)/.metarl-installed
.PHONY: test-core test-tf-agents venv-tf-agents

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,mujoco,metaworld,serving,ray]"
	touch $(STAMP)

venv-tf-agents: $(TFA_STAMP)

$(TFA_STAMP): setup.cfg pyproject.toml constraints-tf-agents.txt
	test -x $(TFA_PY) || $(PYTHON) -m venv $(TFA_VENV)
	$(TFA_PY) -m pip install -q --upgrade "pip>=24"
	$(TFA_PY) -m pip install -q -c constraints-tf-agents.txt -e ".[tf-agents,mujoco,metaworld]" "pytest>=8,<10"
	touch $(TFA_STAMP)

# The RL story: meta-train MAML-TRPO on PointNav, export, adapt the SavedModel to new goals.
demo: $(STAMP)
	$(PY) examples/pointnav_demo.py --out demo_out

demo-rl: demo

demo-sinusoid: $(STAMP)
	$(PY) examples/sinusoid_demo.py --out demo_out

# Both suites run, even when the first fails; `make test` fails if either does.
test: $(STAMP) $(TFA_STAMP)
	@core=0; $(MAKE) --no-print-directory test-core || core=$$?; \
	tfa=0; $(MAKE) --no-print-directory test-tf-agents || tfa=$$?; \
	echo "make test: core suite exit $$core, tf-agents suite exit $$tfa"; \
	test $$core -eq 0 -a $$tfa -eq 0

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

test-core: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The TF-Agents suite builds its exports with the core venv ($(PY)), then runs in its own.
test-tf-agents: $(STAMP) $(TFA_STAMP)
	METARL_CORE_PYTHON=$(abspath $(PY)) TF_USE_LEGACY_KERAS=1 $(TFA_PY) -m pytest -q -p no:cacheprovider tests_tf_agents
