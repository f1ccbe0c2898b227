"""One trial of the product against a hand-written loop and a plain skorch net.

The product's net is also fitted alone, without Optuna or storage, to split
the trial's overhead between skorch and storage.

All of them train the same configuration (the fixed StepLR study of
``common.FIXED_STUDY``) with one torch thread, one after the other within
each repetition, so that load from other processes hits all three alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna_integration import SkorchPruningCallback
from skorch import NeuralNetClassifier
from skorch.callbacks import LRScheduler
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn

from benchmarks.common import (
    FIXED_GAMMA,
    FIXED_LR,
    FIXED_STEP_SIZE,
    median,
    unique_name,
    write_fixed_study,
)
from benchmarks.handwritten import fit_handwritten
from search.data import prepare_data
from search.models import MLP, build_module_factory
from search.objective import Objective, trial_seed
from search.runner import build_pruner, open_study
from search.spec import StudySpec, load_spec
from search.training import build_net


@dataclass
class TrialTimes:
    """Seconds per repetition of each contender, and what the trials stored."""

    handwritten: list[float] = field(default_factory=list)
    # The product's net fitted alone: no Optuna trial, no storage.
    lean_net: list[float] = field(default_factory=list)
    product: list[float] = field(default_factory=list)
    plain_skorch: list[float] = field(default_factory=list)
    # Per product trial: seconds the training thread waited on storage, and
    # the trial's epoch time (skorch's epoch durations plus that wait).
    storage_wait: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def ratio(self, numerator: str, denominator: str) -> float:
        return median(getattr(self, numerator)) / median(getattr(self, denominator))

    @property
    def storage_share(self) -> float:
        pairs = zip(self.storage_wait, self.epoch_time, strict=True)
        return median(wait / epochs for wait, epochs in pairs)


def _plain_objective(spec: StudySpec, data, times: TrialTimes):
    """Return the objective one writes after Optuna's skorch example."""

    def objective(trial: optuna.Trial) -> float:
        torch.manual_seed(trial_seed(spec, trial.number))
        net = NeuralNetClassifier(
            MLP,
            module__n_features=data.n_features,
            module__n_outputs=data.n_classes,
            module__hidden_units=spec.model.hidden_units,
            criterion=nn.CrossEntropyLoss,
            optimizer=torch.optim.SGD,
            optimizer__momentum=spec.training.momentum,
            lr=FIXED_LR,
            max_epochs=spec.training.max_epochs,
            batch_size=spec.training.batch_size,
            train_split=predefined_split(Dataset(data.X_valid, data.y_valid)),
            iterator_train__shuffle=True,
            callbacks=[
                LRScheduler(
                    torch.optim.lr_scheduler.StepLR,
                    step_size=FIXED_STEP_SIZE,
                    gamma=FIXED_GAMMA,
                ),
                SkorchPruningCallback(trial, "valid_acc"),
            ],
            verbose=0,
        )
        net.fit(data.X_train, data.y_train)
        times.metrics["plain_skorch"] = net.history[-1, "valid_acc"]
        return net.history[-1, "valid_acc"]

    return objective


def _fit_lean_net(spec: StudySpec, data, seed: int) -> None:
    torch.manual_seed(seed)
    net = build_net(
        build_module_factory(spec.model, data),
        data,
        spec.training,
        FIXED_LR,
        "StepLR",
        {"step_size": FIXED_STEP_SIZE, "gamma": FIXED_GAMMA},
    )
    net.fit(data.X_train, data.y_train)


def _product_trial(
    study: optuna.Study, objective: Objective, times: TrialTimes
) -> None:
    started = time.perf_counter()
    study.optimize(objective, n_trials=1)
    times.product.append(time.perf_counter() - started)
    net = objective.last_net
    recorder = dict(net.callbacks_)["recorder"]
    epochs = sum(net.history[:, "dur"])
    times.storage_wait.append(recorder.sink_wait_s_)
    times.epoch_time.append(epochs + recorder.sink_wait_s_)
    times.metrics["product"] = net.history[-1, "valid_acc"]


def measure_trials(
    storage_url: str,
    folder: Path,
    repetitions: int,
    max_epochs: int = 20,
    with_plain: bool = True,
    fast: bool = True,
) -> TrialTimes:
    """Time ``repetitions`` interleaved rounds of the contenders on one storage."""
    torch.set_num_threads(1)
    spec = load_spec(write_fixed_study(folder, unique_name("bench_trial"), max_epochs))
    data = prepare_data(spec.data, spec.seed)
    study = open_study(spec, storage_url)
    objective = Objective(spec, storage_url, fast=fast, threads=1)
    times = TrialTimes()
    plain_study = optuna.create_study(
        study_name=unique_name("bench_plain"),
        storage=storage_url,
        direction="maximize",
        pruner=build_pruner(spec),
    )
    plain = _plain_objective(spec, data, times)

    # A first round of each warms caches, connections and lazy imports.
    study.optimize(objective, n_trials=1)
    plain_study.optimize(plain, n_trials=1)
    for _ in range(repetitions):
        seed = trial_seed(spec, len(study.trials))
        started = time.perf_counter()
        epochs = fit_handwritten(
            data,
            spec.model.hidden_units,
            spec.training,
            FIXED_LR,
            FIXED_STEP_SIZE,
            FIXED_GAMMA,
            seed,
        )
        times.handwritten.append(time.perf_counter() - started)
        times.metrics["handwritten"] = epochs[-1].valid_acc
        started = time.perf_counter()
        _fit_lean_net(spec, data, seed)
        times.lean_net.append(time.perf_counter() - started)
        _product_trial(study, objective, times)
        if with_plain:
            started = time.perf_counter()
            plain_study.optimize(plain, n_trials=1)
            times.plain_skorch.append(time.perf_counter() - started)
    return times
