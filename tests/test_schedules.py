"""Stored learning rates of every family, read back from the database.

Epoch-stepped families are checked against PyTorch's documented closed forms
where one exists, and the others against torch's own scheduler stepped with
the same arguments.
"""

from __future__ import annotations

import bisect
import math

import optuna
import pytest
import torch

from search.records import batches_table, epochs_table, read_rows
from search.runner import run_study
from search.spec import parse_spec
from tests.conftest import tiny_study_text

MAX_EPOCHS = 6
LR = 0.1


def run_family(
    url: str,
    family: str,
    table: str,
    *,
    max_epochs=MAX_EPOCHS,
    batch_size=64,
    valid_fraction=0.2,
    optimizer="sgd",
    name=None,
):
    """Run one trial of ``family`` with fixed arguments; return study and rows."""
    name = name or f"lr_{family}"
    text = tiny_study_text(
        name=name,
        n_trials=1,
        max_epochs=max_epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        types=(family,),
    )
    text = text.replace("[lr]\nlow = 0.01\nhigh = 0.2\nlog = true\n", "")
    text = text.replace('name = "', f'lr = {LR}\nname = "', 1)
    text = text.replace("valid_fraction = 0.2", f"valid_fraction = {valid_fraction}")
    if table:
        text += f"\n[schedulers.{family}]\n{table}\n"
    spec = parse_spec(text, source=f"{name}.toml")
    study = run_study(spec, url)
    rows = read_rows(url, epochs_table, [name])
    return study, rows


def stored_lrs(rows) -> list[float]:
    return [row["lr"] for row in rows]


