"""Storage URLs: resolution, masking, engine options and the Optuna RDBStorage.

The study tables (Optuna's) and the per-epoch tables (this project's) live in
the same database, opened with the same engine options.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, make_url

from search.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///search.db"
STORAGE_ENV = "SEARCH_STORAGE"
# Seconds a SQLite connection waits for another writer's lock before
# "database is locked". Long, because a worker may commit while another
# worker's trial writes its epoch rows.
SQLITE_TIMEOUT_S = 60.0
SUPPORTED_DRIVERS = ("sqlite", "postgresql+psycopg", "mysql+pymysql")


class StorageError(InputError):
    """Raised when a storage URL is invalid or its database cannot be reached."""


def resolve_url(url: str | None = None) -> str:
    """Return ``url``, else ``$SEARCH_STORAGE``, else ``sqlite:///search.db``."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def mask_url(url: str | URL) -> str:
    """Return the URL with its password replaced by ``***``, safe to show."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        return "<unparsable storage URL>"


def parse_url(url: str) -> URL:
    """Parse and check a storage URL, raising :class:`StorageError` with the fix."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise StorageError(
            f"invalid storage URL {mask_url(url)!r}; use e.g. sqlite:///search.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST/DB"
        ) from None
    if parsed.drivername not in SUPPORTED_DRIVERS and parsed.get_backend_name() not in (
        "sqlite",
    ):
        raise StorageError(
            f"unsupported storage URL scheme {parsed.drivername!r} in {mask_url(url)!r}; "
            f"use one of {', '.join(s + '://' for s in SUPPORTED_DRIVERS)}"
        )
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(parsed)
    return parsed


def _check_sqlite_path(parsed: URL) -> None:
    database = parsed.database
    if not database or database == ":memory:":
        raise StorageError(
            f"SQLite storage {mask_url(parsed)!r} has no file; workers and later "
            "commands cannot share it. Use sqlite:///PATH.db"
        )
    folder = Path(database).expanduser().resolve().parent
    if not folder.is_dir():
        raise StorageError(
            f"SQLite storage {mask_url(parsed)!r}: folder {folder} does not exist; "
            "create it or fix the path"
        )


def engine_kwargs(url: str) -> dict[str, Any]:
    """Return ``create_engine`` options suited to long trainings on ``url``.

    Connections are checked before use (a trial may hold none for minutes, and
    servers drop idle ones) and pools stay small, because each worker process
    only writes one trial at a time.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
    return {"pool_pre_ping": True, "pool_size": 2, "max_overflow": 4, "pool_recycle": 1800}


def prepare_sqlite(url: str) -> None:
    """Switch a SQLite file to write-ahead logging so readers do not block writers.

    WAL mode is stored in the file, so setting it once serves every later
    connection.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return
    connection = sqlite3.connect(parsed.database, timeout=SQLITE_TIMEOUT_S)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


def make_storage(url: str, heartbeat_interval: int | None = None,
                 grace_period: int | None = None, max_retry: int | None = None):
    """Open Optuna's RDBStorage on ``url``, creating its tables if needed.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the database.
    heartbeat_interval : int, optional
        Seconds between heartbeats of a running trial. With it, a trial whose
        worker died is marked FAIL once its heartbeat is older than
        ``grace_period`` and, when ``max_retry`` is given, its parameters are
        enqueued again.

    Raises
    ------
    StorageError
        If the URL is invalid or the database cannot be reached.
    """
    import optuna

    parse_url(url)
    prepare_sqlite_safely(url)
    options: dict[str, Any] = {"engine_kwargs": engine_kwargs(url)}
    if heartbeat_interval is not None:
        options["heartbeat_interval"] = heartbeat_interval
        options["grace_period"] = grace_period or 4 * heartbeat_interval
        if max_retry is not None:
            options["heartbeat_stale_trial_callback"] = (
                optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            )
    try:
        return optuna.storages.RDBStorage(url, **options)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
        raise StorageError(_unreachable(url, error)) from None
    except ModuleNotFoundError as error:
        raise StorageError(
            f"the driver for {mask_url(url)!r} is not installed ({error.name}); "
            "install it with: pip install -e '.[postgresql]' or -e '.[mysql]'"
        ) from None


def prepare_sqlite_safely(url: str) -> None:
    try:
        prepare_sqlite(url)
    except sqlite3.Error as error:
        raise StorageError(
            f"cannot open SQLite storage {mask_url(url)!r} ({error}); check the path "
            "and its permissions"
        ) from None


def _unreachable(url: str, error: Exception) -> str:
    reason = str(getattr(error, "orig", error)).strip().splitlines()
    detail = reason[0] if reason else type(error).__name__
    password = make_url(url).password
    if password:
        detail = detail.replace(str(password), "***")
    return (
        f"cannot connect to storage {mask_url(url)!r}: {detail}; check that the "
        "server runs and the URL's host, port, user and database are right"
    )


def connect_error(url: str, error: Exception) -> StorageError:
    """Return a :class:`StorageError` for a failed connection, with the URL masked."""
    return StorageError(_unreachable(url, error))
