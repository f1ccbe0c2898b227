"""Tests of the list, show, compare and export commands on the stored studies."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from stored_study import FAMILIES_STUDY, LOSSES_STUDY, MAX_EPOCHS

from search import analysis
from search.cli import main
from search.records import batches_table, epochs_table, read_rows

REPO = Path(__file__).resolve().parent.parent


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def load(stored_study, name=FAMILIES_STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=stored_study.url)


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_list_text(stored_study, capsys):
    status, out, _ = run(capsys, "list", "--storage", stored_study.url)

    lines = out.splitlines()
    assert status == 0
    assert lines[0].split() == [
        "study",
        "direction",
        "metric",
        "trials",
        "complete",
        "pruned",
        "failed",
        "running",
        "best",
        "best_trial",
        "best_family",
    ]
    families = load(stored_study)
    assert lines[1].split() == [
        FAMILIES_STUDY,
        "maximize",
        "valid_acc",
        "8",
        "6",
        "1",
        "1",
        "0",
        f"{families.best_value:.4g}",
        str(families.best_trial.number),
        families.best_trial.params["scheduler"],
    ]
    assert lines[2].split()[:3] == [LOSSES_STUDY, "minimize", "valid_loss"]


def test_list_csv(stored_study, capsys):
    status, out, _ = run(
        capsys, "list", "--storage", stored_study.url, "--format", "csv"
    )

    rows = {row["study"]: row for row in parse_csv(out)}
    assert status == 0
    assert list(rows) == [FAMILIES_STUDY, LOSSES_STUDY]
    for name, row in rows.items():
        study = load(stored_study, name)
        trials = study.get_trials()
        assert int(row["trials"]) == len(trials)
        assert int(row["complete"]) == sum(
            t.state == TrialState.COMPLETE for t in trials
        )
        assert int(row["pruned"]) == sum(t.state == TrialState.PRUNED for t in trials)
        assert int(row["failed"]) == sum(t.state == TrialState.FAIL for t in trials)
        assert float(row["best_value"]) == study.best_value
        assert int(row["best_number"]) == study.best_trial.number
        assert row["direction"] == study.direction.name.lower()


def test_list_json(stored_study, capsys):
    status, out, _ = run(
        capsys, "list", "--storage", stored_study.url, "--format", "json"
    )

    documents = json.loads(out)
    assert status == 0
    assert [d["study"] for d in documents] == [FAMILIES_STUDY, LOSSES_STUDY]
    for document in documents:
        study = load(stored_study, document["study"])
        assert document["best_value"] == study.best_value
        assert document["best_number"] == study.best_trial.number
        assert document["best_family"] == study.best_trial.params["scheduler"]
        assert document["trials"] == len(study.get_trials())
        assert (
            document["datetime_start"]
            == study.get_trials()[0].datetime_start.isoformat()
        )


def test_list_storage_from_environment(stored_study, capsys, monkeypatch):
    monkeypatch.setenv("SEARCH_STORAGE", stored_study.url)

    status, out, _ = run(capsys, "list", "--format", "csv")

    assert status == 0
    assert [row["study"] for row in parse_csv(out)] == [FAMILIES_STUDY, LOSSES_STUDY]


def test_list_empty_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.storages.RDBStorage(url).engine.dispose()

    status, out, _ = run(capsys, "list", "--storage", url)

    assert status == 0
    assert out.strip() == f"no studies in storage {url}"


def test_list_missing_sqlite_file(tmp_path, capsys):
    missing = tmp_path / "typo.db"

    status, out, err = run(capsys, "list", "--storage", f"sqlite:///{missing}")

    assert status == 2
    assert out == ""
    assert f"SQLite storage file {missing} does not exist" in err
    assert not missing.exists()


def test_list_does_not_import_torch(stored_study):
    code = (
        "import sys\n"
        "from search.cli import main\n"
        f"status = main(['list', '--storage', {stored_study.url!r}])\n"
        "loaded = [m for m in ('torch', 'skorch', 'matplotlib') if m in sys.modules]\n"
        "sys.exit(f'status {status}, imported {loaded}' if status or loaded else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )

    assert result.returncode == 0, result.stderr
    assert FAMILIES_STUDY in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["show", "--study", "nope"],
        ["compare", FAMILIES_STUDY, "nope"],
        ["export", "--study", "nope", "--out", "unused.csv"],
    ],
)
def test_unknown_study_exits_2(stored_study, capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)

    status, out, err = run(capsys, *argv, "--storage", stored_study.url)

    assert status == 2
    assert out == ""
    assert "study 'nope' not found" in err
    assert f"studies in the storage: {FAMILIES_STUDY}, {LOSSES_STUDY}" in err
    assert not (tmp_path / "unused.csv").exists()


def test_show_text(stored_study, capsys):
    status, out, _ = run(
        capsys,
        "show",
        "--study",
        FAMILIES_STUDY,
        "--storage",
        stored_study.url,
        "--top",
        "3",
    )

    study = load(stored_study)
    best = study.best_trial
    lines = out.splitlines()
    assert status == 0
    assert lines[0] == (
        f"study {FAMILIES_STUDY!r} (maximize valid_acc): 8 trials: 6 complete, "
        "1 pruned, 1 failed"
    )
    assert "top 3 completed trials:" in lines
    table_start = lines.index("top 3 completed trials:") + 1
    assert lines[table_start].split() == [
        "number",
        "family",
        "state",
        "valid_acc",
        "epochs",
        "duration_s",
        "config",
    ]
    assert lines[table_start + 1].split()[:4] == [
        str(best.number),
        best.params["scheduler"],
        "COMPLETE",
        f"{best.value:.4g}",
    ]
    assert (
        f"best trial {best.number} ({best.params['scheduler']}): valid_acc = "
        f"{best.value:.4g}" in lines
    )
    curve_start = next(
        i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "lr"]
    )
    curve = [line.split() for line in lines[curve_start + 1 :]]
    assert [row[0] for row in curve] == [str(e) for e in range(1, MAX_EPOCHS + 1)]
    assert [row[4] for row in curve] == [
        f"{best.intermediate_values[step]:.4g}" for step in range(MAX_EPOCHS)
    ]


def test_show_csv(stored_study, capsys):
    status, out, _ = run(
        capsys,
        "show",
        "--study",
        FAMILIES_STUDY,
        "--storage",
        stored_study.url,
        "--format",
        "csv",
    )

    rows = parse_csv(out)
    complete = sorted(
        load(stored_study).get_trials(states=[TrialState.COMPLETE]),
        key=lambda t: (-t.value, t.number),
    )
    assert status == 0
    assert [int(row["number"]) for row in rows] == [t.number for t in complete]
    for row, trial in zip(rows, complete, strict=True):
        assert float(row["value"]) == trial.value
        assert row["family"] == trial.params["scheduler"]
        assert float(row["params_lr"]) == trial.params["lr"]
        assert (
            json.loads(row["scheduler_kwargs"]) == trial.user_attrs["scheduler_kwargs"]
        )
        assert int(row["seed"]) == trial.user_attrs["seed"]
        assert row["state"] == "COMPLETE"


def test_show_json(stored_study, capsys):
    status, out, _ = run(
        capsys,
        "show",
        "--study",
        LOSSES_STUDY,
        "--storage",
        stored_study.url,
        "--format",
        "json",
    )

    document = json.loads(out)
    study = load(stored_study, LOSSES_STUDY)
    best = study.best_trial
    assert status == 0
    assert document["study"] == LOSSES_STUDY
    assert document["direction"] == "minimize"
    assert document["metric"] == "valid_loss"
    assert document["counts"] == {"COMPLETE": 2}
    assert [t["number"] for t in document["top_trials"]] == [
        t.number for t in sorted(study.get_trials(), key=lambda t: t.value)
    ]
    best_document = document["best_trial"]
    assert best_document["number"] == best.number
    assert best_document["value"] == best.value
    assert best_document["params_lr"] == best.params["lr"]
    rows = read_rows(stored_study.url, epochs_table, [LOSSES_STUDY], [best.number])
    assert [e["epoch"] for e in best_document["epochs"]] == [r["epoch"] for r in rows]
    assert [e["lr"] for e in best_document["epochs"]] == [r["lr"] for r in rows]
    assert [e["metric"] for e in best_document["epochs"]] == [r["metric"] for r in rows]
    assert [e["valid_loss"] for e in best_document["epochs"]] == [
        r["valid_loss"] for r in rows
    ]


def test_compare_text_best_family_first(stored_study, capsys):
    status, out, _ = run(
        capsys, "compare", FAMILIES_STUDY, "--storage", stored_study.url
    )

    lines = out.splitlines()
    trials = analysis.trials_frame(stored_study.url, FAMILIES_STUDY)
    expected = analysis.compare_families(trials)
    assert status == 0
    assert (
        lines[0] == f"study {FAMILIES_STUDY!r} (maximize valid_acc), best family first:"
    )
    assert lines[1].split()[:7] == [
        "family",
        "trials",
        "complete",
        "pruned",
        "failed",
        "best",
        "best_trial",
    ]
    assert [line.split()[0] for line in lines[2:]] == expected["family"].tolist()
    constant = next(line.split() for line in lines[2:] if line.startswith("constant"))
    assert constant[1:5] == ["2", "1", "1", "0"]
    step = next(line.split() for line in lines[2:] if line.startswith("StepLR"))
    assert step[1:5] == ["3", "2", "0", "1"]


def test_compare_csv_two_studies(stored_study, capsys):
    status, out, _ = run(
        capsys,
        "compare",
        LOSSES_STUDY,
        FAMILIES_STUDY,
        "--storage",
        stored_study.url,
        "--format",
        "csv",
    )

    rows = parse_csv(out)
    assert status == 0
    assert list(dict.fromkeys(row["study"] for row in rows)) == [
        LOSSES_STUDY,
        FAMILIES_STUDY,
    ]
    assert list(rows[0]) == analysis.COMPARISON_COLUMNS
    for name in (LOSSES_STUDY, FAMILIES_STUDY):
        study = load(stored_study, name)
        study_rows = [row for row in rows if row["study"] == name]
        best_row = study_rows[0]
        # Families that tie on the best value are ordered by median, so the best
        # row may name another trial than Optuna's best_trial, with the same value.
        best_trial = study.trials[int(best_row["best_number"])]
        assert float(best_row["best_value"]) == study.best_value
        assert best_trial.value == study.best_value
        assert best_row["family"] == best_trial.params["scheduler"]
        for row in study_rows:
            trials = [
                t for t in study.get_trials() if t.params["scheduler"] == row["family"]
            ]
            assert int(row["trials"]) == len(trials)
            assert int(row["epochs"]) == sum(
                len(read_rows(stored_study.url, epochs_table, [name], [t.number]))
                for t in trials
            )


def test_compare_json(stored_study, capsys):
    status, out, _ = run(
        capsys,
        "compare",
        FAMILIES_STUDY,
        "--storage",
        stored_study.url,
        "--format",
        "json",
    )

    documents = {d["family"]: d for d in json.loads(out)}
    study = load(stored_study)
    assert status == 0
    assert set(documents) == {"constant", "StepLR", "OneCycleLR", "CosineAnnealingLR"}
    cosine = documents["CosineAnnealingLR"]
    cosine_trials = [
        t for t in study.get_trials() if t.params["scheduler"] == "CosineAnnealingLR"
    ]
    assert cosine["trials"] == len(cosine_trials)
    assert cosine["best_value"] == max(t.value for t in cosine_trials)
    assert cosine["std"] is None  # a single completed trial has no sample deviation
    assert json.loads(cosine["best_scheduler_kwargs"]) == {
        "T_max": MAX_EPOCHS,
        "eta_min": 0.0,
    }
    constant = documents["constant"]
    assert constant["pruned"] == 1
    assert constant["complete"] == 1
    assert documents["StepLR"]["failed"] == 1


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_writes_three_files(stored_study, capsys, tmp_path, suffix):
    out_path = tmp_path / f"results{suffix}"

    status, out, _ = run(
        capsys,
        "export",
        "--study",
        FAMILIES_STUDY,
        "--out",
        str(out_path),
        "--storage",
        stored_study.url,
    )

    read = pd.read_csv if suffix == ".csv" else pd.read_parquet
    trials = read(out_path)
    epochs = read(tmp_path / f"results_epochs{suffix}")
    batches = read(tmp_path / f"results_batches{suffix}")
    epoch_rows = read_rows(stored_study.url, epochs_table, [FAMILIES_STUDY])
    batch_rows = read_rows(stored_study.url, batches_table, [FAMILIES_STUDY])
    assert status == 0
    assert out.splitlines() == [
        f"trials: {out_path} (8 rows)",
        f"epochs: {tmp_path / f'results_epochs{suffix}'} ({len(epoch_rows)} rows)",
        f"batches: {tmp_path / f'results_batches{suffix}'} ({len(batch_rows)} rows)",
    ]
    study_trials = load(stored_study).get_trials()
    assert trials["number"].tolist() == [t.number for t in study_trials]
    for (_, row), trial in zip(trials.iterrows(), study_trials, strict=True):
        if trial.value is None:
            assert math.isnan(row["value"])
        else:
            assert row["value"] == trial.value
        assert row["params_lr"] == trial.params["lr"]
        assert row["state"] == trial.state.name
    assert epochs["metric"].tolist() == pytest.approx([r["metric"] for r in epoch_rows])
    assert epochs["trial_id"].tolist() == [r["trial_id"] for r in epoch_rows]
    assert batches["lr"].tolist() == [r["lr"] for r in batch_rows]


def test_export_parquet_keeps_dtypes(stored_study, capsys, tmp_path):
    out_path = tmp_path / "results.parquet"

    status, _, _ = run(
        capsys,
        "export",
        "--study",
        FAMILIES_STUDY,
        "--out",
        str(out_path),
        "--storage",
        stored_study.url,
    )

    trials = pd.read_parquet(out_path)
    assert status == 0
    assert pd.api.types.is_datetime64_any_dtype(trials["datetime_start"])
    assert trials["params_StepLR.step_size"].dtype == "Int64"
    assert trials["kwargs_three_phase"].dtype == "boolean"


def test_export_rejects_suffix(stored_study, capsys, tmp_path):
    out_path = tmp_path / "results.xlsx"

    status, out, err = run(
        capsys,
        "export",
        "--study",
        FAMILIES_STUDY,
        "--out",
        str(out_path),
        "--storage",
        stored_study.url,
    )

    assert status == 2
    assert out == ""
    assert "unsupported export file" in err
    assert ".csv, .parquet, .pq" in err
    assert list(tmp_path.iterdir()) == []


def test_export_missing_folder(stored_study, capsys, tmp_path):
    out_path = tmp_path / "missing" / "results.csv"

    status, _, err = run(
        capsys,
        "export",
        "--study",
        FAMILIES_STUDY,
        "--out",
        str(out_path),
        "--storage",
        stored_study.url,
    )

    assert status == 2
    assert f"cannot write {out_path}" in err


def test_format_choices_rejected(stored_study, capsys):
    status, _, err = run(
        capsys, "list", "--storage", stored_study.url, "--format", "xml"
    )

    assert status == 2
    assert "invalid choice: 'xml'" in err


MISSING_DRIVERS = [
    # (URL, driver module, extra named in the hint, the other backend's extra)
    (
        "postgresql+psycopg://u:topsecret@127.0.0.1:1/x",
        "psycopg",
        "postgresql",
        "mysql",
    ),
    ("mysql+pymysql://u:topsecret@127.0.0.1:1/x", "pymysql", "mysql", "postgresql"),
]
READ_COMMANDS = [
    ["list"],
    ["show", "--study", "steplr"],
    ["compare", "steplr", "onecycle"],
    ["export", "--study", "steplr", "--out", "unused.csv"],
    ["dashboard", "--port", "0"],
]


@pytest.mark.parametrize("argv", READ_COMMANDS, ids=lambda argv: argv[0])
@pytest.mark.parametrize(
    ("url", "module", "extra", "other_extra"),
    MISSING_DRIVERS,
    ids=["postgresql", "mysql"],
)
def test_read_command_without_driver(
    capsys, monkeypatch, tmp_path, argv, url, module, extra, other_extra
):
    # A None entry in sys.modules makes "import psycopg" raise ModuleNotFoundError,
    # as it does where the package is not installed.
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.chdir(tmp_path)

    status, out, err = run(capsys, *argv, "--storage", url)

    masked = url.replace("topsecret", "***")
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: the driver for {masked!r} is not installed ")
    assert f"({module})" in err
    assert f"pip install -e '.[{extra}]'" in err
    assert f".[{other_extra}]" not in err
    assert "topsecret" not in err
    assert list(tmp_path.iterdir()) == []


def add_study(url: str, name: str, trials: list[tuple[str, float]], **options):
    """Store a study of finished trials, (family, value) each, without training."""
    direction = options.get("direction", "maximize")
    study = optuna.create_study(study_name=name, storage=url, direction=direction)
    study.set_user_attr("metric", options.get("metric", "valid_acc"))
    families = sorted({family for family, _ in trials})
    distributions = {
        "scheduler": optuna.distributions.CategoricalDistribution(families)
    }
    for family, value in trials:
        study.add_trial(
            optuna.trial.create_trial(
                params={"scheduler": family},
                distributions=distributions,
                value=value,
            )
        )


@pytest.fixture
def two_studies(tmp_path) -> str:
    """Two maximize valid_acc studies whose families interleave when ranked."""
    url = f"sqlite:///{tmp_path / 'two.db'}"
    add_study(url, "steplr", [("StepLR", 0.975), ("StepLR", 0.95), ("constant", 0.9)])
    # onecycle's constant ties steplr's StepLR on 0.975 with the better median.
    add_study(url, "onecycle", [("OneCycleLR", 0.9806), ("constant", 0.975)])
    return url


# (study, family, best value, median), best first.
RANKED_ACROSS = [
    ("onecycle", "OneCycleLR", 0.9806, 0.9806),
    ("onecycle", "constant", 0.975, 0.975),
    ("steplr", "StepLR", 0.975, 0.9625),
    ("steplr", "constant", 0.9, 0.9),
]


def test_compare_ranks_studies_together_text(two_studies, capsys):
    status, out, _ = run(
        capsys, "compare", "steplr", "onecycle", "--storage", two_studies
    )

    lines = out.splitlines()
    assert status == 0
    assert lines[0] == (
        "studies 'steplr', 'onecycle' (maximize valid_acc), ranked together, "
        "best family first:"
    )
    assert lines[1].split()[:3] == ["study", "family", "trials"]
    rows = [line.split() for line in lines[2:]]
    assert [(row[0], row[1]) for row in rows] == [
        (study, family) for study, family, _, _ in RANKED_ACROSS
    ]
    assert [row[6] for row in rows] == [
        f"{best:.4g}" for _, _, best, _ in RANKED_ACROSS
    ]
    assert len(lines) == 2 + len(RANKED_ACROSS)


def test_compare_ranks_studies_together_csv(two_studies, capsys):
    status, out, err = run(
        capsys,
        "compare",
        "steplr",
        "onecycle",
        "--storage",
        two_studies,
        "--format",
        "csv",
    )

    rows = parse_csv(out)
    assert status == 0
    assert "differ" not in err
    assert [(row["study"], row["family"]) for row in rows] == [
        (study, family) for study, family, _, _ in RANKED_ACROSS
    ]
    assert [float(row["best_value"]) for row in rows] == [
        best for _, _, best, _ in RANKED_ACROSS
    ]
    assert [float(row["median"]) for row in rows] == pytest.approx(
        [median for _, _, _, median in RANKED_ACROSS]
    )


def test_compare_ranks_studies_together_json(two_studies, capsys):
    status, out, _ = run(
        capsys,
        "compare",
        "steplr",
        "onecycle",
        "--storage",
        two_studies,
        "--format",
        "json",
    )

    documents = json.loads(out)
    assert status == 0
    assert [(d["study"], d["family"]) for d in documents] == [
        (study, family) for study, family, _, _ in RANKED_ACROSS
    ]
    assert [d["best_value"] for d in documents] == [
        best for _, _, best, _ in RANKED_ACROSS
    ]
    assert [d["median"] for d in documents] == pytest.approx(
        [median for _, _, _, median in RANKED_ACROSS]
    )
    assert [d["best_number"] for d in documents] == [0, 1, 0, 2]


def test_compare_different_objectives_text(stored_study, capsys):
    status, out, _ = run(
        capsys, "compare", LOSSES_STUDY, FAMILIES_STUDY, "--storage", stored_study.url
    )

    blocks = out.split("\n\n")
    assert status == 0
    assert blocks[0] == (
        f"studies {LOSSES_STUDY!r} (minimize valid_loss), {FAMILIES_STUDY!r} "
        "(maximize valid_acc) differ in direction or metric, so each study's "
        "families are ranked on their own"
    )
    assert len(blocks) == 3
    assert blocks[1].startswith(
        f"study {LOSSES_STUDY!r} (minimize valid_loss), best family first:\n"
    )
    assert blocks[2].startswith(
        f"study {FAMILIES_STUDY!r} (maximize valid_acc), best family first:\n"
    )


def test_compare_different_objectives_csv_warns(stored_study, capsys):
    status, out, err = run(
        capsys,
        "compare",
        LOSSES_STUDY,
        FAMILIES_STUDY,
        "--storage",
        stored_study.url,
        "--format",
        "csv",
    )

    assert status == 0
    assert "differ in direction or metric" in err
    assert parse_csv(out)[0]["study"] == LOSSES_STUDY
