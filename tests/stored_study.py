"""A real stored study shared by the analysis, view, plot, notebook and dashboard tests.

``stored_study`` trains the studies once per test session into one SQLite
file through :func:`search.runner.run_study`, with the 16-unit MLP of
failing_model.py, which can make a training batch raise:

- ``families`` (maximize valid_acc): trials 0-5 complete over constant, StepLR,
  OneCycleLR and CosineAnnealingLR; trial 6 (constant, lr=1e-4) is pruned
  after its first epoch; trial 7 (StepLR) fails in a training batch of its
  second epoch, so it keeps the row of its first epoch;
- ``losses`` (minimize valid_loss): two complete trials, constant and
  ExponentialLR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

FAMILIES_STUDY = "families"
LOSSES_STUDY = "losses"
MAX_EPOCHS = 3
FAILED_NUMBER = 7
FAILED_EPOCHS_STORED = 1
# 1,797 digits less a 0.2 validation split leave 1,437 training rows: 23 batches of 64.
BATCHES_PER_EPOCH = 23

STUDY_TEXT = """
name = "{name}"
description = "test study over several families"
direction = "{direction}"
metric = "{metric}"
n_trials = {n_trials}
seed = 0

[sampler]
name = "random"

[pruner]
name = "{pruner}"
{pruner_options}

[data]
dataset = "digits"
valid_fraction = 0.2

[model]
kind = "{model}"

[training]
max_epochs = {max_epochs}
batch_size = 64
optimizer = "sgd"

[lr]
low = 0.0001
high = 0.5
log = true

[schedulers]
types = {types}
"""

# With percentile 99, any trial past the first six whose first-epoch accuracy is
# below the best first epoch so far is pruned. A rate of 1e-4 leaves the net at
# chance level after one epoch, so trial 6 is pruned at step 0.
FAMILIES_TRIALS = [
    ("constant", 0.1),
    ("StepLR", 0.05),
    ("StepLR", 0.2),
    ("OneCycleLR", 0.1),
    ("OneCycleLR", 0.3),
    ("CosineAnnealingLR", 0.1),
    ("constant", 0.0001),
]
LOSSES_TRIALS = [("constant", 0.05), ("ExponentialLR", 0.1)]


@dataclass(frozen=True)
class StoredStudy:
    """The SQLite file of the session's studies and their names."""

    path: Path
    url: str
    name: str = FAMILIES_STUDY
    loss_name: str = LOSSES_STUDY


def _spec(
    name,
    direction,
    metric,
    types,
    n_trials,
    pruner="none",
    pruner_options="",
    model="failing_model:FailingMLP",
):
    from search.spec import parse_spec

    text = STUDY_TEXT.format(
        name=name,
        direction=direction,
        metric=metric,
        n_trials=n_trials,
        model=model,
        pruner=pruner,
        pruner_options=pruner_options,
        max_epochs=MAX_EPOCHS,
        types="[" + ", ".join(f'"{t}"' for t in types) + "]",
    )
    return parse_spec(text, source=f"{name}.toml", default_name=name)


def _enqueue(spec, url, trials) -> None:
    from search.runner import open_study

    study = open_study(spec, url)
    for family, lr in trials:
        study.enqueue_trial({"scheduler": family, "lr": lr})


def build_stored_study(folder: Path) -> StoredStudy:
    """Train the session's studies into ``folder / "studies.db"`` and return it."""
    from failing_model import FAILURE_MESSAGE, FailingMLP

    from search.runner import RunOptions, run_study

    path = folder / "studies.db"
    url = f"sqlite:///{path}"

    families = _spec(
        FAMILIES_STUDY,
        "maximize",
        "valid_acc",
        ["constant", "StepLR", "OneCycleLR", "CosineAnnealingLR"],
        n_trials=8,
        pruner="percentile",
        pruner_options="percentile = 99.0\nn_startup_trials = 6\nn_warmup_steps = 0",
    )
    _enqueue(families, url, FAMILIES_TRIALS)
    run_study(families, url, RunOptions(n_trials=len(FAMILIES_TRIALS)))

    # The last trial raises in its second epoch, as a crash in the middle of
    # training would, so Optuna marks it FAIL and re-raises the error.
    _enqueue(families, url, [("StepLR", 0.1)])
    FailingMLP.batches_before_failure = BATCHES_PER_EPOCH + 5
    try:
        with pytest.raises(RuntimeError, match=FAILURE_MESSAGE):
            run_study(families, url, RunOptions(n_trials=len(FAMILIES_TRIALS) + 1))
    finally:
        FailingMLP.batches_before_failure = None

    losses = _spec(
        LOSSES_STUDY,
        "minimize",
        "valid_loss",
        ["constant", "ExponentialLR"],
        n_trials=len(LOSSES_TRIALS),
    )
    _enqueue(losses, url, LOSSES_TRIALS)
    run_study(losses, url, RunOptions(n_trials=len(LOSSES_TRIALS)))
    return StoredStudy(path=path, url=url)


@pytest.fixture(scope="session")
def stored_study(tmp_path_factory: pytest.TempPathFactory) -> StoredStudy:
    """The session's trained studies; tests must only read them."""
    return build_stored_study(tmp_path_factory.mktemp("stored_study"))
