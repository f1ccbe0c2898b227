"""Check a study's definition before a run: its data and model, and its stored copy.

A stored study keeps its definition (``spec_to_dict``) in the study user
attribute ``search_spec``. Running the same study name from a file whose search
space, data, model or training differ would mix trials of two experiments, so
it is rejected unless the run passes ``accept_changes``. Accepted changes are
listed, with their UTC time, in the user attribute ``search_accepted_changes``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from search.errors import InputError
from search.spec import SpecError, StudySpec, spec_to_dict

logger = logging.getLogger(__name__)

# The same attribute name as runner.SPEC_ATTR.
SPEC_ATTR = "search_spec"
ACCEPTED_CHANGES_ATTR = "search_accepted_changes"
# Parts of the definition that decide what a trial's value means. The name,
# description, n_trials, sampler and pruner may change between runs: they
# change which trials run next, not what a stored trial measured.
COMPARED_KEYS = (
    "direction",
    "metric",
    "seed",
    "data",
    "model",
    "training",
    "lr",
    "families",
)
MISSING = object()


class DefinitionChanged(InputError):
    """Raised when a study file no longer matches its stored study's definition."""


@dataclass(frozen=True)
class Change:
    """One study-file key whose value differs from the stored definition."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_format(self.old)} -> {_format(self.new)}"


def _format(value: Any) -> str:
    if value is MISSING:
        return "(not set)"
    return json.dumps(value, sort_keys=True)


def stored_form(spec: StudySpec) -> dict:
    """Return the definition of ``spec`` as Optuna stores it (a JSON round trip).

    For a data file it adds ``data.sha256``, the digest of the file's bytes,
    so that a study run on different data under the same path is caught.
    """
    definition = json.loads(json.dumps(spec_to_dict(spec)))
    path = spec.data.resolved_path()
    if path is not None and path.is_file():
        definition["data"]["sha256"] = _file_digest(path)
    return definition


def _file_digest(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_param(value: Any) -> bool:
    return isinstance(value, Mapping) and ("low" in value or "choices" in value)


def _flatten(value: Any, key: str, out: dict[str, Any]) -> None:
    # Searched values ({low, high} or {choices}) stay whole, so that a change
    # from a fixed value to a range reads as one line.
    if isinstance(value, Mapping) and not _is_param(value) and value:
        for name, item in value.items():
            _flatten(item, f"{key}.{name}", out)
    else:
        out[key] = value


def _study_file_keys(definition: Mapping) -> dict[str, Any]:
    """Flatten a stored definition into study-file keys (``training.max_epochs``)."""
    out: dict[str, Any] = {}
    for key in COMPARED_KEYS:
        if key not in definition:
            continue
        value = definition[key]
        if key == "families" and isinstance(value, Mapping):
            out["schedulers.types"] = list(value)
            for family, params in value.items():
                _flatten(params, f"schedulers.{family}", out)
        else:
            _flatten(value, key, out)
    return out


def definition_changes(stored: Mapping, current: Mapping) -> list[Change]:
    """Return the compared keys whose values differ, in the current file's order."""
    old = _study_file_keys(stored)
    new = _study_file_keys(current)
    keys = list(new) + [key for key in old if key not in new]
    return [
        Change(key, old.get(key, MISSING), new.get(key, MISSING))
        for key in keys
        if old.get(key, MISSING) != new.get(key, MISSING)
    ]


def check_stored_definition(
    study, spec: StudySpec, accept_changes: bool = False
) -> None:
    """Store the definition of a new study, or check it against the stored one.

    Parameters
    ----------
    study : optuna.Study
        The study just created or loaded.
    spec : StudySpec
        The study file being run.
    accept_changes : bool (default=False)
        Continue the study with the changed definition: store it and append
        ``{"time", "changes"}`` to the ``search_accepted_changes`` attribute.

    Raises
    ------
    DefinitionChanged
        If the definitions differ and ``accept_changes`` is false; the message
        lists each change as ``key: old -> new`` and the two ways on.
    """
    current = stored_form(spec)
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, current)
        return
    changes = definition_changes(stored, current)
    if not changes:
        return
    lines = [str(change) for change in changes]
    if not accept_changes:
        raise DefinitionChanged(
            f"study {spec.name!r} exists with a different definition than "
            f"{spec.path or 'the study file'}:\n  " + "\n  ".join(lines) + "\n"
            "Its stored trials ran with the old definition. Give the study a new name "
            '(name = "..." in the study file) to start a separate study, or rerun with '
            "--accept-changes to continue it and record the change in "
            f"{ACCEPTED_CHANGES_ATTR}"
        )
    record = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "changes": lines,
    }
    accepted = list(study.user_attrs.get(ACCEPTED_CHANGES_ATTR, [])) + [record]
    study.set_user_attr(ACCEPTED_CHANGES_ATTR, accepted)
    study.set_user_attr(SPEC_ATTR, current)
    if "metric" in study.user_attrs:
        study.set_user_attr("metric", spec.metric)
    logger.warning(
        "study %r: accepted %d definition changes: %s",
        spec.name,
        len(lines),
        "; ".join(lines),
    )


def check_data(spec: StudySpec):
    """Load the study's data as every trial will, and check the metric against its task.

    Returns the :class:`search.data.PreparedData`. Torch is not imported.

    Raises
    ------
    search.data.DataError
        If the data set or data file cannot be used.
    SpecError
        If the metric does not exist for the data's task.
    """
    from search.data import prepare_data

    data = prepare_data(spec.data, spec.seed)
    if data.task == "regression" and spec.metric == "valid_acc":
        source = spec.data.path or spec.data.dataset
        raise SpecError(
            [
                f"{spec.path}: metric: valid_acc needs a classification target, but "
                f"{source} is a regression task (got 'valid_acc'); set metric = "
                '"valid_loss", or data.task = "classification" for class labels'
            ]
        )
    return data


def check_runnable(spec: StudySpec) -> None:
    """Load the study's data and build its model once, before any storage is opened.

    Raises
    ------
    search.data.DataError, SpecError
        See :func:`check_data`.
    search.models.ModelError
        If the model cannot be imported or built.
    """
    from search.models import build_module_factory

    build_module_factory(spec.model, check_data(spec))
