"""Helpers shared by the benchmark sections: study files, databases, statistics."""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

REPO = Path(__file__).resolve().parent.parent
STUDIES = REPO / "studies"
POSTGRESQL_ADMIN = os.environ.get(
    "SEARCH_BENCH_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)

# One fixed StepLR configuration of the steplr study, so that every trial does
# the work of the hand-written loop. The median pruner is consulted after every
# epoch, with its storage reads, but n_warmup_steps = max_epochs - 1 lets it
# prune at the last epoch only, so every trial trains all epochs.
FIXED_STUDY = """
name = "{name}"
description = "benchmark: one StepLR configuration, pruning checked every epoch"
direction = "maximize"
metric = "valid_acc"
n_trials = 1000
seed = 0
lr = {lr}

[sampler]
name = "tpe"

[pruner]
name = "{pruner}"
{pruner_options}

[data]
dataset = "digits"
valid_fraction = 0.2

[model]
kind = "mlp"
hidden_units = [128]

[training]
max_epochs = {max_epochs}
batch_size = 64
optimizer = "sgd"
momentum = 0.9

[schedulers]
types = ["StepLR"]

[schedulers.StepLR]
step_size = {step_size}
gamma = {gamma}
"""

FIXED_LR = 0.03
FIXED_STEP_SIZE = 7
FIXED_GAMMA = 0.6


def write_fixed_study(
    folder: Path, name: str, max_epochs: int = 20, pruner: str = "median"
) -> Path:
    """Write the fixed-configuration study file and return its path."""
    options = ""
    if pruner == "median":
        options = f"n_startup_trials = 5\nn_warmup_steps = {max_epochs - 1}"
    path = folder / f"{name}.toml"
    path.write_text(
        FIXED_STUDY.format(
            name=name,
            pruner=pruner,
            pruner_options=options,
            max_epochs=max_epochs,
            lr=FIXED_LR,
            step_size=FIXED_STEP_SIZE,
            gamma=FIXED_GAMMA,
        ),
        encoding="utf-8",
    )
    return path


def write_variant(
    source: Path, folder: Path, name: str, pruner_table: str | None = None
) -> Path:
    """Copy a study file under a new name, with another ``[pruner]`` table if given."""
    text = source.read_text(encoding="utf-8")
    header, _, tables = text.partition("\n[")
    header = re.sub(r'(?m)^name = ".*"\n', "", header)
    text = f'name = "{name}"\n{header}\n[{tables}'
    if pruner_table is not None:
        text = re.sub(
            r"(?ms)^\[pruner\]\n.*?(?=^\[)", pruner_table + "\n\n", text, count=1
        )
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def postgresql_database() -> Iterator[str]:
    """Create a scratch PostgreSQL database, yield its URL and drop it afterwards."""
    admin = sqlalchemy.create_engine(POSTGRESQL_ADMIN, isolation_level="AUTOCOMMIT")
    database = f"search_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))
    url = sqlalchemy.engine.make_url(POSTGRESQL_ADMIN).set(database=database)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        from search.records import dispose_engines

        dispose_engines()
        with admin.connect() as connection:
            connection.execute(
                sqlalchemy.text(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            )
        admin.dispose()


def median(values) -> float:
    """Return the median, NaN for no values."""
    values = list(values)
    return statistics.median(values) if values else float("nan")


def unique_name(prefix: str) -> str:
    """Return a study name that no earlier run used."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
