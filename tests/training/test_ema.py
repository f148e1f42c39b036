"""The bias-corrected EMA: the initial weights do not count, long runs are the plain EMA."""

import pytest
import torch
from torch import nn

from neurodiff.training.ema import EMA


def _run(decay: float, values: list[float], bias_correction: bool = True) -> tuple[float, EMA]:
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(100.0)  # the "random initialisation": far from every trained value
    ema = EMA(net, decay, bias_correction=bias_correction)
    for value in values:
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update(net)
    return float(ema.model.weight), ema


def test_the_average_leaves_out_the_initial_weights():
    d, values = 0.9, [1.0, 2.0, 3.0, 4.0]
    got, ema = _run(d, values)
    t = len(values)
    expected = sum((1 - d) * d ** (t - i) * v for i, v in enumerate(values, 1)) / (1 - d**t)
    assert got == pytest.approx(expected, rel=1e-6) and ema.updates == 4
    assert _run(d, [7.0])[0] == pytest.approx(7.0)  # one update: the trained weights themselves
    plain, _ = _run(d, values, bias_correction=False)
    assert plain == pytest.approx(d**t * 100 + sum((1 - d) * d ** (t - i) * v for i, v in enumerate(values, 1)))


def test_a_long_run_is_the_plain_ema():
    values = [float(v % 5) for v in range(2000)]
    corrected, _ = _run(0.99, values)
    plain, _ = _run(0.99, values, bias_correction=False)
    assert corrected == pytest.approx(plain, abs=1e-4)  # float32 rounding; the initial share is 2e-7
