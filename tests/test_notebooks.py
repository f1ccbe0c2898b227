"""Execute every notebook in notebooks/ against the session's stored study.

The kernel is ``python3``. jupyter_client starts a kernelspec whose command is
``python`` with the interpreter running the tests, so the kernel imports the
same packages. It gets SEARCH_STORAGE in its environment, as a user's shell
would pass it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from stored_study import FAMILIES_STUDY

NOTEBOOKS = sorted(
    (Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb")
)
CELL_TIMEOUT_S = 120


def test_notebooks_exist():
    assert [path.name for path in NOTEBOOKS] == ["compare_schedules.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)

    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], (
            f"cell {index} has outputs; clear them before committing"
        )
        assert cell.execution_count is None, f"cell {index} has an execution count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_executes(path, stored_study, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    env = {
        **os.environ,
        "SEARCH_STORAGE": stored_study.url,
        "SEARCH_STUDY": FAMILIES_STUDY,
        # The kernel imports this package from the checkout, as the tests do.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(path.parent.parent), os.environ.get("PYTHONPATH")])
        ),
    }
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(tmp_path)}},
    )

    client.execute(env=env)

    outputs = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    ]
    errors = [output for output in outputs if output.output_type == "error"]
    assert errors == []
    stderr = "".join(
        output.text
        for output in outputs
        if output.output_type == "stream" and output.name == "stderr"
    )
    # tqdm, which optuna imports, warns with TqdmWarning in a kernel without
    # ipywidgets. That warning comes from the environment, so only these fail.
    for category in ("DeprecationWarning", "FutureWarning", "ExperimentalWarning"):
        assert category not in stderr
    texts = "".join(
        output.get("text", "") for output in outputs if output.output_type == "stream"
    )
    assert f"study: {FAMILIES_STUDY}" in texts
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 3, "expected the three figures as PNG outputs"
