"""Build and fit the skorch net of one sampled configuration.

The fast path: training and validation batches are slices of whole in-memory
tensors (:class:`TensorBatchIterator`), not samples indexed and collated one by
one, with the same shuffling as skorch's default DataLoader.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from skorch import NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Callback, LRScheduler
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from torch import nn

from search.data import PreparedData
from search.schedules import CONSTANT, FAMILIES
from search.spec import TrainingSpec

logger = logging.getLogger(__name__)

OPTIMIZER_CLASSES = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam,
                     "adamw": torch.optim.AdamW}


class TensorBatchIterator:
    """Yield ``(X, y)`` batches as slices of the dataset's whole tensors.

    skorch builds one per epoch with ``iterator(dataset, batch_size=...,
    shuffle=...)``. Random draws follow ``torch.utils.data.DataLoader`` with a
    ``RandomSampler`` exactly (one draw for the loader's base seed, one for the
    sampler's permutation), so a seeded trial shuffles, and draws dropout
    masks, as it would with skorch's default iterator.
    """

    def __init__(self, dataset: Dataset, batch_size: int = 128, shuffle: bool = False,
                 **_ignored):
        self.X = torch.as_tensor(dataset.X)
        self.y = None if dataset.y is None else torch.as_tensor(dataset.y)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.n_samples = len(self.X)

    def __len__(self) -> int:
        return math.ceil(self.n_samples / self.batch_size)

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()  # DataLoader's base seed
        order = None
        if self.shuffle:
            seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator()
            generator.manual_seed(seed)
            order = torch.randperm(self.n_samples, generator=generator)
        for start in range(0, self.n_samples, self.batch_size):
            if order is None:
                index = slice(start, start + self.batch_size)
            else:
                index = order[start:start + self.batch_size]
            y = None if self.y is None else self.y[index]
            yield self.X[index], y


class TrainingDiverged(Exception):
    """Raised when the training loss of an epoch is NaN or infinite."""

    def __init__(self, epoch: int, train_loss: float):
        self.epoch = epoch
        self.train_loss = train_loss
        super().__init__(f"training loss is {train_loss} at epoch {epoch}")


@dataclass(frozen=True)
class EpochSummary:
    """What :class:`EpochRecorder` hands to its sink after every epoch."""

    epoch: int
    lr: float | None
    train_loss: float | None
    valid_loss: float | None
    metric: float | None
    duration_s: float | None
    batch_lrs: Sequence[float]


class EpochRecorder(Callback):
    """Pass each finished epoch, with its learning rates, to ``sink``.

    The epoch's rate is parameter group 0's rate at its first training batch,
    so it is the rate in effect for epoch-stepped schedules and the cycle's
    first batch for batch-stepped ones. With ``keep_batch_lrs`` every training
    batch's rate is kept too. A NaN or infinite training loss raises
    :class:`TrainingDiverged` after the epoch is passed on.
    """

    def __init__(self, metric: str, sink: Callable[[EpochSummary], None],
                 keep_batch_lrs: bool = False):
        self.metric = metric
        self.sink = sink
        self.keep_batch_lrs = keep_batch_lrs

    def initialize(self):
        self.batch_lrs_: list[float] = []
        self.started_ = None
        return self

    def on_epoch_begin(self, net, **kwargs):
        self.batch_lrs_ = []
        self.epoch_lr_ = None
        self.started_ = time.perf_counter()

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if not training:
            return
        lr = net.optimizer_.param_groups[0]["lr"]
        if self.epoch_lr_ is None:
            self.epoch_lr_ = lr
        if self.keep_batch_lrs:
            self.batch_lrs_.append(lr)

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
        self.sink(summary)
        train_loss = summary.train_loss
        if train_loss is not None and not math.isfinite(train_loss):
            raise TrainingDiverged(summary.epoch, train_loss)


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
        Feed batches with :class:`TensorBatchIterator`; False uses skorch's
        default DataLoader.
    """
    classification = data.task == "classification"
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
