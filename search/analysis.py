"""pandas views over stored studies: trials, epochs, batches and family comparisons.

Trials come from Optuna's storage API, read once per study without copies
(``get_all_trials(deepcopy=False)``). Epoch and batch rows come from the
``search_epochs`` and ``search_batches`` tables through ``pandas.read_sql``,
so curves never require loading Optuna's trial objects.

Every frame names a study ``study`` and a trial ``number`` (Optuna's trial
number within its study), and carries Optuna's storage-wide ``trial_id``.
Join frames on ``trial_id``: epoch rows of a deleted study whose name was
reused keep the old trial ids.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy
from optuna.distributions import IntDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url

from search.errors import InputError
from search.records import batches_table, epochs_table, get_engine
from search.storage import (
    StorageError,
    close_storage,
    make_storage,
    mask_url,
)

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

PARAM_PREFIX = "params_"
KWARG_PREFIX = "kwargs_"
MULTI_OBJECTIVE = "multi-objective"

TRIAL_COLUMNS = [
    "study",
    "number",
    "trial_id",
    "state",
    "value",
    "direction",
    "metric",
    "family",
    "step_every",
    "seed",
    "epochs",
    "datetime_start",
    "datetime_complete",
    "duration_s",
    "failure_reason",
    "scheduler_kwargs",
]
EPOCH_COLUMNS = [
    "study",
    "trial_id",
    "number",
    "epoch",
    "lr",
    "train_loss",
    "valid_loss",
    "metric",
    "duration_s",
]
BATCH_COLUMNS = [
    "study",
    "trial_id",
    "number",
    "epoch",
    "batch",
    "step",
    "progress",
    "lr",
]
COMPARISON_COLUMNS = [
    "study",
    "family",
    "direction",
    "trials",
    "complete",
    "pruned",
    "failed",
    "best_value",
    "best_number",
    "median",
    "q25",
    "q75",
    "iqr",
    "std",
    "epochs",
    "wall_time_s",
    "best_lr",
    "best_config",
    "best_scheduler_kwargs",
]
SUMMARY_COLUMNS = [
    "study",
    "direction",
    "metric",
    "trials",
    "complete",
    "pruned",
    "failed",
    "running",
    "best_value",
    "best_number",
    "best_family",
    "datetime_start",
]
_TABLE_RENAMES = {"study_name": "study", "trial_number": "number"}


class StudyNotFoundError(InputError):
    """Raised when a study is not in the storage; the message lists the stored ones."""

    def __init__(self, name: str, available: Sequence[str], storage_url: str):
        self.name = name
        self.available = list(available)
        if self.available:
            known = "studies in the storage: " + ", ".join(self.available)
        else:
            known = "the storage contains no study"
        super().__init__(
            f"study {name!r} not found in storage {mask_url(storage_url)}; {known}"
        )


def open_storage(storage_url: str) -> BaseStorage:
    """Open Optuna's storage on an existing database for reading.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.

    Returns
    -------
    optuna.storages.RDBStorage
        Close it with :func:`search.storage.close_storage` when done.

    Raises
    ------
    StorageError
        If the URL is invalid, the database cannot be reached, or a SQLite
        file does not exist. A missing file is an error rather than a new
        empty database, so that a mistyped path is not taken for an empty
        storage.
    """
    try:
        parsed = make_url(storage_url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        parsed = None
    if parsed is not None and parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if (
            database
            and database != ":memory:"
            and not Path(database).expanduser().exists()
        ):
            raise StorageError(
                f"SQLite storage file {database} does not exist; check --storage or "
                "$SEARCH_STORAGE, or create it with: python -m search run --study NAME"
            )
    return make_storage(storage_url)


def study_names(storage_url: str) -> list[str]:
    """Return the names of the studies in the storage, oldest study first.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.

    Returns
    -------
    list of str
    """
    storage = open_storage(storage_url)
    try:
        return [study.study_name for study in storage.get_all_studies()]
    finally:
        close_storage(storage)


def _direction_name(directions: Sequence[StudyDirection]) -> str:
    if len(directions) != 1:
        return MULTI_OBJECTIVE
    return "maximize" if directions[0] == StudyDirection.MAXIMIZE else "minimize"


def _load_trials(
    storage_url: str, studies: str | Iterable[str] | None
) -> list[tuple[Any, list[FrozenTrial]]]:
    """Return ``(FrozenStudy, trials)`` for each requested study, in request order."""
    if isinstance(studies, str):
        studies = [studies]
    storage = open_storage(storage_url)
    try:
        stored = {study.study_name: study for study in storage.get_all_studies()}
        names = list(stored) if studies is None else list(studies)
        for name in names:
            if name not in stored:
                raise StudyNotFoundError(name, list(stored), storage_url)
        loaded = []
        for name in dict.fromkeys(names):
            study_id = storage.get_study_id_from_name(name)
            trials = storage.get_all_trials(study_id, deepcopy=False)
            loaded.append((stored[name], trials))
        return loaded
    finally:
        close_storage(storage)


def _epoch_counts(storage_url: str, names: Sequence[str]) -> dict[int, int]:
    """Return the number of ``search_epochs`` rows of each trial id."""
    engine = get_engine(storage_url)
    if not names or not sqlalchemy.inspect(engine).has_table(epochs_table.name):
        return {}
    table = epochs_table
    query = (
        sqlalchemy.select(table.c.trial_id, sqlalchemy.func.count())
        .where(table.c.study_name.in_(list(names)))
        .group_by(table.c.trial_id)
    )
    with engine.connect() as connection:
        return {trial_id: count for trial_id, count in connection.execute(query)}


def _single_value(trial: FrozenTrial) -> float:
    values = trial.values
    if values is None or len(values) != 1:
        return math.nan
    return float(values[0])


def _kwarg_cell(value: Any) -> Any:
    # Lists (MultiStepLR's milestones) become JSON text, so that every column
    # contains scalars and survives CSV and Parquet.
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return value


def _trial_row(study, trial: FrozenTrial, epoch_counts: dict[int, int]) -> dict:
    attrs = trial.user_attrs
    kwargs = attrs.get("scheduler_kwargs")
    duration = trial.duration
    row = {
        "study": study.study_name,
        "number": trial.number,
        "trial_id": trial._trial_id,  # Optuna exposes the storage id only privately
        "state": trial.state.name,
        "value": _single_value(trial),
        "direction": _direction_name(study.directions),
        "metric": study.user_attrs.get("metric"),
        "family": trial.params.get("scheduler"),
        "step_every": attrs.get("step_every"),
        "seed": attrs.get("seed"),
        "epochs": epoch_counts.get(trial._trial_id, 0),
        "datetime_start": trial.datetime_start,
        "datetime_complete": trial.datetime_complete,
        "duration_s": None if duration is None else duration.total_seconds(),
        "failure_reason": attrs.get("failure_reason"),
        "scheduler_kwargs": None if kwargs is None else json.dumps(kwargs),
    }
    for name, value in trial.params.items():
        row[PARAM_PREFIX + name] = value
    for name, value in (kwargs or {}).items():
        row[KWARG_PREFIX + name] = _kwarg_cell(value)
    return row


def trials_frame(
    storage_url: str, studies: str | Iterable[str] | None = None
) -> pd.DataFrame:
    """Read one row per trial of one or more stored studies.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.
    studies : str or iterable of str, optional
        Study names, all studies of the storage by default.

    Returns
    -------
    pandas.DataFrame
        One row per trial, ordered by study (in request order) and trial
        number. Columns:

        - ``study``, ``number``, ``trial_id``: study name, Optuna's trial
          number within the study and its storage-wide id;
        - ``state``: ``COMPLETE``, ``PRUNED``, ``FAIL``, ``RUNNING`` or ``WAITING``;
        - ``value``: the trial's objective value. Optuna stores the last
          reported value of a pruned trial as its value, and a failed trial has
          NaN. Multi-objective studies have NaN throughout;
        - ``direction`` (``maximize``, ``minimize`` or ``multi-objective``)
          and ``metric`` (the study file's metric, when this package created
          the study): properties of the study, repeated on each row;
        - ``family``: the ``scheduler`` parameter;
        - ``step_every``, ``seed``: the trial's user attributes;
        - ``epochs``: the trial's rows in ``search_epochs``;
        - ``datetime_start``, ``datetime_complete``, ``duration_s``: wall
          time, NaN or NaT while a trial runs;
        - ``failure_reason``: the reason recorded when training diverged;
        - ``scheduler_kwargs``: the torch scheduler's keyword arguments as
          JSON text;
        - ``params_NAME``: one column per Optuna parameter (``params_lr``,
          ``params_StepLR.gamma``, ...). Integer parameters use pandas'
          nullable ``Int64`` dtype;
        - ``kwargs_NAME``: one column per scheduler keyword argument
          (``kwargs_gamma``, ``kwargs_total_steps``, ...), lists as JSON text.

    Raises
    ------
    StudyNotFoundError
        If a requested study is not in the storage.
    StorageError
        If the storage cannot be opened.
    """
    loaded = _load_trials(storage_url, studies)
    counts = _epoch_counts(storage_url, [study.study_name for study, _ in loaded])
    rows = []
    integer_params: set[str] = set()
    kwarg_types: dict[str, set[type]] = {}
    for study, trials in loaded:
        for trial in trials:
            row = _trial_row(study, trial, counts)
            rows.append(row)
            for name, distribution in trial.distributions.items():
                if isinstance(distribution, IntDistribution):
                    integer_params.add(PARAM_PREFIX + name)
            for column, value in row.items():
                if column.startswith(KWARG_PREFIX):
                    kwarg_types.setdefault(column, set()).add(type(value))
    frame = pd.DataFrame(rows)
    if frame.empty:
        frame = pd.DataFrame(columns=TRIAL_COLUMNS)
    params = sorted(c for c in frame.columns if c.startswith(PARAM_PREFIX))
    kwargs = sorted(c for c in frame.columns if c.startswith(KWARG_PREFIX))
    frame = frame[TRIAL_COLUMNS + params + kwargs]
    return _set_trial_dtypes(frame, integer_params, kwarg_types)


def _set_trial_dtypes(
    frame: pd.DataFrame, integer_params: set[str], kwarg_types: dict[str, set[type]]
) -> pd.DataFrame:
    frame = frame.astype(
        {
            "number": "int64",
            "trial_id": "int64",
            "epochs": "int64",
            "value": "float64",
            "duration_s": "float64",
            "seed": "Int64",
        }
    )
    for column in ("datetime_start", "datetime_complete"):
        frame[column] = pd.to_datetime(frame[column])
    for column in integer_params:
        frame[column] = frame[column].astype("Int64")
    # Keyword arguments missing from other families' trials are NA, which turns
    # integers into floats and booleans into objects unless the dtype is nullable.
    for column, types in kwarg_types.items():
        if types == {bool}:
            frame[column] = frame[column].astype("boolean")
        elif types == {int}:
            frame[column] = frame[column].astype("Int64")
    return frame


def _read_table(
    storage_url: str,
    table: sqlalchemy.Table,
    studies: str | Iterable[str] | None,
    numbers: Iterable[int] | None,
) -> pd.DataFrame | None:
    engine = get_engine(storage_url)
    if not sqlalchemy.inspect(engine).has_table(table.name):
        return None
    query = sqlalchemy.select(*[c for c in table.columns if c.name != "id"])
    if isinstance(studies, str):
        studies = [studies]
    if studies is not None:
        query = query.where(table.c.study_name.in_(list(studies)))
    if numbers is not None:
        query = query.where(table.c.trial_number.in_([int(n) for n in numbers]))
    order = [table.c.study_name, table.c.trial_number, table.c.trial_id, table.c.epoch]
    if table is batches_table:
        order.append(table.c.batch)
    with engine.connect() as connection:
        frame = pd.read_sql(query.order_by(*order), connection)
    return frame.rename(columns=_TABLE_RENAMES)


def epochs_frame(
    storage_url: str,
    studies: str | Iterable[str] | None = None,
    numbers: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Read one row per finished epoch from ``search_epochs`` with SQL.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.
    studies : str or iterable of str, optional
        Study names, all studies by default. Unknown names give no rows.
    numbers : iterable of int, optional
        Trial numbers to keep, all trials by default.

    Returns
    -------
    pandas.DataFrame
        Columns ``study``, ``trial_id``, ``number``, ``epoch`` (1 for the
        first epoch), ``lr`` (parameter group 0's rate at the epoch's first
        batch), ``train_loss``, ``valid_loss``, ``metric`` (the study metric)
        and ``duration_s``. Values that were NaN or infinite during training
        are stored as NULL and read as NaN. Rows are ordered by study, trial
        and epoch. The frame is empty when the table does not exist.
    """
    frame = _read_table(storage_url, epochs_table, studies, numbers)
    if frame is None:
        return pd.DataFrame(columns=EPOCH_COLUMNS)
    return frame[EPOCH_COLUMNS]


