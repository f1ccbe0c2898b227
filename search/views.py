"""The CLI views over stored studies: ``list``, ``show``, ``compare`` and ``export``.

Each view returns its output as text, which the CLI prints: an aligned table
for people by default, CSV or JSON for scripts. Tables round numbers to 4
significant digits and show a missing value as ``-``. CSV and JSON keep full
precision, CSV leaves missing values empty and JSON writes them as ``null``.
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from search import analysis
from search.errors import InputError
from search.storage import mask_url

logger = logging.getLogger(__name__)

FORMATS = ("text", "csv", "json")
EXPORT_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Plot file suffixes and the matplotlib format each writes. These three need no
# package beyond matplotlib itself.
PLOT_SUFFIXES = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
DEFAULT_TOP = 10

LIST_COLUMNS = [
    "study",
    "direction",
    "metric",
    "trials",
    "complete",
    "pruned",
    "failed",
    "running",
    "best_value",
    "best_number",
    "best_family",
]
TOP_COLUMNS = ["number", "family", "state", "value", "epochs", "duration_s", "config"]
CURVE_COLUMNS = ["epoch", "lr", "train_loss", "valid_loss", "metric", "duration_s"]
COMPARE_TEXT_COLUMNS = [
    "family",
    "trials",
    "complete",
    "pruned",
    "failed",
    "best_value",
    "best_number",
    "median",
    "iqr",
    "epochs",
    "wall_time_s",
    "best_config",
]


STATE_WORDS = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}


class ExportError(InputError):
    """Raised when an export file has an unsupported suffix or cannot be written."""


class PlotError(InputError):
    """Raised when a plot file has an unsupported suffix or cannot be written."""


def _plain(value: Any) -> Any:
    """Convert a pandas or numpy cell to a JSON-compatible Python value."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (pd.Timestamp, datetime.datetime)):
        return value.isoformat()
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Convert a frame to a list of JSON-compatible dicts, one per row.

    Parameters
    ----------
    frame : pandas.DataFrame
        Any frame of :mod:`search.analysis`.

    Returns
    -------
    list of dict
        NaN, NA and NaT become None, timestamps ISO 8601 text, numpy scalars
        Python numbers.
    """
    return [
        {column: _plain(value) for column, value in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def _cell_text(value: Any) -> str:
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """Format a frame as an aligned text table, numbers right-aligned.

    Parameters
    ----------
    frame : pandas.DataFrame
        The rows to show.
    columns : sequence of str, optional
        Columns to show, in order, all by default.
    headers : dict, optional
        Header text of some columns, their names by default.

    Returns
    -------
    str
        The header line and one line per row, without a trailing newline.
    """
    columns = list(frame.columns if columns is None else columns)
    headers = headers or {}
    cells = [[_cell_text(value) for value in frame[column]] for column in columns]
    numeric = [
        pd.api.types.is_numeric_dtype(frame[column])
        and not pd.api.types.is_bool_dtype(frame[column])
        for column in columns
    ]
    titles = [headers.get(column, column) for column in columns]
    widths = [
        max([len(title), *map(len, column_cells)])
        for title, column_cells in zip(titles, cells, strict=True)
    ]

    def line(parts: Sequence[str]) -> str:
        aligned = [
            part.rjust(width) if right else part.ljust(width)
            for part, width, right in zip(parts, widths, numeric, strict=True)
        ]
        return "  ".join(aligned).rstrip()

    lines = [line(titles)]
    lines.extend(line(row) for row in zip(*cells, strict=True))
    return "\n".join(lines)


def _csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue().rstrip("\n")


def _json(document: Any) -> str:
    return json.dumps(document, indent=2, allow_nan=False)


def _check_format(output_format: str) -> None:
    if output_format not in FORMATS:
        raise InputError(
            f"invalid output format {output_format!r}; use one of {', '.join(FORMATS)}"
        )


def list_view(storage_url: str, output_format: str = "text") -> str:
    """Return the studies of the storage with their trial counts and best value.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.
    output_format : {"text", "csv", "json"}, default="text"
        A table, CSV with a header line, or a JSON list of objects.

    Returns
    -------
    str
    """
    _check_format(output_format)
    summary = analysis.summarize_studies(storage_url)
    if output_format == "csv":
        return _csv(summary)
    if output_format == "json":
        return _json(records(summary))
    if summary.empty:
        return f"no studies in storage {mask_url(storage_url)}"
    return format_table(
        summary, LIST_COLUMNS, {"best_value": "best", "best_number": "best_trial"}
    )


def _top_trials(trials: pd.DataFrame, top: int) -> pd.DataFrame:
    best = analysis.best_trials(trials, n=top, per_family=False).copy()
    best["config"] = [analysis.format_config(row) for _, row in best.iterrows()]
    return best


def _counts_text(trials: pd.DataFrame) -> str:
    counts = trials["state"].value_counts()
    parts = [
        f"{count} {STATE_WORDS.get(state, state.lower())}"
        for state, count in counts.items()
    ]
    return f"{len(trials)} trials" + (": " + ", ".join(parts) if parts else "")


def show_view(
    storage_url: str,
    study: str,
    output_format: str = "text",
    top: int = DEFAULT_TOP,
    plot: str | Path | None = None,
) -> str:
    """Return a study's top trials and the per-epoch curve of its best trial.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.
    study : str
        Name of the study.
    output_format : {"text", "csv", "json"}, default="text"
        Text shows both tables. CSV has the top trials only, with every
        parameter and scheduler argument column. JSON is an object with the
        keys ``study``, ``direction``, ``metric``, ``counts`` (trials by
        state), ``top_trials`` and ``best_trial`` (null without a completed
        trial, else the trial with its ``epochs`` rows).
    top : int, default=10
        Completed trials listed, best first.
    plot : str or pathlib.Path, optional
        Also write :func:`search.plots.plot_overview` of the study to this
        file, in the format its suffix names (see :func:`plot_format`).

    Returns
    -------
    str

    Raises
    ------
    search.analysis.StudyNotFoundError
        If the study is not in the storage.
    PlotError
        If the plot file's suffix is unsupported or the file cannot be written.
    """
    _check_format(output_format)
    if plot is not None:
        plot_format(plot)
    trials = analysis.trials_frame(storage_url, study)
    epochs = analysis.epochs_frame(storage_url, study)
    if plot is not None:
        _write_plot(storage_url, [study], trials, epochs, plot)
    top_trials = _top_trials(trials, top)
    best = top_trials.iloc[0] if len(top_trials) else None
    best_epochs = pd.DataFrame(columns=analysis.EPOCH_COLUMNS)
    if best is not None:
        best_epochs = epochs[epochs["trial_id"] == best["trial_id"]]

    if output_format == "csv":
        return _csv(top_trials.drop(columns=["config"]))
    direction = trials["direction"].iloc[0] if len(trials) else None
    metric = trials["metric"].iloc[0] if len(trials) else None
    if output_format == "json":
        best_document = None
        if best is not None:
            best_document = records(best.to_frame().T)[0]
            best_document["epochs"] = records(best_epochs)
        return _json(
            {
                "study": study,
                "direction": _plain(direction),
                "metric": _plain(metric),
                "counts": {
                    state: int(n) for state, n in trials["state"].value_counts().items()
                },
                "top_trials": records(top_trials.drop(columns=["config"])),
                "best_trial": best_document,
            }
        )
    return _show_text(study, trials, top_trials, best, best_epochs, direction, metric)


def _show_text(
    study: str,
    trials: pd.DataFrame,
    top_trials: pd.DataFrame,
    best: pd.Series | None,
    best_epochs: pd.DataFrame,
    direction: Any,
    metric: Any,
) -> str:
    metric_name = _plain(metric) or "value"
    lines = [
        f"study {study!r} ({_plain(direction)} {metric_name}): {_counts_text(trials)}"
    ]
    if best is None:
        lines.append("no completed trial yet")
        return "\n".join(lines)
    lines += [
        "",
        f"top {len(top_trials)} completed trials:",
        format_table(top_trials, TOP_COLUMNS, {"value": metric_name}),
        "",
    ]
    lines += [
        f"best trial {best['number']} ({best['family']}): {metric_name} = "
        f"{_cell_text(best['value'])}",
        f"  parameters: {analysis.format_config(best)}",
        f"  scheduler arguments: {best['scheduler_kwargs']}",
        "",
        format_table(best_epochs, CURVE_COLUMNS, {"metric": metric_name}),
    ]
    return "\n".join(lines)


def compare_view(
    storage_url: str,
    studies: Sequence[str],
    output_format: str = "text",
    plot: str | Path | None = None,
) -> str:
    """Return the comparison of schedule families of one or more studies.

    Studies that share their direction and metric are ranked together: every
    (study, family) row in one order, by best value, then by median. Studies
    that differ are ranked each on their own. Text output then starts with a
    line that names their objectives, and CSV and JSON output logs it as a
    warning.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.
    studies : sequence of str
        Study names.
    output_format : {"text", "csv", "json"}, default="text"
        Text has one table for studies ranked together, else one table per
        study. CSV and JSON have every column of
        :func:`search.analysis.compare_families`, rows in the same order.
    plot : str or pathlib.Path, optional
        Also write :func:`search.plots.plot_overview` of the studies to this
        file, in the format its suffix names (see :func:`plot_format`).

    Returns
    -------
    str

    Raises
    ------
    search.analysis.StudyNotFoundError
        If a study is not in the storage.
    PlotError
        If the plot file's suffix is unsupported or the file cannot be written.
    """
    _check_format(output_format)
    if plot is not None:
        plot_format(plot)
    names = list(dict.fromkeys(studies))
    trials = analysis.trials_frame(storage_url, names)
    comparison = analysis.compare_families(trials)
    if plot is not None:
        epochs = analysis.epochs_frame(storage_url, names)
        _write_plot(storage_url, names, trials, epochs, plot)

    objectives = _objectives(trials, names)
    distinct = set(objectives.values())
    together = (
        len(names) > 1
        and len(distinct) == 1
        and next(iter(distinct))[0] != analysis.MULTI_OBJECTIVE
    )
    differ_note = None
    if len(distinct) > 1:
        differ_note = _differ_note(objectives)
    if together:
        comparison = analysis.rank_families(comparison)

    if output_format in ("csv", "json"):
        if differ_note is not None:
            logger.warning("%s", differ_note)
        if output_format == "csv":
            return _csv(comparison)
        return _json(records(comparison))
    if together:
        return _ranked_text(names, comparison, objectives)
    blocks = [differ_note] if differ_note is not None else []
    blocks += [_study_text(study, comparison, objectives) for study in names]
    return "\n\n".join(blocks)


def _objectives(trials: pd.DataFrame, names: Sequence[str]) -> dict[str, tuple]:
    """Return ``(direction, metric)`` of each study that has trials."""
    objectives = {}
    for study in names:
        study_trials = trials[trials["study"] == study]
        if len(study_trials):
            first = study_trials.iloc[0]
            objectives[study] = (_plain(first["direction"]), _plain(first["metric"]))
    return objectives


def _objective_text(objective: tuple) -> str:
    direction, metric = objective
    return f"{direction} {metric or 'value'}"


def _differ_note(objectives: dict[str, tuple]) -> str:
    studies = ", ".join(
        f"{study!r} ({_objective_text(objective)})"
        for study, objective in objectives.items()
    )
    return (
        f"studies {studies} differ in direction or metric, so each study's "
        "families are ranked on their own"
    )


def _study_text(
    study: str, comparison: pd.DataFrame, objectives: dict[str, tuple]
) -> str:
    rows = comparison[comparison["study"] == study]
    if study not in objectives:
        return f"study {study!r}, best family first:\nno trials"
    title = (
        f"study {study!r} ({_objective_text(objectives[study])}), best family first:"
    )
    table = format_table(
        rows, COMPARE_TEXT_COLUMNS, {"best_value": "best", "best_number": "best_trial"}
    )
    return f"{title}\n{table}"


def _ranked_text(
    names: Sequence[str], comparison: pd.DataFrame, objectives: dict[str, tuple]
) -> str:
    objective = next(iter(objectives.values()))
    listed = ", ".join(repr(study) for study in names)
    lines = [
        f"studies {listed} ({_objective_text(objective)}), ranked together, "
        "best family first:",
        format_table(
            comparison,
            ["study", *COMPARE_TEXT_COLUMNS],
            {"best_value": "best", "best_number": "best_trial"},
        ),
    ]
    lines += [
        f"study {study!r}: no trials" for study in names if study not in objectives
    ]
    return "\n".join(lines)


def plot_format(path: str | Path) -> str:
    """Return the matplotlib format that the suffix of a plot file names.

    Parameters
    ----------
    path : str or pathlib.Path
        The plot file, ending in ``.png``, ``.pdf`` or ``.svg`` (any case).

    Returns
    -------
    str
        ``png``, ``pdf`` or ``svg``.

    Raises
    ------
    PlotError
        If the suffix is another one or missing.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in PLOT_SUFFIXES:
        raise PlotError(
            f"unsupported plot file {str(path)!r}; end its name in "
            f"{', '.join(PLOT_SUFFIXES)} for PNG, PDF or SVG"
        )
    return PLOT_SUFFIXES[suffix]


