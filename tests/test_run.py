"""The run command, one trial's records against skorch's history, reproducibility."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import optuna
import pytest
from skorch import NeuralNetRegressor

from search.cli import main
from search.objective import Objective
from search.records import epochs_table, read_rows
from search.runner import open_study
from search.spec import list_study_files, load_spec, parse_spec
from tests.conftest import REPO, tiny_study_text


def test_run_creates_study(sqlite_url, write_study, capsys):
    path = write_study(name="cli_run", n_trials=3, types=("StepLR", "constant"))

    status = main(["run", "--study", str(path), "--storage", sqlite_url])

    out = capsys.readouterr().out
    study = optuna.load_study(study_name="cli_run", storage=sqlite_url)
    finished = [t for t in study.trials if t.state.is_finished()]
    assert status == 0
    assert len(finished) == 3
    assert out.count("trial ") >= 3
    assert f"best trial {study.best_trial.number}" in out
    assert "scheduler arguments:" in out


def test_run_resumes_to_target(sqlite_url, write_study):
    path = write_study(name="resume", n_trials=2)

    first = main(["run", "--study", str(path), "--storage", sqlite_url])
    second = main(
        ["run", "--study", str(path), "--storage", sqlite_url, "--n-trials", "3"]
    )
    third = main(
        ["run", "--study", str(path), "--storage", sqlite_url, "--n-trials", "3"]
    )

    study = optuna.load_study(study_name="resume", storage=sqlite_url)
    assert (first, second, third) == (0, 0, 0)
    assert [t.number for t in study.trials] == [0, 1, 2]


def test_unknown_study_lists_valid(sqlite_url, capsys):
    status = main(["run", "--study", "steplrr", "--storage", sqlite_url])

    err = capsys.readouterr().err
    assert status == 2
    assert "unknown study 'steplrr'" in err
    assert "did you mean 'steplr'" in err
    assert "cosine" in err
    assert "Traceback" not in err


def test_unknown_family_lists_valid(sqlite_url, tmp_path, capsys):
    path = tmp_path / "bad_family.toml"
    path.write_text(
        tiny_study_text(name="bad_family", types=("StepLRR",)), encoding="utf-8"
    )

    status = main(["run", "--study", str(path), "--storage", sqlite_url])

    err = capsys.readouterr().err
    assert status == 2
    assert "schedulers.types" in err
    assert "'StepLRR'" in err
    assert "CosineAnnealingLR" in err
    assert not (tmp_path / "study.db").exists()


def test_studies_lists_every_file(capsys):
    status = main(["studies"])

    out = capsys.readouterr().out
    assert status == 0
    for name in ["constant", "steplr", "schedules", "mnist_cnn"]:
        assert name in out


@pytest.mark.parametrize("name", sorted(list_study_files()))
def test_study_files_valid(name):
    spec = load_spec(list_study_files()[name])

    assert spec.name == name
    assert spec.description


def test_schedules_study_has_every_family():
    from search.schedules import family_names

    spec = load_spec(list_study_files()["schedules"])

    assert spec.family_names == family_names()


@pytest.mark.parametrize("name", sorted(list_study_files()))
def test_study_file_trains(name, sqlite_url):
    # Each shipped study runs as it is, cut to one epoch per trial to stay fast.
    # Every family of the study gets one trial, enqueued.
    spec = load_spec(list_study_files()[name])
    spec = dataclasses.replace(
        spec, training=dataclasses.replace(spec.training, max_epochs=1)
    )
    study = open_study(spec, sqlite_url)
    for family in spec.family_names:
        study.enqueue_trial({"scheduler": family})

    study.optimize(Objective(spec, sqlite_url), n_trials=len(spec.family_names))

    states = {t.params["scheduler"]: t.state for t in study.trials}
    assert states == {f: optuna.trial.TrialState.COMPLETE for f in spec.family_names}
    assert len(read_rows(sqlite_url, epochs_table, [name])) == len(spec.family_names)


def test_epoch_rows_equal_history(sqlite_url):
    spec = parse_spec(tiny_study_text(name="history", max_epochs=3, types=("StepLR",)))
    study = open_study(spec, sqlite_url)
    objective = Objective(spec, sqlite_url)

    study.optimize(objective, n_trials=1)

    history = objective.last_net.history
    rows = read_rows(sqlite_url, epochs_table, ["history"])
    trial = study.trials[0]
    assert len(rows) == len(history) == 3
    for row, epoch in zip(rows, history, strict=True):
        assert row["epoch"] == epoch["epoch"]
        assert row["train_loss"] == pytest.approx(epoch["train_loss"], rel=1e-12)
        assert row["valid_loss"] == pytest.approx(epoch["valid_loss"], rel=1e-12)
        assert row["metric"] == pytest.approx(epoch["valid_acc"], rel=1e-12)
        assert row["lr"] == pytest.approx(epoch["event_lr"], rel=1e-12)
        assert row["duration_s"] == pytest.approx(epoch["dur"], rel=1e-12)
        assert row["trial_id"] == trial._trial_id
    assert trial.intermediate_values == {i: r["metric"] for i, r in enumerate(rows)}
    assert trial.value == rows[-1]["metric"]


def test_same_seed_same_trials(tmp_path):
    text = tiny_study_text(name="repro", n_trials=3, types=("StepLR", "ExponentialLR"))
    results = []
    for run in ("a", "b"):
        url = f"sqlite:///{tmp_path / run}.db"
        spec = parse_spec(text)
        assert (
            main(["run", "--study", str(write(tmp_path, text)), "--storage", url]) == 0
        )
        study = optuna.load_study(study_name=spec.name, storage=url)
        results.append(
            [(t.params, t.value, t.user_attrs["seed"]) for t in study.trials]
        )

    assert results[0] == results[1]
    assert len(results[0]) == 3


def write(folder, text):
    path = folder / "repro.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_run_as_subprocess(tmp_path, write_study):
    path = write_study(name="subprocess_run", n_trials=1, max_epochs=1)
    url = f"sqlite:///{tmp_path / 'sub.db'}"
    env = {
        **os.environ,
        "SEARCH_STORAGE": url,
        "PYTHONWARNINGS": "error::DeprecationWarning",
    }

    result = subprocess.run(
        [sys.executable, "-m", "search", "run", "--study", str(path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr
    assert "best trial 0" in result.stdout
    assert optuna.load_study(study_name="subprocess_run", storage=url).trials


def test_help_as_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "search", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0
    assert "run" in result.stdout


def test_regression_study_minimizes_loss(sqlite_url):
    text = tiny_study_text(name="regression", n_trials=2, types=("CosineAnnealingLR",))
    text = text.replace('dataset = "digits"', 'dataset = "diabetes"')
    text = text.replace('direction = "maximize"', 'direction = "minimize"')
    text = text.replace('metric = "valid_acc"', 'metric = "valid_loss"')
    spec = parse_spec(text)
    study = open_study(spec, sqlite_url)
    objective = Objective(spec, sqlite_url)

    study.optimize(objective, n_trials=2)

    rows = read_rows(sqlite_url, epochs_table, ["regression"])
    assert isinstance(objective.last_net, NeuralNetRegressor)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert [r["metric"] for r in rows] == [r["valid_loss"] for r in rows]
    assert study.best_value == min(t.value for t in study.trials)


def test_crashing_model_exits_1(sqlite_url, tmp_path, capsys, monkeypatch):
    (tmp_path / "crashing_model.py").write_text(
        "import torch\n\n\n"
        "class Crash(torch.nn.Module):\n"
        "    def __init__(self, n_features, n_outputs):\n"
        "        super().__init__()\n"
        "        self.linear = torch.nn.Linear(n_features, n_outputs)\n\n"
        "    def forward(self, X):\n"
        "        raise RuntimeError('boom in forward')\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    text = tiny_study_text(name="crash").replace(
        'kind = "mlp"\nhidden_units = [16]', 'kind = "crashing_model:Crash"'
    )
    path = tmp_path / "crash.toml"
    path.write_text(text, encoding="utf-8")

    status = main(["run", "--study", str(path), "--storage", sqlite_url])

    err = capsys.readouterr().err
    study = optuna.load_study(study_name="crash", storage=sqlite_url)
    assert status == 1
    assert "error: run failed: RuntimeError: boom in forward" in err
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_joining_run_samples_differently(sqlite_url, tmp_path):
    # Two runs that open the same study: the second must not repeat the
    # seeded sequence of the first.
    text = tiny_study_text(name="join", n_trials=3, types=("StepLR",), sampler="random")
    spec = parse_spec(text)
    first = open_study(spec, sqlite_url)
    second = open_study(spec, sqlite_url)

    first_lrs = [first.ask().suggest_float("lr", 0.01, 0.2, log=True) for _ in range(3)]
    second_lrs = [
        second.ask().suggest_float("lr", 0.01, 0.2, log=True) for _ in range(3)
    ]

    assert first_lrs != second_lrs
