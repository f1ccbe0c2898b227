"""Load and validate a study file (TOML) into an immutable :class:`StudySpec`.

Every problem in a file is collected and raised together in one
:class:`SpecError`, each line reading ``FILE: KEY: what is wrong (got VALUE);
what to do``. Nothing here touches a storage or imports torch.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import inspect
import logging
import math
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from search.errors import InputError
from search.params import Choices, Fixed, Param, Range, check_value, parse_param
from search.schedules import CONSTANT, FAMILIES, Argument

logger = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
# Study-file names of the classes in optuna.samplers and optuna.pruners.
SAMPLER_CLASSES = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
}
PRUNER_CLASSES = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
}
SAMPLERS = tuple(SAMPLER_CLASSES)
PRUNERS = tuple(PRUNER_CLASSES)
OPTIMIZERS = ("sgd", "adam", "adamw")
BUILTIN_MODELS = ("mlp", "cnn")
DATASETS = ("digits", "mnist", "iris", "wine", "breast_cancer", "diabetes")
TASKS = ("classification", "regression")
CLASSIFICATION_METRICS = ("valid_acc", "valid_loss", "train_loss")
REGRESSION_METRICS = ("valid_loss", "train_loss")
LOSS_METRICS = ("valid_loss", "train_loss")
# numpy's RandomState, which Optuna's samplers and scikit-learn's split use,
# takes seeds in [0, 2**32 - 1]. Each trial adds its number to the study seed,
# so the study seed stays below 2**31 to leave room for the trial numbers.
MAX_SEED = 2**31 - 1
# Optuna stores study names in a VARCHAR(512) column.
MAX_NAME_LENGTH = 512
USER_MODEL_PATTERN = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")

TOP_KEYS = (
    "name",
    "description",
    "direction",
    "metric",
    "n_trials",
    "seed",
    "sampler",
    "pruner",
    "data",
    "model",
    "training",
    "lr",
    "schedulers",
)
DATA_KEYS = ("dataset", "path", "target", "valid_fraction", "task")
MODEL_KEYS = ("kind", "hidden_units", "dropout", "channels", "options")
TRAINING_KEYS = ("max_epochs", "batch_size", "optimizer", "momentum", "weight_decay")


class SpecError(InputError):
    """Raised when a study file is invalid; ``problems`` lists every problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True)
class ComponentSpec:
    """A sampler or pruner: its name and the keyword arguments given to it."""

    name: str
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class DataSpec:
    """The ``[data]`` table. ``base_dir`` is the study file's folder.

    A relative ``path`` is read from ``base_dir``, so that a study file finds
    its data wherever it is run from.
    """

    dataset: str | None = "digits"
    path: str | None = None
    target: str | None = None
    valid_fraction: float = 0.2
    task: str | None = None
    base_dir: str | None = None

    def resolved_path(self) -> Path | None:
        """Return the data file's path, relative ones joined to ``base_dir``."""
        if self.path is None:
            return None
        path = Path(self.path).expanduser()
        if not path.is_absolute() and self.base_dir is not None:
            path = Path(self.base_dir) / path
        return path


@dataclass(frozen=True)
class ModelSpec:
    kind: str = "mlp"
    hidden_units: tuple[int, ...] = (128,)
    dropout: float = 0.0
    channels: tuple[int, ...] = (16, 32)
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class TrainingSpec:
    max_epochs: int = 20
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0


@dataclass(frozen=True)
class FamilySpec:
    """One schedule family of a study with the value of each of its arguments."""

    name: str
    params: Mapping[str, Param]


@dataclass(frozen=True)
class StudySpec:
    """A validated study file."""

    name: str
    description: str
    direction: str
    metric: str
    n_trials: int
    seed: int
    sampler: ComponentSpec
    pruner: ComponentSpec
    data: DataSpec
    model: ModelSpec
    training: TrainingSpec
    lr: Param
    families: tuple[FamilySpec, ...]
    path: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def family_names(self) -> list[str]:
        return [family.name for family in self.families]

    def family(self, name: str) -> FamilySpec:
        for family in self.families:
            if family.name == name:
                return family
        raise KeyError(name)


