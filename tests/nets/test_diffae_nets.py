import pytest
import torch

from neurodiff.nets.diffae_blocks import SHORT_ATTENTION_POSITIONS, ResBlock, attend
from neurodiff.nets.diffae_unet import CovariateEncoder, DiffAEUNet, SemanticEncoder
from neurodiff.nets.diffusion_autoencoder import DiffusionAutoencoderNet, latent_sensitivity, prediction_change

TINY = dict(in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, head_channels=8)


def _shape(spatial_dims: int, n: int = 2, size: int = 16) -> tuple[int, ...]:
    return (n, 1, *([size] * spatial_dims))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_unet_and_encoder_shapes(spatial_dims):
    torch.manual_seed(0)
    unet = DiffAEUNet(spatial_dims, **TINY, attention_resolutions=(8,), image_size=16, latent_dim=12)
    encoder = SemanticEncoder(spatial_dims, **TINY, attention_resolutions=(8,), image_size=16, latent_dim=12)
    x = torch.randn(_shape(spatial_dims))
    z = encoder(x)
    assert z.shape == (2, 12)
    assert unet(x, torch.tensor([3, 7]), z).shape == x.shape
    assert unet(x, torch.tensor(5), z).shape == x.shape  # one timestep for the batch


def test_hierarchical_latent_joins_every_depth():
    encoder = SemanticEncoder(2, **TINY, image_size=16, attention_resolutions=(), latent_dim=10, hierarchical=True)
    assert [head.out_features for head in encoder.heads] == [3, 3, 4]  # two levels and the middle
    assert encoder(torch.randn(_shape(2))).shape == (2, 10)


def test_unet_rejects_bad_inputs():
    unet = DiffAEUNet(2, **TINY, attention_resolutions=(), latent_dim=4)
    x = torch.randn(_shape(2))
    with pytest.raises(ValueError, match=r"conditioned on a \(2, 4\) latent, got None"):
        unet(x, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="divisible by 2"):
        unet(torch.randn(2, 1, 15, 15), torch.tensor([1, 2]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="B, C, H, W"):
        unet(torch.randn(1, 16, 16), torch.tensor([1]), torch.randn(1, 4))
    with pytest.raises(ValueError, match="needs image_size"):
        DiffAEUNet(2, **TINY, attention_resolutions=(8,))
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        DiffAEUNet(1, **TINY, attention_resolutions=())


def test_resblock_scales_by_latent_and_shifts_by_embedding():
    torch.manual_seed(0)
    block = ResBlock(2, 4, 4, emb_dim=3, latent_dim=2)
    torch.nn.init.normal_(block.conv2.weight)  # the residual branch starts at zero; open it
    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 3)
    z = torch.randn(2, 2)
    assert not torch.allclose(block(x, emb, z), block(x, emb, z + 1))
    assert not torch.allclose(block(x, emb, z), block(x, emb + 1, z))
    with pytest.raises(ValueError, match="latent but got none"):
        block(x, emb)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoder_covariate_layers_are_registered_and_trained(spatial_dims):
    torch.manual_seed(0)
    encoder = SemanticEncoder(spatial_dims, **TINY, attention_resolutions=(), latent_dim=6, covariate_dim=3)
    names = [name for name, _ in encoder.named_parameters()]
    assert any(name.startswith("covariate_embedding.") for name in names)
    assert any(".emb_proj." in name for name in names)  # every block is modulated by the covariates
    x, cov = torch.randn(_shape(spatial_dims)), torch.randn(2, 3)
    # residual branches start at zero (zero-initialised last conv), so the covariates' layers get
    # gradient from the second step on
    optimizer = torch.optim.SGD(encoder.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        encoder(x, cov).square().sum().backward()
        optimizer.step()
    for name, p in encoder.named_parameters():
        if name.startswith("covariate_embedding.") or ".emb_proj." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    with torch.no_grad():  # the covariates change the latent
        assert not torch.allclose(encoder(x, cov), encoder(x, cov + 1))
    with pytest.raises(ValueError, match=r"takes \(2, 3\) covariates, got None"):
        encoder(x)


def test_covariate_encoder_and_joined_latent():
    torch.manual_seed(0)
    encoder = SemanticEncoder(2, **TINY, attention_resolutions=(), latent_dim=6)
    covariates = CovariateEncoder(covariate_dim=4, latent_dim=3, hidden=8)
    unet = DiffAEUNet(2, **TINY, attention_resolutions=(), latent_dim=9)
    net = DiffusionAutoencoderNet(encoder, unet, covariates)
    x = torch.randn(_shape(2))
    z = net.latent(x, latent_covariates=torch.randn(2, 4))
    assert z.shape == (2, 9)
    assert (net.semantic_part, net.covariate_part) == (slice(0, 6), slice(6, 9))
    assert net(x, torch.tensor([1, 2]), z).shape == x.shape
    with pytest.raises(ValueError, match="give latent_covariates"):
        net.latent(x)
    with pytest.raises(ValueError, match="UNet takes a 5-d latent but the encoders give 9"):
        DiffusionAutoencoderNet(encoder, DiffAEUNet(2, **TINY, attention_resolutions=(), latent_dim=5), covariates)
    with pytest.raises(ValueError, match=r"expected \(B, 4\) covariates"):
        covariates(torch.randn(2, 3))


def test_latent_sensitivity_is_zero_when_the_latent_is_ignored():
    torch.manual_seed(0)
    encoder = SemanticEncoder(2, **TINY, attention_resolutions=(), latent_dim=4)
    net = DiffusionAutoencoderNet(encoder, DiffAEUNet(2, **TINY, attention_resolutions=(), latent_dim=4))
    for module in net.unet.modules():  # open the zero-initialised residual and output convolutions
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.weight, std=0.1)
    x, t = torch.randn(_shape(2, n=4)), torch.full((4,), 10)
    z = torch.randn(4, 4)
    assert latent_sensitivity(net, x, t, z) > 1e-3
    for block in net.unet.modules():
        if isinstance(block, ResBlock):
            torch.nn.init.zeros_(block.latent_proj.weight)
    assert latent_sensitivity(net, x, t, z) == pytest.approx(0.0, abs=1e-7)


