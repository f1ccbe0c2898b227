"""The code stays within ruff's rules and format at the configured width."""

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

PATHS = ["search", "tests", "benchmarks"]


@pytest.mark.skipif(
    shutil.which("ruff") is None and sys.prefix == sys.base_prefix,
    reason="ruff is not installed; pip install -e '.[test]'",
)
@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_clean(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *PATHS],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
