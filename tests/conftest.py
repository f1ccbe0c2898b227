"""Shared fixtures: storages on real SQLite, PostgreSQL and MariaDB, tiny studies.

Server tests use a fresh database per test on the servers on loopback. When a
server is missing they skip with the reason, unless the environment variable
CI is set, where a missing server is a failure.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from stored_study import stored_study  # noqa: F401  (a session fixture)

REPO = Path(__file__).resolve().parent.parent
STUDIES = REPO / "studies"

POSTGRESQL_ADMIN = os.environ.get(
    "SEARCH_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN = os.environ.get(
    "SEARCH_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


def _server_missing(name: str, url: str, error: Exception) -> None:
    server_url = sqlalchemy.engine.make_url(url).render_as_string()
    message = (
        f"{name} server not reachable at {server_url}"
        f" ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI needs it running (see DEVELOPERS.md)")
    pytest.skip(message)


def _fresh_database(admin_url: str, name: str):
    engine = sqlalchemy.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    database = f"search_test_{uuid.uuid4().hex[:12]}"
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    except sqlalchemy.exc.OperationalError as error:
        engine.dispose()
        _server_missing(name, admin_url, error)
    url = sqlalchemy.engine.make_url(admin_url).set(database=database)
    return engine, database, url.render_as_string(hide_password=False)


def _drop_database(engine, database: str, backend: str) -> None:
    from search.records import dispose_engines

    dispose_engines()
    with engine.connect() as connection:
        if backend == "postgresql":
            connection.execute(
                sqlalchemy.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            )
        else:
            connection.execute(sqlalchemy.text(f"DROP DATABASE IF EXISTS {database}"))
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def postgresql_url():
    engine, database, url = _fresh_database(POSTGRESQL_ADMIN, "PostgreSQL")
    yield url
    _drop_database(engine, database, "postgresql")


@pytest.fixture
def mysql_url():
    engine, database, url = _fresh_database(MYSQL_ADMIN, "MariaDB")
    yield url
    _drop_database(engine, database, "mysql")


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage_url(request) -> str:
    """A fresh, empty storage on each of the three databases."""
    return request.getfixturevalue(f"{request.param}_url")


TINY_STUDY = """
name = "{name}"
description = "tiny test study"
direction = "maximize"
metric = "valid_acc"
n_trials = {n_trials}
seed = {seed}

[sampler]
name = "{sampler}"

[pruner]
name = "{pruner}"

[data]
dataset = "digits"
valid_fraction = 0.2

[model]
kind = "mlp"
hidden_units = [16]

[training]
max_epochs = {max_epochs}
batch_size = {batch_size}
optimizer = "{optimizer}"

[lr]
low = 0.01
high = 0.2
log = true

[schedulers]
types = {types}
"""


def tiny_study_text(
    *,
    name="tiny",
    n_trials=2,
    seed=0,
    sampler="tpe",
    pruner="none",
    max_epochs=2,
    batch_size=64,
    optimizer="sgd",
    types=("StepLR",),
    extra="",
) -> str:
    """Return the TOML text of a fast study on the digits; ``extra`` is appended."""
    text = TINY_STUDY.format(
        name=name,
        n_trials=n_trials,
        seed=seed,
        sampler=sampler,
        pruner=pruner,
        max_epochs=max_epochs,
        batch_size=batch_size,
        optimizer=optimizer,
        types="[" + ", ".join(f'"{t}"' for t in types) + "]",
    )
    return text + extra


@pytest.fixture
def write_study(tmp_path):
    """Write a tiny study file and return its path: ``write_study(**options)``."""

    def write(**options) -> Path:
        path = tmp_path / f"{options.get('name', 'tiny')}.toml"
        path.write_text(tiny_study_text(**options), encoding="utf-8")
        return path

    return write
