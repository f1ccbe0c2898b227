"""One trial: sample a configuration, train it, record every epoch, return the metric."""

from __future__ import annotations

import logging

import optuna
import torch
from optuna_integration import SkorchPruningCallback

from search.data import prepare_data
from search.models import build_module_factory
from search.records import EpochRecord, write_epoch
from search.schedules import FAMILIES, Budget, budget_problems, derive_kwargs
from search.space import sample
from search.spec import SpecError, StudySpec
from search.training import EpochRecorder, EpochSummary, TrainingDiverged, build_net
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
        budget = Budget(spec.training.max_epochs, n_batches, 0.0,
                        spec.training.optimizer, spec.training.momentum)
        problems += [f"{spec.path}: {problem}"
                     for problem in budget_problems(family.name, family.params, budget)]
    if problems:
        raise SpecError(problems)


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
        The database that holds the study; epoch rows go to its
        ``search_epochs`` table.
    fast : bool (default=True)
        Feed batches by slicing whole tensors; see
        :class:`search.training.TensorBatchIterator`.
    """

    def __init__(self, spec: StudySpec, storage_url: str, fast: bool = True):
        self.spec = spec
        self.storage_url = storage_url
        self.fast = fast
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
        trial.set_user_attr("scheduler_kwargs", scheduler_kwargs)
        trial.set_user_attr("step_every", step_every)
        trial.set_user_attr("seed", seed)
        logger.debug("trial %d: %s %s", trial.number, config.family, scheduler_kwargs)

        torch.manual_seed(seed)
        recorder = EpochRecorder(
            spec.metric, self._sink(trial), keep_batch_lrs=step_every == "batch"
        )
        net = build_net(
            build_module_factory(spec.model, data),
            data,
            spec.training,
            config.lr,
            config.family,
            scheduler_kwargs,
            callbacks=[
                ("recorder", recorder),
                ("pruning", SkorchPruningCallback(trial, spec.metric)),
            ],
            fast=self.fast,
        )
        self.last_net = net
        try:
            net.fit(data.X_train, data.y_train)
        except TrainingDiverged as error:
            trial.set_user_attr("diverged_epoch", error.epoch)
            trial.set_user_attr("failure_reason", str(error))
            raise optuna.TrialPruned(f"diverged: {error}") from None
        return float(net.history[-1, spec.metric])

    def _sink(self, trial: optuna.Trial):
        study_name = self.spec.name
        trial_id = trial._trial_id  # Optuna's Trial exposes its id only privately
        url = self.storage_url

        def write(summary: EpochSummary) -> None:
            record = EpochRecord(
                study_name=study_name,
                trial_id=trial_id,
                trial_number=trial.number,
                epoch=summary.epoch,
                lr=summary.lr,
                train_loss=summary.train_loss,
                valid_loss=summary.valid_loss,
                metric=summary.metric,
                duration_s=summary.duration_s,
            )
            write_epoch(url, record, summary.batch_lrs)

        return write
