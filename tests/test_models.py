"""User models given by import path: failures are named before any storage is
touched, and no user file is unpickled.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from search.cli import main
from tests.test_spec_errors import study_text

PACKAGE = Path(__file__).resolve().parent.parent / "search"


def model_study(tmp_path, kind: str, options: str = "", dataset: str = "digits"):
    table = f'kind = "{kind}"'
    if options:
        table += f"\n[model.options]\n{options}"
    path = tmp_path / "model_study.toml"
    path.write_text(
        study_text(
            replace={
                'kind = "mlp"\nhidden_units = [16]': table,
                'dataset = "digits"': f'dataset = "{dataset}"',
            }
        ),
        encoding="utf-8",
    )
    return path


def write_module(tmp_path, monkeypatch, name: str, source: str) -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))


def run_bad(tmp_path, capsys, study_path) -> str:
    database = tmp_path / "study.db"
    status = main(
        ["run", "--study", str(study_path), "--storage", f"sqlite:///{database}"]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert "Traceback" not in err
    assert not database.exists()
    return err


def test_module_not_found(tmp_path, capsys):
    err = run_bad(tmp_path, capsys, model_study(tmp_path, "no_such_module_x1:Net"))

    assert (
        "model 'no_such_module_x1:Net': cannot import module 'no_such_module_x1'" in err
    )
    assert "ModuleNotFoundError" in err
    assert "check model.kind and PYTHONPATH" in err


def test_module_raising_on_import(tmp_path, capsys, monkeypatch):
    write_module(
        tmp_path, monkeypatch, "boom_on_import_x2", 'raise RuntimeError("boom")'
    )

    err = run_bad(tmp_path, capsys, model_study(tmp_path, "boom_on_import_x2:Net"))

    assert "cannot import module 'boom_on_import_x2' (RuntimeError: boom)" in err


def test_class_not_found(tmp_path, capsys):
    err = run_bad(tmp_path, capsys, model_study(tmp_path, "collections:NoSuchNet"))

    assert (
        "model 'collections:NoSuchNet': 'collections' has no class 'NoSuchNet'" in err
    )


def test_class_raising_when_built(tmp_path, capsys, monkeypatch):
    write_module(
        tmp_path,
        monkeypatch,
        "raising_net_x3",
        """
        from torch import nn

        class Net(nn.Module):
            def __init__(self, n_features, n_outputs, width=8):
                super().__init__()
                raise ValueError(f"width {width} is too small")
    """,
    )

    err = run_bad(
        tmp_path,
        capsys,
        model_study(tmp_path, "raising_net_x3:Net", options="width = 2"),
    )

    assert "model 'raising_net_x3:Net': building it with" in err
    assert "failed (ValueError: width 2 is too small)" in err


def test_misspelled_model_option(tmp_path, capsys, monkeypatch):
    write_module(
        tmp_path,
        monkeypatch,
        "plain_net_x4",
        """
        from torch import nn

        class Net(nn.Module):
            def __init__(self, n_features, n_outputs, width=8):
                super().__init__()
                self.layer = nn.Linear(n_features, n_outputs)
    """,
    )

    err = run_bad(
        tmp_path, capsys, model_study(tmp_path, "plain_net_x4:Net", options="widht = 2")
    )

    assert "model 'plain_net_x4:Net': building it with" in err
    assert "widht" in err


def test_class_not_a_module(tmp_path, capsys):
    err = run_bad(tmp_path, capsys, model_study(tmp_path, "collections:OrderedDict"))

    assert (
        "model 'collections:OrderedDict': built a OrderedDict, not a torch.nn.Module"
        in err
    )


def test_cnn_on_tabular_data(tmp_path, capsys):
    study = model_study(tmp_path, "cnn", dataset="iris")

    err = run_bad(tmp_path, capsys, study)

    assert "model kind 'cnn' needs an image dataset" in err


@pytest.mark.parametrize(
    "pattern",
    [
        r"\bpickle\b",
        r"torch\.load\b",
        r"read_pickle",
        r"\bjoblib\b",
        r"allow_pickle\s*=\s*True",
    ],
)
def test_package_never_unpickles(pattern):
    offenders = [
        f"{path.name}:{number}"
        for path in sorted(PACKAGE.glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if re.search(pattern, line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []
