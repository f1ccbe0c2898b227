"""One trial: sample a configuration, train it, record its epochs, return the metric."""

from __future__ import annotations

import logging
import time
from functools import partial

import optuna
import torch

from search.data import prepare_data
from search.models import build_module_factory
from search.records import EpochRecord, write_epochs
from search.schedules import FAMILIES, Budget, budget_problems, derive_kwargs
from search.space import sample
from search.spec import SpecError, StudySpec
from search.training import (
    BackgroundJobs,
    EpochRecorder,
    EpochSummary,
    StopRequested,
    TrainingDiverged,
    build_net,
)
from search.training import n_train_batches as count_train_batches

logger = logging.getLogger(__name__)


def check_budget(spec: StudySpec) -> None:
    """Load the study's data and check that every family fits the batch budget.

    Raises
    ------
    SpecError
        If a searched batch count or phase cannot fit the number of training
        steps; :class:`search.data.DataError` if the data is unusable.
    """
    data = prepare_data(spec.data, spec.seed)
    n_batches = count_train_batches(data, spec.training)
    problems = []
    for family in spec.families:
        budget = Budget(
            spec.training.max_epochs,
            n_batches,
            0.0,
            spec.training.optimizer,
            spec.training.momentum,
        )
        problems += [
            f"{spec.path}: {problem}"
            for problem in budget_problems(family.name, family.params, budget)
        ]
    if problems:
        raise SpecError(problems)


# Seconds between two inserts of buffered epoch rows on the fast path: a
# training trial's rows reach the database at least this often, and all of
# them by the time the trial ends.
EPOCH_FLUSH_INTERVAL_S = 1.0


def trial_seed(spec: StudySpec, trial_number: int) -> int:
    """Return the torch seed of a trial: the study seed plus the trial number."""
    return spec.seed + trial_number


class Objective:
    """The Optuna objective of a study: train one skorch net per trial.

    Parameters
    ----------
    spec : StudySpec
        The validated study file.
    storage_url : str
        The database that contains the study; epoch rows go to its
        ``search_epochs`` table.
    fast : bool (default=True)
        Train a lean net fed by slicing whole tensors (see
        :func:`search.training.build_net`), and store the user attributes,
        epoch rows, reports and pruning checks on a background thread while
        the next epoch trains (see :class:`search.training.EpochRecorder`).
        False trains skorch's plain net and stores each epoch before the next.
    threads : int or None (default=1)
        Set torch's intra-op threads (``torch.set_num_threads``) to this
        before every trial; None leaves torch's setting alone. One thread by
        default, because a study runs in parallel through worker processes,
        and the small default models gain nothing from intra-op threads: on
        2 cores shared with other processes, 2 threads made a 3-epoch fit of
        the steplr MLP 1.0 to 6.6 times as slow as 1 thread
        (``benchmarks/threads.py``).
    """

    def __init__(
        self,
        spec: StudySpec,
        storage_url: str,
        fast: bool = True,
        threads: int | None = 1,
    ):
        self.spec = spec
        self.storage_url = storage_url
        self.fast = fast
        self.threads = threads
        # The net of the latest trial, for inspection after study.optimize.
        self.last_net = None

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.spec
        config = sample(trial, spec)
        data = prepare_data(spec.data, spec.seed)
        budget = Budget(
            max_epochs=spec.training.max_epochs,
            n_train_batches=count_train_batches(data, spec.training),
            lr=config.lr,
            optimizer=spec.training.optimizer,
            momentum=spec.training.momentum,
        )
        scheduler_kwargs = derive_kwargs(config.family, config.values, budget)
        step_every = FAMILIES[config.family].step_every
        seed = trial_seed(spec, trial.number)
        logger.debug("trial %d: %s %s", trial.number, config.family, scheduler_kwargs)
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        jobs = BackgroundJobs() if self.fast else None
        store = EpochStore(
            spec, self.storage_url, trial, EPOCH_FLUSH_INTERVAL_S if self.fast else 0.0
        )
        try:
            self._store(jobs, trial.set_user_attr, "scheduler_kwargs", scheduler_kwargs)
            self._store(jobs, trial.set_user_attr, "step_every", step_every)
            self._store(jobs, trial.set_user_attr, "seed", seed)
            return self._fit(
                trial, data, config, scheduler_kwargs, step_every, seed, store, jobs
            )
        finally:
            self._store(jobs, store.flush)
            if jobs is not None:
                jobs.close()

    @staticmethod
    def _store(jobs: BackgroundJobs | None, write, *args) -> None:
        if jobs is None:
            write(*args)
        else:
            jobs.submit(partial(write, *args))

    def _fit(
        self,
        trial: optuna.Trial,
        data,
        config,
        scheduler_kwargs: dict,
        step_every: str,
        seed: int,
        store: EpochStore,
        jobs: BackgroundJobs | None,
    ) -> float:
        spec = self.spec
        torch.manual_seed(seed)
        recorder = EpochRecorder(
            spec.metric,
            store,
            keep_batch_lrs=step_every == "batch",
            jobs=jobs,
        )
        net = build_net(
            build_module_factory(spec.model, data),
            data,
            spec.training,
            config.lr,
            config.family,
            scheduler_kwargs,
            callbacks=[("recorder", recorder)],
            fast=self.fast,
        )
        self.last_net = net
        try:
            net.fit(data.X_train, data.y_train)
        except TrainingDiverged as error:
            trial.set_user_attr("diverged_epoch", error.epoch)
            trial.set_user_attr("failure_reason", str(error))
            raise optuna.TrialPruned(f"diverged: {error}") from None
        except StopRequested as stop:
            raise optuna.TrialPruned(f"pruned at epoch {stop.epoch}") from None
        return float(net.history[-1, spec.metric])


