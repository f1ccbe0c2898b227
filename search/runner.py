"""Create or resume a study and optimize it until it contains its target trials."""

from __future__ import annotations

import atexit
import logging
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.definition import check_stored_definition
from search.interrupts import (
    FAILURE_REASON_ATTR,
    Interrupted,
    SignalGuard,
    TrialInterrupted,
    signal_name,
)
from search.records import create_tables, dispose_engines
from search.spec import StudySpec, component_class, component_kwargs
from search.storage import close_storage, make_storage, mask_url, setup_lock

logger = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
SPEC_ATTR = "search_spec"
# Seconds between heartbeats of a running trial. A trial without one for 4
# intervals counts as stale, because its worker died, and is failed and retried.
DEFAULT_HEARTBEAT_INTERVAL_S = 60
DEFAULT_MAX_RETRY = 2

# The RDBStorage of each opened study: Study wraps it in a private cache
# object that has no engine to dispose.
_rdb_storages: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def build_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """Return the study's sampler, seeded with the study seed."""
    return _build_component("sampler", spec.sampler.name, spec)


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Return the study's pruner; Hyperband's resources are epochs."""
    return _build_component("pruner", spec.pruner.name, spec)


def _build_component(key: str, name: str, spec: StudySpec):
    # The options were checked against the class when the study file loaded.
    options = spec.sampler.options if key == "sampler" else spec.pruner.options
    kwargs = component_kwargs(key, name, options, spec.training.max_epochs, spec.seed)
    return component_class(key, name)(**kwargs)


def open_study(
    spec: StudySpec,
    storage_url: str,
    heartbeat_interval: int | None = None,
    max_retry: int | None = None,
    accept_changes: bool = False,
) -> optuna.Study:
    """Create the study of ``spec`` in the storage, or load it if it exists.

    A loaded study's sampler is reseeded from the operating system's entropy,
    so that several ``run`` commands on one study do not sample alike.

    A loaded study whose stored definition differs from ``spec`` raises
    :class:`search.definition.DefinitionChanged` unless ``accept_changes``.

    The sampler and pruner are built before the storage is touched, so an
    invalid option leaves the storage unchanged. Optuna's tables, the
    per-epoch tables and the study are created under
    :func:`search.storage.setup_lock`, so workers that start at the same
    moment on an empty database create each of them once.
    """
    sampler = build_sampler(spec)
    pruner = build_pruner(spec)
    with setup_lock(storage_url):
        storage = make_storage(
            storage_url, heartbeat_interval=heartbeat_interval, max_retry=max_retry
        )
        create_tables(storage_url)
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=spec.direction,
            load_if_exists=True,
        )
        _rdb_storages[study] = storage
        created = SPEC_ATTR not in study.user_attrs
        if created:
            study.set_user_attr("metric", spec.metric)
        # Stores the definition of a new study; compares it for a loaded one.
        check_stored_definition(study, spec, accept_changes)
    if created:
        logger.info("created study %r in %s", spec.name, mask_url(storage_url))
    else:
        # Only the process that creates a study samples from the study seed,
        # which makes a one-worker run on a fresh storage reproducible. A run
        # that joins or resumes the study would otherwise repeat the seeded
        # sequence that the creator already sampled, so it reseeds.
        study.sampler.reseed_rng()
        logger.info("resuming study %r in %s", spec.name, mask_url(storage_url))
    return study


def close_study(study: optuna.Study) -> None:
    """Close the connections of the study's storage and of the record tables.

    The study stays usable, because the engines open new connections on use.
    """
    storage = _rdb_storages.get(study)
    if storage is not None:
        close_storage(storage)
    dispose_engines()


@atexit.register
def _close_open_studies() -> None:
    # A study used after run_study, for example for the summary, reopens
    # connections; close them before the interpreter exits.
    for study in list(_rdb_storages):
        close_study(study)


def count_finished(study: optuna.Study) -> int:
    """Return the number of COMPLETE and PRUNED trials of the study."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def count_waiting(study: optuna.Study) -> int:
    """Return the number of WAITING trials: retries and enqueued parameters."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def fail_stale_trials(study: optuna.Study) -> None:
    """Mark FAIL, and queue again, the RUNNING trials whose heartbeat is stale.

    ``study.optimize`` does this before every trial. A run that finds its
    study complete calls it too, so that a trial of a killed worker does not
    stay RUNNING.
    """
    with warnings.catch_warnings():
        # Optuna 5.1 marks fail_stale_trials experimental; Optuna's own
        # optimize loop silences the warning the same way.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@dataclass(frozen=True)
class RunOptions:
    """Options of a ``run`` beyond the study file.

    ``n_trials`` is the target of finished (COMPLETE or PRUNED) trials, the
    study file's ``n_trials`` by default. ``timeout`` stops starting new
    trials after that many seconds. ``workers`` is the number of worker
    processes on this machine. ``heartbeat_interval`` is in seconds, and
    ``max_retry`` is how often the parameters of a trial whose worker died are
    tried again. ``accept_changes`` continues a stored study whose
    definition differs from the study file (see :mod:`search.definition`).
    ``torch_threads`` sets torch's intra-op threads for each trial, 1 by
    default as :class:`search.objective.Objective` explains; None keeps
    torch's default, one thread per core. ``reseed_sampler`` seeds the sampler from the
    operating system's entropy instead of the study seed, so that workers
    running next to each other do not sample the same parameters.
    """

    n_trials: int | None = None
    timeout: float | None = None
    workers: int = 1
    heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL_S
    max_retry: int = DEFAULT_MAX_RETRY
    accept_changes: bool = False
    torch_threads: int | None = 1
    reseed_sampler: bool = False


def run_study(
    spec: StudySpec,
    storage_url: str,
    options: RunOptions = RunOptions(),
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    worker_initializer: Callable[[], None] | None = None,
) -> optuna.Study:
    """Optimize the study until it contains its target number of finished trials.

    Parameters
    ----------
    spec : StudySpec
        The validated study file.
    storage_url : str
        SQLAlchemy URL of the storage.
    options : RunOptions
        Target, time limit, workers and heartbeat.
    on_trial : callable, optional
        Called with ``(study, trial)`` after every trial, for progress output.
        With several workers it runs in the worker processes, so it must be a
        module-level function (picklable).
    worker_initializer : callable, optional
        Called first in each worker process, for example to set up logging.
        Picklable too.

    Returns
    -------
    optuna.Study
        The study, with its storage connections closed (they reopen on use).

    Raises
    ------
    search.interrupts.Interrupted
        On SIGINT or SIGTERM, after the running trial is stored as FAIL.
    search.workers.WorkersFailed
        If a worker process exits with an error or is killed.
    """
    if options.workers > 1:
        from search.workers import run_workers

        return run_workers(spec, storage_url, options, on_trial, worker_initializer)

    with SignalGuard() as guard:
        study = open_study(
            spec,
            storage_url,
            options.heartbeat_interval,
            options.max_retry,
            options.accept_changes,
        )
        try:
            _optimize(study, spec, storage_url, options, on_trial, guard)
        finally:
            close_study(study)
        guard.raise_if_received()
    return study


def _optimize(
    study: optuna.Study,
    spec: StudySpec,
    storage_url: str,
    options: RunOptions,
    on_trial,
    guard: SignalGuard,
) -> None:
    from search.objective import Objective

    fail_stale_trials(study)
    target = options.n_trials or spec.n_trials
    finished = count_finished(study)
    waiting = count_waiting(study)
    callbacks = []
    if finished < target:
        callbacks.append(optuna.study.MaxTrialsCallback(target, states=FINISHED_STATES))
        n_trials = None
    elif waiting:
        # The target is met, but WAITING trials are queued, usually retries
        # of trials whose worker died. Run those, and only those.
        logger.info(
            "study %r contains %d finished trials; running its %d WAITING "
            "trials (retries or enqueued parameters)",
            spec.name,
            finished,
            waiting,
        )
        n_trials = waiting
    else:
        logger.info(
            "study %r already contains %d finished trials (target %d)",
            spec.name,
            finished,
            target,
        )
        return
    if on_trial is not None:
        callbacks.append(on_trial)
    if options.reseed_sampler:
        study.sampler.reseed_rng()

    guard.study = study
    guard.defer()
    try:
        study.optimize(
            _GuardedObjective(
                Objective(spec, storage_url, threads=options.torch_threads), guard
            ),
            n_trials=n_trials,
            timeout=options.timeout,
            callbacks=callbacks,
        )
    except TrialInterrupted as error:
        logger.warning(
            "trial %d of study %r stored as FAIL: interrupted by %s",
            error.trial_number,
            spec.name,
            signal_name(error.signum),
        )
        raise Interrupted(error.signum) from None


class _GuardedObjective:
    """Run the objective with signals raising, and fail the trial on one."""

    def __init__(self, objective: Callable[[optuna.Trial], float], guard: SignalGuard):
        self.objective = objective
        self.guard = guard

    def __call__(self, trial: optuna.Trial) -> float:
        try:
            with self.guard.raising():
                return self.objective(trial)
        except Interrupted as error:
            name = signal_name(error.signum)
            trial.set_user_attr(
                FAILURE_REASON_ATTR,
                f"interrupted by {name}; run the study again to resume it",
            )
            raise TrialInterrupted(error.signum, trial.number) from None
