"""Runs registry rows: one run directory per (budget, row, seed), resumed when unfinished; one JSONL
record per finished seed, with its provenance (command, commit, date, machine, package versions,
the resolved config and parameters).

A killed ``metarl results`` resumes: seeds with a record for the same row definition (config and
parameters hashed) are skipped, and an unfinished seed resumes from its run directory's last
checkpoint. ``rerun=True`` scores every seed again (new records; the report uses the newest).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata

from training.results import protocols
from training.results.registry import Row

PACKAGES = ("tensorflow", "keras", "numpy", "gymnasium", "mujoco", "metaworld", "ray")


def records_path(records_dir: str, row: str) -> str:
    return os.path.join(records_dir, row, "records.jsonl")


def read_records(records_dir: str, row: str) -> list[dict]:
    """Every record of ``row`` (a line that does not parse is an error naming file and line)."""
    path = records_path(records_dir, row)
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number} is not a JSON record: {err}") from None
    return out


def append_record(records_dir: str, record: dict) -> None:
    """Appends one line and fsyncs it: a kill leaves whole records only (at worst a torn last
    line, which ``read_records`` names)."""
    path = records_path(records_dir, record["row"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def git(*args) -> str:
    """``git ARGS`` in the working directory, its stdout; "" outside a checkout."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def provenance() -> dict:
    """Commit (and whether the tree had uncommitted changes), date, machine, package versions."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain",
                                                                   "--untracked-files=no")),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()},
            "versions": versions}


def definition(row: Row, budget: str, seed: int) -> dict:
    """What one seed of a row runs: the resolved config (protocols with a preset) and the
    parameters; its hash decides whether an existing record is still current."""
    out = {"params": row.budget_params(budget)}
    if row.preset is not None:
        out["config"] = protocols.resolve_config(row, budget, seed).to_dict()
    return out


def definition_hash(defn: dict) -> str:
    return hashlib.sha256(json.dumps(defn, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _claim(run_dir: str) -> bool:
    """Takes ``run_dir``'s lock (a file holding this process's id); False when a live process
    holds it (two ``metarl results`` sharing rows never train one run directory at once). A lock
    left by a killed process is taken over."""
    path = run_dir + ".lock"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        with open(path) as f:
            os.kill(int(f.read().strip() or 0), 0)
        return False  # the holder is alive
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    except PermissionError:
        return False
    with open(path + f".{os.getpid()}", "w") as f:
        f.write(str(os.getpid()))
    os.replace(path + f".{os.getpid()}", path)
    return True


def _release(run_dir: str) -> None:
    try:
        os.remove(run_dir + ".lock")
    except FileNotFoundError:
        pass


def run_rows(rows: list[Row], budget: str, records_dir: str, runs_dir: str,
             seeds: int | None = None, first_seed: int = 0, rerun: bool = False,
             command: str = "", log=print) -> list[dict]:
    """Runs every seed of every row that has no current record; returns the new records."""
    new = []
    for row in rows:
        count = row.budget_seeds(budget) if seeds is None else seeds
        params = row.budget_params(budget)
        existing = read_records(records_dir, row.name)
        for seed in range(first_seed, first_seed + count):
            defn = definition(row, budget, seed)
            key = definition_hash(defn)
            if not rerun and any(r["budget"] == budget and r["seed"] == seed
                                 and r["definition_hash"] == key for r in existing):
                log(f"{row.name} seed {seed}: recorded, skipped")
                continue
            run_dir = os.path.join(runs_dir, budget, row.name, f"seed{seed}")
            if not _claim(run_dir):
                log(f"{row.name} seed {seed}: another process is running it, skipped")
                continue
            if not rerun and any(r["budget"] == budget and r["seed"] == seed
                                 and r["definition_hash"] == key
                                 for r in read_records(records_dir, row.name)):
                _release(run_dir)  # another process finished it since this row started
                log(f"{row.name} seed {seed}: recorded, skipped")
                continue
            log(f"{row.name} seed {seed}: running ({budget} budget)")
            start = time.perf_counter()
            try:
                figures, curve = protocols.PROTOCOL_FNS[row.protocol](row, budget, seed, run_dir,
                                                                     params)
            finally:
                _release(run_dir)
            record = {"row": row.name, "budget": budget, "seed": seed, "figures": figures,
                      "curve": curve, "wall_s": round(time.perf_counter() - start, 1),
                      "definition_hash": key, **defn, "command": command, **provenance()}
            append_record(records_dir, record)
            new.append(record)
            shown = figures.get(row.metric)
            log(f"{row.name} seed {seed}: {row.metric}={shown} ({record['wall_s']} s)")
    return new


def command_line() -> str:
    return " ".join(["metarl", *sys.argv[1:]]) if sys.argv else "metarl results"
