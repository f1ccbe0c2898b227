"""Load time of per-epoch records of a large stored study: pandas API vs Optuna.

The study is synthetic, so no net is trained: finished trials are added
through Optuna's ``Study.add_trials``, then their intermediate values (one per
epoch) and their ``search_epochs`` rows are inserted in bulk statements.
"""

from __future__ import annotations

import random
import time

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages._rdb.models import TrialIntermediateValueModel as IntermediateValue

from benchmarks.common import median, unique_name
from search.analysis import epochs_frame
from search.records import create_tables, dispose_engines, epochs_table, get_engine

FAMILIES = ["constant", "StepLR", "CosineAnnealingLR", "OneCycleLR"]


def create_synthetic_study(storage_url: str, n_trials: int, n_epochs: int) -> str:
    """Store a synthetic study and return its name."""
    name = unique_name("bench_analysis")
    study = optuna.create_study(
        study_name=name, storage=storage_url, direction="maximize"
    )
    generator = random.Random(0)
    distributions = {
        "scheduler": CategoricalDistribution(FAMILIES),
        "lr": FloatDistribution(1e-3, 0.5, log=True),
    }
    curves = []
    trials = []
    for _ in range(n_trials):
        curve = [
            min(1.0, 0.5 + 0.01 * epoch + generator.random() * 0.05)
            for epoch in range(n_epochs)
        ]
        curves.append(curve)
        trials.append(
            optuna.trial.create_trial(
                params={
                    "scheduler": generator.choice(FAMILIES),
                    "lr": 10 ** generator.uniform(-3, -0.3),
                },
                distributions=distributions,
                value=curve[-1],
                user_attrs={"step_every": "epoch", "seed": 0},
            )
        )
    study.add_trials(trials)

    create_tables(storage_url)
    rows, reports = [], []
    for trial, curve in zip(study.get_trials(deepcopy=False), curves, strict=True):
        for epoch, metric in enumerate(curve, start=1):
            rows.append(
                {
                    "study_name": name,
                    "trial_id": trial._trial_id,
                    "trial_number": trial.number,
                    "epoch": epoch,
                    "lr": 0.01,
                    "train_loss": 1.0 / epoch,
                    "valid_loss": 1.0 / epoch,
                    "metric": metric,
                    "duration_s": 0.015,
                }
            )
            stored, kind = IntermediateValue.intermediate_value_to_stored_repr(metric)
            reports.append(
                {
                    "trial_id": trial._trial_id,
                    "step": epoch - 1,
                    "intermediate_value": stored,
                    "intermediate_value_type": kind,
                }
            )
    with get_engine(storage_url).begin() as connection:
        connection.execute(epochs_table.insert(), rows)
        # NOTE: Optuna's storage adds intermediate values a few queries at a
        # time (100 trials of 50 took 11 s on the 2-core benchmark machine),
        # hence this bulk insert into its private table model (Optuna 5.1).
        connection.execute(IntermediateValue.__table__.insert(), reports)
    return name


def measure_analysis(
    storage_url: str, name: str, repetitions: int
) -> dict[str, list[float]]:
    """Alternate cold loads through ``epochs_frame`` and ``trials_dataframe``.

    Each load starts without pooled connections or Optuna's trial cache, as
    the first read in a fresh notebook does.
    """
    times: dict[str, list[float]] = {"epochs_frame": [], "trials_dataframe": []}
    for _ in range(repetitions):
        dispose_engines()
        started = time.perf_counter()
        frame = epochs_frame(storage_url, name)
        times["epochs_frame"].append(time.perf_counter() - started)
        assert len(frame), "the synthetic study has no epoch rows"

        started = time.perf_counter()
        study = optuna.load_study(study_name=name, storage=storage_url)
        study.trials_dataframe()
        times["trials_dataframe"].append(time.perf_counter() - started)
    return times


def load_ratio(times: dict[str, list[float]]) -> float:
    """Return the median epochs_frame time over the median trials_dataframe time."""
    return median(times["epochs_frame"]) / median(times["trials_dataframe"])
