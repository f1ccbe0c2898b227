"""The per-epoch and per-batch tables (SQLAlchemy Core), their writes and reads.

``search_epochs`` has one row per finished epoch of every trial, written while
the trial trains, so pruned, failed and interrupted trials keep their epochs.
``search_batches`` has the learning rate of every training batch of the
batch-stepped families (OneCycleLR, CyclicLR).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from search.storage import connect_error, engine_kwargs

logger = logging.getLogger(__name__)

metadata = MetaData()

epochs_table = Table(
    "search_epochs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False),
    Column("trial_id", Integer, nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("lr", Double),
    Column("train_loss", Double),
    Column("valid_loss", Double),
    Column("metric", Double),
    Column("duration_s", Double),
    UniqueConstraint("trial_id", "epoch", name="uq_search_epochs_trial_epoch"),
    Index("ix_search_epochs_study_trial", "study_name", "trial_number"),
)

batches_table = Table(
    "search_batches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_name", String(512), nullable=False),
    Column("trial_id", Integer, nullable=False),
    Column("trial_number", Integer, nullable=False),
    Column("epoch", Integer, nullable=False),
    Column("batch", Integer, nullable=False),
    Column("lr", Double, nullable=False),
    Index("ix_search_batches_study_trial", "study_name", "trial_number"),
)


@dataclass(frozen=True)
class EpochRecord:
    """One finished epoch of a trial. ``epoch`` counts from 1, as skorch's history."""

    study_name: str
    trial_id: int
    trial_number: int
    epoch: int
    lr: float | None
    train_loss: float | None
    valid_loss: float | None
    metric: float | None
    duration_s: float | None


def _finite(value) -> float | None:
    # MySQL rejects NaN and SQLite turns it into NULL: store NULL everywhere.
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


_engines: dict[str, sqlalchemy.Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str) -> sqlalchemy.Engine:
    """Return this process's engine for ``url``, created on first use."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
            _engines[url] = engine
        return engine


def dispose_engines() -> None:
    """Close every pooled connection of this process's record engines."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def create_tables(url: str) -> None:
    """Create the per-epoch tables if they are missing.

    Several workers may start at once on an empty database, so a concurrent
    creation that loses the race is tolerated and the tables are checked again.
    """
    engine = get_engine(url)
    try:
        metadata.create_all(engine, checkfirst=True)
    except (
        sqlalchemy.exc.ProgrammingError,
        sqlalchemy.exc.IntegrityError,
        sqlalchemy.exc.OperationalError,
    ) as error:
        inspector = sqlalchemy.inspect(engine)
        if not all(inspector.has_table(t.name) for t in metadata.sorted_tables):
            raise connect_error(url, error) from error
        logger.debug("per-epoch tables were created by another worker: %s", error)


def _epoch_row(record: EpochRecord) -> dict:
    return {
        "study_name": record.study_name,
        "trial_id": record.trial_id,
        "trial_number": record.trial_number,
        "epoch": record.epoch,
        "lr": _finite(record.lr),
        "train_loss": _finite(record.train_loss),
        "valid_loss": _finite(record.valid_loss),
        "metric": _finite(record.metric),
        "duration_s": _finite(record.duration_s),
    }


def _batch_rows(record: EpochRecord, batch_lrs: Sequence[float]) -> list[dict]:
    return [
        {
            "study_name": record.study_name,
            "trial_id": record.trial_id,
            "trial_number": record.trial_number,
            "epoch": record.epoch,
            "batch": index,
            "lr": float(lr),
        }
        for index, lr in enumerate(batch_lrs)
    ]


def write_epoch(url: str, record: EpochRecord, batch_lrs: Sequence[float] = ()) -> None:
    """Insert one epoch row and, for batch-stepped families, its batch rates."""
    write_epochs(url, [(record, batch_lrs)])


def write_epochs(
    url: str, epochs: Sequence[tuple[EpochRecord, Sequence[float]]]
) -> None:
    """Insert epoch rows, each with its batch rates, in one transaction and in order."""
    rows = [_epoch_row(record) for record, _ in epochs]
    batch_rows = [row for record, lrs in epochs for row in _batch_rows(record, lrs)]
    if not rows:
        return
    with get_engine(url).begin() as connection:
        connection.execute(epochs_table.insert(), rows)
        if batch_rows:
            connection.execute(batches_table.insert(), batch_rows)


def _select(table: Table, study_names: Iterable[str] | None, trial_numbers=None):
    query = sqlalchemy.select(*[c for c in table.columns if c.name != "id"])
    if study_names is not None:
        query = query.where(table.c.study_name.in_(list(study_names)))
    if trial_numbers is not None:
        query = query.where(table.c.trial_number.in_(list(trial_numbers)))
    order = [table.c.study_name, table.c.trial_number, table.c.epoch]
    if table is batches_table:
        order.append(table.c.batch)
    return query.order_by(*order)


def read_rows(
    url: str,
    table: Table,
    study_names: Iterable[str] | None = None,
    trial_numbers: Iterable[int] | None = None,
) -> list[dict]:
    """Return the rows of ``table`` for the given studies and trials as dicts."""
    engine = get_engine(url)
    if not sqlalchemy.inspect(engine).has_table(table.name):
        return []
    with engine.connect() as connection:
        result = connection.execute(_select(table, study_names, trial_numbers))
        return [dict(row._mapping) for row in result]
