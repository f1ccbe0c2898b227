"""Command line: ``python -m search COMMAND``.

Results go to stdout and logs to stderr. Exit status: 0 on success, 1 on a
failure while running, 2 on invalid input or usage, 130 on SIGINT (Ctrl-C)
and 143 on SIGTERM.
Commands import torch only when they train, so ``--help``, ``studies`` and
``validate`` start fast.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from functools import partial

from search.errors import InputError
from search.interrupts import Interrupted, install_log_filter
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
        "--storage",
        metavar="URL",
        help=f"SQLAlchemy URL of the database (default: ${STORAGE_ENV}, "
        f"else {DEFAULT_STORAGE})",
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of every command."""
    parser = argparse.ArgumentParser(
        prog="python -m search",
        description="Search learning-rate schedules of skorch nets with Optuna.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log more (repeat for debug output)",
    )
    parser.add_argument(
        "-q", "--quiet", action="count", default=0, help="log only warnings and errors"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="create or resume a study and run its trials")
    run.add_argument(
        "--study",
        required=True,
        metavar="NAME|PATH",
        help="a study name from studies/ or the path of a TOML study file",
    )
    _add_storage(run)
    run.add_argument(
        "--n-trials",
        type=_positive_int,
        metavar="N",
        help="finished trials the study should hold (default: the "
        "study file's n_trials)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="start no new trial after this many seconds",
    )
    run.add_argument(
        "--accept-changes",
        action="store_true",
        help="continue a stored study although the study file's search "
        "space, data, model or training changed; the change is recorded "
        "in the study's user attribute search_accepted_changes",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="worker processes on this machine, each with cores/N torch "
        "threads (default: 1)",
    )
    run.add_argument(
        "--heartbeat-interval",
        type=_positive_int,
        default=None,
        metavar="SECONDS",
        help="seconds between heartbeats of a running trial; a trial "
        "without one for 4 intervals is failed and retried (default: 60)",
    )
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
    """Send this package's logs to stderr; quiet Optuna's own trial log to match.

    Optuna's warnings and traceback about a trial interrupted by a signal are
    dropped, because the runner logs one line for it.
    """
    import optuna

    python_level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}.get(
        max(-1, min(1, level))
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger("search")
    root.handlers[:] = [handler]
    root.setLevel(python_level)
    root.propagate = False
    optuna.logging.set_verbosity(logging.DEBUG if level > 0 else logging.WARNING)
    install_log_filter()


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
    except Interrupted as error:
        print(f"{error}; run the same command again to resume", file=sys.stderr)
        return error.exit_status
    except Exception as error:  # a failure while running: exit 1
        logger.debug("%s failed", args.command, exc_info=True)
        print(
            f"error: {args.command} failed: {type(error).__name__}: {error}; "
            "a trial that raised is stored as FAIL, and running the command again "
            "resumes the study",
            file=sys.stderr,
        )
        return EXIT_FAILED


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
    from search.definition import check_data

    names = args.files or [str(path) for path in list_study_files().values()]
    failed = 0
    for name in names:
        try:
            check_data(load_spec(resolve_study(name)))
        except SpecError as error:
            failed += 1
            for problem in error.problems:
                print(problem)
            continue
        except InputError as error:
            failed += 1
            print(error)
            continue
        print(f"{name}: OK")
    return EXIT_INVALID if failed else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from search.definition import check_runnable
    from search.objective import check_budget
    from search.report import format_summary
    from search.runner import RunOptions, run_study
    from search.workers import WorkersFailed

    spec = load_spec(resolve_study(args.study))
    url = resolve_url(args.storage)
    check_runnable(spec)
    check_budget(spec)
    write_stdout(
        f"study {spec.name!r}: {spec.description}  [storage {mask_url(url)}]\n"
    )

    options = RunOptions(
        args.n_trials,
        args.timeout,
        workers=args.workers,
        accept_changes=args.accept_changes,
    )
    if args.heartbeat_interval is not None:
        options = replace(options, heartbeat_interval=args.heartbeat_interval)
    setup_worker_logging = partial(configure_logging, args.verbose - args.quiet)
    try:
        study = run_study(
            spec,
            url,
            options,
            on_trial=print_trial_line,
            worker_initializer=setup_worker_logging,
        )
    except WorkersFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    write_stdout(format_summary(study, url) + "\n")
    return EXIT_OK


def print_trial_line(study, trial) -> None:
    """Print the progress line of a finished trial.

    It is a module-level function so that worker processes can unpickle it.
    The line and its newline go out in one write, so that lines of workers
    sharing one stdout pipe do not interleave.
    """
    from search.report import format_trial_line

    write_stdout(format_trial_line(study, trial) + "\n")


def write_stdout(text: str) -> None:
    """Write ``text`` to stdout and flush it, so that a short text is one write.

    When the reader of a stdout pipe has closed it, as ``| head`` does, this
    points stdout's file descriptor at os.devnull, following "Note on SIGPIPE"
    in the documentation of Python's signal module. The run then goes on and
    discards the rest of its output instead of failing with BrokenPipeError.
    """
    try:
        sys.stdout.flush()
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        logger.info("stdout is closed (broken pipe); discarding further output")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0 to 65535 (got {value})")
    return value


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format",
        choices=("text", "csv", "json"),
        default="text",
        help="output an aligned table (default), CSV or JSON",
    )


def _add_view_commands(commands) -> None:
    """Add the commands that read stored studies; each imports its module when run."""
    listing = commands.add_parser(
        "list", help="list the stored studies with trial counts and best value"
    )
    _add_storage(listing)
    _add_format(listing)
    listing.set_defaults(handler=_list)

    show = commands.add_parser(
        "show",
        help="show a stored study's top trials and its best trial's curves",
        description="Show the top completed trials and the best trial's epochs. "
        "--format csv writes the top trials only, with every parameter and "
        "scheduler argument; --format json writes both.",
    )
    show.add_argument(
        "--study", required=True, metavar="NAME", help="stored study name"
    )
    _add_storage(show)
    _add_format(show)
    show.add_argument(
        "--top",
        type=_positive_int,
        default=10,
        metavar="N",
        help="completed trials to list, best first (default: 10)",
    )
    show.add_argument(
        "--plot",
        metavar="FILE",
        help="also save learning rates, metric curves and final values to FILE; "
        "its suffix .png, .pdf or .svg chooses the format",
    )
    show.set_defaults(handler=_show)

    compare = commands.add_parser(
        "compare",
        help="compare the schedule families of stored studies, best first",
        description="Rank the schedule families of stored studies, best first: by "
        "best value in the study's direction, then by the median of completed "
        "values. Studies with the same direction and metric are ranked together "
        "in one table, others each on their own.",
    )
    compare.add_argument(
        "studies", nargs="+", metavar="NAME", help="stored study names"
    )
    _add_storage(compare)
    _add_format(compare)
    compare.add_argument(
        "--plot",
        metavar="FILE",
        help="also save learning rates, metric curves and final values to FILE; "
        "its suffix .png, .pdf or .svg chooses the format",
    )
    compare.set_defaults(handler=_compare)

    export = commands.add_parser(
        "export",
        help="write a stored study's trials, epochs and batch rates to CSV or Parquet",
        description="Write the trials to FILE and the epoch and batch rows to its "
        "siblings with _epochs and _batches added to the name (results.csv, "
        "results_epochs.csv, results_batches.csv). The suffix .csv, .parquet or .pq "
        "chooses the format.",
    )
    export.add_argument(
        "--study", required=True, metavar="NAME", help="stored study name"
    )
    export.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help="trials file ending in .csv, .parquet or .pq",
    )
    _add_storage(export)
    export.set_defaults(handler=_export)

    dashboard = commands.add_parser(
        "dashboard", help="serve optuna-dashboard on the storage until interrupted"
    )
    _add_storage(dashboard)
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1; any other "
        "makes the dashboard reachable from other machines)",
    )
    dashboard.add_argument(
        "--port",
        type=_port,
        default=8080,
        help="TCP port (default: 8080; 0 picks a free port)",
    )
    dashboard.set_defaults(handler=_dashboard)


def _list(args: argparse.Namespace) -> int:
    from search.views import list_view

    write_stdout(list_view(resolve_url(args.storage), args.format) + "\n")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from search.views import show_view

    url = resolve_url(args.storage)
    write_stdout(
        show_view(url, args.study, args.format, top=args.top, plot=args.plot) + "\n"
    )
    if args.plot:
        logger.info("wrote plot %s", args.plot)
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from search.views import compare_view

    url = resolve_url(args.storage)
    write_stdout(compare_view(url, args.studies, args.format, plot=args.plot) + "\n")
    if args.plot:
        logger.info("wrote plot %s", args.plot)
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    from search.views import export_study

    written = export_study(resolve_url(args.storage), args.study, args.out)
    for kind, (path, rows) in written.items():
        print(f"{kind}: {path} ({rows} rows)")
    return EXIT_OK


def _dashboard(args: argparse.Namespace) -> int:
    from search.dashboard import serve

    # serve() opens the storage with this package's options and blocks until
    # KeyboardInterrupt, which main() turns into exit status 130. A missing
    # optuna-dashboard or database driver raises an InputError: exit status 2.
    try:
        serve(resolve_url(args.storage), host=args.host, port=args.port)
    except OSError as error:
        print(
            f"error: cannot serve the dashboard on {args.host}:{args.port}: {error}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK
