"""The catalogue of learning-rate schedule families.

Each family names its ``torch.optim.lr_scheduler`` class, whether skorch steps it
every epoch or every training batch, the arguments a study file may set or
search, and how the remaining arguments follow from the training budget. This
module does not import torch, so that loading and validating study files stays
fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from search.params import Choices, Fixed, Param, Range

CONSTANT = "constant"


@dataclass(frozen=True)
class Argument:
    """One keyword argument of a scheduler that a study file may set or search.

    ``max_epochs_offset`` bounds epoch counts by the training budget: the
    largest valid value is ``max_epochs + max_epochs_offset``.
    """

    name: str
    kind: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    max_epochs_offset: int | None = None
    choices: tuple[str, ...] = ()
    meaning: str = ""


@dataclass(frozen=True)
class Budget:
    """The training budget of a trial, from which derived scheduler arguments follow."""

    max_epochs: int
    n_train_batches: int
    lr: float
    optimizer: str
    momentum: float

    @property
    def total_steps(self) -> int:
        return self.max_epochs * self.n_train_batches


@dataclass(frozen=True)
class Family:
    """A schedule family: its torch class, stepping and arguments."""

    name: str
    step_every: str
    description: str
    arguments: Mapping[str, Argument]
    default_space: Callable[[int], dict[str, Param]]
    derive: Callable[[dict[str, Any], Budget], dict[str, Any]] = field(repr=False)

    @property
    def torch_name(self) -> str | None:
        return None if self.name == CONSTANT else self.name


def _args(*arguments: Argument) -> dict[str, Argument]:
    return {argument.name: argument for argument in arguments}


def _has_momentum(budget: Budget) -> bool:
    # SGD always has a "momentum" default (0 unless set); cycling it from 0
    # would switch momentum on, which the study did not ask for. Adam and AdamW
    # cycle beta1 instead, which torch supports.
    if budget.optimizer == "sgd":
        return budget.momentum > 0
    return True


GAMMA = Argument(
    "gamma",
    "float",
    0.0,
    1.0,
    exclusive_minimum=True,
    exclusive_maximum=True,
    meaning="multiplicative decay of the learning rate",
)
ETA_MIN = Argument("eta_min", "float", 0.0, meaning="lowest learning rate")


def _derive_constant(values: dict, budget: Budget) -> dict:
    return {}


def _derive_step(values: dict, budget: Budget) -> dict:
    return {"step_size": values["step_size"], "gamma": values["gamma"]}


def _derive_multistep(values: dict, budget: Budget) -> dict:
    return {"milestones": list(values["milestones"]), "gamma": values["gamma"]}


def _derive_exponential(values: dict, budget: Budget) -> dict:
    return {"gamma": values["gamma"]}


def _derive_cosine(values: dict, budget: Budget) -> dict:
    return {
        "T_max": values.get("T_max", budget.max_epochs),
        "eta_min": values.get("eta_min", 0.0),
    }


def _derive_warm_restarts(values: dict, budget: Budget) -> dict:
    return {
        "T_0": values["T_0"],
        "T_mult": values.get("T_mult", 1),
        "eta_min": values.get("eta_min", 0.0),
    }


def _derive_one_cycle(values: dict, budget: Budget) -> dict:
    # The trial's base learning rate is the peak of the cycle; OneCycleLR starts
    # at max_lr / div_factor and ends at that divided by final_div_factor.
    return {
        "max_lr": budget.lr,
        "total_steps": budget.total_steps,
        "pct_start": values.get("pct_start", 0.3),
        "anneal_strategy": values.get("anneal_strategy", "cos"),
        "div_factor": values.get("div_factor", 25.0),
        "final_div_factor": values.get("final_div_factor", 1e4),
        "three_phase": values.get("three_phase", False),
        "cycle_momentum": _has_momentum(budget),
    }


def _derive_cyclic(values: dict, budget: Budget) -> dict:
    # Two full cycles over the budget unless the study file sets step_size_up.
    default_up = max(1, budget.total_steps // 4)
    kwargs = {
        "base_lr": budget.lr,
        "max_lr": values["max_lr"],
        "step_size_up": values.get("step_size_up", default_up),
        "mode": values.get("mode", "triangular"),
        "gamma": values.get("gamma", 1.0),
        "cycle_momentum": _has_momentum(budget),
    }
    if "step_size_down" in values:
        kwargs["step_size_down"] = values["step_size_down"]
    return kwargs


def _derive_plateau(values: dict, budget: Budget) -> dict:
    return {
        "mode": "min",
        "factor": values["factor"],
        "patience": values["patience"],
        "threshold": values.get("threshold", 1e-4),
        "min_lr": values.get("min_lr", 0.0),
    }


def _derive_linear(values: dict, budget: Budget) -> dict:
    return {
        "start_factor": values["start_factor"],
        "end_factor": values.get("end_factor", 1.0),
        "total_iters": values.get("total_iters", budget.max_epochs),
    }


def _derive_polynomial(values: dict, budget: Budget) -> dict:
    return {
        "total_iters": values.get("total_iters", budget.max_epochs),
        "power": values["power"],
    }


def _epochs(low_fraction: float, high_fraction: float, max_epochs: int) -> Range:
    low = max(1, int(max_epochs * low_fraction))
    high = max(low, int(max_epochs * high_fraction))
    return Range(low, high, integer=True)


def _default_milestones(max_epochs: int) -> Choices:
    half, third = max(1, max_epochs // 2), max(1, max_epochs // 3)
    options = {
        (half,),
        (third, min(max_epochs - 1, 2 * third)),
        (half, 3 * max_epochs // 4),
    }
    valid = sorted(
        m for m in options if list(m) == sorted(set(m)) and m[-1] < max_epochs
    )
    return Choices(tuple(valid or [(max(1, max_epochs - 1),)]))


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in [
        Family(
            CONSTANT,
            "epoch",
            "no scheduler: the base learning rate throughout",
            {},
            lambda e: {},
            _derive_constant,
        ),
        Family(
            "StepLR",
            "epoch",
            "decay by gamma every step_size epochs",
            _args(
                Argument(
                    "step_size",
                    "int",
                    1,
                    max_epochs_offset=-1,
                    meaning="epochs between decays",
                ),
                GAMMA,
            ),
            lambda e: {"step_size": _epochs(0.1, 0.5, e), "gamma": Range(0.1, 0.9)},
            _derive_step,
        ),
        Family(
            "MultiStepLR",
            "epoch",
            "decay by gamma at each milestone epoch",
            _args(
                Argument(
                    "milestones",
                    "int_list",
                    1,
                    max_epochs_offset=-1,
                    meaning="increasing epoch counts at which to decay",
                ),
                GAMMA,
            ),
            lambda e: {"milestones": _default_milestones(e), "gamma": Range(0.1, 0.9)},
            _derive_multistep,
        ),
        Family(
            "ExponentialLR",
            "epoch",
            "decay by gamma every epoch",
            _args(GAMMA),
            lambda e: {"gamma": Range(0.8, 0.99)},
            _derive_exponential,
        ),
        Family(
            "CosineAnnealingLR",
            "epoch",
            "cosine from the base rate to eta_min over T_max",
            _args(
                Argument(
                    "T_max",
                    "int",
                    1,
                    max_epochs_offset=0,
                    meaning="epochs of the half cosine period",
                ),
                ETA_MIN,
            ),
            lambda e: {"T_max": Fixed(e), "eta_min": Fixed(0.0)},
            _derive_cosine,
        ),
        Family(
            "CosineAnnealingWarmRestarts",
            "epoch",
            "cosine annealing restarted every T_0 epochs, periods growing by T_mult",
            _args(
                Argument(
                    "T_0",
                    "int",
                    1,
                    max_epochs_offset=0,
                    meaning="epochs until the first restart",
                ),
                Argument("T_mult", "int", 1, meaning="growth factor of the period"),
                ETA_MIN,
            ),
            lambda e: {
                "T_0": _epochs(0.1, 0.5, e),
                "T_mult": Range(1, 2, integer=True),
                "eta_min": Fixed(0.0),
            },
            _derive_warm_restarts,
        ),
        Family(
            "OneCycleLR",
            "batch",
            "one cycle up to the base rate and down, stepped every batch",
            _args(
                Argument(
                    "pct_start",
                    "float",
                    0.0,
                    1.0,
                    exclusive_minimum=True,
                    exclusive_maximum=True,
                    meaning="share of steps rising",
                ),
                Argument("anneal_strategy", "str", choices=("cos", "linear")),
                Argument(
                    "div_factor", "float", 1.0, meaning="base rate / initial rate"
                ),
                Argument(
                    "final_div_factor",
                    "float",
                    1.0,
                    meaning="initial rate / final rate",
                ),
                Argument("three_phase", "bool"),
            ),
            lambda e: {"pct_start": Range(0.1, 0.5), "div_factor": Range(5.0, 50.0)},
            _derive_one_cycle,
        ),
        Family(
            "CyclicLR",
            "batch",
            "cycles between the base rate and max_lr, stepped every batch",
            _args(
                Argument(
                    "max_lr",
                    "float",
                    0.0,
                    exclusive_minimum=True,
                    meaning="upper rate of the cycle, at least the base rate",
                ),
                Argument(
                    "step_size_up", "int", 1, meaning="batches in the rising half"
                ),
                Argument(
                    "step_size_down", "int", 1, meaning="batches in the falling half"
                ),
                Argument(
                    "mode", "str", choices=("triangular", "triangular2", "exp_range")
                ),
                Argument(
                    "gamma",
                    "float",
                    0.0,
                    1.0,
                    exclusive_minimum=True,
                    meaning="decay per batch in exp_range mode",
                ),
            ),
            lambda e: {
                "max_lr": Range(0.5, 1.0),
                "mode": Choices(("triangular", "triangular2")),
            },
            _derive_cyclic,
        ),
        Family(
            "ReduceLROnPlateau",
            "epoch",
            "multiply by factor when valid_loss stops improving for patience epochs",
            _args(
                Argument(
                    "factor",
                    "float",
                    0.0,
                    1.0,
                    exclusive_minimum=True,
                    exclusive_maximum=True,
                    meaning="decay on a plateau",
                ),
                Argument(
                    "patience",
                    "int",
                    0,
                    max_epochs_offset=-1,
                    meaning="epochs without improvement before a decay",
                ),
                Argument("threshold", "float", 0.0, meaning="relative improvement"),
                Argument("min_lr", "float", 0.0, meaning="lowest learning rate"),
            ),
            lambda e: {
                "factor": Range(0.1, 0.7),
                "patience": Range(0, max(1, e // 4), integer=True),
            },
            _derive_plateau,
        ),
        Family(
            "LinearLR",
            "epoch",
            "linear change of the factor from start_factor to end_factor",
            _args(
                Argument(
                    "start_factor",
                    "float",
                    0.0,
                    1.0,
                    exclusive_minimum=True,
                    meaning="factor of the base rate in the first epoch",
                ),
                Argument(
                    "end_factor",
                    "float",
                    0.0,
                    1.0,
                    meaning="factor after total_iters epochs",
                ),
                Argument(
                    "total_iters",
                    "int",
                    1,
                    max_epochs_offset=0,
                    meaning="epochs of the linear change",
                ),
            ),
            lambda e: {
                "start_factor": Range(0.05, 1.0),
                "end_factor": Range(0.01, 1.0),
            },
            _derive_linear,
        ),
        Family(
            "PolynomialLR",
            "epoch",
            "polynomial decay to zero over total_iters epochs",
            _args(
                Argument(
                    "total_iters",
                    "int",
                    1,
                    max_epochs_offset=0,
                    meaning="epochs until the rate reaches zero",
                ),
                Argument(
                    "power",
                    "float",
                    0.0,
                    exclusive_minimum=True,
                    meaning="power of the polynomial",
                ),
            ),
            lambda e: {"power": Range(0.5, 3.0)},
            _derive_polynomial,
        ),
    ]
}


def family_names() -> list[str]:
    """Return the family names in catalogue order, ``constant`` first."""
    return list(FAMILIES)


def derive_kwargs(family: str, values: Mapping[str, Any], budget: Budget) -> dict:
    """Return the keyword arguments for the torch scheduler of ``family``.

    ``values`` contains the sampled and fixed arguments of the trial. The rest
    comes from ``budget`` (``total_steps``, ``T_max``, the base rate, ...).
    """
    return FAMILIES[family].derive(dict(values), budget)


def budget_problems(
    family: str, params: Mapping[str, Any], budget: Budget
) -> list[str]:
    """Return why the searched arguments of ``family`` cannot fit ``budget``.

    Epoch counts are checked against ``max_epochs`` when the study file is
    loaded. The checks here need the number of training batches, which is
    known only once the data is split. ``params`` maps argument names to
    :data:`search.params.Param` values.
    """
    total = budget.total_steps
    problems = []
    if family == "OneCycleLR":
        pct = params.get("pct_start")
        values = pct.candidates() if pct is not None else (0.3,)
        # Each phase needs two steps: torch divides by the phase's length in
        # steps, and a phase shorter than a step is skipped or divides by zero.
        if min(values) * total < 2 or (1 - max(values)) * total < 2:
            problems.append(
                f"schedulers.OneCycleLR.pct_start: {min(values)}..{max(values)} of "
                f"{total} batch steps leaves a phase under 2 steps; use more epochs, a "
                "smaller batch_size, or pct_start nearer 0.5"
            )
    if family == "CyclicLR":
        up = params.get("step_size_up")
        if up is not None and max(up.candidates()) > total:
            problems.append(
                f"schedulers.CyclicLR.step_size_up: up to {max(up.candidates())} "
                f"batches but training has {total} batch steps ({budget.max_epochs} "
                f"epochs of {budget.n_train_batches}), so the cycle never reaches "
                "max_lr; lower it"
            )
    return problems
