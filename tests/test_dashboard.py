"""Tests of search.dashboard against a real SQLite study and a served dashboard."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from search import dashboard
from search.dashboard import (
    create_server,
    dashboard_command,
    is_loopback_host,
    mask_storage_url,
)
from search.storage import StorageError

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_PATH = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0

STUDY_NAME = "steplr-dashboard"
SCHEDULER_CHOICES = ["StepLR", "CosineAnnealingLR"]

# One row per trial, in trial number order. The pruned trial stops after step 1,
# and Optuna (5.1 checked) stores its last intermediate value as its value.
TRIALS = [
    {
        "lr": 0.01,
        "step_size": 5,
        "gamma": 0.5,
        "seed": 100,
        "intermediate_values": [0.5, 0.7, 0.8],
        "state": TrialState.COMPLETE,
        "value": 0.8,
    },
    {
        "lr": 0.1,
        "step_size": 3,
        "gamma": 0.25,
        "seed": 101,
        "intermediate_values": [0.4, 0.6, 0.75],
        "state": TrialState.COMPLETE,
        "value": 0.75,
    },
    {
        "lr": 0.001,
        "step_size": 10,
        "gamma": 0.5,
        "seed": 102,
        "intermediate_values": [0.1, 0.15],
        "state": TrialState.PRUNED,
        "value": 0.15,
    },
]

# Arguments: the storage URL, the port and, optionally, the URL of a storage that
# the script opens and passes to serve() in place of the first URL. On SIGINT the
# script exits with status 130, the usual status after SIGINT.
SERVE_CODE = """
import logging
import sys

import optuna

from search.dashboard import serve

logging.basicConfig(level=logging.INFO, stream=sys.stderr)
storage = None
if len(sys.argv) > 3:
    storage = optuna.storages.RDBStorage(sys.argv[3])
try:
    serve(sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]), storage=storage)
except KeyboardInterrupt:
    sys.exit(130)
"""

# The handler bypasses any proxy from the environment, so requests stay on loopback.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def create_study(storage_url: str) -> optuna.Study:
    study = optuna.create_study(
        storage=storage_url, study_name=STUDY_NAME, direction="maximize"
    )
    for row in TRIALS:
        study.enqueue_trial(
            {
                "scheduler": "StepLR",
                "lr": row["lr"],
                "StepLR.step_size": row["step_size"],
            }
        )
        trial = study.ask()
        trial.suggest_categorical("scheduler", SCHEDULER_CHOICES)
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.suggest_int("StepLR.step_size", 1, 15)
        trial.set_user_attr(
            "scheduler_kwargs", {"step_size": row["step_size"], "gamma": row["gamma"]}
        )
        trial.set_user_attr("step_every", "epoch")
        trial.set_user_attr("seed", row["seed"])
        for step, value in enumerate(row["intermediate_values"]):
            trial.report(value, step)

        if row["state"] == TrialState.PRUNED:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, row["value"])
    return study


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> tuple[int, Any]:
    try:
        with HTTP.open(url, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def start_dashboard(
    storage_url: str, log_path: Path, storage_override_url: str | None = None
) -> tuple[subprocess.Popen, str]:
    """Start ``serve`` in a subprocess and wait until its API responds."""
    port = find_free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    log_file = log_path.open("wb")
    args = [sys.executable, "-c", SERVE_CODE, storage_url, str(port)]
    if storage_override_url is not None:
        args.append(storage_override_url)
    process = subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    base_url = f"http://127.0.0.1:{port}"

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"Dashboard exited with status {process.returncode} before it "
                f"responded. Output:\n{log_path.read_text()}"
            )
        try:
            status, _ = get_json(f"{base_url}/api/meta")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
            continue
        if status == 200:
            return process, base_url
        time.sleep(0.1)

    process.kill()
    process.wait()
    pytest.fail(
        f"Dashboard did not respond on {base_url} within {STARTUP_TIMEOUT_S} s. "
        f"Output:\n{log_path.read_text()}"
    )


def stop_dashboard(process: subprocess.Popen) -> int:
    """Send SIGINT, as Ctrl-C does, and return the exit status."""
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


@pytest.fixture(scope="module")
def study_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("dashboard") / "study.db"
    url = f"sqlite:///{path}"
    create_study(url)
    return url


@pytest.fixture
def study_storage(study_url: str) -> Iterator[optuna.storages.RDBStorage]:
    storage = optuna.storages.RDBStorage(study_url)
    yield storage
    storage.engine.dispose()


@pytest.fixture(scope="module")
def served_dashboard(
    study_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("dashboard-log") / "serve.log"
    process, base_url = start_dashboard(study_url, log_path)
    yield base_url
    if process.poll() is None:
        stop_dashboard(process)


@pytest.fixture(scope="module")
def study_id(served_dashboard: str) -> int:
    status, body = get_json(f"{served_dashboard}/api/studies")
    assert status == 200
    ids = [
        s["study_id"] for s in body["study_summaries"] if s["study_name"] == STUDY_NAME
    ]
    assert len(ids) == 1, body
    return ids[0]


def require_chromium(path: str) -> None:
    """Fail under CI and skip elsewhere when the Chromium binary is missing."""
    if os.path.exists(path):
        return
    message = (
        f"Chromium not found at {path}. Install it with: "
        "sudo apt-get install -y chromium chromium-driver "
        "(or source .ci/chromium.sh as root)."
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message} The browser test is required because CI is set.")
    pytest.skip(message)


def test_api_lists_study(served_dashboard: str) -> None:
    status, body = get_json(f"{served_dashboard}/api/studies")

    assert status == 200
    summaries = {s["study_name"]: s for s in body["study_summaries"]}
    assert list(summaries) == [STUDY_NAME]
    assert summaries[STUDY_NAME]["directions"] == ["maximize"]
    assert isinstance(summaries[STUDY_NAME]["study_id"], int)


def test_api_study_detail(served_dashboard: str, study_id: int) -> None:
    status, body = get_json(f"{served_dashboard}/api/studies/{study_id}")

    assert status == 200
    assert body["name"] == STUDY_NAME
    assert body["directions"] == ["maximize"]
    assert body["has_intermediate_values"] is True
    assert [t["number"] for t in body["best_trials"]] == [0]
    # A user attribute is sortable in the dashboard's trial table when it is a number.
    sortable_by_key = {a["key"]: a["sortable"] for a in body["union_user_attrs"]}
    assert sortable_by_key == {
        "scheduler_kwargs": False,
        "step_every": False,
        "seed": True,
    }
    search_space = {p["name"]: p["distribution"] for p in body["union_search_space"]}
    assert set(search_space) == {"scheduler", "lr", "StepLR.step_size"}
    assert search_space["lr"]["type"] == "FloatDistribution"
    assert search_space["lr"]["log"] is True
    assert search_space["StepLR.step_size"]["type"] == "IntDistribution"
    assert search_space["StepLR.step_size"]["low"] == 1
    assert search_space["StepLR.step_size"]["high"] == 15
    # optuna-dashboard 0.21 merges categorical choices through a set, so the union
    # search space loses their order.
    choices = {c["value"] for c in search_space["scheduler"]["choices"]}
    assert choices == set(SCHEDULER_CHOICES)


@pytest.mark.parametrize("number", range(len(TRIALS)))
def test_api_trial_fields(served_dashboard: str, study_id: int, number: int) -> None:
    row = TRIALS[number]
    status, body = get_json(f"{served_dashboard}/api/studies/{study_id}")
    assert status == 200
    trials = {t["number"]: t for t in body["trials"]}
    assert sorted(trials) == list(range(len(TRIALS)))
    trial = trials[number]

    assert trial["state"] == row["state"].name.capitalize()
    assert trial["values"] == [row["value"]]

    params = {p["name"]: p for p in trial["params"]}
    assert set(params) == {"scheduler", "lr", "StepLR.step_size"}
    assert params["scheduler"]["param_external_value"] == "StepLR"
    assert params["scheduler"]["param_internal_value"] == 0
    scheduler_choices = params["scheduler"]["distribution"]["choices"]
    assert [c["value"] for c in scheduler_choices] == SCHEDULER_CHOICES
    assert params["lr"]["param_internal_value"] == row["lr"]
    assert params["lr"]["param_external_value"] == str(row["lr"])
    assert params["StepLR.step_size"]["param_internal_value"] == row["step_size"]
    assert params["StepLR.step_size"]["param_external_value"] == str(row["step_size"])

    user_attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
    assert json.loads(user_attrs["scheduler_kwargs"]) == {
        "step_size": row["step_size"],
        "gamma": row["gamma"],
    }
    assert user_attrs["step_every"] == "epoch"
    assert user_attrs["seed"] == str(row["seed"])

    expected_intermediate = [
        {"step": step, "value": value}
        for step, value in enumerate(row["intermediate_values"])
    ]
    assert trial["intermediate_values"] == expected_intermediate


def test_api_unknown_study(served_dashboard: str, study_id: int) -> None:
    missing_id = study_id + 1000
    status, body = get_json(f"{served_dashboard}/api/studies/{missing_id}")

    assert status == 404
    assert body["reason"] == f"study_id={missing_id} is not found"


def test_browser_shows_study_name(served_dashboard: str, study_id: int) -> None:
    require_chromium(CHROMIUM_PATH)
    from playwright.sync_api import expect, sync_playwright

    blocked_urls: list[str] = []
    page_errors: list[str] = []

    def allow_dashboard_only(route: Any) -> None:
        # Aborting every other request keeps the page from reaching other machines.
        if route.request.url.startswith(served_dashboard + "/"):
            route.continue_()
        else:
            blocked_urls.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.route("**/*", allow_dashboard_only)
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.goto(f"{served_dashboard}/dashboard/studies/{study_id}")

            # The app bar shows the name that the page fetched from /api/studies/<id>.
            title = page.get_by_text(f"{STUDY_NAME} (id={study_id})", exact=True)
            expect(title).to_be_visible(timeout=20_000)
        finally:
            browser.close()

    assert blocked_urls == []
    assert page_errors == []


def test_require_chromium_fails_under_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")

    with pytest.raises(pytest.fail.Exception, match="Chromium not found at"):
        require_chromium(str(tmp_path / "chromium"))


def test_require_chromium_skips_outside_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)

    with pytest.raises(pytest.skip.Exception, match="Chromium not found at"):
        require_chromium(str(tmp_path / "chromium"))


def test_serve_stops_on_sigint(study_url: str, tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    process, base_url = start_dashboard(study_url, log_path)

    returncode = stop_dashboard(process)

    output = log_path.read_text()
    assert returncode == 130, output
    assert f"at {base_url}/dashboard" in output
    assert "Interrupted, so stopping optuna-dashboard." in output
    assert "optuna-dashboard stopped." in output


def test_serve_uses_given_storage(study_url: str, tmp_path: Path) -> None:
    # No server listens on loopback port 1 here, so the API can list the study only
    # if serve() uses the given SQLite storage instead of opening this URL.
    shown_url = "postgresql+psycopg://u:s3cret@127.0.0.1:1/db"
    log_path = tmp_path / "serve.log"
    process, base_url = start_dashboard(shown_url, log_path, study_url)
    try:
        status, body = get_json(f"{base_url}/api/studies")
    finally:
        stop_dashboard(process)

    assert status == 200
    assert [s["study_name"] for s in body["study_summaries"]] == [STUDY_NAME]
    output = log_path.read_text()
    assert "for storage postgresql+psycopg://u:***@127.0.0.1:1/db at" in output
    assert "s3cret" not in output


def test_module_does_not_import_torch() -> None:
    code = "import sys, search.dashboard; sys.exit('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr


def test_serve_opens_storage_like_search(served_dashboard: str, study_url: str) -> None:
    # search.storage.make_storage switches a SQLite file to write-ahead logging,
    # and optuna.create_study alone leaves the default rollback journal.
    database = sqlalchemy.engine.make_url(study_url).database
    connection = sqlite3.connect(database)
    try:
        (journal_mode,) = connection.execute("PRAGMA journal_mode").fetchone()
    finally:
        connection.close()

    assert journal_mode == "wal"


def test_serve_rejects_unsupported_url() -> None:
    # The scheme is rejected before any connection is made.
    with pytest.raises(StorageError, match="unsupported storage URL scheme 'oracle'"):
        dashboard.serve("oracle://u:s3cret@127.0.0.1:1/db", port=0)


def test_create_server_on_ipv6_loopback(
    study_storage: optuna.storages.RDBStorage,
) -> None:
    server = create_server(study_storage, host="::1", port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, body = get_json(f"http://[::1]:{server.server_port}/api/studies")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT_S)

    assert status == 200
    assert [s["study_name"] for s in body["study_summaries"]] == [STUDY_NAME]
    assert not thread.is_alive()


@pytest.mark.parametrize("port", [-1, 65536])
def test_create_server_rejects_port(
    study_storage: optuna.storages.RDBStorage, port: int
) -> None:
    with pytest.raises(ValueError, match=f"Invalid port {port}: expected 0 to 65535"):
        create_server(study_storage, host="127.0.0.1", port=port)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("example.org", False),
    ],
)
def test_is_loopback_host(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected


class StopBeforeBind(Exception):
    pass


@pytest.mark.parametrize(
    ("host", "expects_warning"),
    [("0.0.0.0", True), ("", True), ("127.0.0.1", False), ("::1", False)],
)
def test_create_server_warns_off_loopback(
    study_storage: optuna.storages.RDBStorage,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    host: str,
    expects_warning: bool,
) -> None:
    bound_hosts: list[str] = []

    def record_bind(host: str, *args: Any, **kwargs: Any) -> None:
        # A spy in place of wsgiref's make_server, so no socket is bound off loopback.
        bound_hosts.append(host)
        raise StopBeforeBind

    monkeypatch.setattr(dashboard, "make_server", record_bind)

    with (
        caplog.at_level(logging.WARNING, logger="search.dashboard"),
        pytest.raises(StopBeforeBind),
    ):
        create_server(study_storage, host=host, port=8080)

    assert bound_hosts == [host]
    messages = [record.getMessage() for record in caplog.records]
    reachable_warnings = [m for m in messages if "reachable from other machines" in m]
    assert len(reachable_warnings) == (1 if expects_warning else 0)


def test_dashboard_command_masks_password() -> None:
    command = dashboard_command(
        "postgresql+psycopg://u:s3cret@127.0.0.1/db", host="127.0.0.1", port=8081
    )

    assert all("s3cret" not in part for part in command)
    assert command == [
        "optuna-dashboard",
        "postgresql+psycopg://u:***@127.0.0.1/db",
        "--host",
        "127.0.0.1",
        "--port",
        "8081",
    ]


def test_mask_storage_url_query_password() -> None:
    masked = mask_storage_url(
        "postgresql+psycopg://u@127.0.0.1/db?password=s3cret&sslmode=disable"
    )

    assert "s3cret" not in masked
    assert "sslmode=disable" in masked


def test_mask_storage_url_keeps_sqlite_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"

    assert mask_storage_url(url) == url


# The tests below serve a study that this package trained (see stored_study.py)
# through the command line, as ``python -m search dashboard`` does.


def start_cli_dashboard(
    storage_url: str, log_path: Path
) -> tuple[subprocess.Popen, str]:
    """Start ``python -m search dashboard`` and wait until its API responds."""
    port = find_free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.pop("SEARCH_STORAGE", None)
    args = [
        sys.executable,
        "-m",
        "search",
        "dashboard",
        "--storage",
        storage_url,
        "--port",
        str(port),
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"python -m search dashboard exited with status "
                f"{process.returncode}. Output:\n{log_path.read_text()}"
            )
        try:
            status, _ = get_json(f"{base_url}/api/meta")
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
            continue
        if status == 200:
            return process, base_url
        time.sleep(0.1)
    process.kill()
    process.wait()
    pytest.fail(
        f"python -m search dashboard did not respond on {base_url} within "
        f"{STARTUP_TIMEOUT_S} s. Output:\n{log_path.read_text()}"
    )


@pytest.fixture(scope="module")
def package_dashboard(stored_study, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    log_path = tmp_path_factory.mktemp("package-dashboard") / "dashboard.log"
    process, base_url = start_cli_dashboard(stored_study.url, log_path)
    yield base_url, log_path
    if process.poll() is None:
        stop_dashboard(process)


@pytest.fixture(scope="module")
def package_study_detail(package_dashboard, stored_study) -> dict:
    base_url, _ = package_dashboard
    status, body = get_json(f"{base_url}/api/studies")
    assert status == 200
    ids = {s["study_name"]: s["study_id"] for s in body["study_summaries"]}
    assert list(ids) == [stored_study.name, stored_study.loss_name]
    status, detail = get_json(f"{base_url}/api/studies/{ids[stored_study.name]}")
    assert status == 200
    detail["study_id"] = ids[stored_study.name]
    return detail


def test_cli_dashboard_trials_match_study(stored_study, package_study_detail) -> None:
    from search.records import epochs_table, read_rows

    study = optuna.load_study(study_name=stored_study.name, storage=stored_study.url)
    dashboard_trials = {t["number"]: t for t in package_study_detail["trials"]}
    epoch_rows = read_rows(stored_study.url, epochs_table, [stored_study.name])

    assert sorted(dashboard_trials) == [t.number for t in study.trials]
    states = {t["state"] for t in dashboard_trials.values()}
    assert states == {"Complete", "Pruned", "Fail"}
    for trial in study.trials:
        item = dashboard_trials[trial.number]
        assert item["state"] == trial.state.name.capitalize()
        params = {p["name"]: p["param_external_value"] for p in item["params"]}
        assert params["scheduler"] == trial.params["scheduler"]
        assert set(params) == set(trial.params)
        user_attrs = {a["key"]: a["value"] for a in item["user_attrs"]}
        assert (
            json.loads(user_attrs["scheduler_kwargs"])
            == (trial.user_attrs["scheduler_kwargs"])
        )
        assert user_attrs["step_every"] == trial.user_attrs["step_every"]
        assert user_attrs["seed"] == str(trial.user_attrs["seed"])
        # The curve is the study metric per epoch: step 0 is epoch 1 of search_epochs.
        metrics = {
            row["epoch"] - 1: row["metric"]
            for row in epoch_rows
            if row["trial_id"] == trial._trial_id
        }
        curve = {point["step"]: point["value"] for point in item["intermediate_values"]}
        assert curve == trial.intermediate_values
        assert all(curve[step] == metrics[step] for step in curve)


def test_cli_dashboard_intermediate_values(package_study_detail) -> None:
    assert package_study_detail["has_intermediate_values"] is True
    assert package_study_detail["directions"] == ["maximize"]


def test_cli_dashboard_logs_start(package_dashboard, stored_study) -> None:
    base_url, log_path = package_dashboard

    output = log_path.read_text()

    assert f"for storage {stored_study.url} at {base_url}/dashboard" in output


def test_browser_shows_package_trial(package_dashboard, package_study_detail) -> None:
    require_chromium(CHROMIUM_PATH)
    from playwright.sync_api import expect, sync_playwright

    base_url, _ = package_dashboard
    trial = next(
        t
        for t in package_study_detail["trials"]
        if any(p["param_external_value"] == "OneCycleLR" for p in t["params"])
    )
    user_attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
    blocked_urls: list[str] = []

    def allow_loopback_only(route: Any) -> None:
        if route.request.url.startswith(base_url + "/"):
            route.continue_()
        else:
            blocked_urls.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.route("**/*", allow_loopback_only)
            page.goto(
                f"{base_url}/dashboard/studies/{package_study_detail['study_id']}"
                f"/trials?numbers={trial['number']}"
            )
            heading = page.get_by_text(
                f"Trial {trial['number']} (trial_id={trial['trial_id']})", exact=True
            )
            expect(heading).to_be_visible(timeout=20_000)
            body = page.locator("body")
            expect(body).to_contain_text("OneCycleLR.pct_start")
            expect(body).to_contain_text(user_attrs["scheduler_kwargs"])
            expect(body).to_contain_text("Intermediate Values")
            for point in trial["intermediate_values"]:
                expect(body).to_contain_text(str(point["value"]))
        finally:
            browser.close()

    assert blocked_urls == []


def test_cli_dashboard_warns_off_loopback(stored_study, monkeypatch, capsys) -> None:
    from search.cli import main

    bound_hosts: list[str] = []

    def record_bind(host: str, *args: Any, **kwargs: Any) -> None:
        # A spy in place of wsgiref's make_server, so no socket is bound off loopback.
        bound_hosts.append(host)
        raise OSError("bind skipped by the test")

    monkeypatch.setattr(dashboard, "make_server", record_bind)

    status = main(["dashboard", "--storage", stored_study.url, "--host", "0.0.0.0"])

    err = capsys.readouterr().err
    assert status == 1
    assert bound_hosts == ["0.0.0.0"]
    assert "reachable from other machines" in err
    assert "cannot serve the dashboard on 0.0.0.0:8080: bind skipped by the test" in err


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_cli_dashboard_rejects_port(port: str, capsys) -> None:
    from search.cli import main

    status = main(["dashboard", "--port", port])

    assert status == 2
    assert "--port" in capsys.readouterr().err


def test_cli_dashboard_rejects_url(capsys) -> None:
    from search.cli import main

    status = main(["dashboard", "--storage", "oracle://u:s3cret@127.0.0.1:1/db"])

    err = capsys.readouterr().err
    assert status == 2
    assert "unsupported storage URL scheme 'oracle'" in err
    assert "s3cret" not in err


def test_cli_dashboard_stops_on_sigint(stored_study, tmp_path: Path) -> None:
    log_path = tmp_path / "dashboard.log"
    process, _ = start_cli_dashboard(stored_study.url, log_path)

    returncode = stop_dashboard(process)

    output = log_path.read_text()
    assert returncode == 130, output
    assert "optuna-dashboard stopped." in output


def test_cli_dashboard_without_package(monkeypatch, tmp_path: Path, capsys) -> None:
    from search.cli import main

    # A None entry in sys.modules makes the import raise ModuleNotFoundError, as it
    # does where optuna-dashboard is not installed.
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    database = tmp_path / "new.db"

    status = main(["dashboard", "--storage", f"sqlite:///{database}", "--port", "0"])

    err = capsys.readouterr().err
    assert status == 2
    assert err == (
        "error: optuna-dashboard is not installed; install it with: "
        "pip install -e '.[dashboard]'\n"
    )
    assert not database.exists()
