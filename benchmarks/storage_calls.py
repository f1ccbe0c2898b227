"""The cost of each per-epoch storage call of a trial, measured one call at a time."""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import median, unique_name, write_fixed_study
from search.records import EpochRecord, write_epoch
from search.runner import open_study
from search.spec import load_spec

EPOCHS = 20
FINISHED_TRIALS = 6


def measure_storage_calls(storage_url: str, folder: Path) -> dict[str, float]:
    """Return the median milliseconds of a report, a pruning check and a row insert.

    The study contains a few finished trials first, so that the median pruner
    compares the running trial with them, as it does in a study under way.
    """
    spec = load_spec(write_fixed_study(folder, unique_name("bench_calls")))
    study = open_study(spec, storage_url)
    for _ in range(FINISHED_TRIALS):
        trial = study.ask()
        for step in range(EPOCHS):
            trial.report(0.5 + 0.01 * step, step)
        study.tell(trial, 0.9)

    trial = study.ask()
    times: dict[str, list[float]] = {"report": [], "should_prune": [], "row insert": []}
    for step in range(EPOCHS):
        started = time.perf_counter()
        trial.report(0.6, step)
        reported = time.perf_counter()
        trial.should_prune()
        checked = time.perf_counter()
        write_epoch(
            storage_url,
            EpochRecord(
                spec.name,
                trial._trial_id,
                trial.number,
                step + 1,
                0.03,
                0.1,
                0.1,
                0.6,
                0.01,
            ),
        )
        inserted = time.perf_counter()
        times["report"].append(reported - started)
        times["should_prune"].append(checked - reported)
        times["row insert"].append(inserted - checked)
    study.tell(trial, 0.6)
    return {name: median(values) * 1000 for name, values in times.items()}