class _Problems:
    """Collects problems as ``(key, what, value, fix)`` and formats them."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[tuple] = []
        self.warnings: list[tuple] = []

    def add(self, key: str, what: str, value: Any, fix: str) -> None:
        self.items.append((key, what, value, fix))

    def warn(self, key: str, what: str, value: Any, fix: str) -> None:
        self.warnings.append((key, what, value, fix))

    def unknown_keys(self, table: Mapping, valid: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key in valid:
                continue
            close = difflib.get_close_matches(key, valid, n=1)
            fix = (
                f"did you mean '{close[0]}'?"
                if close
                else "valid keys: " + ", ".join(valid)
            )
            self.add(f"{prefix}{key}", "unknown key", key, fix)

    def lines(self, items: list[tuple] | None = None) -> list[str]:
        return [
            f"{self.source}: {key}: {what} (got {_show(value)}); {fix}"
            for key, what, value, fix in (self.items if items is None else items)
        ]


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    return str(value)


def load_spec(path: str | Path, name: str | None = None) -> StudySpec:
    """Load a study file and validate it.

    Parameters
    ----------
    path : str or Path
        The TOML study file.
    name : str, optional
        Overrides the file's ``name`` key (and its stem, the default).

    Raises
    ------
    SpecError
        If the file cannot be read or parsed, or has any invalid value.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"{path}: study file not found; check the path"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError([f"{path}: cannot read the study file ({error})"]) from None
    spec = parse_spec(text, source=str(path), default_name=name or path.stem)
    data = dataclasses.replace(spec.data, base_dir=str(path.resolve().parent))
    return dataclasses.replace(spec, data=data)


