"""Property-based tests of the study-file loader: any input gives a spec or a SpecError.

The documents are built from a valid tiny study with one key replaced by an
arbitrary TOML value, or from arbitrary TOML tables and arbitrary text.
"""

from __future__ import annotations

import datetime
import json
import math
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.params import Choices, Fixed, Range
from search.schedules import FAMILIES
from search.spec import SpecError, StudySpec, parse_spec, spec_to_dict
from tests.conftest import tiny_study_text

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

KEYS = [
    ("", "name"),
    ("", "description"),
    ("", "direction"),
    ("", "metric"),
    ("", "n_trials"),
    ("", "seed"),
    ("", "lr"),
    ("", "sampler"),
    ("", "pruner"),
    ("sampler", "name"),
    ("sampler", "n_startup_trials"),
    ("sampler", "multivariate"),
    ("pruner", "name"),
    ("pruner", "n_warmup_steps"),
    ("pruner", "percentile"),
    ("pruner", "min_resource"),
    ("pruner", "reduction_factor"),
    ("data", "dataset"),
    ("data", "path"),
    ("data", "target"),
    ("data", "valid_fraction"),
    ("data", "task"),
    ("model", "kind"),
    ("model", "hidden_units"),
    ("model", "dropout"),
    ("model", "channels"),
    ("model", "options"),
    ("training", "max_epochs"),
    ("training", "batch_size"),
    ("training", "optimizer"),
    ("training", "momentum"),
    ("training", "weight_decay"),
    ("lr", "low"),
    ("lr", "high"),
    ("lr", "log"),
    ("lr", "step"),
    ("schedulers", "types"),
] + [
    (f"schedulers.{family}", argument)
    for family, entry in FAMILIES.items()
    for argument in entry.arguments
]

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "tpe",
            "median",
            "hyperband",
            "percentile",
            "StepLR",
            "cos",
            "minimize",
            "valid_loss",
            "digits",
            "mlp",
            "os:path",
            "adam",
        ]
    ),
    st.datetimes(max_value=datetime.datetime(9999, 1, 1)),
    st.dates(),
)
toml_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(["low", "high", "log", "step", "choices", "x"]),
            children,
            max_size=4,
        ),
    ),
    max_leaves=8,
)


def toml_key(key: str) -> str:
    return json.dumps(key)


def toml_value(value) -> str:
    """Serialize a Python value as TOML, tables written inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(type(value))


def toml_document(document: dict) -> str:
    """Serialize a dict of tables and top-level keys as a TOML document."""
    top = [
        f"{toml_key(k)} = {toml_value(v)}"
        for k, v in document.items()
        if not isinstance(v, dict)
    ]
    tables = [
        f"[{toml_key(k)}]\n"
        + "\n".join(f"{toml_key(a)} = {toml_value(b)}" for a, b in v.items())
        for k, v in document.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def with_value(table: str, key: str, value) -> dict:
    """Return the tiny study with ``table.key`` set to ``value``."""
    document = tomllib.loads(tiny_study_text(types=tuple(FAMILIES)))
    if table:
        parent = document
        *heads, last = table.split(".")
        for head in heads:
            parent = parent.setdefault(head, {})
        node = parent.get(last)
        if not isinstance(node, dict):
            node = parent[last] = {}
        node[key] = value
    else:
        document[key] = value
    return document


def load_or_reject(text: str) -> StudySpec | None:
    """Load ``text`` and return None on SpecError, letting any other exception fail."""
    try:
        spec = parse_spec(text, source="prop.toml")
    except SpecError as error:
        assert error.problems, "a SpecError lists at least one problem"
        for problem in error.problems:
            assert problem.startswith("prop.toml: "), problem
        return None
    assert isinstance(spec, StudySpec)
    return spec


def check_valid(spec: StudySpec) -> None:
    """Check what every accepted spec must satisfy."""
    json.dumps(spec_to_dict(spec), allow_nan=False)
    assert spec.families
    assert spec.training.max_epochs >= 1
    assert 0 < spec.data.valid_fraction < 1
    for family in spec.families:
        for param in family.params.values():
            assert isinstance(param, Fixed | Range | Choices)
            if isinstance(param, Range):
                assert param.low <= param.high


def test_tiny_study_loads():
    spec = load_or_reject(toml_document(with_value("", "seed", 3)))
    assert spec is not None


@SETTINGS
@given(position=st.sampled_from(KEYS), value=toml_values)
def test_any_value_for_any_key(position, value):
    table, key = position
    text = toml_document(with_value(table, key, value))
    spec = load_or_reject(text)
    if spec is not None:
        check_valid(spec)


@SETTINGS
@given(
    document=st.dictionaries(
        st.sampled_from(
            [
                "name",
                "seed",
                "lr",
                "data",
                "model",
                "training",
                "schedulers",
                "sampler",
                "pruner",
                "direction",
                "metric",
                "extra",
            ]
        ),
        toml_values,
        max_size=6,
    )
)
def test_any_document(document):
    spec = load_or_reject(toml_document(document))
    if spec is not None:
        check_valid(spec)


@SETTINGS
@given(text=st.text(max_size=200))
def test_any_text(text):
    spec = load_or_reject(text)
    if spec is not None:
        check_valid(spec)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@SETTINGS
@given(
    low=st.floats(allow_nan=False),
    high=st.floats(allow_nan=False),
    step=st.one_of(st.none(), st.floats(allow_nan=False)),
    log=st.booleans(),
)
def test_any_range_for_family(family, low, high, step, log):
    arguments = list(FAMILIES[family].arguments)
    if not arguments:
        return
    value = {"low": low, "high": high, "log": log}
    if step is not None:
        value["step"] = step
    for argument in arguments:
        spec = load_or_reject(
            toml_document(with_value(f"schedulers.{family}", argument, value))
        )
        if spec is not None:
            check_valid(spec)
