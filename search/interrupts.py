"""SIGINT and SIGTERM during a run: finish the running trial as FAIL, then exit.

skorch's ``NeuralNet.partial_fit`` catches ``KeyboardInterrupt`` and ends
training quietly, so the default SIGINT handling would record an interrupted
trial as COMPLETE. :class:`SignalGuard` replaces the handlers of both signals
with one that raises :class:`Interrupted`, a ``BaseException`` that neither
skorch nor Optuna catches. Between trials it only calls ``study.stop()``, so
the interruption never leaves a trial created by ``study.ask`` RUNNING.

Optuna logs the trial that failed with :class:`TrialInterrupted` with its
traceback. :func:`install_log_filter` drops that log, and the runner logs one
line per interrupted trial instead.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

logger = logging.getLogger(__name__)

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# User attribute of a trial that ended as FAIL for a reason other than an error
# in the objective, such as a signal.
FAILURE_REASON_ATTR = "failure_reason"


def signal_name(signum: int) -> str:
    """Return the name of a signal number, such as ``SIGTERM``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Interrupted(BaseException):  # noqa: N818 (a signal, like KeyboardInterrupt)
    """Raised when the process receives SIGINT or SIGTERM.

    It derives from ``BaseException`` so that ``except Exception`` blocks, and
    skorch's ``except KeyboardInterrupt``, let it through.
    """

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal_name(signum)}")

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number."""
        return 128 + self.signum


class TrialInterrupted(Exception):
    """Raised out of the objective after a signal, so Optuna stores the trial as FAIL.

    Optuna marks the trial FAIL for any ``Exception`` from the objective and
    then raises it again out of ``study.optimize``.
    """

    def __init__(self, signum: int, trial_number: int):
        self.signum = signum
        self.trial_number = trial_number
        super().__init__(f"trial {trial_number} interrupted by {signal_name(signum)}")


# The logger of Optuna's optimize loop, which logs a trial that raised with
# its traceback (optuna/study/_optimize.py in Optuna 5.1). A filter must sit on
# this logger itself, because a logger's filters skip records that its child
# loggers create.
OPTUNA_OPTIMIZE_LOGGER = "optuna.study._optimize"


class InterruptedTrialFilter(logging.Filter):
    """Drop Optuna's warnings about a trial that failed with TrialInterrupted.

    For a trial whose objective raised, Optuna logs "Trial N failed with
    parameters: ... because of the following error: ..." with the traceback,
    then "Trial N failed with value None.". The runner logs one line for an
    interrupted trial, so this filter drops both records for it. Records
    about other failed trials pass unchanged, tracebacks included.
    """

    def __init__(self):
        super().__init__()
        self._dropped_trials: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, TrialInterrupted):
            self._dropped_trials.add(error.trial_number)
            return False
        # NOTE: the second record carries no exception, so it is matched by
        # Optuna 5.1's wording. Another wording lets the line through.
        message = record.getMessage()
        for number in self._dropped_trials:
            if message.startswith(f"Trial {number} failed with value "):
                self._dropped_trials.discard(number)
                return False
        return True


def install_log_filter() -> None:
    """Add :class:`InterruptedTrialFilter` to Optuna's optimize logger, once."""
    optimize_logger = logging.getLogger(OPTUNA_OPTIMIZE_LOGGER)
    for existing in optimize_logger.filters:
        if isinstance(existing, InterruptedTrialFilter):
            return
    optimize_logger.addFilter(InterruptedTrialFilter())


class SignalGuard:
    """Handle SIGINT and SIGTERM in the main thread while a study runs.

    The guard is in one of two modes. In raising mode, the default and the mode
    inside :meth:`raising`, the first signal raises :class:`Interrupted` at
    once. In deferred mode, the mode between trials, it is recorded, the study
    is asked to stop after the current step, and :meth:`raise_if_received`
    raises it later. A second signal while the first is handled is logged and
    otherwise ignored, so the trial's FAIL state still gets written.
    """

    def __init__(self):
        self.received: int | None = None
        self.study = None
        self._deferred = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is not threading.main_thread():
            # Python delivers signals to the main thread only, and
            # signal.signal raises ValueError elsewhere.
            logger.debug(
                "not in the main thread; SIGINT and SIGTERM keep their handlers"
            )
            return self
        for signum in HANDLED_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            logger.warning("received %s again; still stopping", signal_name(signum))
            return
        self.received = signum
        if self._deferred:
            logger.warning(
                "received %s; stopping after the current step", signal_name(signum)
            )
            if self.study is not None:
                self.study.stop()
            return
        logger.warning("received %s; stopping", signal_name(signum))
        raise Interrupted(signum)

    def defer(self) -> None:
        """Switch to deferred mode, used between trials."""
        self._deferred = True

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """Raise :class:`Interrupted` for a signal received before or in the block."""
        self._deferred = False
        try:
            self.raise_if_received()
            yield
        finally:
            self._deferred = True

    def raise_if_received(self) -> None:
        """Raise :class:`Interrupted` if a signal was received."""
        if self.received is not None:
            raise Interrupted(self.received)
