"""Serve optuna-dashboard on the storage of a search.

The server is wsgiref's, made multi-threaded as the ``optuna-dashboard`` command
of optuna-dashboard 0.21 does. The docs of ``optuna_dashboard.run_server`` state that
wsgiref is not intended for production use, where ``optuna_dashboard.wsgi()`` under
Gunicorn or uWSGI fits better. The dashboard has no authentication, and its HTTP API
can rename and delete studies.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sqlalchemy.engine import make_url

from search.errors import InputError
from search.storage import make_storage

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

logger = logging.getLogger(__name__)

MAX_PORT = 65535


class DashboardNotInstalledError(InputError):
    """Raised when the optional optuna-dashboard package is not installed."""


def _import_optuna_dashboard():
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardNotInstalledError(
            "optuna-dashboard is not installed; install it with: "
            "pip install -e '.[dashboard]'"
        ) from None
    return optuna_dashboard


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    # The page loads its bundle while it polls the API, so requests must not queue
    # behind each other. Daemon threads let a stop skip requests still in flight.
    daemon_threads = True

    def server_bind(self) -> None:
        # Replaces HTTPServer.server_bind, which calls socket.getfqdn(host). That can
        # send a reverse DNS query, for example for ::1 when /etc/hosts omits it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host
        self.server_port = port
        self.setup_environ()


class _ThreadingWSGIServerIPv6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _LoggingRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        # wsgiref writes one line per request to stderr, so send it to DEBUG instead.
        logger.debug("%s - %s", self.address_string(), format % args)


def is_loopback_host(host: str) -> bool:
    """Check whether a bind address accepts connections from this machine only.

    Parameters
    ----------
    host : str
        Host name or IP address given to the server. ``""`` binds every interface.

    Returns
    -------
    bool
        True for ``localhost`` and for loopback addresses (127.0.0.0/8 and ``::1``).
        False for any other name, because a name may resolve to a public interface.
    """
    if host.lower() == "localhost":
        return True

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask_storage_url(storage_url: str) -> str:
    """Replace the password in a SQLAlchemy storage URL with ``***``.

    The password is masked where SQLAlchemy parses it (``user:password@host``) and
    in a ``password`` query parameter, which libpq also accepts. In the query, the
    mask is URL-encoded as ``%2A%2A%2A``.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy database URL, such as ``postgresql+psycopg://user:pw@host/db``.

    Returns
    -------
    str
        The URL as a string that is safe to log.

    Raises
    ------
    sqlalchemy.exc.ArgumentError
        If ``storage_url`` is not a valid SQLAlchemy URL.
    """
    url = make_url(storage_url)
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True)


def dashboard_command(
    storage_url: str, host: str = "127.0.0.1", port: int = 8080
) -> list[str]:
    """Build the ``optuna-dashboard`` command line that serves the same storage.

    The command is meant for display. Because the password is masked, it connects
    only to a database that needs no password. The command opens the storage with
    optuna-dashboard's own RDBStorage options, which in optuna-dashboard 0.21 are
    ``skip_compatibility_check=True`` and ``skip_table_creation=True`` and no
    ``engine_kwargs``. So it matches :func:`serve` in URL, host and port only.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy database URL of the Optuna storage.
    host : str, default="127.0.0.1"
        Address the dashboard binds to.
    port : int, default=8080
        TCP port the dashboard listens on.

    Returns
    -------
    list of str
        The program and its arguments, ready for ``shlex.join``.

    Raises
    ------
    sqlalchemy.exc.ArgumentError
        If ``storage_url`` is not a valid SQLAlchemy URL.
    """
    return [
        "optuna-dashboard",
        mask_storage_url(storage_url),
        "--host",
        host,
        "--port",
        str(port),
    ]


def create_server(
    storage: BaseStorage, host: str = "127.0.0.1", port: int = 8080
) -> WSGIServer:
    """Bind a multi-threaded WSGI server that serves optuna-dashboard on a storage.

    The server is bound but not yet serving. Call ``serve_forever()`` to serve,
    ``shutdown()`` from another thread to stop, then ``server_close()``. A warning
    is logged when ``host`` is not a loopback address.

    Parameters
    ----------
    storage : optuna.storages.BaseStorage
        Storage whose studies the dashboard shows.
    host : str, default="127.0.0.1"
        Address to bind. A name or address other than loopback makes the dashboard
        reachable from other machines.
    port : int, default=8080
        TCP port to listen on. 0 picks a free port, readable as ``server_port``.

    Returns
    -------
    wsgiref.simple_server.WSGIServer
        The bound server.

    Raises
    ------
    ValueError
        If ``port`` is outside 0 to 65535.
    DashboardNotInstalledError
        If optuna-dashboard is not installed.
    OSError
        If the address cannot be bound, for example because the port is in use.
    """
    if not 0 <= port <= MAX_PORT:
        raise ValueError(f"Invalid port {port}: expected 0 to {MAX_PORT}.")

    optuna_dashboard = _import_optuna_dashboard()

    if not is_loopback_host(host):
        logger.warning(
            "optuna-dashboard binds to host %r, so it is reachable from other "
            "machines. It has no authentication, and its API can delete studies.",
            host,
        )

    app = optuna_dashboard.wsgi(storage)
    is_ipv6 = ":" in host
    server_class = _ThreadingWSGIServerIPv6 if is_ipv6 else _ThreadingWSGIServer
    return make_server(
        host,
        port,
        app,
        server_class=server_class,
        handler_class=_LoggingRequestHandler,
    )


def serve(
    storage_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    storage: BaseStorage | None = None,
) -> None:
    """Serve optuna-dashboard on a storage until the process is interrupted.

    The call blocks until KeyboardInterrupt, which SIGINT and Ctrl-C raise. It
    then closes the server and re-raises, so that a command line can exit with
    status 130. Start, stop and any warning about a non-loopback ``host`` are
    logged. Requests are logged at DEBUG.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy database URL of the Optuna storage. It is logged with its
        password masked. Unless ``storage`` is given, the storage is opened with
        :func:`search.storage.make_storage`, with the same RDBStorage options as
        the search uses.
    host : str, default="127.0.0.1"
        Address to bind. A name or address other than loopback makes the dashboard
        reachable from other machines.
    port : int, default=8080
        TCP port to listen on. 0 picks a free port, which the start message names.
    storage : optuna.storages.BaseStorage, optional
        Storage to show instead of one opened from ``storage_url``, for example
        one that the caller already opened. The caller keeps ownership of it.

    Raises
    ------
    KeyboardInterrupt
        When the process is interrupted, after the server is closed.
    ValueError
        If ``port`` is outside 0 to 65535.
    DashboardNotInstalledError
        If optuna-dashboard is not installed.
    OSError
        If the address cannot be bound, for example because the port is in use.
    search.storage.StorageError
        If ``storage`` is not given and ``storage_url`` is invalid, unsupported or
        unreachable, or its database driver is not installed.
    sqlalchemy.exc.ArgumentError
        If ``storage`` is given and ``storage_url`` is not a valid SQLAlchemy URL.
    """
    # Checked before the storage is opened, which may create a SQLite file.
    _import_optuna_dashboard()
    owns_storage = storage is None
    if storage is None:
        storage = make_storage(storage_url)
    try:
        masked_url = mask_storage_url(storage_url)
        server = create_server(storage, host, port)
    except BaseException:
        _close_storage(storage, owns_storage)
        raise

    url_host = f"[{host}]" if ":" in host else host
    logger.info(
        "Serving optuna-dashboard for storage %s at http://%s:%d/dashboard",
        masked_url,
        url_host,
        server.server_port,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("Interrupted, so stopping optuna-dashboard.")
        raise
    finally:
        server.server_close()
        _close_storage(storage, owns_storage)
        logger.info("optuna-dashboard stopped.")


def _close_storage(storage: BaseStorage, owns_storage: bool) -> None:
    engine = getattr(storage, "engine", None)
    if owns_storage and engine is not None:
        engine.dispose()
