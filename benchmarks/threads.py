"""A short fit of the steplr MLP with 1 and 2 torch intra-op threads."""

from __future__ import annotations

import time

import torch

from benchmarks.common import FIXED_GAMMA, FIXED_LR, FIXED_STEP_SIZE
from search.data import prepare_data
from search.models import build_module_factory
from search.spec import load_spec, resolve_study
from search.training import build_net

EPOCHS = 3


def measure_threads(repetitions: int) -> dict[int, list[float]]:
    """Alternate 3-epoch fits with 1 and 2 threads; return seconds per fit."""
    spec = load_spec(resolve_study("steplr"))
    data = prepare_data(spec.data, spec.seed)
    kwargs = {"step_size": FIXED_STEP_SIZE, "gamma": FIXED_GAMMA}
    times: dict[int, list[float]] = {1: [], 2: []}
    previous = torch.get_num_threads()
    try:
        for _ in range(repetitions):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                torch.manual_seed(0)
                net = build_net(
                    build_module_factory(spec.model, data),
                    data,
                    spec.training,
                    FIXED_LR,
                    "StepLR",
                    kwargs,
                )
                net.set_params(max_epochs=EPOCHS)
                started = time.perf_counter()
                net.fit(data.X_train, data.y_train)
                times[threads].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return times
