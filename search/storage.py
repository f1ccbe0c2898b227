"""Storage URLs: resolution, masking, engine options and the Optuna RDBStorage.

The study tables (Optuna's) and the per-epoch tables (this project's) live in
the same database, opened with the same engine options.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from search.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///search.db"
STORAGE_ENV = "SEARCH_STORAGE"
# Seconds a SQLite connection waits for another writer's lock before
# "database is locked". Long, because a worker may commit while another
# worker's trial writes its epoch rows.
SQLITE_TIMEOUT_S = 60.0
SUPPORTED_DRIVERS = ("sqlite", "postgresql+psycopg", "mysql+pymysql")
# Seconds a worker waits for another worker to finish creating the tables and
# the study before it gives up.
SETUP_LOCK_TIMEOUT_S = 120.0
# PostgreSQL advisory locks take a 64-bit key; this one is fixed for the package.
_SETUP_LOCK_KEY = zlib.crc32(b"search: create tables and study")
# Appended to a SQLite database's path to name the lock file of setup_lock.
SQLITE_LOCK_SUFFIX = "-setup.lock"
# User attribute of a retried trial: the number of the trial whose worker died.
RETRY_OF_ATTR = "retry_of"


class StorageError(InputError):
    """Raised when a storage URL is invalid or its database cannot be reached."""


def resolve_url(url: str | None = None) -> str:
    """Return ``url``, else ``$SEARCH_STORAGE``, else ``sqlite:///search.db``."""
    return url or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