def batches_frame(
    storage_url: str,
    studies: str | Iterable[str] | None = None,
    numbers: Iterable[int] | None = None,
) -> pd.DataFrame:
    """Read the learning rate of every training batch from ``search_batches``.

    Only batch-stepped families (OneCycleLR, CyclicLR) have batch rows.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.
    studies : str or iterable of str, optional
        Study names, all studies by default. Unknown names give no rows.
    numbers : iterable of int, optional
        Trial numbers to keep, all trials by default.

    Returns
    -------
    pandas.DataFrame
        Columns ``study``, ``trial_id``, ``number``, ``epoch`` (from 1),
        ``batch`` (from 0 within the epoch), ``step`` (from 0 within the
        trial), ``progress`` (training progress in epochs: batch ``b`` of
        ``n`` in epoch ``e`` is at ``e - 1 + b / n``) and ``lr``.
    """
    frame = _read_table(storage_url, batches_table, studies, numbers)
    if frame is None or frame.empty:
        return pd.DataFrame(columns=BATCH_COLUMNS)
    frame["step"] = frame.groupby("trial_id").cumcount()
    per_epoch = frame.groupby(["trial_id", "epoch"])["batch"].transform("count")
    frame["progress"] = frame["epoch"] - 1 + frame["batch"] / per_epoch
    return frame[BATCH_COLUMNS]


def _sort_best_first(frame: pd.DataFrame, column: str, direction: str) -> pd.DataFrame:
    return frame.sort_values(
        column, ascending=direction != "maximize", na_position="last", kind="stable"
    )


def best_trials(
    trials: pd.DataFrame, n: int = 1, per_family: bool = True
) -> pd.DataFrame:
    """Select the best completed trials of each study, or of each study and family.

    Parameters
    ----------
    trials : pandas.DataFrame
        A frame from :func:`trials_frame`.
    n : int, default=1
        Trials to keep per group.
    per_family : bool, default=True
        Group by study and family. False keeps the best ``n`` of each study.

    Returns
    -------
    pandas.DataFrame
        Rows of ``trials`` in state COMPLETE, best first in each group by
        the study's direction. Multi-objective studies give no rows.
    """
    keys = ["study", "family"] if per_family else ["study"]
    complete = trials[
        (trials["state"] == TrialState.COMPLETE.name)
        & (trials["direction"] != MULTI_OBJECTIVE)
    ]
    parts = []
    for _, group in complete.groupby(keys, sort=False, dropna=False):
        direction = group["direction"].iloc[0]
        parts.append(_sort_best_first(group, "value", direction).head(n))
    if not parts:
        return trials.iloc[0:0]
    return pd.concat(parts)


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_config(trial: pd.Series) -> str:
    """Format a trial's parameters other than the family as ``lr=0.1 gamma=0.5``.

    Parameters
    ----------
    trial : pandas.Series
        A row of :func:`trials_frame`.

    Returns
    -------
    str
        ``NAME=VALUE`` pairs with the ``FAMILY.`` prefix removed and floats
        rounded to 4 significant digits, ``lr`` first.
    """
    parts = []
    for column, value in trial.items():
        if not column.startswith(PARAM_PREFIX) or pd.isna(value):
            continue
        name = column.removeprefix(PARAM_PREFIX)
        if name == "scheduler":
            continue
        parts.append(
            (name != "lr", f"{name.split('.', 1)[-1]}={_format_number(value)}")
        )
    return " ".join(text for _, text in sorted(parts, key=lambda part: part[0]))


