"""Study-file loading: warnings, defaults, sampler and pruner options, ``validate``."""

from __future__ import annotations

import json

import pytest

from search.cli import main
from search.spec import SpecError, parse_spec, spec_to_dict
from tests.test_spec_errors import study_text


def test_loss_direction_mismatch_warns(tmp_path, capsys):
    path = tmp_path / "loss.toml"
    path.write_text(
        study_text(replace={'metric = "valid_acc"': 'metric = "valid_loss"'}),
        encoding="utf-8",
    )

    status = main(["validate", str(path)])

    captured = capsys.readouterr()
    assert status == 0
    assert f"{path}: OK" in captured.out
    assert "WARNING" in captured.err
    assert (
        f"{path}: direction: maximizes the loss metric valid_loss (got 'maximize')"
        in captured.err
    )


def test_accuracy_direction_mismatch_warns():
    spec = parse_spec(
        study_text(replace={'direction = "maximize"': 'direction = "minimize"'}),
        "f.toml",
    )

    assert spec.direction == "minimize"
    assert len(spec.warnings) == 1
    assert "direction: minimizes the accuracy metric valid_acc" in spec.warnings[0]


def test_default_direction_follows_metric():
    text = study_text(
        replace={
            'direction = "maximize"\n': "",
            'metric = "valid_acc"': 'metric = "valid_loss"',
        }
    )

    spec = parse_spec(text, "f.toml")

    assert spec.direction == "minimize"
    assert spec.warnings == ()


def test_stored_definition_omits_warnings_and_path():
    spec = parse_spec(
        study_text(replace={'metric = "valid_acc"': 'metric = "valid_loss"'}), "f.toml"
    )

    stored = spec_to_dict(spec)

    assert "warnings" not in stored
    assert "path" not in stored
    assert json.loads(json.dumps(stored))["training"]["max_epochs"] == 2


def test_sampler_and_pruner_options_pass_through():
    text = study_text(
        sampler="qmc",
        pruner="hyperband",
        replace={
            'name = "qmc"': 'name = "qmc"\nqmc_type = "halton"',
            'name = "hyperband"': 'name = "hyperband"\nreduction_factor = 2',
        },
    )

    spec = parse_spec(text, "f.toml")

    assert dict(spec.sampler.options) == {"qmc_type": "halton"}
    assert dict(spec.pruner.options) == {"reduction_factor": 2}


def test_pruner_option_rejected_by_optuna():
    text = study_text(
        pruner="successive_halving",
        replace={
            'name = "successive_halving"': (
                'name = "successive_halving"\nreduction_factor = 1'
            )
        },
    )

    with pytest.raises(
        SpecError,
        match=r"pruner.reduction_factor: rejected by "
        r"SuccessiveHalvingPruner .*\(got 1\)",
    ):
        parse_spec(text, "f.toml")


def test_options_with_python_objects_rejected():
    text = study_text(replace={'name = "tpe"': 'name = "tpe"\nconstraints_func = "f"'})

    with pytest.raises(
        SpecError, match="sampler.constraints_func: takes a Python object"
    ):
        parse_spec(text, "f.toml")


def test_model_option_dates_rejected():
    text = study_text(
        replace={
            'kind = "mlp"\nhidden_units = [16]': (
                'kind = "pkg.mod:Net"\n[model.options]\nwhen = 2024-01-01'
            )
        }
    )

    with pytest.raises(SpecError, match=r"model.options.when: .* \(got 2024-01-01\)"):
        parse_spec(text, "f.toml")


def test_builtin_task_contradiction_rejected():
    text = study_text(
        replace={"valid_fraction = 0.2": 'valid_fraction = 0.2\ntask = "regression"'}
    )

    with pytest.raises(SpecError, match=r"data.task: contradicts dataset 'digits'"):
        parse_spec(text, "f.toml")


def test_huge_range_with_step_rejected():
    text = study_text(replace={"log = true": "step = 1e-300"}, extra="")
    text = text.replace("low = 0.01", "low = -1e308").replace(
        "high = 0.2", "high = 1e308"
    )

    with pytest.raises(SpecError, match=r"lr.step: is too small for the range"):
        parse_spec(text, "f.toml")


def test_toml_error_at_end_of_file():
    with pytest.raises(SpecError, match=r"f.toml: invalid TOML at the end of the file"):
        parse_spec('name = "x', "f.toml")


def test_validate_all_study_files(capsys):
    status = main(["validate"])

    out = capsys.readouterr().out
    assert status == 0
    assert "steplr.toml: OK" in out
    assert "schedules.toml: OK" in out
    assert "INVALID" not in out


def test_validate_reports_every_file(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text(study_text(), encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(study_text(n_trials=0, sampler="tpee"), encoding="utf-8")
    missing = tmp_path / "missing.toml"
    no_data = tmp_path / "nodata.toml"
    no_data.write_text(
        study_text(
            replace={
                'dataset = "digits"': f'path = "{tmp_path / "x.csv"}"\ntarget = "y"'
            }
        ),
        encoding="utf-8",
    )

    status = main(["validate", str(bad), str(missing), str(no_data), str(good)])

    out = capsys.readouterr().out
    assert status == 2
    assert f"{bad}: n_trials: must be at least 1 (got 0)" in out
    assert f"{bad}: sampler.name: unknown sampler (got 'tpee')" in out
    assert f"study file {str(missing)!r} not found" in out
    assert f"{tmp_path / 'x.csv'}: data file not found" in out
    assert f"{good}: OK" in out