class _FirstTwoColumns(torch.nn.Module):
    """A hand-made "decoder": ε = x_t + the sum of latent columns 0 and 1; columns 2 and on are ignored."""

    def forward(self, x_t, t, latent):
        return x_t + latent[:, :2].sum(1).reshape(-1, *([1] * (x_t.ndim - 1)))


def test_latent_sensitivity_of_a_slice_swaps_only_those_columns():
    torch.manual_seed(0)
    net = _FirstTwoColumns()
    x, t, z = torch.randn(_shape(2, n=4)), torch.full((4,), 10), torch.randn(4, 5)
    before = z.clone()
    whole = latent_sensitivity(net, x, t, z)
    eps, eps_swapped = net(x, t, z), net(x, t, z.roll(1, dims=0))  # the documented formula, by hand
    assert whole == pytest.approx(float((eps - eps_swapped).norm() / eps.norm()), rel=1e-6)
    assert latent_sensitivity(net, x, t, z, part=slice(None)) == whole  # every column: the whole latent
    assert latent_sensitivity(net, x, t, z, part=slice(0, 2)) == pytest.approx(whole, rel=1e-6)
    assert latent_sensitivity(net, x, t, z, part=slice(1, 3)) > 0.1  # column 1 matters
    assert latent_sensitivity(net, x, t, z, part=slice(2, 5)) == 0.0  # columns the decoder ignores
    assert latent_sensitivity(net, x, t, z, part=slice(-3, None)) == 0.0
    assert torch.equal(z, before)  # the latent itself is not modified


@pytest.mark.parametrize("part, message", [
    (slice(5, 8), "selects no column of the 5-column latent"),
    (slice(2, 2), "selects no column"),
    (slice(0, 4, 2), r"contiguous slice \(step 1\)"),
    ([0, 1], "part must be a slice of latent columns"),
])
def test_latent_sensitivity_refuses_a_bad_part(part, message):
    x, t, z = torch.randn(_shape(2, n=3)), torch.full((3,), 10), torch.randn(3, 5)
    with pytest.raises(ValueError, match=message):
        latent_sensitivity(_FirstTwoColumns(), x, t, z, part=part)
    with pytest.raises(ValueError, match=r"changed latent is shaped \(3, 4\), the latent \(3, 5\)"):
        prediction_change(_FirstTwoColumns(), x, t, z, z[:, :4])


def test_unet_runs_with_bf16_weights_and_under_bf16_autocast():
    torch.manual_seed(0)
    unet = DiffAEUNet(2, **TINY, attention_resolutions=(8,), image_size=16, latent_dim=6)
    x, t, z = torch.randn(2, 1, 16, 16), torch.tensor([1, 7]), torch.randn(2, 6)
    reference = unet(x, t, z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert unet(x, t, z).dtype == torch.bfloat16
    unet.to(torch.bfloat16)  # the sinusoidal time embedding (float32) takes the weights' dtype
    out = unet(x.bfloat16(), t, z.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == reference.shape and torch.isfinite(out).all()


def test_resblock_keeps_bf16_feature_maps_under_autocast():
    """The fp32 GroupNorm weights must not promote the modulated map to fp32 (a full-resolution
    cast and fp32 SiLU per block, ~10 % of a bf16 step); in fp32 nothing changes."""
    torch.manual_seed(0)
    block = ResBlock(2, 4, 8, emb_dim=3, latent_dim=2)
    seen = []
    block.conv2.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    x, emb, z = torch.randn(2, 4, 8, 8), torch.randn(2, 3), torch.randn(2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        block(x, emb, z)
    block(x, emb, z)
    assert seen == [torch.bfloat16, torch.float32]


@pytest.mark.parametrize("positions", [16, SHORT_ATTENTION_POSITIONS + 16])
def test_attention_matches_fp32_in_bf16_on_both_paths(positions, monkeypatch):
    """Short bf16 sequences on CPU take the plain-matmul path, longer ones the fused kernel; both
    give fp32's attention to bf16 accuracy with scores large enough to make the softmax peaked, and
    gradients reach queries, keys and values."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, positions, 8) * scale for scale in (3.0, 3.0, 1.0))  # scores up to ~30
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    fused_calls = []
    fused = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **kw: fused_calls.append(1) or fused(*a, **kw))
    low = [t.bfloat16().requires_grad_() for t in (q, k, v)]
    out = attend(*low)
    assert out.dtype == torch.bfloat16
    assert bool(fused_calls) == (positions > SHORT_ATTENTION_POSITIONS)
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)
    out.float().square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in low)
