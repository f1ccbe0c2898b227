"""Output of ``run`` into a pipe whose reader closes it early, as ``| head`` does."""

from __future__ import annotations

import subprocess

import pytest
from optuna.trial import TrialState
from test_workers import FINISHED, REPO, child_env, load_trials, run_command


@pytest.mark.parametrize("workers", [1, 2], ids=["one-worker", "two-workers"])
def test_run_survives_closed_stdout(workers, sqlite_url, write_study, tmp_path):
    n_trials = 3
    study = write_study(n_trials=n_trials, max_epochs=1, sampler="random")
    command = run_command(study, sqlite_url, "--workers", str(workers))
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w", encoding="utf-8") as stderr_file:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
        )
        try:
            first_line = process.stdout.readline()
            # Every later write of the run, the progress lines included, now
            # meets a pipe without a reader.
            process.stdout.close()
            status = process.wait(timeout=240)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    stderr = stderr_path.read_text(encoding="utf-8")

    assert first_line.startswith("study 'tiny'"), first_line
    assert status == 0, stderr
    assert "stdout is closed (broken pipe)" in stderr, stderr
    assert "BrokenPipeError" not in stderr, stderr
    assert "Traceback" not in stderr, stderr
    trials = load_trials(sqlite_url)
    states = [t.state for t in trials]
    finished = [t for t in trials if t.state in FINISHED]
    assert TrialState.FAIL not in states, states
    assert TrialState.RUNNING not in states, states
    assert n_trials <= len(finished) <= n_trials + workers - 1, states
