"""The ``schedules`` study with its own pruner and the median pruner, against none."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.common import STUDIES, unique_name, write_variant
from search.analysis import epochs_frame
from search.runner import RunOptions, run_study
from search.spec import load_spec

# Optuna's MedianPruner with a warm-up of five epochs, for comparison with the
# study's own pruner (Hyperband over epochs 1 to max_epochs).
MEDIAN = '[pruner]\nname = "median"\nn_startup_trials = 5\nn_warmup_steps = 5'


@dataclass(frozen=True)
class PruningResult:
    """Epochs and best value of one run of the study."""

    epochs_recorded: int
    # A trial pruned before its last epoch trains one epoch more, because the
    # pruning check runs while the next epoch trains. That epoch is discarded,
    # so it is counted here and not in epochs_recorded.
    epochs_trained: int
    best_value: float
    n_pruned: int


def run_schedules(
    storage_url: str, folder: Path, n_trials: int, pruner_table: str | None
) -> PruningResult:
    """Run ``n_trials`` of the schedules study, with another pruner if given."""
    path = write_variant(
        STUDIES / "schedules.toml", folder, unique_name("bench_schedules"), pruner_table
    )
    spec = load_spec(path)
    study = run_study(spec, storage_url, RunOptions(n_trials=n_trials))
    epochs = epochs_frame(storage_url, spec.name)
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    max_epochs = spec.training.max_epochs
    extra = sum(
        1
        for t in pruned
        if "diverged_epoch" not in t.user_attrs
        and max(t.intermediate_values, default=0) + 1 < max_epochs
    )
    return PruningResult(
        len(epochs), len(epochs) + extra, study.best_value, len(pruned)
    )


def measure_pruning(
    storage_url: str, folder: Path, n_trials: int
) -> dict[str, PruningResult]:
    """Return the study's results with its own pruner, the median pruner and none."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return {
        "pruner": run_schedules(storage_url, folder, n_trials, None),
        "median": run_schedules(storage_url, folder, n_trials, MEDIAN),
        "none": run_schedules(storage_url, folder, n_trials, '[pruner]\nname = "none"'),
    }
