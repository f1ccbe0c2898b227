"""Run one study on several worker processes of this machine.

The parent process creates or loads the study, so the tables and the study
exist before any worker starts. It then starts the workers with
``multiprocessing``'s forkserver method: a fresh server process imports torch
and the training code once, and each worker is forked from it. Forking the
parent itself is unsafe once torch has run an OpenMP parallel region, and
spawning imports torch again in every worker. Each worker is the
single-process runner on the same storage. It runs trials until the study
contains its target of finished trials, and prints its own progress
lines to the inherited stdout. The parent forwards SIGINT and SIGTERM to the
workers, waits for all of them and exits with the signal's status.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace

import optuna

from search.errors import InputError
from search.interrupts import (
    HANDLED_SIGNALS,
    Interrupted,
    install_log_filter,
    signal_name,
)
from search.runner import (
    RunOptions,
    close_study,
    count_finished,
    count_waiting,
    fail_stale_trials,
    open_study,
)
from search.spec import StudySpec, load_spec

logger = logging.getLogger(__name__)

# Modules the fork server imports before it forks workers: torch, through the
# objective, and the Alembic modules that Optuna's RDBStorage imports lazily.
FORKSERVER_PRELOAD = (
    "search.workers",
    "search.objective",
    "search.cli",
    "alembic.migration",
    "alembic.script",
    "alembic.config",
    "alembic.command",
)


class WorkersFailed(RuntimeError):
    """Raised when a worker process exits with an error or is killed."""


def count_cores() -> int:
    """Return the number of CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # sched_getaffinity exists on Linux only
        return os.cpu_count() or 1


def torch_threads(n_workers: int) -> int:
    """Return the torch threads of each of ``n_workers`` workers: cores / N, min 1."""
    return max(1, count_cores() // n_workers)


class _SignalForwarder:
    """Send SIGINT and SIGTERM received by the parent on to its worker processes."""

    def __init__(self):
        self.received: int | None = None
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _SignalForwarder:
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
        logger.warning(
            "received %s; forwarding it to %d workers",
            signal_name(signum),
            len(self.processes),
        )
        for process in self.processes:
            self._send(process, signum)

    def add(self, process: multiprocessing.process.BaseProcess) -> None:
        """Track a started worker, and pass it a signal that came before it started."""
        self.processes.append(process)
        if self.received is not None:
            self._send(process, self.received)

    @staticmethod
    def _send(process, signum: int) -> None:
        if process.pid is None or process.exitcode is not None:
            return
        # The worker may exit between the check and the signal.
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)


def run_workers(
    spec: StudySpec,
    storage_url: str,
    options: RunOptions,
    on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    initializer: Callable[[], None] | None = None,
) -> optuna.Study:
    """Run the study on ``options.workers`` processes until it contains its target.

    Each worker sets torch to :func:`torch_threads` threads and seeds its
    sampler from the operating system's entropy, so the workers sample
    different parameters. (A parallel run is not reproducible anyway, because
    the order of the trials depends on timing.) The study may end with up to
    ``workers - 1`` finished trials more than its target. Each worker finishes
    the trial it is running when the target is reached. ``on_trial`` and
    ``initializer`` run in the workers, as in :func:`search.runner.run_study`.

    Raises
    ------
    ValueError
        If ``spec`` was not loaded from a file, which the workers reload.
    search.interrupts.Interrupted
        If the parent received SIGINT or SIGTERM, after every worker exited.
    WorkersFailed
        If a worker exited with an error or was killed.
    """
    if spec.path is None:
        raise ValueError(
            "several workers need a study loaded from a file, but "
            "spec.path is None; load it with search.spec.load_spec"
        )
    study = open_study(
        spec,
        storage_url,
        options.heartbeat_interval,
        options.max_retry,
        options.accept_changes,
    )
    try:
        fail_stale_trials(study)
        target = options.n_trials or spec.n_trials
        finished = count_finished(study)
        if finished >= target and not count_waiting(study):
            logger.info(
                "study %r already contains %d finished trials (target %d)",
                spec.name,
                finished,
                target,
            )
            return study
    finally:
        close_study(study)

    threads = torch_threads(options.workers)
    cores = count_cores()
    if options.workers > cores:
        logger.warning(
            "%d workers on %d CPU cores: the workers share cores, so each "
            "trial runs slower",
            options.workers,
            cores,
        )
    worker_options = replace(
        options, workers=1, torch_threads=threads, reseed_sampler=True
    )
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    with _SignalForwarder() as forwarder:
        for index in range(options.workers):
            if forwarder.received is not None:
                break
            process = context.Process(
                target=_worker_main,
                args=(
                    spec.path,
                    storage_url,
                    worker_options,
                    index,
                    on_trial,
                    initializer,
                ),
                name=f"search-worker-{index}",
            )
            process.start()
            forwarder.add(process)
            logger.info(
                "started worker %d (pid %d) with %d torch threads",
                index,
                process.pid,
                threads,
            )
        for process in forwarder.processes:
            process.join()

    failures = [
        _describe_exit(index, process)
        for index, process in enumerate(forwarder.processes)
        if process.exitcode != 0
    ]
    if forwarder.received is not None:
        raise Interrupted(forwarder.received)
    if failures:
        for failure in failures:
            logger.error("%s", failure)
        raise WorkersFailed("; ".join(failures))
    return study


def _describe_exit(index: int, process) -> str:
    code = process.exitcode
    if code < 0:
        return (
            f"worker {index} (pid {process.pid}) was killed by "
            f"{signal_name(-code)}; its running trial is failed and retried once "
            "its heartbeat is stale"
        )
    return f"worker {index} (pid {process.pid}) exited with status {code}"


def _worker_main(
    study_path: str,
    storage_url: str,
    options: RunOptions,
    index: int,
    on_trial,
    initializer,
) -> None:
    """Run the study in one worker process and exit with the runner's status."""
    if initializer is not None:
        initializer()
    # Installed here too, so that an interrupted trial logs no traceback even
    # when the initializer does not configure logging.
    install_log_filter()
    from search.runner import run_study

    try:
        spec = load_spec(study_path)
        run_study(spec, storage_url, options, on_trial)
    except Interrupted as error:
        sys.exit(error.exit_status)
    except InputError as error:
        logger.error("worker %d: %s", index, error)
        sys.exit(2)
    except Exception:
        logger.exception("worker %d failed", index)
        sys.exit(1)