def parse_spec(
    text: str, source: str = "<study>", default_name: str = "study"
) -> StudySpec:
    """Parse and validate the TOML text of a study file; see :func:`load_spec`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SpecError([_toml_error_line(error, source)]) from None
    problems = _Problems(source)
    spec = _build(raw, problems, source, default_name)
    if problems.items:
        raise SpecError(problems.lines())
    for line in problems.lines(problems.warnings):
        logger.warning("%s", line)
    return spec


TOML_POSITION = re.compile(
    r"\s*\(at line (\d+), column (\d+)\)$|\s*\(at end of document\)$"
)


def _toml_error_line(error: tomllib.TOMLDecodeError, source: str) -> str:
    # Python 3.14 sets lineno and colno. Older versions (seen on 3.11) only
    # append "(at line L, column C)" or "(at end of document)" to the message.
    message = str(error)
    line, column = getattr(error, "lineno", None), getattr(error, "colno", None)
    match = TOML_POSITION.search(message)
    if match:
        message = message[: match.start()]
        if line is None and match.group(1):
            line, column = int(match.group(1)), int(match.group(2))
    message = getattr(error, "msg", message)
    where = f"line {line}, column {column}" if line else "the end of the file"
    return f"{source}: invalid TOML at {where}: {message}; fix the syntax there"


def _get(
    table: Mapping,
    key: str,
    kind: str,
    default: Any,
    problems: _Problems,
    prefix: str = "",
) -> Any:
    if key not in table:
        return default
    value = table[key]
    scratch: list = []
    if not check_value(value, kind, prefix + key, scratch):
        for item in scratch:
            problems.add(*item)
        return default
    return value


def _choice(
    table: Mapping,
    key: str,
    valid: tuple[str, ...],
    default: str,
    problems: _Problems,
    prefix: str = "",
    what: str = "",
) -> str:
    value = _get(table, key, "str", default, problems, prefix)
    if value not in valid:
        close = difflib.get_close_matches(str(value), valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        problems.add(
            prefix + key,
            f"unknown {what or key}",
            value,
            f"{hint}valid: {', '.join(valid)}",
        )
        return default
    return value


def _table(raw: Mapping, key: str, problems: _Problems) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.add(key, "must be a table", value, f"write it as [{key}]")
        return {}
    return value


def _build(raw: dict, problems: _Problems, source: str, default_name: str) -> StudySpec:
    problems.unknown_keys(raw, TOP_KEYS, "")

    name = _get(raw, "name", "str", default_name, problems)
    if not name.strip():
        problems.add("name", "must not be empty", name, "give the study a name")
    elif len(name) > MAX_NAME_LENGTH:
        problems.add(
            "name", f"is longer than {MAX_NAME_LENGTH} characters", name, "shorten it"
        )
    description = _get(raw, "description", "str", "", problems)
    n_trials = _get(raw, "n_trials", "int", 20, problems)
    if n_trials < 1:
        problems.add(
            "n_trials", "must be at least 1", n_trials, "set n_trials = 1 or more"
        )
    seed = _get(raw, "seed", "int", 0, problems)
    if not 0 <= seed <= MAX_SEED:
        problems.add(
            "seed", f"must be in [0, {MAX_SEED}]", seed, "use a seed such as 0"
        )
        seed = 0

    data = _build_data(_table(raw, "data", problems), problems)
    model = _build_model(_table(raw, "model", problems), problems)
    training = _build_training(_table(raw, "training", problems), problems)
    sampler = _build_component(
        raw, "sampler", SAMPLER_CLASSES, "tpe", training, seed, problems
    )
    pruner = _build_component(
        raw, "pruner", PRUNER_CLASSES, "median", training, seed, problems
    )

    task = data.task or (
        "regression" if data.dataset == "diabetes" else "classification"
    )
    metrics = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    default_metric = "valid_acc" if task == "classification" else "valid_loss"
    metric = _choice(raw, "metric", metrics, default_metric, problems, what="metric")
    default_direction = "minimize" if metric in LOSS_METRICS else "maximize"
    direction = _choice(raw, "direction", DIRECTIONS, default_direction, problems)
    # A direction against the metric is legal (a study may look for the worst
    # schedules), so it is a warning, logged when the file is loaded.
    if metric in LOSS_METRICS and direction == "maximize":
        problems.warn(
            "direction",
            f"maximizes the loss metric {metric}",
            direction,
            'use direction = "minimize" unless you want the worst trials',
        )
    if metric == "valid_acc" and direction == "minimize":
        problems.warn(
            "direction",
            "minimizes the accuracy metric valid_acc",
            direction,
            'use direction = "maximize" unless you want the worst trials',
        )

    lr = _build_lr(raw, problems)
    families = _build_families(
        _table(raw, "schedulers", problems), training, data, lr, problems
    )

    return StudySpec(
        name=name,
        description=description,
        direction=direction,
        metric=metric,
        n_trials=n_trials,
        seed=seed,
        sampler=sampler,
        pruner=pruner,
        data=data,
        model=model,
        training=training,
        lr=lr,
        families=tuple(families),
        path=source,
        warnings=tuple(problems.lines(problems.warnings)),
    )


def _build_component(
    raw: dict,
    key: str,
    classes: Mapping[str, str],
    default: str,
    training: TrainingSpec,
    seed: int,
    problems: _Problems,
) -> ComponentSpec:
    table = _table(raw, key, problems)
    name = _choice(
        table, "name", tuple(classes), default, problems, f"{key}.", what=key
    )
    options = {k: v for k, v in table.items() if k != "name"}
    if "name" not in table or name == table["name"]:
        _check_component(key, name, classes[name], options, training, seed, problems)
    return ComponentSpec(name, MappingProxyType(options))


def _check_component(
    key: str,
    name: str,
    class_name: str,
    options: dict,
    training: TrainingSpec,
    seed: int,
    problems: _Problems,
) -> None:
    """Check sampler or pruner options against the Optuna class, then build it once.

    Building it here catches the values Optuna rejects (a negative
    n_warmup_steps, ...) when the file is validated, not only at run time.
    """
    cls = component_class(key, name)
    parameters = inspect.signature(cls).parameters
    settable = [p for p in parameters if _settable_option(key, parameters[p])]
    before = len(problems.items)
    for option, value in options.items():
        prefix = f"{key}.{option}"
        if option == "seed" and key == "sampler":
            problems.add(
                prefix,
                "is set from the study's seed",
                value,
                "remove it and set the top-level seed",
            )
        elif option not in parameters:
            close = difflib.get_close_matches(option, settable, n=1)
            fix = (
                f"did you mean '{close[0]}'?"
                if close
                else f"valid options of {class_name}: {', '.join(settable) or 'none'}"
            )
            problems.add(prefix, f"unknown option of {class_name}", option, fix)
        elif option not in settable:
            problems.add(
                prefix,
                "takes a Python object and cannot be set in a study file",
                value,
                "remove it",
            )
        else:
            expected = _option_types(parameters[option])
            if not _matches_types(value, expected):
                problems.add(
                    prefix,
                    f"must be {' or '.join(expected)}",
                    value,
                    f"see the {class_name} documentation",
                )
    for option in settable:
        required = parameters[option].default is inspect.Parameter.empty
        if required and option not in options:
            problems.add(
                f"{key}.{option}",
                f"missing, {class_name} requires it",
                None,
                f"add {option} = VALUE to [{key}]",
            )
    if len(problems.items) > before:
        return

    if name in ("median", "percentile"):
        warmup = options.get("n_warmup_steps", 0)
        if warmup >= training.max_epochs:
            problems.add(
                f"{key}.n_warmup_steps",
                f"never lets the pruner act within max_epochs = {training.max_epochs}",
                warmup,
                "lower it below training.max_epochs",
            )
            return
    kwargs = component_kwargs(key, name, options, training.max_epochs, seed)
    try:
        with warnings.catch_warnings():
            # The run builds it again and shows Optuna's warnings (experimental
            # features) then, so this check stays quiet.
            warnings.simplefilter("ignore")
            cls(**kwargs)
    except (TypeError, ValueError) as error:
        # Optuna's messages usually name the rejected option ("but got
        # n_warmup_steps=-1"), so the first option named is the problem's key.
        named = [option for option in options if option in str(error)]
        if named:
            problems.add(
                f"{key}.{named[0]}",
                f"rejected by {class_name} ({error})",
                options[named[0]],
                "fix the value",
            )
        else:
            problems.add(
                key,
                f"{class_name} rejected the options ({error})",
                options,
                "fix the options",
            )


def component_class(key: str, name: str) -> type:
    """Return the Optuna class of a study file's sampler or pruner name."""
    import optuna

    if key == "sampler":
        return getattr(optuna.samplers, SAMPLER_CLASSES[name])
    return getattr(optuna.pruners, PRUNER_CLASSES[name])


