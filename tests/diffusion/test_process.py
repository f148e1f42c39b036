import pytest
import torch

from neurodiff.diffusion import Diffusion

from .gaussian_oracle import GaussianOracle

MU, S = 0.7, 0.4


@pytest.fixture
def diffae():
    return Diffusion.from_schedule("linear", 1000, start=1e-4, end=0.02)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_q_sample_matches_closed_form(diffae):
    x0 = torch.randn(5, 3, dtype=torch.float64)
    noise = torch.randn(5, 3, dtype=torch.float64)
    t = torch.tensor([0, 10, 100, 500, 999])
    a = diffae.alpha_bar[t].unsqueeze(1)
    torch.testing.assert_close(diffae.q_sample(x0, t, noise), a.sqrt() * x0 + (1 - a).sqrt() * noise)


def test_loss_is_zero_for_a_perfect_predictor_and_one_for_zero(diffae):
    x0 = torch.randn(64, 8)
    noise = torch.randn(64, 8)
    assert diffae.loss(lambda x, t: noise, x0, noise=noise).item() == 0.0
    zero = diffae.loss(lambda x, t: torch.zeros_like(x), x0, noise=noise)
    assert zero.item() == pytest.approx(noise.pow(2).mean().item())
    per_sample = diffae.loss(lambda x, t: torch.zeros_like(x), x0, noise=noise, reduction="none")
    assert per_sample.shape == (64,)


