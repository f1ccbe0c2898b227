"""Run every benchmark, print the table and write it to benchmarks/RESULTS.md.

Usage, from the repository root with the package installed::

    python benchmarks/run.py            # the full run, about 10 minutes on 2 cores
    python benchmarks/run.py --quick    # a smoke run of every section

Every ratio compares contenders measured in this one process run, with
repetitions interleaved and medians taken, so load from other processes
falls on both sides of a ratio. PostgreSQL sections need the server on
127.0.0.1:5432 (``SEARCH_BENCH_POSTGRESQL`` overrides the admin URL); each
run creates its own database and drops it afterwards.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna
import torch

from benchmarks.analysis_load import (
    create_synthetic_study,
    load_ratio,
    measure_analysis,
)
from benchmarks.common import STUDIES, median, postgresql_database
from benchmarks.pruning import measure_pruning
from benchmarks.storage_calls import measure_storage_calls
from benchmarks.threads import measure_threads
from benchmarks.throughput import measure_throughput
from benchmarks.trial import measure_trials
from search.spec import load_spec

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
NOTES_HEADING = "## Notes"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    name: str
    value: str
    target: str = ""
    met: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return {None: "", True: "met", False: "MISSED"}[self.met]


@dataclass(frozen=True)
class Sizes:
    """Repetitions and study sizes of a full or quick run."""

    trial_repetitions: int
    postgresql_repetitions: int
    throughput_trials: int
    throughput_repetitions: int
    pruning_trials: int
    analysis_trials: int
    analysis_epochs: int
    analysis_repetitions: int


FULL = Sizes(9, 5, 16, 2, 40, 1000, 50, 5)
QUICK = Sizes(2, 1, 4, 1, 6, 50, 50, 2)


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo, else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ratio_row(name: str, value: float, target: float, at_most: bool, note: str) -> Row:
    sign = "<=" if at_most else ">="
    met = value <= target if at_most else value >= target
    return Row(name, f"{value:.2f}", f"{sign} {target}", met, note)


def trial_rows(
    url: str, backend: str, folder: Path, repetitions: int, with_plain: bool
) -> list[Row]:
    """Time trials on one storage and return their ratio and storage-share rows."""
    times = measure_trials(url, folder, repetitions, with_plain=with_plain)
    rows = [
        Row(
            f"hand-written loop, s per fit ({backend} run)",
            f"{median(times.handwritten):.3f}",
        ),
        Row(f"product trial, s per trial ({backend})", f"{median(times.product):.3f}"),
        _ratio_row(
            f"lean net without storage / hand-written loop ({backend})",
            times.ratio("lean_net", "handwritten"),
            1.15,
            True,
            "the skorch part of the trial's overhead",
        ),
        _ratio_row(
            f"trial / hand-written loop ({backend})",
            times.ratio("product", "handwritten"),
            1.15,
            True,
            f"final valid_acc: trial {times.metrics['product']:.4f}, "
            f"hand-written {times.metrics['handwritten']:.4f}",
        ),
    ]
    if with_plain:
        rows += [
            Row(
                f"plain skorch, s per trial ({backend})",
                f"{median(times.plain_skorch):.3f}",
            ),
            _ratio_row(
                f"plain skorch / trial ({backend})",
                times.ratio("plain_skorch", "product"),
                1.8,
                False,
                "",
            ),
        ]
    calls = measure_storage_calls(url, folder)
    rows.append(
        Row(
            f"storage calls, ms each ({backend})",
            ", ".join(f"{name} {ms:.2f}" for name, ms in calls.items()),
            "",
            None,
            "per epoch, measured one call at a time",
        )
    )
    share = times.storage_share * 100
    rows.append(
        Row(
            f"storage stall, % of epoch time ({backend})",
            f"{share:.2f}",
            "<= 2",
            share <= 2,
            "training thread blocked on epoch rows, reports and pruning "
            "checks, per trial",
        )
    )
    return rows


def throughput_rows(url: str, backend: str, folder: Path, sizes: Sizes) -> list[Row]:
    """Measure 1 and 2 workers on one storage and return their rows."""
    rates, durations = measure_throughput(
        url, folder, sizes.throughput_trials, sizes.throughput_repetitions
    )
    one_worker, two_workers = median(rates[1]), median(rates[2])
    return [
        Row(
            f"trials/min, 1 worker ({backend})",
            f"{one_worker:.1f}",
            "",
            None,
            f"median trial {median(durations[1]):.2f} s",
        ),
        Row(
            f"trials/min, 2 workers ({backend})",
            f"{two_workers:.1f}",
            "",
            None,
            f"median trial {median(durations[2]):.2f} s",
        ),
        _ratio_row(
            f"2 workers / 1 worker ({backend})",
            two_workers / one_worker,
            1.8,
            False,
            f"{sizes.throughput_trials} trials per run, "
            f"{sizes.throughput_repetitions} runs each",
        ),
    ]


def pruning_rows(url: str, folder: Path, n_trials: int) -> list[Row]:
    """Run the schedules study with and without its pruner and return the rows."""
    results = measure_pruning(url, folder, n_trials)
    unpruned = results.pop("none")
    rows = [
        Row(
            "epochs trained without pruning (schedules)",
            str(unpruned.epochs_trained),
            "",
            None,
            f"{n_trials} trials; best valid_acc {unpruned.best_value:.4f}",
        )
    ]
    study_pruner = load_spec(STUDIES / "schedules.toml").pruner.name
    for label, pruned in (
        (f"study's pruner ({study_pruner})", results["pruner"]),
        ("median pruner, 5 warm-up epochs", results["median"]),
    ):
        fewer = unpruned.epochs_trained / pruned.epochs_trained
        gap = (unpruned.best_value - pruned.best_value) * 100
        rows += [
            _ratio_row(
                f"times fewer epochs, {label}",
                fewer,
                2.0,
                False,
                f"{pruned.epochs_trained} epochs trained, "
                f"{pruned.epochs_recorded} recorded; "
                f"{pruned.n_pruned} of {n_trials} trials pruned",
            ),
            Row(
                f"best valid_acc, {label}",
                f"{pruned.best_value:.4f}",
                "within 1 point",
                gap <= 1.0,
                f"{gap:+.2f} points below no pruning",
            ),
        ]
    return rows


def analysis_rows(url: str, sizes: Sizes) -> list[Row]:
    """Time loading a synthetic study's epochs and return the rows."""
    started = time.perf_counter()
    name = create_synthetic_study(url, sizes.analysis_trials, sizes.analysis_epochs)
    created = time.perf_counter() - started
    times = measure_analysis(url, name, sizes.analysis_repetitions)
    return [
        Row(
            f"load {sizes.analysis_trials} x {sizes.analysis_epochs} epochs: "
            "epochs_frame, s",
            f"{median(times['epochs_frame']):.3f}",
            "",
            None,
            f"synthetic study stored in {created:.1f} s",
        ),
        Row(
            "load: study.trials_dataframe(), s",
            f"{median(times['trials_dataframe']):.3f}",
        ),
        _ratio_row(
            "epochs_frame / trials_dataframe",
            load_ratio(times),
            0.2,
            True,
            "pandas API of search.analysis on SQLite",
        ),
    ]


