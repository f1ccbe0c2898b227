"""Tests of search.plots and the --plot options on the session's stored studies."""

from __future__ import annotations

import struct
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure
from stored_study import FAMILIES_STUDY, LOSSES_STUDY, MAX_EPOCHS

from search import analysis, plots
from search.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 10_000

# Any warning, from this package or from matplotlib and pandas, fails these tests.
pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture(scope="module")
def frames(stored_study) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    url = stored_study.url
    return (
        analysis.trials_frame(url, FAMILIES_STUDY),
        analysis.epochs_frame(url, FAMILIES_STUDY),
        analysis.batches_frame(url, FAMILIES_STUDY),
    )


def png_size(path: Path) -> tuple[int, int]:
    """Check the PNG signature and return (width, height) from the IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert len(data) > MIN_PNG_BYTES
    return struct.unpack(">II", data[16:24])


def expected_labels(trials: pd.DataFrame) -> list[str]:
    best = analysis.best_trials(trials)
    return [f"{row.family} #{row.number}" for row in best.itertuples()]


def curve_lines(figure: Figure, axes_index: int = 0) -> dict[str, object]:
    return {line.get_label(): line for line in figure.axes[axes_index].get_lines()}


def test_lr_curves_lines(frames):
    trials, epochs, batches = frames

    figure = plots.plot_lr_curves(trials, epochs, batches)

    lines = curve_lines(figure)
    assert isinstance(figure, Figure)
    assert list(lines) == expected_labels(trials)
    assert figure.axes[0].get_ylabel() == "learning rate"
    for row in analysis.best_trials(trials).itertuples():
        line = lines[f"{row.family} #{row.number}"]
        if row.step_every == "batch":
            expected = batches[batches["trial_id"] == row.trial_id]
            assert list(line.get_xdata()) == expected["progress"].tolist()
            assert list(line.get_ydata()) == expected["lr"].tolist()
        else:
            expected = epochs[epochs["trial_id"] == row.trial_id]
            rates = expected["lr"].tolist()
            assert list(line.get_xdata()) == list(range(MAX_EPOCHS + 1))
            assert list(line.get_ydata()) == [*rates, rates[-1]]
            assert line.get_drawstyle() == "steps-post"


def test_lr_curves_without_batches(frames):
    trials, epochs, _ = frames

    figure = plots.plot_lr_curves(trials, epochs)

    one_cycle = analysis.best_trials(trials).query("family == 'OneCycleLR'").iloc[0]
    line = curve_lines(figure)[f"OneCycleLR #{one_cycle['number']}"]
    expected = epochs[epochs["trial_id"] == one_cycle["trial_id"]]["lr"].tolist()
    assert list(line.get_ydata()) == [*expected, expected[-1]]


def test_metric_curves_lines(frames):
    trials, epochs, _ = frames

    figure = plots.plot_metric_curves(trials, epochs)

    lines = curve_lines(figure)
    assert list(lines) == expected_labels(trials)
    assert figure.axes[0].get_ylabel() == "valid_acc"
    for row in analysis.best_trials(trials).itertuples():
        expected = epochs[epochs["trial_id"] == row.trial_id]
        line = lines[f"{row.family} #{row.number}"]
        assert list(line.get_xdata()) == expected["epoch"].tolist()
        assert list(line.get_ydata()) == expected["metric"].tolist()
        assert line.get_ydata()[-1] == row.value


def test_final_values_boxes(frames):
    trials, _, _ = frames

    figure = plots.plot_final_values(trials)

    axes = figure.axes[0]
    complete = trials[trials["state"] == "COMPLETE"]
    families = list(dict.fromkeys(complete["family"]))
    assert [label.get_text() for label in axes.get_xticklabels()] == families
    markers = {
        line.get_label(): line
        for line in axes.get_lines()
        if line.get_label() in families
    }
    for family in families:
        values = complete.loc[complete["family"] == family, "value"]
        assert sorted(markers[family].get_ydata()) == sorted(values)


def test_overview_has_three_panels(stored_study):
    url = stored_study.url
    names = [FAMILIES_STUDY, LOSSES_STUDY]
    trials = analysis.trials_frame(url, names)
    epochs = analysis.epochs_frame(url, names)

    figure = plots.plot_overview(trials, epochs, analysis.batches_frame(url, names))

    assert len(figure.axes) == 3
    labels = list(curve_lines(figure, 0))
    assert labels == [
        f"{r.study}: {r.family} #{r.number}"
        for r in analysis.best_trials(trials).itertuples()
    ]
    assert list(curve_lines(figure, 1)) == labels
    assert figure.axes[1].get_ylabel() == "valid_acc, valid_loss"


@pytest.mark.parametrize("name", ["lr", "metric", "values", "overview"])
def test_saved_png_is_valid(frames, tmp_path, name):
    trials, epochs, batches = frames
    figure = {
        "lr": lambda: plots.plot_lr_curves(trials, epochs, batches),
        "metric": lambda: plots.plot_metric_curves(trials, epochs),
        "values": lambda: plots.plot_final_values(trials),
        "overview": lambda: plots.plot_overview(trials, epochs, batches),
    }[name]()
    path = tmp_path / f"{name}.png"

    written = plots.save_png(figure, path)

    width, height = png_size(path)
    assert written == path
    expected_width, expected_height = figure.get_size_inches() * figure.dpi
    assert (width, height) == (round(expected_width), round(expected_height))


def test_show_plot_writes_png(stored_study, tmp_path, capsys):
    path = tmp_path / "show.png"

    status = main(
        [
            "show",
            "--study",
            FAMILIES_STUDY,
            "--storage",
            stored_study.url,
            "--plot",
            str(path),
        ]
    )

    out = capsys.readouterr().out
    width, height = png_size(path)
    assert status == 0
    assert out.startswith(f"study {FAMILIES_STUDY!r}")
    assert height > width  # three panels stacked


def test_compare_plot_writes_png(stored_study, tmp_path, capsys):
    path = tmp_path / "compare.png"

    status = main(
        [
            "compare",
            FAMILIES_STUDY,
            LOSSES_STUDY,
            "--storage",
            stored_study.url,
            "--format",
            "csv",
            "--plot",
            str(path),
        ]
    )

    capsys.readouterr()
    png_size(path)
    assert status == 0


def test_plot_to_missing_folder_exits_2(stored_study, tmp_path, capsys):
    path = tmp_path / "missing" / "compare.png"

    status = main(
        ["compare", FAMILIES_STUDY, "--storage", stored_study.url, "--plot", str(path)]
    )

    err = capsys.readouterr().err
    assert status == 2
    assert f"cannot write plot {path}" in err


@pytest.mark.parametrize("name", ["plot.jpg", "plot.txt", "plot"])
@pytest.mark.parametrize("command", ["show", "compare"])
def test_plot_rejects_suffix(stored_study, tmp_path, capsys, name, command):
    path = tmp_path / name
    study = ["--study", FAMILIES_STUDY] if command == "show" else [FAMILIES_STUDY]

    status = main([command, *study, "--storage", stored_study.url, "--plot", str(path)])

    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert f"unsupported plot file {str(path)!r}" in captured.err
    assert "end its name in .png, .pdf, .svg" in captured.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("suffix", "start"), [(".pdf", b"%PDF-"), (".svg", b"<?xml"), (".PNG", b"\x89PNG")]
)
def test_show_plot_format_from_suffix(stored_study, tmp_path, capsys, suffix, start):
    path = tmp_path / f"show{suffix}"

    status = main(
        [
            "show",
            "--study",
            FAMILIES_STUDY,
            "--storage",
            stored_study.url,
            "--plot",
            str(path),
        ]
    )

    capsys.readouterr()
    data = path.read_bytes()
    assert status == 0
    assert data.startswith(start)
    if suffix == ".svg":
        assert b"<svg" in data[:1000]