def _quantile(values: pd.Series, q: float) -> float:
    return float(values.quantile(q)) if len(values) else math.nan


def _family_row(study: str, family: Any, direction: str, group: pd.DataFrame) -> dict:
    states = group["state"]
    complete = group[states == TrialState.COMPLETE.name]
    values = complete["value"].dropna()
    row = {
        "study": study,
        "family": family,
        "direction": direction,
        "trials": len(group),
        "complete": len(complete),
        "pruned": int((states == TrialState.PRUNED.name).sum()),
        "failed": int((states == TrialState.FAIL.name).sum()),
        "best_value": math.nan,
        "best_number": pd.NA,
        "median": float(values.median()) if len(values) else math.nan,
        "q25": _quantile(values, 0.25),
        "q75": _quantile(values, 0.75),
        "iqr": _quantile(values, 0.75) - _quantile(values, 0.25),
        "std": float(values.std()) if len(values) > 1 else math.nan,
        "epochs": int(group["epochs"].sum()),
        "wall_time_s": float(group["duration_s"].sum()),
        "best_lr": math.nan,
        "best_config": None,
        "best_scheduler_kwargs": None,
    }
    if len(values) and direction != MULTI_OBJECTIVE:
        best = _sort_best_first(
            complete.dropna(subset=["value"]), "value", direction
        ).iloc[0]
        row["best_value"] = float(best["value"])
        row["best_number"] = int(best["number"])
        row["best_lr"] = best.get(PARAM_PREFIX + "lr", math.nan)
        row["best_config"] = format_config(best)
        row["best_scheduler_kwargs"] = best["scheduler_kwargs"]
    return row


