"""Study throughput of ``python -m search run`` with 1 and 2 worker processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.common import REPO, unique_name, write_fixed_study


def trials_per_minute(study: optuna.Study) -> float:
    """Return finished trials per minute, from the first start to the last completion.

    Measuring between the trials' own timestamps leaves out the interpreter
    start and imports of each worker process.
    """
    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    if len(trials) < 2:
        return float("nan")
    started = min(t.datetime_start for t in trials)
    completed = max(t.datetime_complete for t in trials)
    return len(trials) / (completed - started).total_seconds() * 60


def trial_seconds(study: optuna.Study) -> list[float]:
    """Return the wall time of each finished trial, start to completion."""
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]


def run_workers(
    storage_url: str, folder: Path, workers: int, n_trials: int
) -> tuple[float, list[float]]:
    """Run a new fixed study on ``workers`` processes.

    Returns its trials per minute and the wall time of each of its trials.
    """
    path = write_fixed_study(folder, unique_name(f"bench_workers{workers}"))
    command = [
        sys.executable,
        "-m",
        "search",
        "-q",
        "run",
        "--study",
        str(path),
        "--storage",
        storage_url,
        "--n-trials",
        str(n_trials),
    ]
    if workers > 1:
        command += ["--workers", str(workers)]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    study = optuna.load_study(study_name=path.stem, storage=storage_url)
    return trials_per_minute(study), trial_seconds(study)


def measure_throughput(
    storage_url: str, folder: Path, n_trials: int, repetitions: int
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """Alternate runs of 1 and 2 workers.

    Returns the trials per minute of each run and the wall time of every
    trial, both by number of workers.
    """
    rates: dict[int, list[float]] = {1: [], 2: []}
    durations: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repetitions):
        for workers in (1, 2):
            rate, seconds = run_workers(storage_url, folder, workers, n_trials)
            rates[workers].append(rate)
            durations[workers] += seconds
    return rates, durations