def test_loss_draws_t_uniformly(diffae):
    seen = []
    net = lambda x, t: seen.append(t) or torch.zeros_like(x)  # noqa: E731
    g = gen()
    for _ in range(50):
        diffae.loss(net, torch.randn(400, 2), generator=g)
    t = torch.cat(seen)
    assert t.min().item() >= 0 and t.max().item() <= 999
    counts = torch.bincount(t // 100, minlength=10).double()
    expected = len(t) / 10
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 27.9  # χ²(9) at p = 0.001


def test_conditioning_is_passed_through_untouched(diffae):
    cond = {"latent": torch.ones(2, 4), "site": ["a", "b"]}
    oracle = GaussianOracle(diffae, MU, S)
    diffae.loss(oracle, torch.randn(2, 3), cond)
    diffae.ddim_sample(oracle, (2, 3), cond, steps=3)
    assert oracle.calls and all(c is cond for _, c in oracle.calls)
    unconditional = GaussianOracle(diffae, MU, S)
    diffae.ddim_sample(lambda x, t: unconditional(x, t), (2, 3), steps=2)  # two-argument networks work


@pytest.mark.parametrize("shape", [(6, 5), (3, 1, 8, 8), (2, 2, 4, 4, 4)], ids=["1d", "2d", "3d"])
def test_every_verb_keeps_the_shape(diffae, shape):
    oracle = GaussianOracle(diffae, MU, S)
    x0 = torch.randn(shape)
    assert diffae.loss(oracle, x0).shape == ()
    assert diffae.ddpm_sample(oracle, shape, generator=gen()).shape == shape
    assert diffae.ddim_sample(oracle, shape, steps=5, eta=0.5, generator=gen()).shape == shape
    x_T = diffae.ddim_invert(oracle, x0, steps=5)
    assert x_T.shape == shape and diffae.render(oracle, x_T, steps=5).shape == shape


def test_wrong_network_output_shape_is_a_clear_error(diffae):
    with pytest.raises(ValueError, match=r"returned shape \(4, 2\) for an input of shape \(4, 3\)"):
        diffae.loss(lambda x, t: x[:, :2], torch.randn(4, 3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_constants_follow_dtype(diffae, dtype):
    x = torch.randn(4, 3, dtype=dtype)
    t = torch.tensor([0, 1, 2, 999])
    assert diffae.coef("sqrt_alpha_bar", t, x).dtype == dtype
    assert diffae.ddim_sample(GaussianOracle(diffae, MU, S), x_T=x, steps=4).dtype == dtype


def test_samplers_take_device_and_dtype_from_the_network(diffae):
    net = torch.nn.Linear(3, 3).double()
    out = diffae.ddim_sample(lambda x, t: torch.zeros_like(x), (2, 3), steps=2)
    assert out.dtype == torch.float32  # a plain callable has no weights: default dtype
    wrapped = torch.nn.Module()
    wrapped.inner = net
    wrapped.forward = lambda x, t: net(x)
    assert diffae.ddim_sample(wrapped, (2, 3), steps=2).dtype == torch.float64


def test_ddim_timesteps(diffae):
    assert diffae.ddim_timesteps(1000) == list(range(1000))
    steps20 = diffae.ddim_timesteps(20)
    assert len(steps20) == 20 and steps20[0] == 0 and steps20[-1] == 999
    assert diffae.ddim_timesteps(1) == [999]
    with pytest.raises(ValueError, match="1001"):
        diffae.ddim_timesteps(1001)


def test_ddim_all_steps_eta1_is_ddpm_with_posterior_variance(diffae):
    """With all T steps and η = 1, DDIM's σ_t² is β̃_t and its mean is the DDPM posterior mean."""
    oracle = GaussianOracle(diffae, MU, S)
    shape = (16, 3)
    ddpm = diffae.ddpm_sample(oracle, shape, variance="posterior", generator=gen(3), dtype=torch.float64)
    ddim = diffae.ddim_sample(oracle, shape, steps=1000, eta=1.0, generator=gen(3), dtype=torch.float64)
    torch.testing.assert_close(ddim, ddpm, rtol=0, atol=1e-9)


def test_deterministic_ddim_is_a_different_path_from_the_ddpm_mean(diffae):
    """η = 0 is DDIM's probability-flow path, not the noise-free DDPM mean path: they differ."""
    oracle = GaussianOracle(diffae, MU, S)
    x_T = torch.randn(256, 1, dtype=torch.float64, generator=gen(1))
    a = diffae.ddim_sample(oracle, x_T=x_T, steps=1000, eta=0.0)
    b = diffae.ddim_sample(oracle, x_T=x_T, steps=1000, eta=0.0, generator=gen(9))
    assert torch.equal(a, b)  # deterministic: the generator is never used
    # The exact flow maps N(0, 1) to N(MU, S²) by x0 = MU + S·x_T.
    torch.testing.assert_close(a, MU + S * x_T, rtol=0, atol=1e-2)


@pytest.mark.parametrize("variance", ["beta", "posterior"])
def test_ddpm_samples_the_data_distribution(diffae, variance):
    oracle = GaussianOracle(diffae, MU, S)
    x = diffae.ddpm_sample(oracle, (20000, 1), variance=variance, generator=gen(2), dtype=torch.float64)
    assert x.mean().item() == pytest.approx(MU, abs=0.01)
    assert x.std().item() == pytest.approx(S, rel=0.03 if variance == "posterior" else 0.06)


def test_ddpm_beta_and_posterior_variances_differ(diffae):
    oracle = GaussianOracle(diffae, MU, S)
    a = diffae.ddpm_sample(oracle, (8, 2), variance="beta", generator=gen(4), dtype=torch.float64)
    b = diffae.ddpm_sample(oracle, (8, 2), variance="posterior", generator=gen(4), dtype=torch.float64)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="variance"):
        diffae.ddpm_sample(oracle, (8, 2), variance="learned")


def test_ddpm_clamps_when_asked():
    diffusion = Diffusion.from_schedule("linear", 100, start=0.0015, end=0.02)
    wide = GaussianOracle(diffusion, 0.0, 3.0)
    x = diffusion.ddpm_sample(wide, (500, 2), clamp=(-1, 1), generator=gen())
    assert x.min().item() >= -1 and x.max().item() <= 1 and (x.abs() == 1).any()


def test_ddim_inversion_then_render_recovers_x0(diffae):
    """DiffAE's explicit inversion with all T steps: close, and x_T is the exact flow's latent."""
    oracle = GaussianOracle(diffae, MU, S)
    x0 = MU + S * torch.randn(64, 4, dtype=torch.float64, generator=gen(5))
    x_T = diffae.ddim_invert(oracle, x0, steps=1000)
    torch.testing.assert_close(x_T, (x0 - MU) / S, rtol=0, atol=0.03)  # the flow maps x0 to (x0 − μ)/s
    torch.testing.assert_close(diffae.render(oracle, x_T, steps=1000), x0, rtol=0, atol=0.015)


@pytest.mark.parametrize("steps,refine,tol", [(1000, 3, 1e-8), (100, 5, 1e-7), (20, 8, 1e-4)])
def test_refined_inversion_is_the_exact_inverse_of_render(diffae, steps, refine, tol):
    oracle = GaussianOracle(diffae, MU, S)
    x0 = MU + S * torch.randn(64, 4, dtype=torch.float64, generator=gen(6))
    plain = diffae.render(oracle, diffae.ddim_invert(oracle, x0, steps=steps), steps=steps)
    x_T = diffae.ddim_invert(oracle, x0, steps=steps, refine=refine)
    recon = diffae.render(oracle, x_T, steps=steps)
    torch.testing.assert_close(recon, x0, rtol=0, atol=tol)
    assert (recon - x0).abs().max() < (plain - x0).abs().max() / 10
    with pytest.raises(ValueError, match="refine"):
        diffae.ddim_invert(oracle, x0, steps=steps, refine=-1)


def test_ddim_from_an_intermediate_step_maps_noised_data_back_to_the_data(diffae):
    """SDEdit-style partial denoising: x_s ~ q(x_s | x0) has the right marginal, so the deterministic flow from
    step s lands on the data distribution; start=T-1 is the default path; a bad start is an error."""
    oracle = GaussianOracle(diffae, MU, S)
    x0 = MU + S * torch.randn(4000, 1, dtype=torch.float64, generator=gen(7))
    s = 499
    x_s = diffae.q_sample(x0, torch.full((len(x0),), s), torch.randn(x0.shape, dtype=torch.float64, generator=gen(8)))
    out = diffae.ddim_sample(oracle, x_T=x_s, start=s, steps=200)
    assert abs(float(out.mean()) - MU) < 0.03 and abs(float(out.std()) - S) < 0.03
    x_T = torch.randn(8, 1, dtype=torch.float64, generator=gen(9))
    torch.testing.assert_close(diffae.ddim_sample(oracle, x_T=x_T, start=999, steps=20),
                               diffae.ddim_sample(oracle, x_T=x_T, steps=20))
    with pytest.raises(ValueError, match="start must be"):
        diffae.ddim_sample(oracle, x_T=x_T, start=1000, steps=20)


def test_step_counts_accept_numpy_integers_and_refuse_zero_and_bools():
    import numpy as np

    d = Diffusion.from_schedule("linear", 50)
    assert d.ddim_timesteps(np.int64(10)) == d.ddim_timesteps(10)
    x = torch.randn(2, 3, dtype=torch.float64)
    net = lambda x, t: 0.1 * x
    assert d.ddim_sample(net, x_T=x, steps=np.int32(5), start=np.int64(20)).shape == x.shape
    for bad in (True, 0, 51, 2.0):
        with pytest.raises(ValueError, match=r"DDIM steps must be an integer in \[1, 50\]"):
            d.ddim_timesteps(bad)
    # 0 is an invalid count, not "all T steps" (None is)
    with pytest.raises(ValueError, match=r"got 0"):
        d.ddim_invert(net, x, steps=0)
    calls = []
    d.ddim_invert(lambda x, t: calls.append(1) or 0.1 * x, x, steps=None)
    assert len(calls) == 50


def test_default_step_counts_are_capped_at_T_explicit_ones_are_not():
    d = Diffusion.from_schedule("linear", 10)
    x = torch.randn(2, 3, dtype=torch.float64)
    net = lambda x, t: 0.1 * x
    assert d.render(net, x).shape == x.shape  # default min(20, T) = 10 steps
    assert d.ddim_sample(net, x_T=x).shape == x.shape
    assert d.default_steps(None, 20) == 10 and d.default_steps(None, 5) == 5 and d.default_steps(30, 20) == 30
    with pytest.raises(ValueError, match=r"\[1, 10\], got 20"):
        d.render(net, x, steps=20)