def component_kwargs(
    key: str, name: str, options: Mapping[str, Any], max_epochs: int, seed: int
) -> dict[str, Any]:
    """Return the keyword arguments of a sampler or pruner.

    They are the study file's options, plus the study seed for a sampler and
    epochs as Hyperband's resources.
    """
    kwargs = dict(options)
    if key == "sampler":
        kwargs["seed"] = seed
    if name == "hyperband":
        kwargs.setdefault("min_resource", 1)
        kwargs.setdefault("max_resource", max_epochs)
    return kwargs


def _settable_option(key: str, parameter: inspect.Parameter) -> bool:
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    if parameter.kind in variadic:
        return False
    if key == "sampler" and parameter.name == "seed":
        return False
    annotation = str(parameter.annotation)
    return not any(word in annotation for word in ("Callable", "Sampler", "ndarray"))


ANY_OPTION = "a number, string or boolean"
OPTION_TYPES = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
}


def _option_types(parameter: inspect.Parameter) -> list[str]:
    """Return the value types an option's annotation accepts, as words for a message."""
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        default = parameter.default
        known = default is not None and default is not inspect.Parameter.empty
        names = [type(default).__name__] if known else []
    else:
        text = (
            annotation
            if isinstance(annotation, str)
            else getattr(annotation, "__name__", str(annotation))
        )
        names = re.findall(r"\b(bool|int|float|str)\b", text)
    types = [OPTION_TYPES[n] for n in dict.fromkeys(names) if n in OPTION_TYPES]
    return types or [ANY_OPTION]


