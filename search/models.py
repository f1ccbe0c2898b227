"""Module factories: an MLP, a small CNN, or a user class given by import path.

Every module returns raw outputs (logits for classification), because the nets
train with CrossEntropyLoss or MSELoss.
"""

from __future__ import annotations

import importlib
import inspect
from functools import partial

import torch
from torch import nn

from search.data import PreparedData
from search.errors import InputError
from search.spec import ModelSpec


class ModelError(InputError):
    """Raised when the model of a study cannot be imported or built."""


class MLP(nn.Module):
    """A fully connected net with ReLU and optional dropout between layers."""

    def __init__(
        self, n_features: int, n_outputs: int, hidden_units=(128,), dropout: float = 0.0
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for units in hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layers(X)


class SmallCNN(nn.Module):
    """A CNN: convolution, ReLU and 2x2 max pooling per ``channels`` entry, then linear.

    The input rows are flat and reshaped to ``image_shape`` in ``forward``.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        n_outputs: int,
        channels=(16, 32),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.image_shape = tuple(image_shape)
        in_channels, height, width = self.image_shape
        layers: list[nn.Module] = []
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU()]
            if height >= 2 and width >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_channels = out_channels
        layers.append(nn.Flatten())
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(in_channels * height * width, n_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.layers(X.view(-1, *self.image_shape))


def build_module_factory(spec: ModelSpec, data: PreparedData):
    """Return a callable that builds a fresh module for one trial.

    Raises
    ------
    ModelError
        If the model kind needs image data that the dataset lacks, or a user
        class cannot be imported or built.
    """
    n_outputs = data.n_classes if data.task == "classification" else 1
    if spec.kind == "mlp":
        return partial(MLP, data.n_features, n_outputs, spec.hidden_units, spec.dropout)
    if spec.kind == "cnn":
        if data.image_shape is None:
            raise ModelError(
                "model kind 'cnn' needs an image dataset (digits or mnist); "
                'use kind = "mlp" for tabular data'
            )
        return partial(
            SmallCNN, data.image_shape, n_outputs, spec.channels, spec.dropout
        )
    return _user_factory(spec, data, n_outputs)


def _user_factory(spec: ModelSpec, data: PreparedData, n_outputs: int):
    module_name, _, class_name = spec.kind.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any import-time failure of user code
        raise ModelError(
            f"model {spec.kind!r}: cannot import module {module_name!r} "
            f"({type(error).__name__}: {error}); check model.kind and PYTHONPATH"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None or not callable(cls):
        raise ModelError(
            f"model {spec.kind!r}: {module_name!r} has no class {class_name!r}; "
            "check model.kind"
        )
    shape_kwargs = {"n_features": data.n_features, "n_outputs": n_outputs}
    # The shape arguments are offered, not imposed; every option is passed so
    # that a misspelled one fails loudly.
    accepted = {**_accepted_kwargs(cls, shape_kwargs), **spec.options}
    factory = partial(cls, **accepted)
    try:
        probe = factory()
    except Exception as error:  # user constructors may raise anything
        raise ModelError(
            f"model {spec.kind!r}: building it with {sorted(accepted)} failed "
            f"({type(error).__name__}: {error}); check model.options"
        ) from None
    if not isinstance(probe, nn.Module):
        raise ModelError(
            f"model {spec.kind!r}: built a {type(probe).__name__}, "
            "not a torch.nn.Module"
        )
    return factory


def _accepted_kwargs(cls, kwargs: dict) -> dict:
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return kwargs
    return {key: value for key, value in kwargs.items() if key in parameters}
