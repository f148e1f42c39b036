import pytest
import torch
from torch import nn

from neurodiff.training import GradientManipulation, global_grad_norm


def _model_with_grads(*grads):
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(len(grads[0])))
    model.b = nn.Parameter(torch.zeros(len(grads[1])))
    model.a.grad, model.b.grad = torch.tensor(grads[0]), torch.tensor(grads[1])
    return model


def test_global_norm_is_the_l2_norm_of_all_gradients():
    model = _model_with_grads([3.0, 0.0], [0.0, 4.0, 0.0])
    assert global_grad_norm(model.parameters()).item() == pytest.approx(5.0)


def test_huge_gradient_is_skipped_and_ordinary_one_clipped():
    policy = GradientManipulation.fixed(clip=0.3, skip=1.8)
    huge = _model_with_grads([300.0, 0.0], [0.0, 400.0, 0.0])
    assert policy.apply(list(huge.parameters())) == ("skipped", pytest.approx(500.0))
    assert huge.a.grad is None and huge.b.grad is None  # nothing to step with

    ordinary = _model_with_grads([0.6, 0.0], [0.0, 0.8, 0.0])  # norm 1.0: above clip, below skip
    action, norm = policy.apply(list(ordinary.parameters()))
    assert action == "clipped" and norm == pytest.approx(1.0)
    assert global_grad_norm(ordinary.parameters()).item() == pytest.approx(0.3)
    torch.testing.assert_close(ordinary.a.grad, torch.tensor([0.18, 0.0]))  # direction kept

    small = _model_with_grads([0.1, 0.0], [0.0, 0.1, 0.0])
    assert policy.apply(list(small.parameters()))[0] == "step"
    torch.testing.assert_close(small.a.grad, torch.tensor([0.1, 0.0]))


def test_non_finite_gradient_is_skipped():
    policy = GradientManipulation.fixed(clip=1.0, skip=10.0)
    model = _model_with_grads([float("nan"), 0.0], [0.0, 1.0, 0.0])
    assert policy.apply(list(model.parameters()))[0] == "skipped"


def test_calibrated_thresholds_are_mean_and_three_times_max():
    policy = GradientManipulation.calibrated()
    assert not policy.ready
    with pytest.raises(RuntimeError, match="calibrate"):
        policy.apply([])
    policy.calibrate([1.0, 2.0, 6.0, float("inf")])
    assert policy.clip == pytest.approx(3.0) and policy.skip == pytest.approx(18.0)
    with pytest.raises(ValueError, match="no finite"):
        GradientManipulation.calibrated().calibrate([float("nan")])


def test_fixed_thresholds_are_validated():
    with pytest.raises(ValueError, match="clip=2.0, skip=1.0"):
        GradientManipulation.fixed(clip=2.0, skip=1.0)