def _value_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return OPTION_TYPES["bool"]
    if isinstance(value, int):
        return OPTION_TYPES["int"]
    if isinstance(value, float) and math.isfinite(value):
        return OPTION_TYPES["float"]
    if isinstance(value, str):
        return OPTION_TYPES["str"]
    return None


def _matches_types(value: Any, expected: list[str]) -> bool:
    kind = _value_type(value)
    if kind is None:
        return False
    if ANY_OPTION in expected or kind in expected:
        return True
    return kind == OPTION_TYPES["int"] and OPTION_TYPES["float"] in expected


def _build_data(table: dict, problems: _Problems) -> DataSpec:
    problems.unknown_keys(table, DATA_KEYS, "data.")
    path = _get(table, "path", "str", None, problems, "data.")
    target = _get(table, "target", "str", None, problems, "data.")
    if path is not None and not path.strip():
        problems.add(
            "data.path",
            "must not be empty",
            path,
            "give the path of a CSV or Parquet file",
        )
    if path is not None and "dataset" in table:
        problems.add(
            "data.path",
            "given together with data.dataset",
            path,
            "keep either dataset or path + target",
        )
    dataset = None
    if path is None:
        dataset = _choice(
            table, "dataset", DATASETS, "digits", problems, "data.", what="dataset"
        )
        if target is not None:
            problems.add(
                "data.target",
                "has no effect with a built-in dataset",
                target,
                "remove it, or give data.path for a data file",
            )
    elif target is None:
        problems.add(
            "data.target",
            "missing for a data file",
            None,
            'name the target column with target = "COLUMN"',
        )
    valid_fraction = _get(table, "valid_fraction", "float", 0.2, problems, "data.")
    if not 0 < valid_fraction < 1:
        problems.add(
            "data.valid_fraction",
            "must be between 0 and 1, exclusive",
            valid_fraction,
            "use a fraction such as 0.2",
        )
        valid_fraction = 0.2
    task = None
    if "task" in table:
        task = _choice(
            table, "task", TASKS, "classification", problems, "data.", what="task"
        )
        builtin_task = "regression" if dataset == "diabetes" else "classification"
        if dataset is not None and task != builtin_task:
            problems.add(
                "data.task",
                f"contradicts dataset {dataset!r}, a {builtin_task} dataset",
                task,
                f'remove it or set task = "{builtin_task}"',
            )
            task = None
    return DataSpec(dataset, path, target, float(valid_fraction), task)


def _build_model(table: dict, problems: _Problems) -> ModelSpec:
    problems.unknown_keys(table, MODEL_KEYS, "model.")
    kind = _get(table, "kind", "str", "mlp", problems, "model.")
    known_kind = kind in BUILTIN_MODELS or USER_MODEL_PATTERN.fullmatch(kind)
    if not known_kind:
        close = difflib.get_close_matches(kind, BUILTIN_MODELS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        problems.add(
            "model.kind",
            "unknown model kind",
            kind,
            f"{hint}use one of {', '.join(BUILTIN_MODELS)} or an import path "
            '"package.module:Class"',
        )
    hidden_units = _positive_ints(table, "hidden_units", (128,), problems)
    channels = _positive_ints(table, "channels", (16, 32), problems)
    dropout = _get(table, "dropout", "float", 0.0, problems, "model.")
    if not 0 <= dropout < 1:
        problems.add("model.dropout", "must be in [0, 1)", dropout, "use e.g. 0.1")
    options = table.get("options", {})
    if not isinstance(options, dict):
        problems.add(
            "model.options",
            "must be a table",
            options,
            "write [model.options] with keyword arguments of the class",
        )
        options = {}
    for key, value in options.items():
        if not _is_plain(value):
            problems.add(
                f"model.options.{key}",
                "must be a number, string, boolean, or a list or table of them",
                value,
                "remove dates, times, nan and inf, which cannot be stored",
            )
    unused = {"mlp": ("channels", "options"), "cnn": ("hidden_units", "options")}.get(
        kind, ("hidden_units", "channels", "dropout")
    )
    for key in unused if known_kind else ():
        if key in table:
            fix = (
                "give the class's arguments in [model.options]"
                if ":" in kind
                else "remove it"
            )
            problems.add(
                f"model.{key}",
                f"has no effect with model.kind = {kind!r}",
                table[key],
                fix,
            )
    return ModelSpec(
        kind, hidden_units, float(dropout), channels, MappingProxyType(dict(options))
    )


def _is_plain(value: Any) -> bool:
    """Return whether a TOML value has no dates or times, so it is storable as JSON."""
    if isinstance(value, datetime.date | datetime.time):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_is_plain(item) for item in value.values())
    return True


