"""SIGINT and SIGTERM during ``run``: exit status, the FAIL trial, resuming."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch
from optuna.trial import TrialState
from test_workers import (
    REPO,
    child_env,
    load_trials,
    run_command,
    wait_for_running_epoch,
)

from search.cli import main
from search.records import epochs_table, read_rows
from tests.conftest import tiny_study_text


@pytest.mark.parametrize(
    ("signum", "status", "workers"),
    [(signal.SIGINT, 130, 1), (signal.SIGTERM, 143, 1), (signal.SIGTERM, 143, 2)],
    ids=["sigint", "sigterm", "sigterm-two-workers"],
)
def test_signals_fail_trial_and_resume(
    signum, status, workers, sqlite_url, write_study, capsys
):
    n_trials = workers
    study = write_study(n_trials=n_trials, max_epochs=30, sampler="random")
    command = run_command(study, sqlite_url, "--workers", str(workers))
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=child_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _trial_id, number = wait_for_running_epoch(sqlite_url, process)

    process.send_signal(signum)
    _stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == status, stderr
    assert f"interrupted by {signum.name}" in stderr, stderr
    assert "Traceback" not in stderr, stderr
    trials = load_trials(sqlite_url)
    states = {t.number: t.state for t in trials}
    assert TrialState.RUNNING not in states.values(), states
    assert states[number] == TrialState.FAIL, states
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert signum.name in trial.user_attrs["failure_reason"], trial.user_attrs
    rows = read_rows(sqlite_url, epochs_table, ["tiny"], [number])
    assert rows, "the interrupted trial lost its epoch rows"

    capsys.readouterr()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as child_env does for the processes
    try:
        assert main(["run", "--study", str(study), "--storage", sqlite_url]) == 0
    finally:
        torch.set_num_threads(threads)
    trials = load_trials(sqlite_url)
    finished = [
        t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]
    assert len(finished) >= n_trials
    assert TrialState.RUNNING not in [t.state for t in trials]


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_sigint_logs_one_line_per_trial(workers, sqlite_url, write_study):
    study = write_study(n_trials=workers, max_epochs=30, sampler="random")
    command = run_command(study, sqlite_url, "--workers", str(workers))
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=child_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _trial_id, number = wait_for_running_epoch(sqlite_url, process)

    process.send_signal(signal.SIGINT)
    _stdout, stderr = process.communicate(timeout=120)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "TrialInterrupted" not in stderr, stderr
    trials = load_trials(sqlite_url)
    failed = [t.number for t in trials if t.state == TrialState.FAIL]
    assert number in failed, [(t.number, t.state) for t in trials]
    for failed_number in failed:
        lines = [
            line
            for line in stderr.splitlines()
            if f"trial {failed_number} " in line.lower()
        ]
        assert len(lines) == 1, stderr
        assert "stored as FAIL: interrupted by SIGINT" in lines[0], stderr


def test_crashing_trial_keeps_traceback(sqlite_url, tmp_path):
    (tmp_path / "crashing_model.py").write_text(
        "import torch\n\n\n"
        "class Crash(torch.nn.Module):\n"
        "    def __init__(self, n_features, n_outputs):\n"
        "        super().__init__()\n"
        "        self.linear = torch.nn.Linear(n_features, n_outputs)\n\n"
        "    def forward(self, X):\n"
        "        if self.training:\n"
        "            raise RuntimeError('boom in forward')\n"
        "        return self.linear(X)\n",
        encoding="utf-8",
    )
    text = tiny_study_text(n_trials=1).replace(
        'kind = "mlp"\nhidden_units = [16]', 'kind = "crashing_model:Crash"'
    )
    study = tmp_path / "crash.toml"
    study.write_text(text, encoding="utf-8")
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tmp_path), env.get("PYTHONPATH")])
    )

    result = subprocess.run(
        run_command(study, sqlite_url),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" in result.stderr, result.stderr
    assert "RuntimeError: boom in forward" in result.stderr, result.stderr
    states = [t.state for t in load_trials(sqlite_url)]
    assert states == [TrialState.FAIL], states
