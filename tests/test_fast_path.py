"""The fast path: sliced batches, the lean net and storage on a background thread."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch
from skorch.dataset import Dataset

from search.data import prepare_data
from search.models import build_module_factory
from search.objective import Objective
from search.records import create_tables, epochs_table, read_rows
from search.runner import open_study
from search.spec import DataSpec, ModelSpec, TrainingSpec, load_spec
from search.training import (
    BackgroundJobs,
    EpochRecorder,
    StopRequested,
    TensorBatchIterator,
    build_net,
)


def batches_of(n_samples: int, batch_size: int, shuffle: bool) -> list[torch.Tensor]:
    X = torch.arange(n_samples, dtype=torch.float32).reshape(-1, 1)
    y = torch.arange(n_samples)
    iterator = TensorBatchIterator(
        Dataset(X, y), batch_size=batch_size, shuffle=shuffle
    )
    batches = list(iterator)
    for X_batch, y_batch in batches:
        assert torch.equal(X_batch[:, 0].long(), y_batch), "X and y rows were split"
    assert len(batches) == len(iterator)
    return [y_batch for _, y_batch in batches]


def test_iterator_in_order_without_shuffle():
    batches = batches_of(10, 4, shuffle=False)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat(batches), torch.arange(10))


def test_iterator_shuffles_every_sample_once():
    torch.manual_seed(0)
    first = torch.cat(batches_of(103, 10, shuffle=True))
    second = torch.cat(batches_of(103, 10, shuffle=True))
    assert sorted(first.tolist()) == list(range(103))
    assert sorted(second.tolist()) == list(range(103))
    assert not torch.equal(first, torch.arange(103))
    assert not torch.equal(first, second), "two epochs drew the same order"


def test_iterator_last_batch_is_partial():
    torch.manual_seed(0)
    sizes = [len(b) for b in batches_of(103, 10, shuffle=True)]
    assert sizes == [10] * 10 + [3]


def test_iterator_without_targets():
    X = torch.arange(5, dtype=torch.float32).reshape(-1, 1)
    batches = list(TensorBatchIterator(Dataset(X, None), batch_size=2))
    assert [len(X_batch) for X_batch, _ in batches] == [2, 2, 1]
    assert all(y_batch is None for _, y_batch in batches)


def fit_history(fast: bool, dropout: float, max_epochs: int = 3) -> list[dict]:
    data = prepare_data(DataSpec(dataset="digits"), 0)
    training = TrainingSpec(max_epochs=max_epochs, batch_size=64)
    model = ModelSpec(hidden_units=(32,), dropout=dropout)
    torch.manual_seed(7)
    net = build_net(
        build_module_factory(model, data),
        data,
        training,
        0.05,
        "StepLR",
        {"step_size": 2, "gamma": 0.5},
        fast=fast,
    )
    net.fit(data.X_train, data.y_train)
    return [
        {
            key: row[key]
            for key in ("train_loss", "valid_loss", "valid_acc", "valid_acc_best")
        }
        for row in net.history
    ]


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_fast_net_matches_default_iterator(dropout):
    fast = fit_history(fast=True, dropout=dropout)
    default = fit_history(fast=False, dropout=dropout)
    assert len(fast) == len(default) == 3
    for fast_row, default_row in zip(fast, default, strict=True):
        for key, tolerance in (
            ("valid_acc", 1e-9),
            ("valid_loss", 1e-5),
            ("train_loss", 1e-5),
        ):
            assert fast_row[key] == pytest.approx(
                default_row[key], rel=tolerance, abs=tolerance
            ), key
        assert fast_row["valid_acc_best"] == default_row["valid_acc_best"]


def recorder_fit(stop_after: int | None, background: bool, max_epochs: int = 4):
    """Fit a tiny net whose sink returns True, to stop, after epoch ``stop_after``."""
    data = prepare_data(DataSpec(dataset="digits"), 0)
    seen: list[int] = []

    def sink(summary) -> bool:
        seen.append(summary.epoch)
        return summary.epoch == stop_after

    jobs = BackgroundJobs() if background else None
    recorder = EpochRecorder("valid_acc", sink, jobs=jobs)
    net = build_net(
        build_module_factory(ModelSpec(hidden_units=(8,)), data),
        data,
        TrainingSpec(max_epochs=max_epochs),
        0.05,
        "constant",
        {},
        callbacks=[("recorder", recorder)],
    )
    stopped = None
    try:
        net.fit(data.X_train, data.y_train)
    except StopRequested as error:
        stopped = error.epoch
    finally:
        if jobs is not None:
            jobs.close()
    return seen, stopped


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("stop_after", [None, 2, 4])
def test_recorder_stops_after_requested_epoch(background, stop_after):
    seen, stopped = recorder_fit(stop_after, background)
    expected = list(range(1, (stop_after or 4) + 1))
    assert seen == expected
    assert stopped == stop_after


def test_background_jobs_reraise_errors():
    jobs = BackgroundJobs()

    def fail():
        raise RuntimeError("storage is down")

    jobs.submit(fail)
    with pytest.raises(RuntimeError, match="storage is down"):
        jobs.close()


def run_objective(sqlite_url: str, study_path, fast: bool) -> optuna.Study:
    spec = load_spec(study_path)
    study = open_study(spec, sqlite_url)
    study.optimize(Objective(spec, sqlite_url, fast=fast), n_trials=1)
    return study


@pytest.mark.parametrize("fast", [True, False])
def test_objective_stores_every_epoch(sqlite_url, write_study, fast):
    study = run_objective(sqlite_url, write_study(name="stored", max_epochs=3), fast)
    trial = study.trials[0]
    rows = read_rows(sqlite_url, epochs_table, ["stored"])
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert sorted(trial.intermediate_values) == [0, 1, 2]
    assert [row["metric"] for row in rows] == [
        trial.intermediate_values[s] for s in range(3)
    ]
    assert rows[-1]["metric"] == trial.value
    assert set(trial.user_attrs) >= {"scheduler_kwargs", "step_every", "seed"}


def test_objective_fast_and_plain_agree(tmp_path, write_study):
    path = write_study(name="agree", max_epochs=3)
    values = []
    for fast in (True, False):
        url = f"sqlite:///{tmp_path / f'fast_{fast}.db'}"
        study = run_objective(url, path, fast)
        values.append([row["metric"] for row in read_rows(url, epochs_table)])
        assert study.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert np.allclose(values[0], values[1], rtol=0, atol=1e-9)


class PruneAtStep(optuna.pruners.BasePruner):
    def __init__(self, step: int):
        self.step = step

    def prune(self, study, trial) -> bool:
        return trial.last_step == self.step


def test_pruned_trial_keeps_epochs_until_pruned(sqlite_url, write_study):
    spec = load_spec(write_study(name="pruned", max_epochs=5, pruner="median"))
    create_tables(sqlite_url)
    study = optuna.create_study(
        study_name=spec.name,
        storage=sqlite_url,
        direction="maximize",
        pruner=PruneAtStep(1),
    )
    study.optimize(Objective(spec, sqlite_url), n_trials=1)
    trial = study.trials[0]
    rows = read_rows(sqlite_url, epochs_table, ["pruned"])
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert [row["epoch"] for row in rows] == [1, 2]
    assert sorted(trial.intermediate_values) == [0, 1]
