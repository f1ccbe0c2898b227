"""Searched and fixed values of a study file: ranges, choices and bare values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fixed:
    """A value that every trial uses as it is."""

    value: Any

    def candidates(self) -> tuple[Any, ...]:
        return (self.value,)


@dataclass(frozen=True)
class Range:
    """A numeric interval sampled with ``suggest_int`` or ``suggest_float``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def candidates(self) -> tuple[Any, ...]:
        return (self.low, self.high)


@dataclass(frozen=True)
class Choices:
    """A categorical parameter sampled with ``suggest_categorical``."""

    choices: tuple[Any, ...]

    def candidates(self) -> tuple[Any, ...]:
        return self.choices


Param = Fixed | Range | Choices

RANGE_KEYS = ("low", "high", "log", "step")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_param(raw: Any, kind: str, key: str, problems: list) -> Param | None:
    """Parse one study-file value into a :data:`Param`, appending problems.

    Parameters
    ----------
    raw : object
        The TOML value: a bare value, ``{low, high, log?, step?}`` or
        ``{choices = [...]}``.
    kind : {"int", "float", "str", "bool", "int_list"}
        The type that every value of the parameter must have.
    key : str
        The dotted key of the value in the study file, used in messages.
    problems : list
        Receives ``(key, message, value, fix)`` tuples; the caller formats them.

    Returns
    -------
    Param or None
        None when the value is invalid; the reason is in ``problems``.
    """
    if not isinstance(raw, dict):
        if check_value(raw, kind, key, problems):
            return Fixed(_normalize(raw, kind))
        return None

    if "choices" in raw:
        return _parse_choices(raw, kind, key, problems)
    return _parse_range(raw, kind, key, problems)


def _parse_choices(raw: dict, kind: str, key: str, problems: list) -> Param | None:
    extra = sorted(set(raw) - {"choices"})
    if extra:
        problems.append(
            (
                f"{key}.{extra[0]}",
                "unknown key beside 'choices'",
                extra[0],
                "a searched value is either { choices = [...] } or { low, high }",
            )
        )
        return None
    choices = raw["choices"]
    if not isinstance(choices, list) or not choices:
        problems.append(
            (
                f"{key}.choices",
                "must be a non-empty list",
                choices,
                "list at least one value",
            )
        )
        return None
    valid = [check_value(c, kind, f"{key}.choices", problems) for c in choices]
    if not all(valid):
        return None
    normalized = tuple(_normalize(c, kind) for c in choices)
    if len(set(map(repr, normalized))) != len(normalized):
        problems.append(
            (
                f"{key}.choices",
                "contains a value twice",
                choices,
                "list each choice once",
            )
        )
        return None
    return Choices(normalized)


def _parse_range(raw: dict, kind: str, key: str, problems: list) -> Param | None:
    if kind not in ("int", "float"):
        problems.append(
            (
                key,
                f"a {kind} value cannot be searched as a range",
                raw,
                "give a bare value or { choices = [...] }",
            )
        )
        return None
    unknown = sorted(set(raw) - set(RANGE_KEYS))
    for name in unknown:
        problems.append(
            (
                f"{key}.{name}",
                "unknown key in a range",
                name,
                "use low, high, log and step, or choices",
            )
        )
    missing = [name for name in ("low", "high") if name not in raw]
    for name in missing:
        problems.append((f"{key}.{name}", "missing", None, f"add {name} = NUMBER"))
    if unknown or missing:
        return None

    ok = all(
        check_value(raw[name], kind, f"{key}.{name}", problems)
        for name in ("low", "high")
    )
    log = raw.get("log", False)
    if not isinstance(log, bool):
        problems.append(
            (f"{key}.log", "must be true or false", log, "write log = true")
        )
        ok = False
    step = raw.get("step")
    if step is not None and not check_value(step, kind, f"{key}.step", problems):
        ok = False
    if not ok:
        return None

    low, high = _normalize(raw["low"], kind), _normalize(raw["high"], kind)
    if low > high:
        problems.append(
            (f"{key}.low", f"is greater than high = {high}", low, "swap low and high")
        )
        return None
    if log and low <= 0:
        problems.append(
            (
                f"{key}.low",
                "must be positive when log = true",
                low,
                "raise low above 0 or set log = false",
            )
        )
        return None
    if step is not None:
        if step <= 0:
            problems.append((f"{key}.step", "must be positive", step, "use a step > 0"))
            return None
        if log:
            problems.append(
                (
                    f"{key}.step",
                    "cannot be combined with log = true",
                    step,
                    "remove step or set log = false",
                )
            )
            return None
        n_steps = (high - low) / step
        if not math.isfinite(n_steps):
            problems.append(
                (
                    f"{key}.step",
                    f"is too small for the range {low} to {high}",
                    step,
                    "narrow the range or raise the step",
                )
            )
            return None
        if not math.isclose(n_steps, round(n_steps), abs_tol=1e-9):
            problems.append(
                (
                    f"{key}.step",
                    f"does not divide high - low = {high - low}",
                    step,
                    "choose a step that divides the range",
                )
            )
            return None
    return Range(low, high, log=log, step=step, integer=kind == "int")


def check_value(value: Any, kind: str, key: str, problems: list) -> bool:
    """Check that one value has ``kind``; append a problem if it has not."""
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    elif kind == "float":
        ok = _is_number(value) and math.isfinite(value)
        expected = "a finite number"
    elif kind == "str":
        ok = isinstance(value, str)
        expected = "a string"
    elif kind == "bool":
        ok = isinstance(value, bool)
        expected = "true or false"
    elif kind == "int_list":
        ok = isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        )
        expected = "a list of integers"
    else:
        raise ValueError(f"unknown parameter kind {kind!r}")
    if not ok:
        problems.append((key, f"must be {expected}", value, f"write {expected}"))
    return ok


def _normalize(value: Any, kind: str) -> Any:
    if kind == "float":
        return float(value)
    if kind == "int_list":
        return tuple(value)
    return value