def _write_plot(
    storage_url: str,
    studies: Sequence[str],
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    path: str | Path,
) -> None:
    from search import plots

    file_format = plot_format(path)
    batches = analysis.batches_frame(storage_url, studies)
    figure = plots.plot_overview(trials, epochs, batches)
    try:
        plots.save_figure(figure, path, file_format)
    except OSError as error:
        raise PlotError(
            f"cannot write plot {path}: {error.strerror or error}"
        ) from None


def export_paths(out: str | Path) -> dict[str, Path]:
    """Return the files that :func:`export_study` writes for ``out``.

    ``trials`` is ``out`` itself; ``epochs`` and ``batches`` are its siblings
    with ``_epochs`` and ``_batches`` added to the stem, so ``results.csv``
    also gives ``results_epochs.csv`` and ``results_batches.csv``.

    Parameters
    ----------
    out : str or pathlib.Path
        The trials file, ending in ``.csv``, ``.parquet`` or ``.pq``.

    Returns
    -------
    dict of str to pathlib.Path

    Raises
    ------
    ExportError
        If the suffix is not one of those.
    """
    out = Path(out)
    if out.suffix.lower() not in EXPORT_SUFFIXES:
        raise ExportError(
            f"unsupported export file {str(out)!r}; end its name in "
            f"{', '.join(EXPORT_SUFFIXES)} for CSV or Parquet"
        )
    return {
        "trials": out,
        "epochs": out.with_name(f"{out.stem}_epochs{out.suffix}"),
        "batches": out.with_name(f"{out.stem}_batches{out.suffix}"),
    }


