"""Build and fit the skorch net of one sampled configuration.

The fast path: training and validation batches are slices of whole in-memory
tensors (:class:`TensorBatchIterator`), not samples indexed and collated one by
one, with the same shuffling as skorch's default DataLoader. The net skips
per-batch work that a trial does not use (:class:`LeanNeuralNetClassifier`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import torch
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import Dataset, unpack_data
from skorch.helper import predefined_split
from torch import nn

from search.data import PreparedData
from search.schedules import CONSTANT, FAMILIES
from search.spec import TrainingSpec

logger = logging.getLogger(__name__)

OPTIMIZER_CLASSES = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}


class TensorBatchIterator:
    """Yield ``(X, y)`` batches as slices of the dataset's whole tensors.

    skorch builds one per epoch with ``iterator(dataset, batch_size=...,
    shuffle=...)``. Random draws follow ``torch.utils.data.DataLoader`` with a
    ``RandomSampler`` exactly (one draw for the loader's base seed, one for the
    sampler's permutation), so a seeded trial shuffles, and draws dropout
    masks, as it would with skorch's default iterator. A shuffled epoch gathers
    the permuted tensors once, so every batch is a view of contiguous rows.
    """

    def __init__(
        self, dataset: Dataset, batch_size: int = 128, shuffle: bool = False, **_ignored
    ):
        self.X = torch.as_tensor(dataset.X)
        self.y = None if dataset.y is None else torch.as_tensor(dataset.y)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.n_samples = len(self.X)

    def __len__(self) -> int:
        return math.ceil(self.n_samples / self.batch_size)

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()  # DataLoader's base seed
        X, y = self.X, self.y
        if self.shuffle:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator()
            generator.manual_seed(seed)
            order = torch.randperm(self.n_samples, generator=generator)
            X = X[order]
            y = None if y is None else y[order]
        for start in range(0, self.n_samples, self.batch_size):
            stop = start + self.batch_size
            yield X[start:stop], None if y is None else y[start:stop]


class ValidAccuracy(Callback):
    """Record ``valid_acc`` from the logits of the validation batches.

    It replaces skorch's default ``EpochScoring("accuracy")`` callback,
    which reaches the same fraction of correct predictions through
    scikit-learn's scorer and a softmax per epoch. Like it, it also records
    ``valid_acc_best``.
    """

    def initialize(self):
        self.best_ = None
        self.correct_ = 0
        self.count_ = 0
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.correct_ = 0
        self.count_ = 0

    def on_batch_end(self, net, batch=None, training=False, y_pred=None, **kwargs):
        if training:
            return
        y = batch[1]
        self.correct_ += int((y_pred.argmax(dim=1) == y).sum())
        self.count_ += len(y)

    def on_epoch_end(self, net, **kwargs):
        if not self.count_:
            return
        accuracy = self.correct_ / self.count_
        is_best = self.best_ is None or accuracy > self.best_
        if is_best:
            self.best_ = accuracy
        net.history.record("valid_acc", accuracy)
        net.history.record("valid_acc_best", is_best)


class _LeanEpochs:
    """Mixin for skorch nets that drops per-batch and per-epoch work a trial never uses.

    - The module and criterion switch between train and eval mode once per
      epoch phase, not before every batch.
    - ``PrintLog`` is left out, because it formats a table every epoch even
      with ``verbose=0``.
    - ``valid_acc`` comes from :class:`ValidAccuracy`.
    """

    def get_default_callbacks(self):
        lean = []
        for name, callback in super().get_default_callbacks():
            if name == "print_log":
                continue
            if name == "valid_acc":
                callback = ValidAccuracy()
            lean.append((name, callback))
        return lean

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        if iterator is not None:
            # NOTE: _set_training is skorch's private helper (skorch 1.4), the one
            # its train_step_single and validation_step call on every batch.
            self._set_training(training)
        super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)

    def train_step_single(self, batch, **fit_params):
        Xi, yi = unpack_data(batch)
        y_pred = self.infer(Xi, **fit_params)
        loss = self.get_loss(y_pred, yi, X=Xi, training=True)
        loss.backward()
        return {"loss": loss, "y_pred": y_pred}

    def validation_step(self, batch, **fit_params):
        Xi, yi = unpack_data(batch)
        with torch.no_grad():
            y_pred = self.infer(Xi, **fit_params)
            loss = self.get_loss(y_pred, yi, X=Xi, training=False)
        return {"loss": loss, "y_pred": y_pred}


class LeanNeuralNetClassifier(_LeanEpochs, NeuralNetClassifier):
    """``NeuralNetClassifier`` without the per-batch work a trial does not use."""


class LeanNeuralNetRegressor(_LeanEpochs, NeuralNetRegressor):
    """``NeuralNetRegressor`` without the per-batch work a trial does not use."""


class TrainingDiverged(Exception):
    """Raised when an epoch's training or validation loss or metric is NaN or infinite.

    ``key`` is the history key of the value: ``train_loss``, ``valid_loss``
    or ``metric``.
    """

    def __init__(self, epoch: int, value: float, key: str = "train_loss"):
        self.epoch = epoch
        self.value = value
        self.key = key
        super().__init__(f"{key} is {value} at epoch {epoch}")


class StopRequested(Exception):
    """Raised in the training thread when the sink asked to stop after ``epoch``."""

    def __init__(self, epoch: int):
        self.epoch = epoch
        super().__init__(f"stop requested after epoch {epoch}")


@dataclass(frozen=True)
class EpochSummary:
    """The summary of one epoch that :class:`EpochRecorder` passes to its sink."""

    epoch: int
    lr: float | None
    train_loss: float | None
    valid_loss: float | None
    metric: float | None
    duration_s: float | None
    batch_lrs: Sequence[float]

    @property
    def diverged(self) -> bool:
        """Whether the training loss, validation loss or metric is NaN or infinite."""
        return self.divergence is not None

    @property
    def divergence(self) -> tuple[float, str] | None:
        """The first NaN or infinite value of the epoch and its key, or None."""
        for key in ("train_loss", "valid_loss", "metric"):
            value = getattr(self, key)
            if value is not None and not math.isfinite(value):
                return value, key
        return None


class BackgroundJobs:
    """Run jobs in submission order on one worker thread, and re-raise their errors.

    A job's exception is raised by the next :meth:`wait` or :meth:`close`, in
    the thread that calls it.
    """

    def __init__(self, name: str = "search-storage"):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._futures: list[Future] = []

    def submit(self, job: Callable[[], object]) -> Future:
        future = self._executor.submit(job)
        self._futures.append(future)
        return future

    def wait(self) -> None:
        """Block until every submitted job has finished, then raise the first error."""
        futures, self._futures = self._futures, []
        errors = [f.exception() for f in futures]
        for error in errors:
            if error is not None:
                raise error

    def close(self) -> None:
        """Wait for the submitted jobs, then stop the thread."""
        try:
            self.wait()
        finally:
            self._executor.shutdown(wait=True)


class EpochRecorder(Callback):
    """Pass each finished epoch, with its learning rates, to ``sink``.

    The epoch's rate is parameter group 0's rate at its first training batch,
    so it is the rate in effect for epoch-stepped schedules and the cycle's
    first batch for batch-stepped ones. With ``keep_batch_lrs`` every training
    batch's rate is kept too. A NaN or infinite training loss, validation
    loss or metric raises :class:`TrainingDiverged` after the epoch is passed
    on.

    ``sink(summary)`` returns True to stop training after that epoch, which
    raises :class:`StopRequested`. Given ``jobs``, the sink runs on their
    background thread while the next epoch trains. The result for epoch N is
    collected at the end of epoch N + 1, before that epoch is passed on. So a
    stop after epoch N passes on the same epochs as a sink in the training
    thread would, and epoch N + 1 is discarded. The last epoch's result is
    collected in ``on_train_end``, and a diverged epoch's at once. Call
    ``jobs.close()`` after ``fit``, also when it raised, so that every epoch
    is stored.

    ``sink_wait_s_`` is the time in seconds the training thread spent in the
    sink, or in handing epochs off and waiting for their results.
    """

    def __init__(
        self,
        metric: str,
        sink: Callable[[EpochSummary], bool | None],
        keep_batch_lrs: bool = False,
        jobs: BackgroundJobs | None = None,
    ):
        self.metric = metric
        self.sink = sink
        self.keep_batch_lrs = keep_batch_lrs
        self.jobs = jobs

    def initialize(self):
        self.batch_lrs_: list[float] = []
        self.started_ = None
        self.pending_: tuple[int, Future] | None = None
        self.sink_wait_s_ = 0.0
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.batch_lrs_ = []
        self.epoch_lr_ = None
        self.started_ = time.perf_counter()

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        if self.epoch_lr_ is None:
            self.epoch_lr_ = net.optimizer_.param_groups[0]["lr"]
        if self.keep_batch_lrs:
            self.batch_lrs_.append(net.optimizer_.param_groups[0]["lr"])

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        summary = EpochSummary(
            epoch=row["epoch"],
            lr=self.epoch_lr_,
            train_loss=row.get("train_loss"),
            valid_loss=row.get("valid_loss"),
            metric=row.get(self.metric),
            duration_s=row.get("dur", time.perf_counter() - self.started_),
            batch_lrs=tuple(self.batch_lrs_),
        )
        started = time.perf_counter()
        try:
            self._collect()
            if self.jobs is None:
                if self.sink(summary):
                    raise StopRequested(summary.epoch)
            else:
                future = self.jobs.submit(partial(self.sink, summary))
                self.pending_ = (summary.epoch, future)
                if summary.diverged:
                    self._collect()
        finally:
            self.sink_wait_s_ += time.perf_counter() - started
        if summary.diverged:
            raise TrainingDiverged(summary.epoch, *summary.divergence)

    def on_train_end(self, net, **kwargs):
        started = time.perf_counter()
        try:
            self._collect()
        finally:
            self.sink_wait_s_ += time.perf_counter() - started

    def _collect(self) -> None:
        if self.pending_ is None:
            return
        epoch, future = self.pending_
        self.pending_ = None
        if future.result():
            raise StopRequested(epoch)


def build_scheduler_callback(family: str, kwargs: dict) -> LRScheduler | None:
    """Return skorch's LRScheduler callback for ``family``, None for the control."""
    if family == CONSTANT:
        return None
    entry = FAMILIES[family]
    scheduler_cls = getattr(torch.optim.lr_scheduler, entry.torch_name)
    options = {"policy": scheduler_cls, "step_every": entry.step_every}
    if family == "ReduceLROnPlateau":
        options["monitor"] = "valid_loss"
    return LRScheduler(**options, **kwargs)


def build_net(
    module_factory: Callable[[], nn.Module],
    data: PreparedData,
    training: TrainingSpec,
    lr: float,
    family: str,
    scheduler_kwargs: dict,
    callbacks: Sequence[tuple[str, Callback]] = (),
    fast: bool = True,
):
    """Return an uninitialized skorch net for one trial.

    Parameters
    ----------
    module_factory : callable
        Builds the module; it returns logits for classification.
    data : PreparedData
        The study's split; its validation part is the net's fixed
        ``train_split``.
    training : TrainingSpec
        Epochs, batch size and optimizer.
    lr : float
        The base learning rate given to the optimizer.
    family, scheduler_kwargs :
        The schedule family and the exact keyword arguments of its torch class.
    callbacks : sequence of (name, Callback)
        Added after the scheduler callback, in order.
    fast : bool (default=True)
        Feed batches with :class:`TensorBatchIterator` to a lean net
        (:class:`LeanNeuralNetClassifier`, :class:`LeanNeuralNetRegressor`);
        False builds skorch's plain net with its default DataLoader.
    """
    classification = data.task == "classification"
    if fast:
        net_cls = LeanNeuralNetClassifier if classification else LeanNeuralNetRegressor
    else:
        net_cls = NeuralNetClassifier if classification else NeuralNetRegressor
    optimizer = training.optimizer
    options: dict = {
        "module": module_factory,
        "criterion": nn.CrossEntropyLoss if classification else nn.MSELoss,
        "optimizer": OPTIMIZER_CLASSES[optimizer],
        "lr": lr,
        "optimizer__weight_decay": training.weight_decay,
        "max_epochs": training.max_epochs,
        "batch_size": training.batch_size,
        "train_split": predefined_split(Dataset(data.X_valid, data.y_valid)),
        "iterator_train__shuffle": True,
        "verbose": 0,
        "device": "cpu",
    }
    if optimizer == "sgd":
        options["optimizer__momentum"] = training.momentum
    if classification:
        options["classes"] = list(range(data.n_classes))
    if fast:
        options["iterator_train"] = TensorBatchIterator
        options["iterator_valid"] = TensorBatchIterator

    all_callbacks: list[tuple[str, Callback]] = []
    scheduler = build_scheduler_callback(family, scheduler_kwargs)
    if scheduler is not None:
        all_callbacks.append(("lr_scheduler", scheduler))
    all_callbacks.extend(callbacks)
    return net_cls(callbacks=all_callbacks, **options)


def n_train_batches(data: PreparedData, training: TrainingSpec) -> int:
    """Return the number of training batches per epoch after the validation split."""
    return math.ceil(len(data.X_train) / training.batch_size)