def _positive_ints(table: dict, key: str, default: tuple, problems: _Problems) -> tuple:
    value = _get(table, key, "int_list", list(default), problems, "model.")
    if not value or any(v < 1 for v in value):
        problems.add(
            f"model.{key}",
            "must be a non-empty list of positive integers",
            value,
            f"e.g. {key} = {list(default)}",
        )
        return default
    return tuple(value)


def _build_training(table: dict, problems: _Problems) -> TrainingSpec:
    problems.unknown_keys(table, TRAINING_KEYS, "training.")
    prefix = "training."
    max_epochs = _get(table, "max_epochs", "int", 20, problems, prefix)
    if max_epochs < 1:
        problems.add(
            "training.max_epochs",
            "must be at least 1",
            max_epochs,
            "set max_epochs = 1 or more",
        )
        max_epochs = 20
    batch_size = _get(table, "batch_size", "int", 64, problems, prefix)
    if batch_size < 1:
        problems.add(
            "training.batch_size",
            "must be at least 1",
            batch_size,
            "set batch_size = 1 or more",
        )
        batch_size = 64
    optimizer = _choice(
        table, "optimizer", OPTIMIZERS, "sgd", problems, prefix, what="optimizer"
    )
    momentum = _get(
        table, "momentum", "float", 0.9 if optimizer == "sgd" else 0.0, problems, prefix
    )
    if not 0 <= momentum < 1:
        problems.add("training.momentum", "must be in [0, 1)", momentum, "use e.g. 0.9")
        momentum = 0.0
    if momentum and optimizer != "sgd" and "momentum" in table:
        problems.add(
            "training.momentum",
            f"has no effect with optimizer {optimizer}",
            momentum,
            "remove it; Adam and AdamW use betas",
        )
    weight_decay = _get(table, "weight_decay", "float", 0.0, problems, prefix)
    if weight_decay < 0:
        problems.add(
            "training.weight_decay",
            "must not be negative",
            weight_decay,
            "use 0 or a small positive value",
        )
        weight_decay = 0.0
    return TrainingSpec(
        max_epochs, batch_size, optimizer, float(momentum), float(weight_decay)
    )


def _build_lr(raw: dict, problems: _Problems) -> Param:
    scratch: list = []
    lr = parse_param(raw.get("lr", 0.1), "float", "lr", scratch)
    for item in scratch:
        problems.add(*item)
    if lr is None:
        return Fixed(0.1)
    if min(_numbers(lr)) <= 0:
        problems.add(
            "lr",
            "must be positive",
            min(_numbers(lr)),
            "use a learning rate > 0, e.g. { low = 0.001, high = 0.5, log = true }",
        )
    return lr


def _numbers(param: Param) -> list[float]:
    return [v for v in param.candidates() if isinstance(v, int | float)]