def export_study(
    storage_url: str, study: str, out: str | Path
) -> dict[str, tuple[Path, int]]:
    """Write a study's trials, epochs and batch rates to CSV or Parquet files.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.
    study : str
        Name of the study.
    out : str or pathlib.Path
        The trials file. See :func:`export_paths` for the other two files.
        The suffix chooses the format. The files are replaced if they exist.

    Returns
    -------
    dict of str to (pathlib.Path, int)
        For ``trials``, ``epochs`` and ``batches``: the file written and its rows.

    Raises
    ------
    search.analysis.StudyNotFoundError
        If the study is not in the storage.
    ExportError
        If the suffix is unsupported, pyarrow is missing for Parquet, or a
        file cannot be written.
    """
    paths = export_paths(out)
    file_format = EXPORT_SUFFIXES[paths["trials"].suffix.lower()]
    if file_format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise ExportError(
                "Parquet export needs pyarrow; install it with: "
                "pip install -e '.[parquet]'"
            ) from None
    frames = {
        "trials": analysis.trials_frame(storage_url, study),
        "epochs": analysis.epochs_frame(storage_url, study),
        "batches": analysis.batches_frame(storage_url, study),
    }
    written = {}
    for kind, frame in frames.items():
        path = paths[kind]
        try:
            if file_format == "csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
        except OSError as error:
            raise ExportError(
                f"cannot write {path}: {error.strerror or error}; check the folder"
            ) from None
        written[kind] = (path, len(frame))
    return written
