"""A model whose training fails on request, for a real FAIL trial in a stored study."""

from __future__ import annotations

import torch

from search.models import MLP

FAILURE_MESSAGE = "injected failure in a training batch"


class FailingMLP(MLP):
    """search.models.MLP with 16 hidden units that can raise in a training batch.

    While ``FailingMLP.batches_before_failure`` is None it trains as the MLP.
    Set to N, the forward pass of training batch N + 1 raises RuntimeError,
    counting batches over every instance from the moment it is set.
    """

    batches_before_failure: int | None = None

    def __init__(self, n_features: int, n_outputs: int):
        super().__init__(n_features, n_outputs, hidden_units=(16,))

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        remaining = FailingMLP.batches_before_failure
        if self.training and remaining is not None:
            if remaining <= 0:
                raise RuntimeError(FAILURE_MESSAGE)
            FailingMLP.batches_before_failure = remaining - 1
        return super().forward(X)
