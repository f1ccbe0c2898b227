"""The baseline of the benchmark: the training loop one writes by hand in PyTorch.

It does the work of one trial of a StepLR study without skorch, Optuna or a
database: the same MLP, split, epochs, batch size, optimizer and scheduler,
and validation loss and accuracy after every epoch. Shuffling draws from
torch's global generator the way ``torch.utils.data.DataLoader`` with a
``RandomSampler`` does, so with the same seed the loop trains on the same
batch order as a trial and reaches the same validation accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from search.data import PreparedData
from search.models import MLP
from search.spec import TrainingSpec


@dataclass(frozen=True)
class EpochResult:
    """Losses and validation accuracy of one epoch of the hand-written loop."""

    train_loss: float
    valid_loss: float
    valid_acc: float


def _draw_loader_seed() -> None:
    # DataLoader draws one int64 from the global generator for its base seed
    # every time it starts an iteration, shuffled or not.
    torch.empty((), dtype=torch.int64).random_()


def _shuffled_order(n_samples: int) -> torch.Tensor:
    _draw_loader_seed()
    seed = int(torch.empty((), dtype=torch.int64).random_().item())
    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n_samples, generator=generator)


def fit_handwritten(
    data: PreparedData,
    hidden_units: tuple[int, ...],
    training: TrainingSpec,
    lr: float,
    step_size: int,
    gamma: float,
    seed: int,
) -> list[EpochResult]:
    """Train the MLP with SGD and StepLR and return every epoch's results."""
    torch.manual_seed(seed)
    module = MLP(data.n_features, data.n_classes, hidden_units)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(
        module.parameters(),
        lr=lr,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=step_size, gamma=gamma
    )
    X_train, y_train = torch.from_numpy(data.X_train), torch.from_numpy(data.y_train)
    X_valid, y_valid = torch.from_numpy(data.X_valid), torch.from_numpy(data.y_valid)
    batch_size = training.batch_size
    n_train, n_valid = len(X_train), len(X_valid)

    results = []
    for _ in range(training.max_epochs):
        module.train()
        order = _shuffled_order(n_train)
        train_loss_sum = 0.0
        for start in range(0, n_train, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = criterion(module(X_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            train_loss_sum += loss.item() * len(index)

        module.eval()
        _draw_loader_seed()
        valid_loss_sum, correct = 0.0, 0
        with torch.no_grad():
            for start in range(0, n_valid, batch_size):
                X_batch = X_valid[start : start + batch_size]
                y_batch = y_valid[start : start + batch_size]
                logits = module(X_batch)
                valid_loss_sum += criterion(logits, y_batch).item() * len(X_batch)
                correct += int((logits.argmax(dim=1) == y_batch).sum())
        scheduler.step()
        results.append(
            EpochResult(
                train_loss_sum / n_train, valid_loss_sum / n_valid, correct / n_valid
            )
        )
    return results
