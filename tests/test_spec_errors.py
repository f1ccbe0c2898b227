"""Malformed study files given to ``run``: exit status 2, the key and value named,
no traceback, and the storage left untouched.
"""

from __future__ import annotations

import pytest
import sqlalchemy

from search.cli import main
from tests.conftest import tiny_study_text


def study_text(
    replace: dict[str, str] | None = None, extra: str = "", **options
) -> str:
    """Return the tiny study with each ``old: new`` of ``replace`` applied once."""
    text = tiny_study_text(extra=extra, **options)
    for old, new in (replace or {}).items():
        assert text.count(old) == 1, f"{old!r} is not in the tiny study exactly once"
        text = text.replace(old, new)
    return text


def family(name: str, body: str, max_epochs: int = 2) -> dict:
    """Options of a study with one family ``name`` and ``body`` as its table."""
    return {
        "types": (name,),
        "max_epochs": max_epochs,
        "extra": f"\n[schedulers.{name}]\n{body}\n",
    }


# (id, study_text options, key the message names, value as the message shows it)
CASES = [
    (
        "unknown-top-key",
        {"replace": {"n_trials = 2": "n_trial = 2"}},
        "n_trial",
        "'n_trial'",
    ),
    (
        "unknown-data-key",
        {"replace": {"valid_fraction = 0.2": "valid_fractoin = 0.2"}},
        "data.valid_fractoin",
        "'valid_fractoin'",
    ),
    (
        "unknown-model-key",
        {"replace": {"hidden_units = [16]": "hiden_units = [16]"}},
        "model.hiden_units",
        "'hiden_units'",
    ),
    (
        "unknown-training-key",
        {"replace": {"max_epochs = 2": "max_epoch = 2"}},
        "training.max_epoch",
        "'max_epoch'",
    ),
    (
        "unknown-sampler-option",
        {"replace": {'name = "tpe"': 'name = "tpe"\nn_startup_trails = 3'}},
        "sampler.n_startup_trails",
        "'n_startup_trails'",
    ),
    (
        "unknown-pruner-option",
        {
            "pruner": "median",
            "replace": {'name = "median"': 'name = "median"\nn_warmup_step = 1'},
        },
        "pruner.n_warmup_step",
        "'n_warmup_step'",
    ),
    (
        "unknown-family-argument",
        family("StepLR", "step_sise = 1"),
        "schedulers.StepLR.step_sise",
        "'step_sise'",
    ),
    (
        "unknown-family-table",
        {"extra": "\n[schedulers.StepLr]\nstep_size = 1\n"},
        "schedulers.StepLr",
        "'StepLr'",
    ),
    (
        "unknown-range-key",
        {"replace": {"log = true": "log = true\nlg = true"}},
        "lr.lg",
        "'lg'",
    ),
    (
        "string-for-integer",
        {"replace": {"n_trials = 2": 'n_trials = "many"'}},
        "n_trials",
        "'many'",
    ),
    (
        "float-epoch-count",
        {"replace": {"max_epochs = 2": "max_epochs = 2.5"}},
        "training.max_epochs",
        "2.5",
    ),
    (
        "string-batch-size",
        {"replace": {"batch_size = 64": 'batch_size = "64"'}},
        "training.batch_size",
        "'64'",
    ),
    (
        "string-for-float",
        {"replace": {"high = 0.2": 'high = "0.2"'}},
        "lr.high",
        "'0.2'",
    ),
    ("low-above-high", {"replace": {"low = 0.01": "low = 0.5"}}, "lr.low", "0.5"),
    ("log-with-zero-low", {"replace": {"low = 0.01": "low = 0.0"}}, "lr.low", "0.0"),
    ("nan-bound", {"replace": {"high = 0.2": "high = nan"}}, "lr.high", "nan"),
    ("log-not-boolean", {"replace": {"log = true": 'log = "yes"'}}, "lr.log", "'yes'"),
    (
        "step-not-fitting",
        family("StepLR", "gamma = { low = 0.1, high = 0.9, step = 0.3 }"),
        "schedulers.StepLR.gamma.step",
        "0.3",
    ),
    (
        "empty-choices",
        family("StepLR", "gamma = { choices = [] }"),
        "schedulers.StepLR.gamma.choices",
        "[]",
    ),
    (
        "float-range-for-integer",
        family("StepLR", "step_size = { low = 1.5, high = 3 }", max_epochs=5),
        "schedulers.StepLR.step_size.low",
        "1.5",
    ),
    (
        "zero-step-size",
        family("StepLR", "step_size = 0"),
        "schedulers.StepLR.step_size",
        "0",
    ),
    (
        "step-size-past-max-epochs",
        family("StepLR", "step_size = 5"),
        "schedulers.StepLR.step_size",
        "5",
    ),
    ("gamma-one", family("StepLR", "gamma = 1.0"), "schedulers.StepLR.gamma", "1.0"),
    (
        "gamma-zero",
        family("ExponentialLR", "gamma = 0.0"),
        "schedulers.ExponentialLR.gamma",
        "0.0",
    ),
    (
        "zero-t-max",
        family("CosineAnnealingLR", "T_max = 0"),
        "schedulers.CosineAnnealingLR.T_max",
        "0",
    ),
    (
        "t-max-past-max-epochs",
        family("CosineAnnealingLR", "T_max = 10"),
        "schedulers.CosineAnnealingLR.T_max",
        "10",
    ),
    (
        "eta-min-above-lr",
        family("CosineAnnealingLR", "eta_min = 0.5"),
        "schedulers.CosineAnnealingLR.eta_min",
        "0.5",
    ),
    (
        "zero-t-0",
        family("CosineAnnealingWarmRestarts", "T_0 = 0"),
        "schedulers.CosineAnnealingWarmRestarts.T_0",
        "0",
    ),
    (
        "t-mult-below-one",
        family("CosineAnnealingWarmRestarts", "T_mult = 0"),
        "schedulers.CosineAnnealingWarmRestarts.T_mult",
        "0",
    ),
    (
        "factor-above-one",
        family("ReduceLROnPlateau", "factor = 1.5"),
        "schedulers.ReduceLROnPlateau.factor",
        "1.5",
    ),
    (
        "pct-start-one",
        family("OneCycleLR", "pct_start = 1.0"),
        "schedulers.OneCycleLR.pct_start",
        "1.0",
    ),
    (
        "anneal-strategy-unknown",
        family("OneCycleLR", 'anneal_strategy = "cosine"'),
        "schedulers.OneCycleLR.anneal_strategy",
        "'cosine'",
    ),
    (
        "milestones-out-of-order",
        family("MultiStepLR", "milestones = [3, 1]", max_epochs=5),
        "schedulers.MultiStepLR.milestones",
        "[3, 1]",
    ),
    (
        "milestone-past-max-epochs",
        family("MultiStepLR", "milestones = [1, 2]"),
        "schedulers.MultiStepLR.milestones",
        "2",
    ),
    (
        "max-lr-below-base-lr",
        family("CyclicLR", "max_lr = 0.1"),
        "schedulers.CyclicLR.max_lr",
        "0.1",
    ),
    (
        "zero-start-factor",
        family("LinearLR", "start_factor = 0.0"),
        "schedulers.LinearLR.start_factor",
        "0.0",
    ),
    (
        "zero-power",
        family("PolynomialLR", "power = 0.0"),
        "schedulers.PolynomialLR.power",
        "0.0",
    ),
    ("unknown-family", {"types": ("StepLr",)}, "schedulers.types", "'StepLr'"),
    ("empty-types", {"types": ()}, "schedulers.types", "[]"),
    (
        "family-table-not-listed",
        {"extra": "\n[schedulers.ExponentialLR]\ngamma = 0.9\n"},
        "schedulers.ExponentialLR",
        "'ExponentialLR'",
    ),
    ("unknown-sampler", {"sampler": "tpee"}, "sampler.name", "'tpee'"),
    ("unknown-pruner", {"pruner": "mediam"}, "pruner.name", "'mediam'"),
    ("unknown-optimizer", {"optimizer": "sgdd"}, "training.optimizer", "'sgdd'"),
    (
        "unknown-model-kind",
        {"replace": {'kind = "mlp"': 'kind = "mpl"'}},
        "model.kind",
        "'mpl'",
    ),
    (
        "malformed-import-path",
        {"replace": {'kind = "mlp"': 'kind = "pkg.mod:A:B"'}},
        "model.kind",
        "'pkg.mod:A:B'",
    ),
    (
        "unknown-dataset",
        {"replace": {'dataset = "digits"': 'dataset = "digit"'}},
        "data.dataset",
        "'digit'",
    ),
    (
        "unknown-metric",
        {"replace": {'metric = "valid_acc"': 'metric = "valid_accuracy"'}},
        "metric",
        "'valid_accuracy'",
    ),
    (
        "unknown-direction",
        {"replace": {'direction = "maximize"': 'direction = "max"'}},
        "direction",
        "'max'",
    ),
    (
        "valid-fraction-above-one",
        {"replace": {"valid_fraction = 0.2": "valid_fraction = 1.5"}},
        "data.valid_fraction",
        "1.5",
    ),
    (
        "data-path-without-target",
        {"replace": {'dataset = "digits"': 'path = "train.csv"'}},
        "data.target",
        "nothing",
    ),
    (
        "dropout-one",
        {"replace": {"hidden_units = [16]": "hidden_units = [16]\ndropout = 1.0"}},
        "model.dropout",
        "1.0",
    ),
    (
        "empty-hidden-units",
        {"replace": {"hidden_units = [16]": "hidden_units = []"}},
        "model.hidden_units",
        "[]",
    ),
    (
        "momentum-above-one",
        {"replace": {'optimizer = "sgd"': 'optimizer = "sgd"\nmomentum = 1.5'}},
        "training.momentum",
        "1.5",
    ),
    (
        "momentum-with-adam",
        {
            "optimizer": "adam",
            "replace": {'optimizer = "adam"': 'optimizer = "adam"\nmomentum = 0.9'},
        },
        "training.momentum",
        "0.9",
    ),
    (
        "negative-weight-decay",
        {"replace": {'optimizer = "sgd"': 'optimizer = "sgd"\nweight_decay = -1.0'}},
        "training.weight_decay",
        "-1.0",
    ),
    ("zero-trials", {"n_trials": 0}, "n_trials", "0"),
    ("negative-seed", {"seed": -1}, "seed", "-1"),
    (
        "negative-warmup-steps",
        {
            "pruner": "median",
            "replace": {'name = "median"': 'name = "median"\nn_warmup_steps = -1'},
        },
        "pruner.n_warmup_steps",
        "-1",
    ),
    (
        "warmup-past-max-epochs",
        {
            "pruner": "median",
            "replace": {'name = "median"': 'name = "median"\nn_warmup_steps = 5'},
        },
        "pruner.n_warmup_steps",
        "5",
    ),
    ("percentile-missing", {"pruner": "percentile"}, "pruner.percentile", "nothing"),
    (
        "sampler-option-type",
        {"replace": {'name = "tpe"': 'name = "tpe"\nn_startup_trials = "ten"'}},
        "sampler.n_startup_trials",
        "'ten'",
    ),
    (
        "sampler-seed",
        {"replace": {'name = "tpe"': 'name = "tpe"\nseed = 3'}},
        "sampler.seed",
        "3",
    ),
]


@pytest.mark.parametrize(
    ("options", "key", "value"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_run_rejects_malformed_study(tmp_path, capsys, options, key, value):
    path = tmp_path / "bad.toml"
    path.write_text(study_text(**options), encoding="utf-8")
    database = tmp_path / "study.db"

    status = main(["run", "--study", str(path), "--storage", f"sqlite:///{database}"])

    captured = capsys.readouterr()
    assert status == 2
    assert f"{path}: {key}: " in captured.err
    assert f"(got {value})" in captured.err
    assert "Traceback" not in captured.err
    assert not database.exists()


def test_table_has_forty_cases():
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


def test_run_reports_every_problem_at_once(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(
        study_text(
            replace={
                "n_trials = 2": 'n_trials = "x"',
                "max_epochs = 2": "max_epochs = 0",
                'dataset = "digits"': 'dataset = "digit"',
            }
        ),
        encoding="utf-8",
    )

    status = main(
        ["run", "--study", str(path), "--storage", f"sqlite:///{tmp_path / 'study.db'}"]
    )

    err = capsys.readouterr().err
    assert status == 2
    assert f"{path}: n_trials: must be an integer (got 'x')" in err
    assert f"{path}: training.max_epochs: must be at least 1 (got 0)" in err
    assert f"{path}: data.dataset: unknown dataset (got 'digit')" in err


def test_run_reports_toml_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(
        study_text(replace={"n_trials = 2": "n_trials = = 2"}), encoding="utf-8"
    )
    line = study_text().splitlines().index("n_trials = 2") + 1

    status = main(
        ["run", "--study", str(path), "--storage", f"sqlite:///{tmp_path / 'study.db'}"]
    )

    err = capsys.readouterr().err
    assert status == 2
    assert f"{path}: invalid TOML at line {line}, column 12: " in err
    assert "Traceback" not in err
    assert not (tmp_path / "study.db").exists()


def test_run_leaves_postgresql_untouched(tmp_path, capsys, postgresql_url):
    path = tmp_path / "bad.toml"
    path.write_text(study_text(types=("StepLr",)), encoding="utf-8")

    status = main(["run", "--study", str(path), "--storage", postgresql_url])

    assert status == 2
    assert "schedulers.types: unknown scheduler family" in capsys.readouterr().err
    engine = sqlalchemy.create_engine(postgresql_url)
    try:
        tables = sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    assert tables == []