def _build_families(
    table: dict, training: TrainingSpec, data: DataSpec, lr: Param, problems: _Problems
) -> list[FamilySpec]:
    types = table.get("types", [CONSTANT])
    valid_names = tuple(FAMILIES)
    if (
        not isinstance(types, list)
        or not types
        or not all(isinstance(t, str) for t in types)
    ):
        problems.add(
            "schedulers.types",
            "must be a non-empty list of family names",
            types,
            "valid: " + ", ".join(valid_names),
        )
        return []
    problems.unknown_keys(table, ("types", *valid_names), "schedulers.")

    families = []
    for name in types:
        if name not in FAMILIES:
            close = difflib.get_close_matches(name, valid_names, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            problems.add(
                "schedulers.types",
                "unknown scheduler family",
                name,
                f"{hint}valid: {', '.join(valid_names)}",
            )
            continue
        if types.count(name) > 1 and name in [f.name for f in families]:
            problems.add(
                "schedulers.types",
                "lists a family twice",
                name,
                "list each family once",
            )
            continue
        families.append(
            _build_family(name, table.get(name, {}), training, data, lr, problems)
        )
    for key in table:
        if key != "types" and key in FAMILIES and key not in types:
            problems.add(
                f"schedulers.{key}",
                "is configured but not listed in types",
                key,
                f'add "{key}" to schedulers.types or remove the table',
            )
    return families


def _build_family(
    name: str,
    table: Any,
    training: TrainingSpec,
    data: DataSpec,
    lr: Param,
    problems: _Problems,
) -> FamilySpec:
    family = FAMILIES[name]
    prefix = f"schedulers.{name}."
    if not isinstance(table, dict):
        problems.add(
            f"schedulers.{name}",
            "must be a table",
            table,
            f"write [schedulers.{name}] with the family's arguments",
        )
        table = {}
    problems.unknown_keys(table, tuple(family.arguments), prefix)

    params: dict[str, Param] = dict(family.default_space(training.max_epochs))
    for key, raw in table.items():
        argument = family.arguments.get(key)
        if argument is None:
            continue
        scratch: list = []
        param = parse_param(raw, argument.kind, prefix + key, scratch)
        for item in scratch:
            problems.add(*item)
        if param is not None and _check_bounds(
            param, argument, training, prefix, problems
        ):
            params[key] = param

    _check_family(name, params, training, data, lr, prefix, problems)
    return FamilySpec(name, MappingProxyType(params))


def _check_bounds(
    param: Param,
    argument: Argument,
    training: TrainingSpec,
    prefix: str,
    problems: _Problems,
) -> bool:
    key = prefix + argument.name
    maximum = argument.maximum
    if argument.max_epochs_offset is not None:
        maximum = training.max_epochs + argument.max_epochs_offset
    ok = True
    for value in param.candidates():
        if argument.kind == "str":
            if value not in argument.choices:
                problems.add(
                    key,
                    f"invalid {argument.name}",
                    value,
                    "valid: " + ", ".join(argument.choices),
                )
                ok = False
            continue
        if argument.kind == "bool":
            continue
        values = list(value) if argument.kind == "int_list" else [value]
        if argument.kind == "int_list":
            if not values:
                problems.add(
                    key,
                    "must list at least one epoch",
                    value,
                    "e.g. milestones = [10, 20]",
                )
                ok = False
            elif values != sorted(set(values)):
                problems.add(
                    key,
                    "must be strictly increasing",
                    list(value),
                    "sort the milestones and drop repeats",
                )
                ok = False
        for number in values:
            if not _within(number, argument, maximum):
                problems.add(
                    key,
                    _bounds_text(argument, maximum, training),
                    number,
                    _bounds_fix(argument, maximum, number),
                )
                ok = False
                break
    return ok


def _within(number: float, argument: Argument, maximum: float | None) -> bool:
    minimum = argument.minimum
    if minimum is not None:
        if argument.exclusive_minimum and number <= minimum:
            return False
        if number < minimum:
            return False
    if maximum is not None:
        if argument.exclusive_maximum and number >= maximum:
            return False
        if number > maximum:
            return False
    return True


def _bounds_text(
    argument: Argument, maximum: float | None, training: TrainingSpec
) -> str:
    low = argument.minimum
    left = "(" if argument.exclusive_minimum else "["
    right = ")" if argument.exclusive_maximum else "]"
    high = "inf" if maximum is None else _show(maximum)
    text = f"must be in {left}{_show(low)}, {high}{right}"
    if argument.max_epochs_offset is not None:
        if argument.max_epochs_offset < 0:
            text += f" to take effect within max_epochs = {training.max_epochs}"
        else:
            text += f" (max_epochs = {training.max_epochs})"
    return text


def _bounds_fix(argument: Argument, maximum: float | None, number: float) -> str:
    minimum = argument.minimum
    if minimum is not None and (
        number < minimum or (argument.exclusive_minimum and number == minimum)
    ):
        if argument.exclusive_minimum:
            return f"raise it above {_show(minimum)}"
        return f"raise it to at least {_show(minimum)}"
    if argument.max_epochs_offset is not None:
        return f"lower it to at most {_show(maximum)} or raise training.max_epochs"
    return f"choose {argument.name} inside that interval"


def _check_family(
    name: str,
    params: dict[str, Param],
    training: TrainingSpec,
    data: DataSpec,
    lr: Param,
    prefix: str,
    problems: _Problems,
) -> None:
    if name == "CyclicLR":
        max_lr = params.get("max_lr")
        if max_lr is not None and min(_numbers(max_lr)) < max(_numbers(lr)):
            problems.add(
                prefix + "max_lr",
                f"can be below the base learning rate (lr up to {max(_numbers(lr))})",
                min(_numbers(max_lr)),
                "raise max_lr.low to at least lr.high; CyclicLR's base_lr is lr",
            )
    if name == "CosineAnnealingLR":
        eta_min = params.get("eta_min")
        if eta_min is not None and max(_numbers(eta_min)) >= min(_numbers(lr)):
            problems.add(
                prefix + "eta_min",
                "reaches the base learning rate",
                max(_numbers(eta_min)),
                "keep eta_min below lr.low",
            )


def spec_to_dict(spec: StudySpec) -> dict:
    """Return a JSON-serializable dict of the spec, stored with the study."""

    def convert(value: Any) -> Any:
        if isinstance(value, Fixed):
            return convert(value.value)
        if isinstance(value, Range):
            out = {"low": value.low, "high": value.high}
            if value.log:
                out["log"] = True
            if value.step is not None:
                out["step"] = value.step
            return out
        if isinstance(value, Choices):
            return {"choices": [convert(c) for c in value.choices]}
        if isinstance(value, Mapping):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if hasattr(value, "__dataclass_fields__"):
            return {k: convert(getattr(value, k)) for k in value.__dataclass_fields__}
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    out = convert(spec)
    out.pop("path", None)
    # The folder differs between machines; the file's content is what counts,
    # and search.definition stores its digest.
    out["data"].pop("base_dir", None)
    out.pop("warnings", None)
    out["families"] = {f["name"]: f["params"] for f in out["families"]}
    return out


class StudyNotFound(InputError):
    """Raised when a study name matches no study file."""


def studies_dirs() -> list[Path]:
    """Return the folders searched for study files, in order of precedence.

    ``./studies`` in the working directory comes first, then the repository's
    ``studies/`` beside the installed package.
    """
    folders = [
        Path.cwd() / "studies",
        Path(__file__).resolve().parent.parent / "studies",
    ]
    unique = []
    for folder in folders:
        if folder.is_dir() and folder.resolve() not in [f.resolve() for f in unique]:
            unique.append(folder)
    return unique


def list_study_files() -> dict[str, Path]:
    """Return the study files found in :func:`studies_dirs`, by name."""
    files: dict[str, Path] = {}
    for folder in studies_dirs():
        for path in sorted(folder.glob("*.toml")):
            files.setdefault(path.stem, path)
    return dict(sorted(files.items()))


def resolve_study(name_or_path: str) -> Path:
    """Return the study file for a study name or a path to a TOML file.

    Raises
    ------
    StudyNotFound
        If it is neither an existing file nor a known study name; the message
        lists the valid names.
    """
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        raise StudyNotFound(f"study file {name_or_path!r} not found; check the path")
    files = list_study_files()
    if name_or_path in files:
        return files[name_or_path]
    close = difflib.get_close_matches(name_or_path, list(files), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise StudyNotFound(
        f"unknown study {name_or_path!r}; {hint}valid studies: "
        f"{', '.join(files) or 'none'}"
        " (or give the path of a TOML study file)"
    )