def compare_families(trials: pd.DataFrame) -> pd.DataFrame:
    """Compare the schedule families of each study: counts, values, cost and best trial.

    Parameters
    ----------
    trials : pandas.DataFrame
        A frame from :func:`trials_frame`, of one or more studies.

    Returns
    -------
    pandas.DataFrame
        One row per study and family, the studies in the order of ``trials``.
        In each study the best family comes first, by ``best_value`` in the
        study's direction, then by ``median``. Families without a completed
        trial come last. Columns:

        - ``study``, ``family``, ``direction``;
        - ``trials``, ``complete``, ``pruned``, ``failed``: trial counts by state;
        - ``best_value``, ``best_number``: the best completed trial;
        - ``median``, ``q25``, ``q75``, ``iqr`` (``q75 - q25``) and ``std``
          (sample standard deviation, NaN below 2 trials) of completed values;
        - ``epochs``: epochs trained by all trials of the family;
        - ``wall_time_s``: summed wall time of the family's finished trials;
        - ``best_lr``, ``best_config`` (see :func:`format_config`) and
          ``best_scheduler_kwargs`` (JSON text) of the best trial.
    """
    rows = []
    for study, study_trials in trials.groupby("study", sort=False):
        direction = study_trials["direction"].iloc[0]
        family_rows = [
            _family_row(study, family, direction, group)
            for family, group in study_trials.groupby(
                "family", sort=False, dropna=False
            )
        ]
        ascending = direction != "maximize"
        family_rows.sort(key=lambda row: _rank_key(row, ascending))
        rows.extend(family_rows)
    frame = pd.DataFrame(rows, columns=COMPARISON_COLUMNS)
    return frame.astype(
        {
            "best_number": "Int64",
            "best_value": "float64",
            "best_lr": "float64",
            "median": "float64",
        }
    )