def pruner_may_prune(spec: StudySpec, step: int) -> bool:
    """Return False where the study's pruner returns False whatever the reported values.

    Optuna's NopPruner never prunes, and its MedianPruner and PercentilePruner
    (Optuna 4 and 5) return False before ``n_warmup_steps``. Skipping the
    check there saves the storage reads that ``Trial.should_prune`` makes.
    """
    name = spec.pruner.name
    if name == "none":
        return False
    if name in ("median", "percentile"):
        return step >= spec.pruner.options.get("n_warmup_steps", 0)
    return True


class EpochStore:
    """The sink of one trial's epochs: rows for ``search_epochs``, reports, pruning.

    Rows are buffered and inserted in one transaction once ``flush_interval_s``
    seconds have passed since the last insert (every epoch for 0), and by
    :meth:`flush`, which the objective calls when the trial ends.
    """

    def __init__(
        self,
        spec: StudySpec,
        storage_url: str,
        trial: optuna.Trial,
        flush_interval_s: float,
    ):
        self.spec = spec
        self.storage_url = storage_url
        self.trial = trial
        self.trial_id = trial._trial_id  # Optuna's Trial exposes its id only privately
        self.flush_interval_s = flush_interval_s
        self.pending: list[tuple[EpochRecord, tuple[float, ...]]] = []
        self.flushed_at = time.monotonic()

    def __call__(self, summary: EpochSummary) -> bool:
        """Store the epoch, report the metric and return whether to prune."""
        record = EpochRecord(
            study_name=self.spec.name,
            trial_id=self.trial_id,
            trial_number=self.trial.number,
            epoch=summary.epoch,
            lr=summary.lr,
            train_loss=summary.train_loss,
            valid_loss=summary.valid_loss,
            metric=summary.metric,
            duration_s=summary.duration_s,
        )
        self.pending.append((record, tuple(summary.batch_lrs)))
        if time.monotonic() - self.flushed_at >= self.flush_interval_s:
            self.flush()
        if summary.diverged:
            return False
        # Steps count from 0, the first epoch, as optuna_integration's
        # SkorchPruningCallback reports them.
        step = summary.epoch - 1
        self.trial.report(summary.metric, step)
        return pruner_may_prune(self.spec, step) and self.trial.should_prune()

    def flush(self) -> None:
        """Insert the buffered rows."""
        write_epochs(self.storage_url, self.pending)
        self.pending = []
        self.flushed_at = time.monotonic()
