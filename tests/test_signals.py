"""SIGINT and SIGTERM during ``run``: exit status, the FAIL trial, resuming."""

from __future__ import annotations

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
