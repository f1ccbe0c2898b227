"""Several workers on one study: local worker processes, separate runs, killed workers.

Every test starts real ``python -m search run`` processes against real
databases on loopback and checks the stored study afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search.cli import main
from search.records import epochs_table, get_engine, read_rows
from search.storage import make_storage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def run_command(study_path, url: str, *options: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "search",
        "run",
        "--study",
        str(study_path),
        "--storage",
        url,
        *options,
    ]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("SEARCH_STORAGE", None)
    # One torch thread per process: several test processes share few cores,
    # and torch's spinning OpenMP threads slow each other down several times.
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_to_end(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_trials(url: str, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    storage = make_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def check_finished_study(url: str, target: int, workers: int, name: str = "tiny"):
    """Assert the stored study is complete, without failures, with every epoch row."""
    trials = load_trials(url, name)
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials))), numbers
    states = [t.state for t in trials]
    assert TrialState.FAIL not in states, states
    assert TrialState.RUNNING not in states, states
    finished = [t for t in trials if t.state in FINISHED]
    assert target <= len(finished) <= target + workers - 1, len(finished)

    rows = read_rows(url, epochs_table, [name])
    for trial in finished:
        epochs = sorted(r["epoch"] for r in rows if r["trial_id"] == trial._trial_id)
        last_step = max(trial.intermediate_values)
        assert epochs == list(range(1, last_step + 2)), (trial.number, epochs)
        metrics = {
            r["epoch"] - 1: r["metric"]
            for r in rows
            if r["trial_id"] == trial._trial_id
        }
        assert metrics == pytest.approx(trial.intermediate_values), trial.number
    return trials


def check_progress_lines(stdout: str, trials) -> None:
    lines = [line for line in stdout.splitlines() if line.startswith("trial ")]
    numbers = sorted(int(line.split()[1]) for line in lines)
    assert numbers == sorted(t.number for t in trials if t.state in FINISHED), stdout


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--workers", "0", "must be at least 1 (got 0)"),
        ("--heartbeat-interval", "-5", "must be at least 1 (got -5)"),
    ],
)
def test_workers_invalid_option_rejected(
    option, value, message, sqlite_url, write_study, capsys
):
    study = write_study()

    command = ["run", "--study", str(study), "--storage", sqlite_url, option, value]

    status = main(command)

    assert status == 2
    error = capsys.readouterr().err
    assert option in error
    assert message in error
    assert not os.path.exists(sqlite_url.removeprefix("sqlite:///"))


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_workers_three_on_server(backend, request, write_study):
    url = request.getfixturevalue(f"{backend}_url")
    study = write_study(n_trials=5, max_epochs=2, sampler="random")

    result = run_to_end(run_command(study, url, "--workers", "3"))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    trials = check_finished_study(url, target=5, workers=3)
    check_progress_lines(result.stdout, trials)


def test_workers_four_on_sqlite(sqlite_url, write_study):
    study = write_study(n_trials=6, max_epochs=2, sampler="random")

    result = run_to_end(run_command(study, sqlite_url, "--workers", "4"))

    assert result.returncode == 0, result.stderr
    assert "database is locked" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    trials = check_finished_study(sqlite_url, target=6, workers=4)
    check_progress_lines(result.stdout, trials)

    storage = make_storage(sqlite_url)
    try:
        with storage.engine.connect() as connection:
            optuna_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    finally:
        storage.engine.dispose()
    with get_engine(sqlite_url).connect() as connection:
        records_mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert optuna_mode == "wal"
    assert records_mode == "wal"


def test_workers_simultaneous_runs_on_empty_postgresql(postgresql_url, write_study):
    study = write_study(n_trials=4, max_epochs=1, sampler="random")
    command = run_command(study, postgresql_url)

    processes = [
        subprocess.Popen(
            command,
            cwd=REPO,
            env=child_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=240) for process in processes]

    for process, (_stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr
    check_finished_study(postgresql_url, target=4, workers=4)
    engine = sqlalchemy.create_engine(postgresql_url)
    try:
        with engine.connect() as connection:
            studies = connection.exec_driver_sql(
                "SELECT count(*) FROM studies"
            ).scalar()
            versions = connection.exec_driver_sql(
                "SELECT count(*) FROM alembic_version"
            ).scalar()
            infos = connection.exec_driver_sql(
                "SELECT count(*) FROM version_info"
            ).scalar()
    finally:
        engine.dispose()
    assert studies == 1
    assert versions == 1
    assert infos == 1


def wait_for_running_epoch(url: str, process: subprocess.Popen, timeout: float = 120):
    """Return the RUNNING trial once it has an epoch row, polling the database."""
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            try:
                with engine.connect() as connection:
                    row = connection.execute(
                        sqlalchemy.text(
                            "SELECT t.trial_id, t.number FROM trials t "
                            "JOIN search_epochs e ON e.trial_id = t.trial_id "
                            "WHERE t.state = 'RUNNING' LIMIT 1"
                        )
                    ).first()
            except sqlalchemy.exc.DatabaseError:
                row = None  # the tables do not exist yet
            if row is not None:
                return row
            time.sleep(0.05)
    finally:
        engine.dispose()
    pytest.fail(f"no RUNNING trial with an epoch row after {timeout} s")


def test_workers_killed_trial_is_retried(postgresql_url, write_study):
    study = write_study(n_trials=1, max_epochs=30, sampler="random")
    command = run_command(study, postgresql_url, "--heartbeat-interval", "1")
    first = subprocess.Popen(
        command,
        cwd=REPO,
        env=child_env(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    trial_id, killed_number = wait_for_running_epoch(postgresql_url, first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    # The heartbeat goes stale after the grace period, 4 intervals.
    time.sleep(4.5)

    second = run_to_end(command)

    assert second.returncode == 0, second.stderr
    trials = load_trials(postgresql_url)
    by_number = {t.number: t for t in trials}
    killed = by_number[killed_number]
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1, [t.system_attrs for t in trials]
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == killed.params
    assert retry.user_attrs["retry_of"] == killed_number
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert len([t for t in trials if t.state in FINISHED]) >= 1
    assert f"trial {killed_number} of study 'tiny' failed" in second.stderr


def test_workers_stale_trial_retried_when_complete(sqlite_url, write_study, capsys):
    study_path = write_study(n_trials=1, max_epochs=1, sampler="random")
    command = [
        "run",
        "--study",
        str(study_path),
        "--storage",
        sqlite_url,
        "--heartbeat-interval",
        "1",
    ]
    assert main(command) == 0
    # A RUNNING trial with one old heartbeat, as a killed worker leaves it.
    storage = make_storage(sqlite_url)
    try:
        study = optuna.load_study(study_name="tiny", storage=storage)
        template = study.get_trials()[0]
        stale = study.ask(fixed_distributions=template.distributions)
        storage.record_heartbeat(stale._trial_id)
    finally:
        storage.engine.dispose()
    # The grace period is 4 intervals; SQLite stores the time in whole seconds.
    time.sleep(5.5)

    assert main(command) == 0

    trials = {t.number: t for t in load_trials(sqlite_url)}
    assert trials[stale.number].state == TrialState.FAIL
    retries = [
        t for t in trials.values() if t.user_attrs.get("retry_of") == stale.number
    ]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == trials[stale.number].params
    states = [t.state for t in trials.values()]
    assert TrialState.RUNNING not in states
    assert TrialState.WAITING not in states