CLOSED_FORMS = [
    ("constant", "", lambda t: LR),
    ("StepLR", "step_size = 2\ngamma = 0.5", lambda t: LR * 0.5 ** (t // 2)),
    (
        "MultiStepLR",
        "milestones = [2, 4]\ngamma = 0.5",
        lambda t: LR * 0.5 ** bisect.bisect_right([2, 4], t),
    ),
    ("ExponentialLR", "gamma = 0.8", lambda t: LR * 0.8**t),
    (
        "CosineAnnealingLR",
        "T_max = 4\neta_min = 0.001",
        lambda t: 0.001 + (LR - 0.001) * (1 + math.cos(math.pi * t / 4)) / 2,
    ),
    (
        "LinearLR",
        "start_factor = 0.25\nend_factor = 1.0\ntotal_iters = 4",
        lambda t: LR * (0.25 + 0.75 * min(t, 4) / 4),
    ),
    (
        "PolynomialLR",
        "total_iters = 4\npower = 2.0",
        lambda t: LR * (1 - min(t, 4) / 4) ** 2,
    ),
]


@pytest.mark.parametrize(
    ("family", "table", "closed_form"),
    CLOSED_FORMS,
    ids=[case[0] for case in CLOSED_FORMS],
)
def test_epoch_lrs_follow_closed_form(sqlite_url, family, table, closed_form):
    study, rows = run_family(sqlite_url, family, table)

    expected = [closed_form(t) for t in range(MAX_EPOCHS)]
    assert [row["epoch"] for row in rows] == list(range(1, MAX_EPOCHS + 1))
    assert stored_lrs(rows) == pytest.approx(expected, rel=1e-9)
    assert study.trials[0].params["scheduler"] == family


def torch_epoch_lrs(scheduler_cls, kwargs, n_epochs, step_args=None):
    """Return the rate torch's scheduler gives each epoch, stepped once per epoch."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=LR, momentum=0.9)
    scheduler = scheduler_cls(optimizer, **kwargs)
    rates = []
    for epoch in range(n_epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if step_args is None:
            scheduler.step()
        else:
            scheduler.step(step_args[epoch])
    return rates


def test_warm_restarts_match_torch(sqlite_url):
    study, rows = run_family(
        sqlite_url,
        "CosineAnnealingWarmRestarts",
        "T_0 = 2\nT_mult = 2\neta_min = 0.001",
    )

    kwargs = study.trials[0].user_attrs["scheduler_kwargs"]
    expected = torch_epoch_lrs(
        torch.optim.lr_scheduler.CosineAnnealingWarmRestarts, kwargs, MAX_EPOCHS
    )
    assert kwargs == {"T_0": 2, "T_mult": 2, "eta_min": 0.001}
    assert stored_lrs(rows) == pytest.approx(expected, rel=1e-9)
    assert len(set(stored_lrs(rows))) > 2


def test_plateau_monitors_valid_loss(sqlite_url):
    # A relative threshold of 0.5 counts any epoch that does not halve the
    # validation loss as a plateau, so the rate must drop during the run.
    study, rows = run_family(
        sqlite_url, "ReduceLROnPlateau", "factor = 0.5\npatience = 0\nthreshold = 0.5"
    )

    kwargs = study.trials[0].user_attrs["scheduler_kwargs"]
    valid_losses = [row["valid_loss"] for row in rows]
    expected = torch_epoch_lrs(
        torch.optim.lr_scheduler.ReduceLROnPlateau, kwargs, MAX_EPOCHS, valid_losses
    )
    assert kwargs["mode"] == "min"
    assert stored_lrs(rows) == pytest.approx(expected, rel=1e-9)
    assert min(stored_lrs(rows)) < LR


def torch_batch_lrs(scheduler_cls, kwargs, n_steps, optimizer_name="sgd"):
    """Return the rate of each of ``n_steps`` batches under torch's scheduler."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    if optimizer_name == "sgd":
        optimizer = torch.optim.SGD([parameter], lr=LR, momentum=0.9)
    else:
        optimizer = torch.optim.Adam([parameter], lr=LR)
    scheduler = scheduler_cls(optimizer, **kwargs)
    rates = []
    for _ in range(n_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


BATCH_CASES = [
    # (batch size, validation fraction): sizes that do not divide the training set
    (50, 0.2),
    (37, 0.1),
    (128, 0.33),
]


@pytest.mark.parametrize("family", ["OneCycleLR", "CyclicLR"])
@pytest.mark.parametrize(("batch_size", "valid_fraction"), BATCH_CASES)
def test_batch_stepped_rates_follow_cycle(
    sqlite_url, family, batch_size, valid_fraction
):
    table = "pct_start = 0.3" if family == "OneCycleLR" else "max_lr = 0.5"
    study, rows = run_family(
        sqlite_url,
        family,
        table,
        max_epochs=2,
        batch_size=batch_size,
        valid_fraction=valid_fraction,
        name=f"cycle_{family}_{batch_size}",
    )
    trial = study.trials[0]
    batches = read_rows(sqlite_url, batches_table, [study.study_name])

    # scikit-learn rounds the validation part up.
    n_train = 1797 - math.ceil(1797 * valid_fraction)
    n_batches = math.ceil(n_train / batch_size)
    kwargs = trial.user_attrs["scheduler_kwargs"]
    expected = torch_batch_lrs(
        getattr(torch.optim.lr_scheduler, family), kwargs, 2 * n_batches
    )
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["step_every"] == "batch"
    assert len(batches) == 2 * n_batches
    assert [b["lr"] for b in batches] == pytest.approx(expected, rel=1e-9)
    assert stored_lrs(rows) == pytest.approx(
        [expected[0], expected[n_batches]], rel=1e-9
    )
    if family == "OneCycleLR":
        assert kwargs["total_steps"] == 2 * n_batches
        assert max(b["lr"] for b in batches) == pytest.approx(LR, rel=1e-3)
    else:
        assert kwargs["base_lr"] == LR
        assert max(b["lr"] for b in batches) > LR


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("family", ["OneCycleLR", "CyclicLR"])
def test_cyclic_momentum_with_each_optimizer(sqlite_url, family, optimizer):
    table = "" if family == "OneCycleLR" else "max_lr = 0.5"
    study, rows = run_family(
        sqlite_url,
        family,
        table,
        max_epochs=1,
        optimizer=optimizer,
        name=f"momentum_{family}_{optimizer}",
    )
    trial = study.trials[0]

    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert trial.user_attrs["scheduler_kwargs"]["cycle_momentum"] is True
    assert len(rows) == 1


def test_cyclic_momentum_off_without_momentum(sqlite_url):
    text = tiny_study_text(
        name="no_momentum", n_trials=1, max_epochs=1, types=("OneCycleLR",)
    )
    text = text.replace('optimizer = "sgd"', 'optimizer = "sgd"\nmomentum = 0.0')
    study = run_study(parse_spec(text), sqlite_url)

    kwargs = study.trials[0].user_attrs["scheduler_kwargs"]
    assert kwargs["cycle_momentum"] is False
    assert study.trials[0].state == optuna.trial.TrialState.COMPLETE


def test_one_cycle_too_few_steps_rejected(sqlite_url, tmp_path, capsys):
    from search.cli import main

    # One batch per epoch and two epochs leave no room for two phases.
    path = tmp_path / "short_cycle.toml"
    path.write_text(
        tiny_study_text(
            name="short_cycle", max_epochs=2, batch_size=5000, types=("OneCycleLR",)
        ),
        encoding="utf-8",
    )

    status = main(["run", "--study", str(path), "--storage", sqlite_url])

    err = capsys.readouterr().err
    assert status == 2
    assert "schedulers.OneCycleLR.pct_start" in err
    assert "2 batch steps" in err
    assert not (tmp_path / "study.db").exists()


def test_cyclic_half_cycle_longer_than_training_rejected(sqlite_url, tmp_path, capsys):
    from search.cli import main

    path = tmp_path / "long_cycle.toml"
    path.write_text(
        tiny_study_text(name="long_cycle", max_epochs=2, types=("CyclicLR",))
        + "\n[schedulers.CyclicLR]\nmax_lr = 0.5\n"
        + "step_size_up = { low = 10, high = 500 }\n",
        encoding="utf-8",
    )

    status = main(["run", "--study", str(path), "--storage", sqlite_url])

    err = capsys.readouterr().err
    assert status == 2
    assert "schedulers.CyclicLR.step_size_up: up to 500 batches" in err
    assert "46 batch steps" in err
    assert not (tmp_path / "study.db").exists()
