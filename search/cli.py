"""Command line: ``python -m search COMMAND``.

Results go to stdout and logs to stderr. Exit status: 0 on success, 1 on a
failure while running, 2 on invalid input or usage, 130 when interrupted.
Commands import torch only when they train, so ``--help``, ``studies`` and
``validate`` start fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence

from search.errors import InputError
from search.spec import SpecError, list_study_files, load_spec, resolve_study
from search.storage import DEFAULT_STORAGE, STORAGE_ENV, mask_url, resolve_url

logger = logging.getLogger("search")

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid integer {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number (got {text})")
    return value


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", metavar="URL",
        help=f"SQLAlchemy URL of the database (default: ${STORAGE_ENV}, "
        f"else {DEFAULT_STORAGE})",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="python -m search",
        description="Search learning-rate schedules of skorch nets with Optuna.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (repeat for debug output)")
    parser.add_argument("-q", "--quiet", action="count", default=0,
                        help="log only warnings and errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="create or resume a study and run its trials")
    run.add_argument("--study", required=True, metavar="NAME|PATH",
                     help="a study name from studies/ or the path of a TOML study file")
    _add_storage(run)
    run.add_argument("--n-trials", type=_positive_int, metavar="N",
                     help="finished trials the study should hold (default: the "
                     "study file's n_trials)")
    run.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                     help="start no new trial after this many seconds")
    run.set_defaults(handler=_run)

    studies = commands.add_parser("studies", help="list the study files")
    studies.set_defaults(handler=_studies)

    validate = commands.add_parser(
        "validate", help="check study files without training (default: all in studies/)"
    )
    validate.add_argument("files", nargs="*", metavar="FILE")
    validate.set_defaults(handler=_validate)
    _add_view_commands(commands)
    return parser


def configure_logging(level: int) -> None:
    """Send this package's logs to stderr; quiet Optuna's own trial log to match."""
    import optuna

    python_level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(
        max(-1, min(1, level))
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("search")
    root.handlers[:] = [handler]
    root.setLevel(python_level)
    root.propagate = False
    optuna.logging.set_verbosity(logging.DEBUG if level > 0 else logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    configure_logging(args.verbose - args.quiet)
    try:
        return args.handler(args)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _studies(args: argparse.Namespace) -> int:
    files = list_study_files()
    if not files:
        print("no study files found in ./studies")
        return EXIT_OK
    width = max(map(len, files))
    for name, path in files.items():
        try:
            description = load_spec(path).description
        except SpecError as error:
            description = f"INVALID: {error.problems[0]}"
        print(f"{name:<{width}}  {description}")
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    paths = [resolve_study(f) for f in args.files] or list(list_study_files().values())
    failed = 0
    for path in paths:
        try:
            load_spec(path)
        except SpecError as error:
            failed += 1
            for problem in error.problems:
                print(problem)
            continue
        print(f"{path}: OK")
    return EXIT_INVALID if failed else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from search.objective import check_budget
    from search.report import format_summary, format_trial_line
    from search.runner import RunOptions, run_study

    spec = load_spec(resolve_study(args.study))
    url = resolve_url(args.storage)
    check_budget(spec)
    print(f"study {spec.name!r}: {spec.description}  [storage {mask_url(url)}]", flush=True)

    def progress(study, trial) -> None:
        print(format_trial_line(study, trial), flush=True)

    study = run_study(spec, url, RunOptions(args.n_trials, args.timeout), on_trial=progress)
    print(format_summary(study, url))
    return EXIT_OK