def mask_url(url: str | URL) -> str:
    """Return the URL with its password replaced by ``***``, safe to show."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        return _mask_unparsable(str(url))
    if parsed.host and "@" in parsed.host:
        # An unescaped "@" in the password ends up in the host part.
        return _mask_unparsable(str(url))
    return parsed.render_as_string(hide_password=True)


def _mask_unparsable(text: str) -> str:
    # A value without "@" or ":" has no place for a password and is shown as
    # typed. Otherwise everything between "//" and the last "@" is hidden, or
    # the whole value where it has no "@".
    if "@" not in text and ":" not in text:
        return text
    scheme, separator, rest = text.partition("//")
    if separator and "@" in rest:
        return f"{scheme}//***@{rest.rsplit('@', 1)[1]}"
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
            f"unsupported storage URL scheme {parsed.drivername!r} in "
            f"{mask_url(url)!r}; "
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
    return {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 4,
        "pool_recycle": 1800,
    }


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


class RetryStaleTrial:
    """Heartbeat-stale trial callback: log the failed trial and queue it again.

    Optuna calls it after it marks FAIL a RUNNING trial whose heartbeat is older
    than the grace period, which happens when its worker was killed or lost
    its connection. Optuna's ``RetryHeartbeatStaleTrialCallback`` then adds a
    WAITING trial with the same parameters, and the next worker to ask for a
    trial runs it. The retry stores the original trial's number in the system
    attribute ``failed_trial`` (Optuna's) and the failed trial's number in the
    user attribute ``retry_of``, which the dashboard shows.
    """

    def __init__(self, max_retry: int):
        import optuna

        self.max_retry = max_retry
        with _experimental_allowed():
            self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=max_retry
            )

    def __call__(self, study, trial) -> None:
        retries = len(trial.system_attrs.get("retry_history", []))
        if retries >= self.max_retry:
            logger.warning(
                "trial %d of study %r failed: no heartbeat from its worker; not "
                "retried, because its parameters already ran %d more times",
                trial.number,
                study.study_name,
                retries,
            )
            return
        trial.user_attrs = {**trial.user_attrs, RETRY_OF_ATTR: trial.number}
        self._retry(study, trial)
        logger.warning(
            "trial %d of study %r failed: no heartbeat from its worker (killed or "
            "disconnected); its parameters were queued again (retry %d of %d)",
            trial.number,
            study.study_name,
            retries + 1,
            self.max_retry,
        )


@contextlib.contextmanager
def _experimental_allowed() -> Iterator[None]:
    # Optuna 5.1 marks the heartbeat (RDBStorage's heartbeat_interval and
    # RetryHeartbeatStaleTrialCallback) as experimental and warns on each use.
    # Optuna silences the same warning around its own fail_stale_trials call.
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_storage(
    url: str,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    max_retry: int | None = None,
):
    """Open Optuna's RDBStorage on ``url``, creating its tables if needed.

    Parameters
    ----------
    url : str
        SQLAlchemy URL of the database.
    heartbeat_interval : int, optional
        Seconds between heartbeats of a running trial. With it, a trial whose
        worker died is marked FAIL, by the next worker that starts a trial,
        once its heartbeat is older than ``grace_period`` (default: 4 times
        the interval). When ``max_retry`` is given, its parameters are then
        queued again, at most ``max_retry`` times (see :class:`RetryStaleTrial`).

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
            options["heartbeat_stale_trial_callback"] = RetryStaleTrial(max_retry)
    try:
        with _experimental_allowed():
            return optuna.storages.RDBStorage(url, **options)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
        raise StorageError(_unreachable(url, error)) from None
    except ImportError as error:
        # Optuna's RDBStorage (5.1 checked) re-raises the driver's
        # ModuleNotFoundError as a plain ImportError; the cause names the module.
        cause = error.__cause__ if isinstance(error.__cause__, ImportError) else error
        raise _driver_missing(url, cause) from None


def close_storage(storage) -> None:
    """Close the pooled connections of an RDBStorage from :func:`make_storage`."""
    storage.remove_session()
    storage.engine.dispose()


def _driver_missing(url: str, error: ImportError) -> StorageError:
    backend = make_url(url).get_backend_name()
    extra = {"postgresql": "postgresql", "mysql": "mysql"}.get(backend)
    hint = (
        f"install it with: pip install -e '.[{extra}]'"
        if extra
        else f"use one of {', '.join(s + '://' for s in SUPPORTED_DRIVERS)}"
    )
    return StorageError(
        f"the driver for {mask_url(url)!r} is not installed ({error.name}); {hint}"
    )


@contextlib.contextmanager
def setup_lock(url: str, timeout: float = SETUP_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold a lock that serializes table and study creation among workers.

    Workers started at the same moment on an empty database would otherwise
    race in Optuna's table creation and Alembic stamp, which fail with
    duplicate-table or duplicate-key errors on PostgreSQL and MySQL. The lock
    is a session-level advisory lock on PostgreSQL (``pg_try_advisory_lock``)
    and a named lock on MySQL/MariaDB (``GET_LOCK``, named after the database).
    SQLite gets an ``flock`` on the file ``DATABASE-setup.lock`` next to the
    database. Each lock is released when the holder's connection or process
    ends, even on SIGKILL. The SQLite lock file stays in place afterwards.

    Raises
    ------
    StorageError
        If the URL is invalid, the database cannot be reached, or another
        worker holds the lock for longer than ``timeout`` seconds.
    """
    parsed = parse_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        with _sqlite_setup_lock(url, parsed.database, timeout):
            yield
        return
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    except ModuleNotFoundError as error:
        raise _driver_missing(url, error) from None
    try:
        with engine.connect() as connection:
            _acquire_server_lock(url, connection, backend, parsed.database, timeout)
            try:
                yield
            finally:
                _release_server_lock(connection, backend, parsed.database)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as error:
        raise StorageError(_unreachable(url, error)) from None
    finally:
        engine.dispose()


def _mysql_lock_name(database: str | None) -> str:
    # GET_LOCK names are server-wide, at most 64 characters.
    return f"search_setup.{database or ''}"[:64]


def _acquire_server_lock(
    url: str, connection, backend: str, database: str | None, timeout: float
) -> None:
    if backend == "postgresql":
        query = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
        deadline = time.monotonic() + timeout
        while not connection.execute(query, {"key": _SETUP_LOCK_KEY}).scalar():
            connection.rollback()
            if time.monotonic() > deadline:
                raise _lock_timed_out(url, timeout)
            time.sleep(0.1)
        connection.commit()
        return
    acquired = connection.execute(
        sqlalchemy.text("SELECT GET_LOCK(:name, :timeout)"),
        {"name": _mysql_lock_name(database), "timeout": timeout},
    ).scalar()
    if acquired != 1:
        raise _lock_timed_out(url, timeout)


def _release_server_lock(connection, backend: str, database: str | None) -> None:
    if connection.invalidated or connection.closed:
        return
    if backend == "postgresql":
        connection.execute(
            sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _SETUP_LOCK_KEY}
        )
    else:
        connection.execute(
            sqlalchemy.text("SELECT RELEASE_LOCK(:name)"),
            {"name": _mysql_lock_name(database)},
        )
    connection.commit()


@contextlib.contextmanager
def _sqlite_setup_lock(url: str, database: str, timeout: float) -> Iterator[None]:
    # The lock is on a separate file, never on the database itself. Closing any
    # descriptor of a file drops all of the process's fcntl locks on it, so
    # SQLite's own locks would vanish and the WAL could be deleted under the
    # other workers.
    path = Path(f"{Path(database).expanduser()}{SQLITE_LOCK_SUFFIX}")
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise StorageError(
            f"cannot create the lock file {path} of SQLite storage {mask_url(url)!r} "
            f"({error.strerror}); check the folder's permissions"
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _lock_timed_out(url, timeout) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the flock


def _lock_timed_out(url: str, timeout: float) -> StorageError:
    return StorageError(
        f"timed out after {timeout:g} s waiting for another worker to finish creating "
        f"the tables and the study in {mask_url(url)!r}; check for a hung worker "
        "and run the command again"
    )


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
