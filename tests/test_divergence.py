"""Diverging trials: a NaN or infinite loss or metric stops the trial at that epoch,
which is stored as PRUNED with the reason and epoch, and the study goes on.
"""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from torch import nn

from search.cli import main
from search.records import epochs_table, read_rows
from search.training import EpochSummary
from tests.test_spec_errors import study_text

LR_TABLE = "[lr]\nlow = 0.01\nhigh = 0.2\nlog = true"


class EvalNaN(nn.Module):
    """A linear model whose outputs are finite in training and NaN in evaluation."""

    def __init__(self, n_features: int, n_outputs: int):
        super().__init__()
        self.linear = nn.Linear(n_features, n_outputs)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        out = self.linear(X)
        if not self.training:
            out = out * float("nan")
        return out


def run_study_file(tmp_path, text: str, *flags: str) -> tuple[int, object]:
    path = tmp_path / "diverge.toml"
    path.write_text(text, encoding="utf-8")
    status = main(
        [
            "run",
            "--study",
            str(path),
            "--storage",
            f"sqlite:///{tmp_path / 'study.db'}",
            *flags,
        ]
    )
    return status, path


def load(tmp_path, name: str) -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}"
    )


@pytest.mark.timeout(300)
def test_huge_lr_pruned_and_study_goes_on(tmp_path, capsys):
    # The random sampler with seed 0 draws lr 0.05, 1e6, 0.05 from the
    # choices below (Optuna 5.1), so a diverged trial sits between two others.
    text = study_text(
        name="huge_lr",
        n_trials=3,
        sampler="random",
        max_epochs=3,
        replace={LR_TABLE: "[lr]\nchoices = [1000000.0, 0.05]"},
        types=("constant",),
    )

    status, _ = run_study_file(tmp_path, text)

    out = capsys.readouterr().out
    study = load(tmp_path, "huge_lr")
    diverged = [t for t in study.trials if t.params["lr"] == 1e6]
    healthy = [t for t in study.trials if t.params["lr"] == 0.05]
    assert status == 0
    assert len(study.trials) == 3
    assert diverged
    assert healthy
    for trial in diverged:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["diverged_epoch"] == 1
        assert trial.user_attrs["failure_reason"] in (
            "train_loss is nan at epoch 1",
            "train_loss is inf at epoch 1",
        )
    for trial in healthy:
        assert trial.state == optuna.trial.TrialState.COMPLETE
    assert (
        f"{len(diverged)} trials diverged (NaN or infinite loss) and were pruned" in out
    )
    rows = read_rows(
        f"sqlite:///{tmp_path / 'study.db'}",
        epochs_table,
        ["huge_lr"],
        [diverged[0].number],
    )
    assert [row["epoch"] for row in rows] == [1]


@pytest.mark.timeout(300)
def test_nan_valid_loss_with_pruner(tmp_path, capsys):
    # metric = valid_loss with an active median pruner: without the check the
    # pruner would get NaN reports and the trial would end with a NaN value,
    # which Optuna stores as FAIL, so the study would never reach n_trials.
    text = study_text(
        name="nan_valid",
        n_trials=2,
        pruner="median",
        max_epochs=3,
        types=("constant",),
        replace={
            'metric = "valid_acc"': 'metric = "valid_loss"',
            'direction = "maximize"': 'direction = "minimize"',
            'kind = "mlp"\nhidden_units = [16]': (
                'kind = "tests.test_divergence:EvalNaN"'
            ),
            'name = "median"': 'name = "median"\nn_startup_trials = 0',
        },
    )

    status, _ = run_study_file(tmp_path, text)

    out = capsys.readouterr().out
    study = load(tmp_path, "nan_valid")
    assert status == 0
    assert len(study.trials) == 2
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert trial.user_attrs["diverged_epoch"] == 1
        assert trial.user_attrs["failure_reason"] == "valid_loss is nan at epoch 1"
        assert not any(math.isnan(v) for v in trial.intermediate_values.values())
    assert "2 trials diverged" in out
    assert "[valid_loss is nan at epoch 1]" in out


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"train_loss": 1.0, "valid_loss": 1.0, "metric": 0.5}, None),
        (
            {"train_loss": math.inf, "valid_loss": 1.0, "metric": 0.5},
            (math.inf, "train_loss"),
        ),
        ({"train_loss": 1.0, "valid_loss": math.nan, "metric": 0.5}, "valid_loss"),
        (
            {"train_loss": 1.0, "valid_loss": 1.0, "metric": -math.inf},
            (-math.inf, "metric"),
        ),
        ({"train_loss": None, "valid_loss": None, "metric": None}, None),
    ],
)
def test_epoch_divergence(values, expected):
    summary = EpochSummary(epoch=2, lr=0.1, duration_s=0.1, batch_lrs=(), **values)

    divergence = summary.divergence

    if expected is None:
        assert divergence is None
        assert not summary.diverged
    elif expected == "valid_loss":
        assert math.isnan(divergence[0])
        assert divergence[1] == "valid_loss"
    else:
        assert divergence == expected
