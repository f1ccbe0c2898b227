"""Figures comparing schedule families: learning-rate curves, metric curves, values.

Every function takes frames from :mod:`search.analysis` and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so nothing depends on
an interactive backend and figures are freed when no longer referenced. Each
curve is one ``Line2D`` labelled ``FAMILY #NUMBER`` (prefixed by the study
name when the trials come from several studies).

The horizontal axis is training progress in epochs: epoch ``e`` spans
``[e - 1, e]``. An epoch-stepped rate is drawn as a step over its epoch, a
batch-stepped rate (OneCycleLR, CyclicLR) batch by batch when batch rows are
given, and a metric at the end of its epoch.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from search.analysis import best_trials

FIGURE_WIDTH_IN = 7.0
PANEL_HEIGHT_IN = 4.0
DPI = 100


def _curve_label(trial: pd.Series, several_studies: bool) -> str:
    label = f"{trial['family']} #{trial['number']}"
    return f"{trial['study']}: {label}" if several_studies else label


def _selected(trials: pd.DataFrame, n_best: int) -> pd.DataFrame:
    return best_trials(trials, n=n_best, per_family=True)


def _draw_lr_curves(
    ax: Axes,
    selected: pd.DataFrame,
    epochs: pd.DataFrame,
    batches: pd.DataFrame | None,
    several_studies: bool,
) -> None:
    for _, trial in selected.iterrows():
        label = _curve_label(trial, several_studies)
        trial_batches = None
        if batches is not None and trial["step_every"] == "batch":
            trial_batches = batches[batches["trial_id"] == trial["trial_id"]]
        if trial_batches is not None and len(trial_batches):
            ax.plot(trial_batches["progress"], trial_batches["lr"], label=label)
            continue
        rows = epochs[epochs["trial_id"] == trial["trial_id"]]
        if rows.empty:
            continue
        # Each epoch's rate applies from the start of the epoch to its end.
        x = list(rows["epoch"] - 1) + [int(rows["epoch"].iloc[-1])]
        y = list(rows["lr"]) + [rows["lr"].iloc[-1]]
        ax.plot(x, y, drawstyle="steps-post", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("Learning rate of the best trial of each family")
    _finish(ax)


def _draw_metric_curves(
    ax: Axes, selected: pd.DataFrame, epochs: pd.DataFrame, several_studies: bool
) -> None:
    for _, trial in selected.iterrows():
        rows = epochs[epochs["trial_id"] == trial["trial_id"]]
        if rows.empty:
            continue
        ax.plot(
            rows["epoch"],
            rows["metric"],
            marker="o",
            label=_curve_label(trial, several_studies),
        )
    metrics = selected["metric"].dropna().unique()
    ax.set_xlabel("epoch")
    ax.set_ylabel(", ".join(map(str, metrics)) or "metric")
    ax.set_title("Validation metric of the best trial of each family")
    _finish(ax)


def _draw_final_values(ax: Axes, trials: pd.DataFrame) -> None:
    complete = trials[trials["state"] == "COMPLETE"].dropna(subset=["value"])
    several_studies = trials["study"].nunique() > 1
    groups = []
    for (study, family), group in complete.groupby(["study", "family"], sort=False):
        label = f"{study}: {family}" if several_studies else str(family)
        groups.append((label, group["value"].to_numpy()))
    if groups:
        labels = [label for label, _ in groups]
        ax.boxplot([values for _, values in groups], tick_labels=labels)
        # One marker line per box, labelled like its box, shows every trial.
        for position, (label, values) in enumerate(groups, start=1):
            ax.plot(
                [position] * len(values),
                values,
                linestyle="none",
                marker=".",
                color="black",
                alpha=0.6,
                label=label,
            )
        ax.tick_params(axis="x", labelrotation=30)
    metrics = trials["metric"].dropna().unique()
    ax.set_ylabel(", ".join(map(str, metrics)) or "value")
    ax.set_title("Final value of the completed trials of each family")
    ax.grid(True, axis="y", alpha=0.3)


def _finish(ax: Axes) -> None:
    ax.grid(True, alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize="small")


def _new_figure(rows: int) -> Figure:
    return Figure(
        figsize=(FIGURE_WIDTH_IN, PANEL_HEIGHT_IN * rows), dpi=DPI, layout="constrained"
    )


def plot_lr_curves(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    batches: pd.DataFrame | None = None,
    n_best: int = 1,
) -> Figure:
    """Plot the learning rate of the best completed trials of each family.

    Parameters
    ----------
    trials : pandas.DataFrame
        A frame from :func:`search.analysis.trials_frame`.
    epochs : pandas.DataFrame
        A frame from :func:`search.analysis.epochs_frame` of the same studies.
    batches : pandas.DataFrame, optional
        A frame from :func:`search.analysis.batches_frame`. With it, batch-stepped
        families are drawn batch by batch, and without it, one step per epoch.
    n_best : int, default=1
        Trials drawn per study and family.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with one line per drawn trial.
    """
    figure = _new_figure(1)
    several_studies = trials["study"].nunique() > 1
    _draw_lr_curves(
        figure.add_subplot(),
        _selected(trials, n_best),
        epochs,
        batches,
        several_studies,
    )
    return figure


def plot_metric_curves(
    trials: pd.DataFrame, epochs: pd.DataFrame, n_best: int = 1
) -> Figure:
    """Plot the validation metric per epoch of the best completed trials of each family.

    Parameters
    ----------
    trials : pandas.DataFrame
        A frame from :func:`search.analysis.trials_frame`.
    epochs : pandas.DataFrame
        A frame from :func:`search.analysis.epochs_frame` of the same studies.
    n_best : int, default=1
        Trials drawn per study and family.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with one line per drawn trial.
    """
    figure = _new_figure(1)
    several_studies = trials["study"].nunique() > 1
    _draw_metric_curves(
        figure.add_subplot(), _selected(trials, n_best), epochs, several_studies
    )
    return figure


def plot_final_values(trials: pd.DataFrame) -> Figure:
    """Plot the distribution of final values of the completed trials of each family.

    Parameters
    ----------
    trials : pandas.DataFrame
        A frame from :func:`search.analysis.trials_frame`.

    Returns
    -------
    matplotlib.figure.Figure
        One axes with a box per study and family, and a marker per trial on top.
    """
    figure = _new_figure(1)
    _draw_final_values(figure.add_subplot(), trials)
    return figure


def plot_overview(
    trials: pd.DataFrame,
    epochs: pd.DataFrame,
    batches: pd.DataFrame | None = None,
    n_best: int = 1,
) -> Figure:
    """Draw the three figures above as the panels of one figure, top to bottom.

    Parameters
    ----------
    trials, epochs, batches, n_best
        As for :func:`plot_lr_curves`.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes: learning rates, metric curves and final values.
    """
    figure = _new_figure(3)
    lr_axes, metric_axes, values_axes = figure.subplots(3, 1)
    selected = _selected(trials, n_best)
    several_studies = trials["study"].nunique() > 1
    _draw_lr_curves(lr_axes, selected, epochs, batches, several_studies)
    _draw_metric_curves(metric_axes, selected, epochs, several_studies)
    _draw_final_values(values_axes, trials)
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write a figure to a PNG file.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure to save.
    path : str or pathlib.Path
        Destination. The ``.png`` format is used whatever the suffix.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    return save_figure(figure, path, "png")


def save_figure(figure: Figure, path: str | Path, file_format: str) -> Path:
    """Write a figure to a file in a format of matplotlib.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure to save.
    path : str or pathlib.Path
        Destination, written in ``file_format`` whatever its suffix.
    file_format : str
        A format of ``Figure.savefig``, such as ``png``, ``pdf`` or ``svg``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    figure.savefig(path, format=file_format)
    return path