def rank_families(comparison: pd.DataFrame) -> pd.DataFrame:
    """Rank the rows of several studies' comparisons together, best family first.

    Parameters
    ----------
    comparison : pandas.DataFrame
        A frame from :func:`compare_families` of studies that share their
        direction, so that their values are comparable.

    Returns
    -------
    pandas.DataFrame
        The same rows sorted as :func:`compare_families` sorts one study's
        families: by ``best_value`` in the direction, then by ``median``, rows
        without a completed trial last. Rows still tied keep their order.

    Raises
    ------
    ValueError
        If the rows have more than one direction, or are multi-objective.
    """
    directions = comparison["direction"].unique().tolist()
    if len(directions) > 1 or directions == [MULTI_OBJECTIVE]:
        raise ValueError(
            f"cannot rank families across directions {directions}; "
            "rank each study on its own"
        )
    if comparison.empty:
        return comparison
    ascending = directions[0] != "maximize"
    keys = [_rank_key(row, ascending) for row in comparison.to_dict(orient="records")]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return comparison.iloc[order].reset_index(drop=True)


def _rank_key(row: dict, ascending: bool) -> tuple:
    def ordered(value: float) -> float:
        if math.isnan(value):
            return math.inf
        return value if ascending else -value

    return (ordered(row["best_value"]), ordered(row["median"]))


def summarize_studies(storage_url: str) -> pd.DataFrame:
    """Summarize every study of the storage: trial counts by state and the best trial.

    Parameters
    ----------
    storage_url : str
        SQLAlchemy URL of the database.

    Returns
    -------
    pandas.DataFrame
        One row per study, oldest first, with the columns ``study``,
        ``direction``, ``metric``, ``trials``, ``complete``, ``pruned``,
        ``failed``, ``running``, ``best_value``, ``best_number``,
        ``best_family`` and ``datetime_start`` (of the first trial).
    """
    rows = []
    storage = open_storage(storage_url)
    try:
        for study in storage.get_all_studies():
            study_id = storage.get_study_id_from_name(study.study_name)
            trials = storage.get_all_trials(study_id, deepcopy=False)
            best = None
            if (
                any(t.state == TrialState.COMPLETE for t in trials)
                and len(study.directions) == 1
            ):
                # Optuna's choice, so that among trials tied on the best value the
                # row names Study.best_trial. Which tied trial that is depends on
                # the database's sort.
                best = storage.get_best_trial(study_id)
            rows.append(_summary_row(study, trials, best))
    finally:
        close_storage(storage)
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["datetime_start"] = pd.to_datetime(frame["datetime_start"])
    return frame.astype({"best_number": "Int64", "best_value": "float64"})


def _summary_row(study, trials: list[FrozenTrial], best: FrozenTrial | None) -> dict:
    states = [trial.state for trial in trials]
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    return {
        "study": study.study_name,
        "direction": _direction_name(study.directions),
        "metric": study.user_attrs.get("metric"),
        "trials": len(trials),
        "complete": states.count(TrialState.COMPLETE),
        "pruned": states.count(TrialState.PRUNED),
        "failed": states.count(TrialState.FAIL),
        "running": states.count(TrialState.RUNNING),
        "best_value": math.nan if best is None else _single_value(best),
        "best_number": pd.NA if best is None else best.number,
        "best_family": None if best is None else best.params.get("scheduler"),
        "datetime_start": min(starts) if starts else None,
    }
