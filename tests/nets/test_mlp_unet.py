import pytest
import torch

from neurodiff.diffusion import Diffusion
from neurodiff.nets import MLPUNet


@pytest.fixture
def net():
    torch.manual_seed(0)
    return MLPUNet(12, 5, hidden=(16, 8), residual_blocks=1, emb_dim=8).eval()


def test_shapes_and_conditioning_checks(net):
    x, t, c = torch.randn(4, 12), torch.tensor([0, 3, 7, 9]), torch.randn(4, 5)
    assert net(x, t, c).shape == (4, 12)
    with pytest.raises(ValueError, match="got no conditioning"):
        net(x, t)
    with pytest.raises(ValueError, match="4 columns, the network expects 5"):
        net(x, t, c[:, :4])


def test_conditioned_equals_the_full_network(net):
    x, c = torch.randn(6, 12), torch.randn(6, 5)
    fixed = net.conditioned(c)
    with torch.no_grad():
        for t in (torch.full((6,), 4), torch.tensor([0, 1, 2, 3, 4, 5])):  # shared and per-row timesteps
            torch.testing.assert_close(fixed(x, t), net(x, t, c), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="fixed for 6"):
        fixed(x[:3], torch.full((3,), 4))
    with pytest.raises(ValueError, match="already fixed"):
        fixed(x, torch.full((6,), 4), c)


def test_conditioned_sampling_matches_plain_sampling(net):
    diffusion = Diffusion.from_schedule("linear", 20, start=0.0015, end=0.02)
    c = torch.randn(5, 5)
    plain = diffusion.ddpm_sample(net, (5, 12), c, generator=torch.Generator().manual_seed(1))
    fixed = diffusion.ddpm_sample(net.conditioned(c), (5, 12), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(fixed, plain, atol=1e-4, rtol=1e-4)


def test_conditioned_needs_a_conditional_network():
    with pytest.raises(ValueError, match="conditional network"):
        MLPUNet(12).conditioned(torch.randn(2, 0))
