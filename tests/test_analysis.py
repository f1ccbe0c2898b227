"""Tests of search.analysis on the session's real stored studies."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from stored_study import (
    FAILED_EPOCHS_STORED,
    FAILED_NUMBER,
    FAMILIES_STUDY,
    LOSSES_STUDY,
    MAX_EPOCHS,
)

from search import analysis
from search.records import batches_table, epochs_table, read_rows
from search.storage import StorageError, close_storage


def load(stored_study, name=FAMILIES_STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=stored_study.url)


@pytest.fixture(scope="module")
def trials(stored_study) -> pd.DataFrame:
    return analysis.trials_frame(stored_study.url)


def test_study_names_lists_both(stored_study):
    assert analysis.study_names(stored_study.url) == [FAMILIES_STUDY, LOSSES_STUDY]


def test_trials_frame_one_row_per_trial(stored_study, trials):
    expected = [
        (name, trial.number)
        for name in (FAMILIES_STUDY, LOSSES_STUDY)
        for trial in load(stored_study, name).get_trials()
    ]

    assert list(zip(trials["study"], trials["number"], strict=True)) == expected
    assert trials["trial_id"].is_unique


def test_trials_frame_has_every_state(trials):
    states = (
        trials.loc[trials["study"] == FAMILIES_STUDY, "state"].value_counts().to_dict()
    )

    assert states == {"COMPLETE": 6, "PRUNED": 1, "FAIL": 1}


@pytest.mark.parametrize("name", [FAMILIES_STUDY, LOSSES_STUDY])
def test_trials_frame_matches_study(stored_study, trials, name):
    study = load(stored_study, name)
    rows = trials[trials["study"] == name].set_index("number")

    for trial in study.get_trials():
        row = rows.loc[trial.number]
        assert row["trial_id"] == trial._trial_id
        assert row["state"] == trial.state.name
        if trial.value is None:
            assert math.isnan(row["value"])
        else:
            assert row["value"] == trial.value
        assert row["direction"] == study.direction.name.lower()
        assert row["metric"] == study.user_attrs["metric"]
        assert row["family"] == trial.params["scheduler"]
        assert row["step_every"] == trial.user_attrs["step_every"]
        assert row["seed"] == trial.user_attrs["seed"]
        assert (
            json.loads(row["scheduler_kwargs"]) == trial.user_attrs["scheduler_kwargs"]
        )
        assert row["datetime_start"] == pd.Timestamp(trial.datetime_start)
        assert row["datetime_complete"] == pd.Timestamp(trial.datetime_complete)
        assert row["duration_s"] == pytest.approx(trial.duration.total_seconds())


def test_trials_frame_params_and_kwargs(stored_study, trials):
    rows = trials[trials["study"] == FAMILIES_STUDY].set_index("number")

    for trial in load(stored_study).get_trials():
        row = rows.loc[trial.number]
        for name, value in trial.params.items():
            assert row[f"params_{name}"] == value, name
        kwargs = trial.user_attrs["scheduler_kwargs"]
        for name, value in kwargs.items():
            assert row[f"kwargs_{name}"] == value, name
        for column in rows.columns:
            if (
                column.startswith("kwargs_")
                and column.removeprefix("kwargs_") not in kwargs
            ):
                assert pd.isna(row[column]), column


def test_trials_frame_nullable_dtypes(trials):
    assert trials["params_StepLR.step_size"].dtype == "Int64"
    assert trials["kwargs_total_steps"].dtype == "Int64"
    assert trials["kwargs_three_phase"].dtype == "boolean"
    assert trials["seed"].dtype == "Int64"
    assert pd.api.types.is_string_dtype(trials["family"])
    assert pd.api.types.is_datetime64_any_dtype(trials["datetime_start"])


def test_trials_frame_epochs_match_records(stored_study, trials):
    rows = read_rows(stored_study.url, epochs_table)
    for _, trial in trials.iterrows():
        expected = sum(row["trial_id"] == trial["trial_id"] for row in rows)
        assert trial["epochs"] == expected, trial["number"]

    by_number = trials[trials["study"] == FAMILIES_STUDY].set_index("number")["epochs"]
    assert by_number[0] == MAX_EPOCHS
    assert by_number[6] == 1  # pruned after its first epoch
    assert by_number[FAILED_NUMBER] == FAILED_EPOCHS_STORED


def test_trials_frame_selects_studies(stored_study):
    losses_only = analysis.trials_frame(stored_study.url, LOSSES_STUDY)
    both = analysis.trials_frame(stored_study.url, [LOSSES_STUDY, FAMILIES_STUDY])

    assert set(losses_only["study"]) == {LOSSES_STUDY}
    assert list(dict.fromkeys(both["study"])) == [LOSSES_STUDY, FAMILIES_STUDY]
    assert "params_StepLR.gamma" not in losses_only.columns


def test_trials_frame_unknown_study(stored_study):
    with pytest.raises(analysis.StudyNotFoundError) as raised:
        analysis.trials_frame(stored_study.url, ["families", "nope"])

    message = str(raised.value)
    assert "study 'nope' not found" in message
    assert f"studies in the storage: {FAMILIES_STUDY}, {LOSSES_STUDY}" in message
    assert raised.value.available == [FAMILIES_STUDY, LOSSES_STUDY]


def test_open_storage_missing_sqlite_file(tmp_path):
    missing = tmp_path / "missing.db"

    with pytest.raises(StorageError, match="does not exist"):
        analysis.trials_frame(f"sqlite:///{missing}")
    assert not missing.exists()


def test_epochs_frame_matches_records(stored_study):
    frame = analysis.epochs_frame(stored_study.url, FAMILIES_STUDY)
    rows = read_rows(stored_study.url, epochs_table, [FAMILIES_STUDY])

    assert list(frame.columns) == analysis.EPOCH_COLUMNS
    assert len(frame) == len(rows)
    for (_, got), expected in zip(frame.iterrows(), rows, strict=True):
        assert got["study"] == expected["study_name"]
        assert got["number"] == expected["trial_number"]
        for column in (
            "trial_id",
            "epoch",
            "lr",
            "train_loss",
            "valid_loss",
            "metric",
            "duration_s",
        ):
            assert got[column] == expected[column], column


def test_epochs_frame_metric_is_reported_value(stored_study):
    frame = analysis.epochs_frame(stored_study.url, FAMILIES_STUDY)

    for trial in load(stored_study).get_trials():
        rows = frame[frame["trial_id"] == trial._trial_id]
        # Optuna's step 0 is skorch's epoch 1.
        reported = {row.epoch - 1: row.metric for row in rows.itertuples()}
        assert reported == trial.intermediate_values, trial.number


def test_epochs_frame_filters_numbers(stored_study):
    frame = analysis.epochs_frame(stored_study.url, [FAMILIES_STUDY], numbers=[2, 6])

    assert sorted(set(frame["number"])) == [2, 6]
    assert len(frame) == MAX_EPOCHS + 1


def test_epochs_frame_unknown_study_empty(stored_study):
    frame = analysis.epochs_frame(stored_study.url, "nope")

    assert frame.empty
    assert list(frame.columns) == analysis.EPOCH_COLUMNS


def test_batches_frame_matches_records(stored_study, trials):
    frame = analysis.batches_frame(stored_study.url, FAMILIES_STUDY)
    rows = read_rows(stored_study.url, batches_table, [FAMILIES_STUDY])
    one_cycle = trials[
        (trials["study"] == FAMILIES_STUDY) & (trials["family"] == "OneCycleLR")
    ]

    assert set(frame["trial_id"]) == set(one_cycle["trial_id"])
    assert len(frame) == len(rows)
    assert frame["lr"].tolist() == [row["lr"] for row in rows]
    assert frame["batch"].tolist() == [row["batch"] for row in rows]
    for _, trial in one_cycle.iterrows():
        batches = frame[frame["trial_id"] == trial["trial_id"]]
        # OneCycleLR steps once per batch: total_steps batches over the budget.
        assert len(batches) == trial["kwargs_total_steps"]
        assert batches["step"].tolist() == list(range(len(batches)))
        assert batches["progress"].is_monotonic_increasing
        assert batches["progress"].iloc[0] == 0.0
        assert batches["progress"].iloc[-1] < MAX_EPOCHS
        peak = trial["kwargs_max_lr"]
        assert batches["lr"].max() == pytest.approx(peak, rel=0.05)


def test_best_trials_per_family(stored_study, trials):
    best = analysis.best_trials(trials)

    for (name, family), group in trials.groupby(["study", "family"]):
        complete = group[group["state"] == "COMPLETE"]
        maximize = group["direction"].iloc[0] == "maximize"
        expected = complete["value"].max() if maximize else complete["value"].min()
        chosen = best[(best["study"] == name) & (best["family"] == family)]
        assert len(chosen) == 1
        assert chosen["value"].iloc[0] == expected


def test_best_trials_per_study(stored_study, trials):
    best = analysis.best_trials(trials, n=3, per_family=False)

    for name in (FAMILIES_STUDY, LOSSES_STUDY):
        study = load(stored_study, name)
        chosen = best[best["study"] == name]
        assert chosen["number"].iloc[0] == study.best_trial.number
        assert (chosen["state"] == "COMPLETE").all()
    assert len(best[best["study"] == FAMILIES_STUDY]) == 3


def expected_family_rows(study: optuna.Study) -> dict[str, dict]:
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    rows = {}
    for trial in study.get_trials():
        family = trial.params["scheduler"]
        row = rows.setdefault(
            family,
            {
                "trials": 0,
                "complete": 0,
                "pruned": 0,
                "failed": 0,
                "values": [],
                "wall": 0.0,
                "best": None,
            },
        )
        row["trials"] += 1
        row["wall"] += trial.duration.total_seconds()
        if trial.state == TrialState.COMPLETE:
            row["complete"] += 1
            row["values"].append(trial.value)
            best = row["best"]
            better = best is None or (
                trial.value > best.value if maximize else trial.value < best.value
            )
            if better:
                row["best"] = trial
        elif trial.state == TrialState.PRUNED:
            row["pruned"] += 1
        elif trial.state == TrialState.FAIL:
            row["failed"] += 1
    return rows


@pytest.mark.parametrize("name", [FAMILIES_STUDY, LOSSES_STUDY])
def test_compare_families_matches_study(stored_study, trials, name):
    comparison = analysis.compare_families(trials)
    got = comparison[comparison["study"] == name].set_index("family")
    study = load(stored_study, name)
    epochs = pd.DataFrame(read_rows(stored_study.url, epochs_table, [name]))

    expected = expected_family_rows(study)
    assert set(got.index) == set(expected)
    for family, row in expected.items():
        values = row["values"]
        family_ids = [
            t._trial_id for t in study.get_trials() if t.params["scheduler"] == family
        ]
        assert got.loc[family, "trials"] == row["trials"]
        assert got.loc[family, "complete"] == row["complete"]
        assert got.loc[family, "pruned"] == row["pruned"]
        assert got.loc[family, "failed"] == row["failed"]
        assert got.loc[family, "best_value"] == row["best"].value
        assert got.loc[family, "best_number"] == row["best"].number
        assert got.loc[family, "median"] == pytest.approx(statistics.median(values))
        q25, q75 = np.percentile(values, [25, 75])
        assert got.loc[family, "iqr"] == pytest.approx(q75 - q25)
        if len(values) > 1:
            assert got.loc[family, "std"] == pytest.approx(statistics.stdev(values))
        else:
            assert math.isnan(got.loc[family, "std"])
        assert got.loc[family, "epochs"] == epochs["trial_id"].isin(family_ids).sum()
        assert got.loc[family, "wall_time_s"] == pytest.approx(row["wall"])
        assert got.loc[family, "best_lr"] == row["best"].params["lr"]
        assert (
            json.loads(got.loc[family, "best_scheduler_kwargs"])
            == (row["best"].user_attrs["scheduler_kwargs"])
        )
        assert got.loc[family, "best_config"].startswith("lr=")


@pytest.mark.parametrize("name", [FAMILIES_STUDY, LOSSES_STUDY])
def test_compare_families_best_first(trials, name):
    comparison = analysis.compare_families(trials)
    rows = comparison[comparison["study"] == name]
    maximize = rows["direction"].iloc[0] == "maximize"
    best_values = rows["best_value"].tolist()

    assert best_values == sorted(best_values, reverse=maximize)
    assert rows["direction"].iloc[0] == (
        "maximize" if name == FAMILIES_STUDY else "minimize"
    )


def test_compare_families_keeps_study_order(stored_study):
    trials = analysis.trials_frame(stored_study.url, [LOSSES_STUDY, FAMILIES_STUDY])
    comparison = analysis.compare_families(trials)

    assert list(dict.fromkeys(comparison["study"])) == [LOSSES_STUDY, FAMILIES_STUDY]
    assert list(comparison.columns) == analysis.COMPARISON_COLUMNS


def test_format_config_drops_family_prefix(trials):
    row = trials[(trials["study"] == FAMILIES_STUDY) & (trials["number"] == 2)].iloc[0]

    text = analysis.format_config(row)

    assert text.startswith("lr=0.2 ")
    assert "gamma=" in text
    assert "step_size=1" in text
    assert "StepLR" not in text


def test_summarize_studies_matches_study(stored_study):
    summary = analysis.summarize_studies(stored_study.url).set_index("study")

    assert list(summary.index) == [FAMILIES_STUDY, LOSSES_STUDY]
    for name in (FAMILIES_STUDY, LOSSES_STUDY):
        study = load(stored_study, name)
        trials = study.get_trials()
        row = summary.loc[name]
        assert row["trials"] == len(trials)
        assert row["complete"] == sum(t.state == TrialState.COMPLETE for t in trials)
        assert row["pruned"] == sum(t.state == TrialState.PRUNED for t in trials)
        assert row["failed"] == sum(t.state == TrialState.FAIL for t in trials)
        assert row["running"] == 0
        assert row["best_value"] == study.best_value
        assert row["best_number"] == study.best_trial.number
        assert row["best_family"] == study.best_trial.params["scheduler"]
        assert row["metric"] == study.user_attrs["metric"]
        assert row["datetime_start"] == pd.Timestamp(trials[0].datetime_start)


def test_summarize_empty_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url).engine.dispose()

    summary = analysis.summarize_studies(url)

    assert summary.empty
    assert list(summary.columns) == analysis.SUMMARY_COLUMNS


def test_frames_on_every_database(storage_url, write_study):
    from search.runner import RunOptions, run_study
    from search.spec import load_spec

    spec = load_spec(write_study(name="servers", n_trials=2, types=("OneCycleLR",)))
    run_study(spec, storage_url, RunOptions(n_trials=2))
    study = optuna.load_study(study_name="servers", storage=storage_url)

    trials = analysis.trials_frame(storage_url, "servers")
    epochs = analysis.epochs_frame(storage_url, "servers")
    batches = analysis.batches_frame(storage_url, "servers")
    comparison = analysis.compare_families(trials)

    assert trials["value"].tolist() == [t.value for t in study.trials]
    assert trials["epochs"].tolist() == [2, 2]
    rows = read_rows(storage_url, epochs_table, ["servers"])
    assert epochs["metric"].tolist() == [row["metric"] for row in rows]
    assert len(batches) == sum(trials["kwargs_total_steps"])
    assert comparison["complete"].tolist() == [2]
    assert comparison["best_value"].iloc[0] == study.best_value


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_summarize_best_trial_on_ties(storage_url, direction):
    # All trials tie and finish in reverse order. Which tied trial Optuna's
    # best_trial names depends on the database's sort. On a fresh database,
    # MariaDB 10.11 named the first to finish (trial 19), and SQLite and
    # PostgreSQL named trial 0, as the first maximum in trial order does.
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        study = optuna.create_study(
            study_name="ties", storage=storage, direction=direction
        )
        running = [study.ask() for _ in range(20)]
        for trial in running:
            trial.suggest_categorical("scheduler", ["CyclicLR", "constant"])
        for trial in reversed(running):
            study.tell(trial, 0.5)
        best_trial = study.best_trial
    finally:
        # Closed here, because an open server connection that is garbage
        # collected later warns in another test.
        close_storage(storage)

    summary = analysis.summarize_studies(storage_url)

    row = summary.iloc[0]
    assert row["best_value"] == 0.5
    assert row["best_number"] == best_trial.number
    assert row["best_family"] == best_trial.params["scheduler"]


def test_rank_families_across_studies(trials):
    comparison = analysis.compare_families(trials[trials["study"] == FAMILIES_STUDY])
    copy = comparison.assign(study="copy", best_value=comparison["best_value"] - 0.01)
    both = pd.concat([comparison, copy], ignore_index=True)

    ranked = analysis.rank_families(both)

    values = ranked["best_value"].dropna().tolist()
    assert len(ranked) == len(both)
    assert values == sorted(values, reverse=True)
    assert ranked["study"].iloc[0] == FAMILIES_STUDY
    assert ranked["family"].iloc[0] == comparison["family"].iloc[0]


def test_rank_families_rejects_directions(trials):
    comparison = analysis.compare_families(trials)

    with pytest.raises(ValueError, match="cannot rank families across directions"):
        analysis.rank_families(comparison)
