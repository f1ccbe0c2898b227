"""Commands that parse, list or read start without importing torch or skorch."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pytest

from tests.conftest import REPO

PROBE = """
import contextlib, io, json, sys
from search.cli import main
with contextlib.redirect_stdout(io.StringIO()) as output:
    status = main(sys.argv[1:])
heavy = [name for name in ("torch", "skorch") if name in sys.modules]
print(json.dumps({"status": status, "heavy": heavy, "output": output.getvalue()}))
"""


def run_probe(*arguments: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.splitlines()[-1])


@pytest.mark.parametrize("arguments", [["--help"], ["run", "--help"], ["studies"]])
def test_command_leaves_torch_unimported(arguments):
    result = run_probe(*arguments)
    assert result["status"] == 0
    assert result["output"]
    assert result["heavy"] == []


def test_list_leaves_torch_unimported(sqlite_url):
    optuna.create_study(study_name="stored", storage=sqlite_url)
    result = run_probe("list", "--storage", sqlite_url)
    assert result["status"] == 0
    assert "stored" in result["output"]
    assert result["heavy"] == []
