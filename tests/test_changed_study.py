"""A study file changed after its study was created: rejected with the changes
listed, or accepted and recorded with ``--accept-changes``.
"""

from __future__ import annotations

import optuna
import pytest

from search.cli import main
from search.definition import ACCEPTED_CHANGES_ATTR, SPEC_ATTR, definition_changes
from search.spec import parse_spec, spec_to_dict
from tests.test_spec_errors import study_text


def run(path, url, *flags: str) -> int:
    return main(["run", "--study", str(path), "--storage", url, *flags])


@pytest.fixture
def created_study(tmp_path, sqlite_url, capsys):
    """A stored one-trial, one-epoch study ``changing`` and its study file's path."""
    path = tmp_path / "changing.toml"
    path.write_text(
        study_text(name="changing", n_trials=1, max_epochs=1), encoding="utf-8"
    )
    assert run(path, sqlite_url) == 0
    capsys.readouterr()
    return path


def load(url: str) -> optuna.Study:
    return optuna.load_study(study_name="changing", storage=url)


@pytest.mark.timeout(300)
def test_changed_training_rejected_then_accepted(created_study, sqlite_url, capsys):
    path = created_study
    path.write_text(
        study_text(
            name="changing",
            n_trials=2,
            max_epochs=2,
            replace={"high = 0.2": "high = 0.3"},
        ),
        encoding="utf-8",
    )

    rejected = run(path, sqlite_url)

    err = capsys.readouterr().err
    assert rejected == 2
    assert "study 'changing' exists with a different definition" in err
    assert "training.max_epochs: 1 -> 2" in err
    assert "lr: " in err
    assert '"high": 0.2' in err
    assert '"high": 0.3' in err
    assert "new name" in err
    assert "--accept-changes" in err
    assert "Traceback" not in err
    assert len(load(sqlite_url).trials) == 1

    accepted = run(path, sqlite_url, "--accept-changes")

    study = load(sqlite_url)
    records = study.user_attrs[ACCEPTED_CHANGES_ATTR]
    assert accepted == 0
    assert len(study.trials) == 2
    assert len(records) == 1
    assert "training.max_epochs: 1 -> 2" in records[0]["changes"]
    assert records[0]["time"].endswith("+00:00")
    assert study.user_attrs[SPEC_ATTR]["training"]["max_epochs"] == 2

    again = run(path, sqlite_url)

    assert again == 0
    assert len(load(sqlite_url).user_attrs[ACCEPTED_CHANGES_ATTR]) == 1


def test_changed_direction_rejected(created_study, sqlite_url, capsys):
    path = created_study
    path.write_text(
        study_text(
            name="changing",
            n_trials=1,
            max_epochs=1,
            replace={'direction = "maximize"': 'direction = "minimize"'},
        ),
        encoding="utf-8",
    )

    status = run(path, sqlite_url)

    err = capsys.readouterr().err
    assert status == 2
    assert 'direction: "maximize" -> "minimize"' in err


def test_changed_family_rejected(created_study, sqlite_url, capsys):
    path = created_study
    path.write_text(
        study_text(
            name="changing", n_trials=1, max_epochs=1, types=("StepLR", "constant")
        ),
        encoding="utf-8",
    )

    status = run(path, sqlite_url)

    err = capsys.readouterr().err
    assert status == 2
    assert 'schedulers.types: ["StepLR"] -> ["StepLR", "constant"]' in err


def test_unchanged_search_accepts_new_budget(created_study, sqlite_url, capsys):
    path = created_study
    path.write_text(
        study_text(name="changing", n_trials=1, max_epochs=1, sampler="random").replace(
            "tiny test study", "renamed"
        ),
        encoding="utf-8",
    )

    status = run(path, sqlite_url)

    assert status == 0
    assert ACCEPTED_CHANGES_ATTR not in load(sqlite_url).user_attrs


def test_new_name_starts_separate_study(created_study, sqlite_url):
    path = created_study
    path.write_text(
        study_text(name="changing_v2", n_trials=1, max_epochs=2), encoding="utf-8"
    )

    status = run(path, sqlite_url)

    names = {s.study_name for s in optuna.get_all_study_summaries(sqlite_url)}
    assert status == 0
    assert names == {"changing", "changing_v2"}


def test_definition_changes_lists_fixed_to_range():
    old = spec_to_dict(
        parse_spec(study_text(extra="\n[schedulers.StepLR]\ngamma = 0.5\n"), "f.toml")
    )
    new = spec_to_dict(
        parse_spec(
            study_text(
                extra="\n[schedulers.StepLR]\ngamma = { low = 0.1, high = 0.9 }\n"
            ),
            "f.toml",
        )
    )

    changes = [str(change) for change in definition_changes(old, new)]

    assert changes == ['schedulers.StepLR.gamma: 0.5 -> {"high": 0.9, "low": 0.1}']
