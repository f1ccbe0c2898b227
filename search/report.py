"""Text for people: one line per finished trial and the summary of a study."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.records import epochs_table, read_rows


def format_value(value) -> str:
    """Format a number compactly: 4 significant digits, None as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_params(trial: FrozenTrial) -> str:
    """Format the trial's parameters, the family first, without the family prefix."""
    family = trial.params.get("scheduler", "?")
    parts = [family, f"lr={format_value(trial.params.get('lr'))}"]
    for name, value in trial.params.items():
        if name in ("scheduler", "lr"):
            continue
        parts.append(f"{name.split('.', 1)[-1]}={format_value(value)}")
    return " ".join(parts)


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no COMPLETE trial yet
        return None


def format_trial_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """Return ``trial N  FAMILY params  value=V  STATE  best=B (trial M)``."""
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[max(trial.intermediate_values)]
    best = _best(study)
    best_text = (
        "-" if best is None else f"{format_value(best.value)} (trial {best.number})"
    )
    reason = trial.user_attrs.get("failure_reason")
    suffix = f"  [{reason}]" if reason else ""
    return (
        f"trial {trial.number:>3}  {format_params(trial)}  "
        f"value={format_value(value)}  {trial.state.name}  best={best_text}{suffix}"
    )


def format_summary(study: optuna.Study, storage_url: str) -> str:
    """Return the study's counts, best trial, its scheduler arguments and curve."""
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    lines = [
        "",
        f"study {study.study_name!r}: {len(trials)} trials, "
        + ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n),
    ]
    diverged = sum("diverged_epoch" in t.user_attrs for t in trials)
    if diverged:
        lines.append(
            f"{diverged} trials diverged (NaN or infinite loss) and were pruned"
        )
    best = _best(study)
    if best is None:
        lines.append("no completed trial yet")
        return "\n".join(lines)

    metric = study.user_attrs.get("metric", "value")
    lines += [
        f"best trial {best.number}: {metric} = {format_value(best.value)}",
        f"  parameters: {format_params(best)}",
        f"  scheduler arguments: {best.user_attrs.get('scheduler_kwargs', {})}",
        "",
        f"  {'epoch':>5}  {'lr':>10}  {'train_loss':>10}  {'valid_loss':>10}  "
        f"{metric:>10}",
    ]
    rows = read_rows(storage_url, epochs_table, [study.study_name], [best.number])
    for row in rows:
        if row["trial_id"] != best._trial_id:
            continue
        lines.append(
            f"  {row['epoch']:>5}  {format_value(row['lr']):>10}  "
            f"{format_value(row['train_loss']):>10}  "
            f"{format_value(row['valid_loss']):>10}  "
            f"{format_value(row['metric']):>10}"
        )
    return "\n".join(lines)
