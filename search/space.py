"""Turn a study spec into ``trial.suggest_*`` calls: a conditional search space.

Parameter names: ``scheduler`` (the family, in every trial), ``lr`` (the base
learning rate, when searched) and ``FAMILY.ARG`` for each searched argument of
the sampled family, so that two families never share a dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from search.params import Choices, Fixed, Param, Range
from search.spec import StudySpec


@dataclass(frozen=True)
class SampledConfig:
    """The configuration of one trial: the family, base rate and argument values."""

    family: str
    lr: float
    values: dict[str, Any]


def suggest(trial: optuna.Trial, name: str, param: Param) -> Any:
    """Return the trial's value of ``param``, sampling it under ``name`` if searched."""
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Range):
        if param.integer:
            step = int(param.step) if param.step is not None else 1
            return trial.suggest_int(
                name, int(param.low), int(param.high), step=step, log=param.log
            )
        return trial.suggest_float(
            name, param.low, param.high, step=param.step, log=param.log
        )
    if isinstance(param, Choices):
        if isinstance(param.choices[0], tuple):
            # Optuna stores only scalar choices, so a list such as milestones is
            # sampled as its comma-separated text and parsed back.
            labels = [",".join(map(str, choice)) for choice in param.choices]
            label = trial.suggest_categorical(name, labels)
            return tuple(int(part) for part in label.split(","))
        return trial.suggest_categorical(name, list(param.choices))
    raise TypeError(f"unknown parameter type {type(param).__name__}")


def sample(trial: optuna.Trial, spec: StudySpec) -> SampledConfig:
    """Sample the family, the base rate and the family's arguments for ``trial``."""
    family = trial.suggest_categorical("scheduler", spec.family_names)
    lr = float(suggest(trial, "lr", spec.lr))
    if "lr" not in trial.params:
        # A fixed base rate is still recorded, so every trial has the parameter.
        lr = trial.suggest_float("lr", lr, lr)
    values = {
        argument: suggest(trial, f"{family}.{argument}", param)
        for argument, param in spec.family(family).params.items()
    }
    return SampledConfig(family, lr, values)