def run(sizes: Sizes, with_postgresql: bool) -> list[Row]:
    """Run every section and return the table's rows."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="search-bench-") as folder_name:
        folder = Path(folder_name)
        sqlite_url = f"sqlite:///{folder / 'bench.db'}"
        threads = measure_threads(sizes.trial_repetitions + 1)
        rows.append(
            Row(
                "3-epoch fit, 2 / 1 torch threads",
                f"{median(threads[2]) / median(threads[1]):.2f}",
                "",
                None,
                "steplr MLP, lean net, no storage",
            )
        )
        rows += trial_rows(sqlite_url, "SQLite", folder, sizes.trial_repetitions, True)
        if with_postgresql:
            with postgresql_database() as url:
                rows += trial_rows(
                    url, "PostgreSQL", folder, sizes.postgresql_repetitions, False
                )
                rows += throughput_rows(url, "PostgreSQL", folder, sizes)
        rows += throughput_rows(
            f"sqlite:///{folder / 'workers.db'}", "SQLite", folder, sizes
        )
        rows += pruning_rows(
            f"sqlite:///{folder / 'pruning.db'}", folder, sizes.pruning_trials
        )
        rows += analysis_rows(f"sqlite:///{folder / 'analysis.db'}", sizes)
    return rows


def format_table(rows: list[Row]) -> str:
    """Return the rows as a Markdown table."""
    lines = ["| measure | value | target | verdict | note |", "|---|---|---|---|---|"]
    lines += [
        f"| {r.name} | {r.value} | {r.target} | {r.verdict} | {r.note} |" for r in rows
    ]
    return "\n".join(lines)


def write_results(
    rows: list[Row], command: str, started: datetime.datetime, load: tuple[float, float]
) -> None:
    """Write RESULTS.md: the command, machine, date and table of this run."""
    text = f"""# Benchmark results

Produced by `{command}` on {started:%Y-%m-%d %H:%M} UTC.

Machine: {os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()},
torch {torch.__version__} with 1 intra-op thread per process (the objective's
default), optuna {optuna.__version__}. Load average (1 min) {load[0]:.2f} at the
start and {load[1]:.2f} at the end: other processes shared the cores, so absolute
times vary between runs; the ratios compare contenders interleaved in this run.

{format_table(rows)}

How each figure is measured is in the docstrings of `benchmarks/*.py`.
"""
    # The notes below the table are written by hand; a new run keeps them.
    if RESULTS.exists():
        previous = RESULTS.read_text(encoding="utf-8")
        _, marker, notes = previous.partition(NOTES_HEADING)
        if marker:
            text += "\n" + marker + notes
    RESULTS.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the benchmarks and report them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="few repetitions and small studies, for a smoke run",
    )
    parser.add_argument(
        "--no-postgresql", action="store_true", help="skip the PostgreSQL sections"
    )
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="print the table without writing RESULTS.md",
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    started = datetime.datetime.now(datetime.UTC)
    load_start = os.getloadavg()[0]
    rows = run(QUICK if args.quick else FULL, not args.no_postgresql)
    load_end = os.getloadavg()[0]
    print(format_table(rows))
    if not args.no_write:
        command = "python benchmarks/run.py" + (" --quick" if args.quick else "")
        if args.no_postgresql:
            command += " --no-postgresql"
        write_results(rows, command, started, (load_start, load_end))
        print(f"\nwrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
