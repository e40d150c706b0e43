"""Row definitions of the results registry: ``results/<name>.yaml``, validated on load.

A row::

    title: "MAML sinusoid, K=10: query MSE after one inner step"
    protocol: supervised            # how one seed is trained and scored (training.results.protocols)
    preset: maml-sinusoid           # the preset users run (training/configs/), never a private copy
    set: {algorithm_config.num_support: 10}   # --set overrides that define the row (e.g. K)
    params: {eval_tasks: 600}       # protocol parameters (test tasks, inner steps, baselines' budget)
    metric: mse_after_1             # the figure the target applies to
    direction: lower                # lower or higher is better
    seeds: 3                        # training seeds at the full budget
    budgets:                        # per budget, more overrides: quick runs every row in minutes
      quick: {set: {steps: 20}, params: {eval_tasks: 20}}
    target: {value: 0.44, source: "Finn et al. 2017 (arXiv:1703.03400), section 5.1"}
    baselines: [mse_after_0, pretrained_mse_after_1]   # figures shown beside the metric
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import yaml

BUDGETS = ("quick", "full")
# Sections of RESULTS.md in this order (a row's `group`); other groups follow in file order.
GROUPS = ("Sinusoid regression (MAML paper protocol)", "Meta-RL with MAML (MuJoCo and PointNav)",
          "Meta-World", "RL² (adaptation in the recurrent state)",
          "Meta-DQN (task-conditioned Q, z adapted by gradient steps)", "PEARL", "Learned update rules",
          "Speed", "Serving", "Reliability")
DIRECTIONS = ("higher", "lower")
PROTOCOLS = ("supervised", "maml_rl", "rl2", "meta_dqn", "metaworld", "pearl", "script")


@dataclasses.dataclass(frozen=True)
class Target:
    """A fixed figure (``value``), or a baseline computed in the same run on the same test tasks
    (``baseline``: the verdict then applies to the per-seed difference metric - baseline, against
    0)."""

    source: str  # Where the figure comes from (paper and table, or the issue).
    value: float | None = None  # The figure to reach.
    baseline: str | None = None  # Or: the figure (of each seed's record) to reach.


@dataclasses.dataclass(frozen=True)
class Row:
    name: str  # File name without .yaml: the row's id (records live in docs/results/<name>/).
    title: str  # One line for the tables.
    protocol: str  # One of PROTOCOLS.
    metric: str  # Key of the figure that the target and verdict apply to.
    direction: str  # "higher" or "lower" is better.
    metric_label: str = ""  # How the metric reads in the tables (default: the key).
    preset: str | None = None  # Preset trained by the row (not for protocol "script").
    set: dict = dataclasses.field(default_factory=dict)  # Overrides defining the row.
    params: dict = dataclasses.field(default_factory=dict)  # Protocol parameters.
    seeds: int = 3  # Training seeds at the full budget.
    budgets: dict = dataclasses.field(default_factory=dict)  # budget -> {set, params, seeds}.
    target: Target | None = None  # What the metric should reach.
    baselines: tuple[str, ...] = ()  # Other figures shown beside the metric.
    group: str = ""  # Section of RESULTS.md.

    def __post_init__(self):
        where = f"results/{self.name}.yaml"
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"{where}: `protocol` must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"{where}: `direction` must be one of {DIRECTIONS}, "
                             f"got {self.direction!r}")
        if (self.preset is None) != (self.protocol == "script"):
            raise ValueError(f"{where}: `preset` is required for protocol {self.protocol!r} "
                             "and not allowed for 'script'")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"{where}: `seeds` must be an integer >= 1, got {self.seeds!r}")
        for field in ("set", "params", "budgets"):
            if not isinstance(getattr(self, field), dict):
                raise ValueError(f"{where}: `{field}` must be a mapping, "
                                 f"got {type(getattr(self, field)).__name__}")
        for budget, spec in self.budgets.items():
            if budget not in BUDGETS:
                raise ValueError(f"{where}: budget {budget!r} is not one of {BUDGETS}")
            if not isinstance(spec, dict) or set(spec) - {"set", "params", "seeds"}:
                raise ValueError(f"{where}: budgets.{budget} must be a mapping with keys among "
                                 f"['params', 'seeds', 'set'], got {spec!r}")
        if isinstance(self.target, dict):
            t = self.target
            ok = set(t) in ({"value", "source"}, {"baseline", "source"})
            try:
                target = Target(str(t["source"]), value=float(t["value"]) if "value" in t else None,
                                baseline=t.get("baseline"))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{where}: `target` must have a `source` and either a numeric "
                                 f"`value` or a `baseline` figure, got {t!r}")
            object.__setattr__(self, "target", target)
        object.__setattr__(self, "baselines", tuple(self.baselines))
        if not self.metric_label:
            object.__setattr__(self, "metric_label", self.metric)

    def budget_set(self, budget: str) -> dict:
        """The ``--set`` overrides of ``budget``: the row's, then the budget's."""
        return {**self.set, **self.budgets.get(budget, {}).get("set", {})}

    def budget_params(self, budget: str) -> dict:
        return {**self.params, **self.budgets.get(budget, {}).get("params", {})}

    def budget_seeds(self, budget: str) -> int:
        """Seeds run by default: the row's at the full budget, one at the quick budget."""
        return int(self.budgets.get(budget, {}).get("seeds", self.seeds if budget == "full" else 1))


def registry_dir(root: str | None = None) -> str:
    """``results/`` of the repository (the working directory's, or ``root``'s)."""
    return os.path.join(root or os.getcwd(), "results")


def load_row(path: str) -> Row:
    name = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
        data: Any = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a row must be a mapping")
    names = {f.name for f in dataclasses.fields(Row)} - {"name"}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    return Row(name=name, **data)


def load_registry(directory: str | None = None, only: list[str] | None = None) -> list[Row]:
    """The rows of ``directory`` (default ``./results``) in file-name order; ``only`` picks rows
    by name (an unknown name is an error that lists the valid ones)."""
    directory = directory or registry_dir()
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no results registry at {directory} (run from the repository "
                                "root, or pass --registry)")
    rows = [load_row(os.path.join(directory, fn)) for fn in sorted(os.listdir(directory))
            if fn.endswith(".yaml")]
    if only:
        names = [r.name for r in rows]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ValueError(f"unknown result row(s) {unknown}; rows: {names}")
        rows = [r for r in rows if r.name in only]
    return rows
