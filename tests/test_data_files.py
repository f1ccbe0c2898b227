"""Bad data files given to ``run``: one clear error naming the file, the column and
the fix, exit status 2, and no study created in the storage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from search.cli import main
from search.data import DataError, prepare_data
from search.spec import DataSpec
from tests.test_spec_errors import study_text


def data_study(tmp_path, data_path, target="label", extra_data="", replace=None):
    """Write a tiny study that reads ``data_path`` and return the study file's path."""
    table = f'path = "{data_path}"\ntarget = "{target}"{extra_data}'
    path = tmp_path / "file_study.toml"
    replace = {'dataset = "digits"': table, **(replace or {})}
    path.write_text(study_text(replace=replace), encoding="utf-8")
    return path


def good_frame(n_rows: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n_rows),
            "b": rng.normal(size=n_rows),
            "label": ["x", "y"] * (n_rows // 2),
        }
    )


def run_bad(tmp_path, capsys, study_path) -> str:
    """Run the study, check exit 2, no traceback and no database, and return stderr."""
    database = tmp_path / "study.db"
    status = main(
        ["run", "--study", str(study_path), "--storage", f"sqlite:///{database}"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    assert not database.exists()
    return err


def write_csv(tmp_path, frame: pd.DataFrame, name: str = "train.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_missing_file(tmp_path, capsys):
    data = tmp_path / "absent.csv"

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: data file not found; check data.path" in err


def test_unsupported_extension(tmp_path, capsys):
    data = tmp_path / "train.xlsx"
    data.write_text("a,label\n1,x\n", encoding="utf-8")

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: unsupported data file extension '.xlsx'" in err
    assert ".csv, .parquet, .pq" in err


def test_empty_file(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text("", encoding="utf-8")

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: data file is empty" in err


def test_header_without_rows(tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text("a,b,label\n", encoding="utf-8")

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: data file has no rows" in err


def test_missing_target_column(tmp_path, capsys):
    data = write_csv(tmp_path, good_frame())

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data, target="class"))

    assert f"{data}: target column 'class' not found" in err
    assert "columns are a, b, label; set data.target" in err


def test_non_numeric_feature(tmp_path, capsys):
    frame = good_frame()
    frame["color"] = "red"
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: feature column 'color' is not numeric" in err
    assert "first value 'red'" in err
    assert "encode it as numbers or drop the column" in err


def test_missing_values(tmp_path, capsys):
    frame = good_frame()
    frame.loc[3, "b"] = np.nan
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: feature column 'b' has 1 missing values (data rows 4," in err
    assert "fill or drop those rows" in err


def test_missing_target_values(tmp_path, capsys):
    frame = good_frame()
    frame.loc[0, "label"] = None
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: target column 'label' has 1 missing values" in err


def test_every_column_problem_reported(tmp_path, capsys):
    frame = good_frame()
    frame["color"] = "red"
    frame.loc[5, "a"] = np.nan
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert "feature column 'a' has 1 missing values" in err
    assert "feature column 'color' is not numeric" in err


def test_infinite_values(tmp_path, capsys):
    frame = good_frame()
    frame.loc[2, "a"] = np.inf
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: feature column 'a' has 1 infinite values" in err


def test_class_with_one_row(tmp_path, capsys):
    frame = good_frame()
    frame.loc[0, "label"] = "lonely"
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: target column 'label': class 'lonely' has 1 row" in err
    assert "too few for a stratified split" in err


def test_single_class(tmp_path, capsys):
    frame = good_frame()
    frame["label"] = "x"
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert f"{data}: the target has a single class" in err


def test_regression_target_with_accuracy(tmp_path, capsys):
    frame = good_frame()
    frame["label"] = np.linspace(0.0, 1.0, len(frame))
    data = write_csv(tmp_path, frame)

    err = run_bad(tmp_path, capsys, data_study(tmp_path, data))

    assert "metric: valid_acc needs a classification target" in err
    assert f"but {data} is a regression task (got 'valid_acc')" in err


def test_text_target_for_regression(tmp_path, capsys):
    data = write_csv(tmp_path, good_frame())
    study = data_study(
        tmp_path,
        data,
        extra_data='\ntask = "regression"',
        replace={
            'metric = "valid_acc"': 'metric = "valid_loss"',
            'direction = "maximize"': 'direction = "minimize"',
        },
    )

    err = run_bad(tmp_path, capsys, study)

    assert f"{data}: target column 'label' is not numeric" in err
    assert "but the task is regression" in err


def test_parquet_file_loads(tmp_path):
    path = tmp_path / "train.parquet"
    good_frame().to_parquet(path)

    data = prepare_data(DataSpec(dataset=None, path=str(path), target="label"), 0)

    assert data.task == "classification"
    assert data.n_classes == 2
    assert data.n_features == 2


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_bytes(b"not a parquet file")

    with pytest.raises(DataError, match=rf"{path}: cannot read the data file"):
        prepare_data(DataSpec(dataset=None, path=str(path), target="label"), 0)


def test_relative_path_follows_study_file(tmp_path, capsys, monkeypatch):
    # The same study file run from two working directories reads the file next
    # to the study file (40 rows: 32 for training), not the working directory's.
    study_dir = tmp_path / "study"
    elsewhere = tmp_path / "elsewhere"
    study_dir.mkdir()
    elsewhere.mkdir()
    write_csv(study_dir, good_frame(40))
    write_csv(elsewhere, good_frame(60))
    study = data_study(study_dir, "train.csv")
    url = f"sqlite:///{tmp_path / 'study.db'}"

    statuses = []
    for folder, n_trials in ((study_dir, "1"), (elsewhere, "2")):
        monkeypatch.chdir(folder)
        prepare_data.cache_clear()
        statuses.append(
            main(
                ["run", "--study", str(study), "--storage", url, "--n-trials", n_trials]
            )
        )

    err = capsys.readouterr().err
    assert statuses == [0, 0]
    assert err.count(f"data {study_dir / 'train.csv'}: 32 training") >= 2
    assert "48 training" not in err


def test_changed_data_file_rejected(tmp_path, capsys):
    data = write_csv(tmp_path, good_frame(40))
    study = data_study(tmp_path, data)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["run", "--study", str(study), "--storage", url]) == 0
    capsys.readouterr()

    write_csv(tmp_path, good_frame(60))
    status = main(["run", "--study", str(study), "--storage", url, "--n-trials", "3"])

    err = capsys.readouterr().err
    assert status == 2
    assert "data.sha256:" in err
