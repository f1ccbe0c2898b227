"""Optuna searches over PyTorch learning-rate schedules trained with skorch."""

__version__ = "0.1.0"
