"""Create or resume a study and optimize it until it holds its target trials."""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.records import create_tables
from search.spec import SpecError, StudySpec, spec_to_dict
from search.storage import make_storage, mask_url

logger = logging.getLogger(__name__)

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)
SPEC_ATTR = "search_spec"


def build_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """Return the study's sampler, seeded with the study seed."""
    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "qmc": optuna.samplers.QMCSampler,
        "cmaes": optuna.samplers.CmaEsSampler,
        "gp": optuna.samplers.GPSampler,
    }
    return _construct(classes[spec.sampler.name], "sampler", spec,
                      {"seed": spec.seed, **spec.sampler.options})


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """Return the study's pruner; Hyperband's resources are epochs."""
    name = spec.pruner.name
    options = dict(spec.pruner.options)
    if name == "none":
        return _construct(optuna.pruners.NopPruner, "pruner", spec, options)
    if name == "hyperband":
        options.setdefault("min_resource", 1)
        options.setdefault("max_resource", spec.training.max_epochs)
    classes = {
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    }
    return _construct(classes[name], "pruner", spec, options)


def _construct(cls, table: str, spec: StudySpec, options: dict):
    parameters = inspect.signature(cls).parameters
    source = spec.path or spec.name
    unknown = [key for key in options if key not in parameters]
    if unknown:
        valid = ", ".join(p for p in parameters if p != "seed")
        raise SpecError([
            f"{source}: {table}.{unknown[0]}: unknown option of {cls.__name__} "
            f"(got {unknown[0]!r}); valid options: {valid}"
        ])
    try:
        return cls(**options)
    except (TypeError, ValueError) as error:
        raise SpecError([
            f"{source}: {table}: {cls.__name__} rejected the options "
            f"{json.dumps(options, default=str)} ({error}); fix them"
        ]) from None


def open_study(spec: StudySpec, storage_url: str, heartbeat_interval: int | None = None,
               max_retry: int | None = None) -> optuna.Study:
    """Create the study of ``spec`` in the storage, or load it if it exists.

    The sampler and pruner are built before the storage is touched, so an
    invalid option leaves the storage unchanged.
    """
    sampler = build_sampler(spec)
    pruner = build_pruner(spec)
    storage = make_storage(storage_url, heartbeat_interval=heartbeat_interval,
                           max_retry=max_retry)
    create_tables(storage_url)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        sampler=sampler,
        pruner=pruner,
        direction=spec.direction,
        load_if_exists=True,
    )
    if SPEC_ATTR not in study.user_attrs:
        study.set_user_attr(SPEC_ATTR, spec_to_dict(spec))
        study.set_user_attr("metric", spec.metric)
        logger.info("created study %r in %s", spec.name, mask_url(storage_url))
    else:
        logger.info("resuming study %r in %s", spec.name, mask_url(storage_url))
    return study


def count_finished(study: optuna.Study) -> int:
    """Return the number of COMPLETE and PRUNED trials of the study."""
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


@dataclass(frozen=True)
class RunOptions:
    """What a ``run`` asks for beyond the study file."""

    n_trials: int | None = None
    timeout: float | None = None


def run_study(
    spec: StudySpec,
    storage_url: str,
    options: RunOptions = RunOptions(),
    on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> optuna.Study:
    """Optimize the study until it holds its target number of finished trials.

    Parameters
    ----------
    spec : StudySpec
        The validated study file.
    storage_url : str
        SQLAlchemy URL of the storage.
    options : RunOptions
        ``n_trials`` is the target of finished (COMPLETE or PRUNED) trials,
        the study file's ``n_trials`` by default; ``timeout`` stops starting
        new trials after that many seconds.
    on_trial : callable, optional
        Called with ``(study, trial)`` after every trial, for progress output.

    Returns
    -------
    optuna.Study
    """
    from search.objective import Objective

    study = open_study(spec, storage_url)
    target = options.n_trials or spec.n_trials
    remaining = target - count_finished(study)
    if remaining <= 0:
        logger.info("study %r already holds %d finished trials", spec.name, target)
        return study

    callbacks = [optuna.study.MaxTrialsCallback(target, states=FINISHED_STATES)]
    if on_trial is not None:
        callbacks.append(on_trial)
    study.optimize(
        Objective(spec, storage_url),
        n_trials=remaining,
        timeout=options.timeout,
        callbacks=callbacks,
    )
    return study
