"""Style-encoding GAN: DDAE's StarGAN-v2-style harmonisation baseline for 2D slices.

Source: Choi, Uh, Yoo & Ha (2020), "StarGAN v2: Diverse Image Synthesis for Multiple Domains"
(CVPR), with the sites as domains. Three networks, sized for CPU-scale slices of 8–128 px:

- generator G(x, s): a conv encoder (residual blocks with instance norm, downsampling to about 4 px,
  at most three times), two residual bottleneck blocks and an upsampling decoder whose blocks take the
  style code s through AdaIN (``(1 + γ(s)) · IN(h) + β(s)``);
- style encoder E(x, y): a shared conv trunk (residual blocks, no normalisation, global average
  pooling) and one linear head per site y giving a style code of ``style_dim`` numbers;
- discriminator D(x, y): the same kind of trunk with one real/fake logit per site.

Losses (the paper's): the discriminator minimises the non-saturating loss
softplus(−D(x, y)) + softplus(D(G(x, s̃), ỹ)) plus λ_r1 · ½‖∇ₓD(x, y)‖² (R1 on real images);
the generator minimises softplus(−D(G(x, s̃), ỹ)) + λ_sty · |E(G(x, s̃), ỹ) − s̃| +
λ_cyc · |G(G(x, s̃), E(x, y)) − x|, where s̃ = E(x_ref, ỹ) is the style of a training image x_ref of a
random target site ỹ. Adam with betas (0, 0.99) and weight decay 1e-4, and an exponential moving average
of G and E used at apply time, as in the paper's code.

Harmonise: the style of a target site is the mean of E(x_ref, site) over the training images of that
site (``site_styles_``, computed once after training), or over reference images passed to
:meth:`StyleEncodingGAN.transform`; every input image is rendered with it. The input's own site is not
needed (the ``site`` column of the covariates is not read at apply time).

How this differs from the paper:

- No mapping network (noise → style) and hence no diversity-sensitive loss: harmonisation wants one
  output per image, not diverse ones, and the extra latent-guided pass would double the CPU cost of a
  step for no use at apply time. The style encoder is therefore trained with the generator on the
  reference-guided losses (in the paper it learns in the latent-guided pass).
- Anatomy-preserving ("identity-friendly") generator instead of the paper's high-pass face masks:
  U-Net additive skips from the encoder to the decoder at every resolution, and the output is a
  residual in logit space, ``sigmoid(logit(x) + r(x, s))``, whose last convolution starts at zero, so
  an untrained G is the identity and outputs are always in (0, 1).
- Small sizes: ``base_channels`` 16 (the paper: 2¹⁴ / image size, up to 512), channels capped at
  4 × base, style code 32 (paper 64), two bottleneck blocks (paper four), global average pooling
  instead of the final 4 × 4 convolution so any image size ≥ 8 px works.
- Optional identity term λ_id · |G(x, E(x, y)) − x| (0 by default, as in the paper).
- The moving average warms up, decay_k = min(ema_decay, (1 + k) / (10 + k)), so short runs use
  trained weights rather than near-initial ones (the paper: fixed 0.999 over 100k steps).

Why this has its own loop: like :mod:`neurodiff.baselines.wgan_gp`, a GAN alternates two optimisers
and two losses, which the shared single-loss :class:`neurodiff.training.Trainer` does not do. The loop
reuses :func:`seed_everything`, :class:`TensorData`, :func:`epoch_order` / :func:`iterate_batches`,
:func:`resolve_device`, :class:`EMA` and a tqdm progress bar. CPU runs are exactly reproducible.

>>> gan = StyleEncodingGAN(max_steps=2000).fit(images, covariates)     # covariates: age, sex, site
>>> harmonised = gan.transform(images, covariates, target_site="IXI")  # (N, 1, H, W) in [0, 1]
>>> gan.save("gan-dir"); StyleEncodingGAN.load("gan-dir").transform(images, covariates, "IXI")
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from neurodiff.base import Estimator
from neurodiff.data.covariates import category_key
from neurodiff.nets.diffae_blocks import zero_module
from neurodiff.training import EMA, TensorData, resolve_device, seed_everything
from neurodiff.training.data import epoch_order, iterate_batches

_CHUNK = 64  # images per forward pass outside training
_LOGIT_EPS = 1e-3  # inputs are clamped to [eps, 1 − eps] before the logit of the identity path
_HISTORY_KEYS = ("d_loss", "d_real", "d_fake", "r1", "g_loss", "g_adv", "sty", "cyc", "id")


# ---------------------------------------------------------------------- networks
def _conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def _widths(base: int, levels: int) -> list[int]:
    """Channels at each resolution, from the input's (base) on, doubling, capped at 4 × base."""
    return [min(base * 2**i, 4 * base) for i in range(levels + 1)]


def n_downsamplings(height: int, width: int, limit: int | None = None) -> int:
    """How many halvings take the smaller side to about 4 px (at least 1, at most `limit`)."""
    n = max(1, int(math.floor(math.log2(min(height, width) / 4))))
    return n if limit is None else min(n, limit)


class ResBlock(nn.Module):
    """StarGAN v2's ResBlk: [IN] → lrelu → conv → [avg-pool] → [IN] → lrelu → conv, plus a shortcut; / √2."""

    def __init__(self, in_channels: int, out_channels: int, *, normalize: bool, downsample: bool):
        super().__init__()
        self.downsample = downsample
        self.norm1 = nn.InstanceNorm2d(in_channels, affine=True) if normalize else nn.Identity()
        self.norm2 = nn.InstanceNorm2d(in_channels, affine=True) if normalize else nn.Identity()
        self.conv1 = _conv(in_channels, in_channels)
        self.conv2 = _conv(in_channels, out_channels)
        self.shortcut = _conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.norm1(x), 0.2))
        skip = self.shortcut(x)
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        h = self.conv2(F.leaky_relu(self.norm2(h), 0.2))
        return (skip + h) / math.sqrt(2)


class AdaIN(nn.Module):
    """(1 + γ(s)) · IN(h) + β(s), with γ, β from one linear layer of the style code."""

    def __init__(self, style_dim: int, channels: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.fc = nn.Linear(style_dim, 2 * channels)

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(h) + beta


class AdaINResBlock(nn.Module):
    """StarGAN v2's AdainResBlk: AdaIN → lrelu → [upsample] → conv → AdaIN → lrelu → conv, plus a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, style_dim: int):
        super().__init__()
        self.norm1 = AdaIN(style_dim, in_channels)
        self.conv1 = _conv(in_channels, out_channels)
        self.norm2 = AdaIN(style_dim, out_channels)
        self.conv2 = _conv(out_channels, out_channels)
        self.shortcut = _conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, s: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        h = F.leaky_relu(self.norm1(x, s), 0.2)
        skip = self.shortcut(x)
        if size is not None:  # nearest upsampling to the matching encoder resolution (any image size)
            h, skip = F.interpolate(h, size=size, mode="nearest"), F.interpolate(skip, size=size, mode="nearest")
        h = self.conv2(F.leaky_relu(self.norm2(self.conv1(h), s), 0.2))
        return (skip + h) / math.sqrt(2)


class StyleGenerator(nn.Module):
    """G(x, s) → image in (0, 1): encoder, AdaIN bottleneck, AdaIN decoder with U-Net skips, logit residual."""

    def __init__(self, *, base_channels: int, style_dim: int, n_down: int, n_bottleneck: int = 2):
        super().__init__()
        widths = _widths(base_channels, n_down)
        self.from_rgb = _conv(1, widths[0])
        self.encode = nn.ModuleList(
            ResBlock(widths[i], widths[i + 1], normalize=True, downsample=True) for i in range(n_down)
        )
        self.bottleneck = nn.ModuleList(AdaINResBlock(widths[-1], widths[-1], style_dim) for _ in range(n_bottleneck))
        self.decode = nn.ModuleList(AdaINResBlock(widths[i + 1], widths[i], style_dim) for i in reversed(range(n_down)))
        self.to_rgb = nn.Sequential(
            nn.InstanceNorm2d(widths[0], affine=True), nn.LeakyReLU(0.2), zero_module(_conv(widths[0], 1, 1))
        )

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        h = self.from_rgb(x)
        skips = []
        for block in self.encode:
            skips.append(h)
            h = block(h)
        for block in self.bottleneck:
            h = block(h, s)
        for block, skip in zip(self.decode, reversed(skips)):
            h = block(h, s, size=tuple(skip.shape[-2:])) + skip
        identity = torch.logit(x.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS))
        return torch.sigmoid(identity + self.to_rgb(h))


class SiteHeads(nn.Module):
    """Shared conv trunk (ResBlocks without normalisation, global average pooling), one linear head per site.

    ``forward(x, y)`` returns each image's head output for its site y: (B, out_dim), or (B,) when
    out_dim is 1 (the discriminator's logit).
    """

    def __init__(self, *, base_channels: int, n_down: int, n_sites: int, out_dim: int):
        super().__init__()
        widths = _widths(base_channels, n_down)
        self.n_sites, self.out_dim = n_sites, out_dim
        self.trunk = nn.Sequential(
            _conv(1, widths[0]),
            *(ResBlock(widths[i], widths[i + 1], normalize=False, downsample=True) for i in range(n_down)),
            nn.LeakyReLU(0.2),
            _conv(widths[-1], widths[-1], 1),
            nn.LeakyReLU(0.2),
        )
        self.heads = nn.Linear(widths[-1], n_sites * out_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        features = self.trunk(x).mean(dim=(2, 3))
        out = self.heads(features).view(len(x), self.n_sites, self.out_dim)
        out = out[torch.arange(len(x), device=x.device), y]
        return out.squeeze(1) if self.out_dim == 1 else out


# ---------------------------------------------------------------------- estimator
class StyleEncodingGAN(Estimator):
    """StarGAN-v2-style harmoniser of 2D slices (N, 1, H, W) in [0, 1] between sites (module docstring).

    Parameters
    ----------
    base_channels, style_dim:
        Width of the first convolution (doubling per halving, capped at 4×) and of the style code.
    max_steps, batch_size:
        Training iterations (one discriminator and one generator/style-encoder update each) and
        images per batch (capped at the number of training images).
    lr, betas, weight_decay:
        Adam for all three networks (StarGAN v2: 1e-4, (0, 0.99), 1e-4).
    lambda_sty, lambda_cyc, lambda_r1, lambda_id:
        Weights of the style-reconstruction, cycle-consistency, R1 and identity losses.
    ema_decay:
        Moving average of G and E used at apply time (None: use the last weights).
    seed, device, progress:
        Seeds weights, batch order, targets and references; "cpu" / "cuda" / "auto"; progress bar.

    Attributes
    ----------
    generator_, style_encoder_:
        The networks used at apply time (the moving averages when ``ema_decay`` is set).
    discriminator_:
        Needed for training only; not saved (None after :meth:`load`).
    sites_:
        The training sites (sorted strings); the index of a site is its domain label y.
    site_styles_:
        (n_sites, style_dim) mean style code of each site over its training images.
    image_shape_:
        (1, H, W) of the training images; :meth:`transform` requires the same.
    site_counts_:
        Training images per site.
    history_:
        Per-step ``d_loss`` (= d_real + d_fake + λ_r1·r1), ``d_real``, ``d_fake``, ``r1``, ``g_loss``,
        ``g_adv``, ``sty``, ``cyc``, ``id`` (0 when λ_id = 0); ``steps`` and ``seconds``. Not saved.
    """

    def __init__(
        self,
        *,
        base_channels: int = 16,
        style_dim: int = 32,
        max_steps: int = 2000,
        batch_size: int = 16,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.0, 0.99),
        weight_decay: float = 1e-4,
        lambda_sty: float = 1.0,
        lambda_cyc: float = 1.0,
        lambda_r1: float = 1.0,
        lambda_id: float = 0.0,
        ema_decay: float | None = 0.999,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.base_channels = base_channels
        self.style_dim = style_dim
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.lr = lr
        self.betas = betas
        self.weight_decay = weight_decay
        self.lambda_sty = lambda_sty
        self.lambda_cyc = lambda_cyc
        self.lambda_r1 = lambda_r1
        self.lambda_id = lambda_id
        self.ema_decay = ema_decay
        self.seed = seed
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ checks
    def _check_hyperparameters(self) -> None:
        for name in ("base_channels", "style_dim", "max_steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        for name in ("weight_decay", "lambda_sty", "lambda_cyc", "lambda_r1", "lambda_id"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay!r}")

    def _check_images(self, images: Any, name: str = "images", *, fitted: bool = True) -> torch.Tensor:
        x = torch.as_tensor(images if torch.is_tensor(images) else np.asarray(images), dtype=torch.float32)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"{name} must be 2D slices shaped (N, 1, H, W), got {tuple(x.shape)}")
        if len(x) == 0:
            raise ValueError(f"{name} is empty")
        if fitted and tuple(x.shape[1:]) != tuple(self.image_shape_):
            raise ValueError(f"{name} are {tuple(x.shape[1:])}, the model was trained on {tuple(self.image_shape_)}")
        if min(x.shape[2:]) < 8:
            raise ValueError(f"{name} must be at least 8 × 8 pixels, got {tuple(x.shape[2:])}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contain NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{name} intensities must lie in [0, 1] (found {lo:.3g} to {hi:.3g}); normalise them first")
        return x.clamp(0.0, 1.0)

    def _site_index(self, site: Any, argument: str = "target_site") -> int:
        """Sites compare as the covariate encodings compare them (site 1 and 1.0 alike, spaces trimmed).

        Models saved before that kept str() of each site ("1.0" for a float column): the name as str()
        writes it still finds such a site."""
        keys = [category_key(s) for s in self.sites_]
        if category_key(site) in keys:
            return keys.index(category_key(site))
        if str(site) in self.sites_:
            return self.sites_.index(str(site))
        raise ValueError(f"unknown {argument} {site!r}; the model was trained on the sites {self.sites_}")

    # ------------------------------------------------------------------ networks
    def _n_down(self) -> tuple[int, int]:
        """Halvings in the generator (at most 3) and in the style encoder / discriminator (to ~4 px)."""
        h, w = self.image_shape_[1:]
        return n_downsamplings(h, w, limit=3), n_downsamplings(h, w)

    def _make_generator(self) -> StyleGenerator:
        return StyleGenerator(base_channels=self.base_channels, style_dim=self.style_dim, n_down=self._n_down()[0])

    def _make_style_encoder(self) -> SiteHeads:
        return SiteHeads(base_channels=self.base_channels, n_down=self._n_down()[1], n_sites=len(self.sites_),
                         out_dim=self.style_dim)

    def _make_discriminator(self) -> SiteHeads:
        return SiteHeads(base_channels=self.base_channels, n_down=self._n_down()[1], n_sites=len(self.sites_),
                         out_dim=1)

    def _make_optimizer(self, *nets: nn.Module) -> torch.optim.Adam:
        params = [p for net in nets for p in net.parameters()]
        return torch.optim.Adam(params, lr=self.lr, betas=(float(self.betas[0]), float(self.betas[1])),
                                weight_decay=self.weight_decay)

    # ------------------------------------------------------------------ fit
    def fit(self, images: Any, covariates: pd.DataFrame) -> StyleEncodingGAN:
        """Train on images (N, 1, H, W) in [0, 1] with covariates holding a ``site`` column (≥ 2 sites)."""
        self._check_hyperparameters()
        x = self._check_images(images, fitted=False)
        if not isinstance(covariates, pd.DataFrame):
            raise ValueError(f"covariates must be a pandas DataFrame with a 'site' column, got {type(covariates).__name__}")
        if len(covariates) != len(x):
            raise ValueError(f"images has {len(x)} rows but covariates has {len(covariates)}")
        if "site" not in covariates.columns:
            raise ValueError(f"covariates has no 'site' column (columns: {list(covariates.columns)})")
        if covariates["site"].isna().any():
            raise ValueError("covariates column 'site' has missing values")
        site_labels = np.array([category_key(v) for v in covariates["site"]], dtype=object)
        self.sites_ = sorted(set(site_labels))
        if len(self.sites_) < 2:
            raise ValueError(f"need images from at least 2 sites to learn site styles, got only {self.sites_}")
        self.image_shape_ = tuple(int(v) for v in x.shape[1:])
        self.site_counts_ = {site: int((site_labels == site).sum()) for site in self.sites_}
        y = torch.as_tensor([self.sites_.index(s) for s in site_labels], dtype=torch.long)

        device = resolve_device(self.device)
        seed_everything(self.seed)
        gen = self._make_generator().to(device).train()
        enc = self._make_style_encoder().to(device).train()
        self.discriminator_ = self._make_discriminator().to(device).train()
        data = TensorData(x=x.to(device), y=y.to(device))
        self.history_ = self._train(data, gen, enc, device)
        self.discriminator_.eval()
        self.generator_, self.style_encoder_ = gen.eval(), enc.eval()
        if self.ema_decay is not None:
            self.generator_, self.style_encoder_ = self._ema_gen.model, self._ema_enc.model
            del self._ema_gen, self._ema_enc
        self.site_styles_ = np.stack([
            self._mean_style(data.tensors["x"][data.tensors["y"] == k], k) for k in range(len(self.sites_))
        ])
        self.is_fitted_ = True
        return self

    def _batches(self, data: TensorData, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        epoch = 0
        while True:  # seeded, reproducible order; a new permutation every pass
            yield from iterate_batches(data, epoch_order(len(data), self.seed, epoch), batch_size)
            epoch += 1

    def _train(self, data: TensorData, gen: nn.Module, enc: nn.Module, device: torch.device) -> dict[str, Any]:
        disc = self.discriminator_
        opt_d, opt_g = self._make_optimizer(disc), self._make_optimizer(gen, enc)
        if self.ema_decay is not None:
            self._ema_gen, self._ema_enc = EMA(gen, self.ema_decay), EMA(enc, self.ema_decay)
        rng = torch.Generator(device).manual_seed(self.seed)
        members = [torch.nonzero(data.tensors["y"] == k).squeeze(1) for k in range(len(self.sites_))]
        history: dict[str, Any] = {key: [] for key in _HISTORY_KEYS}
        batches = self._batches(data, min(self.batch_size, len(data)))
        started = time.perf_counter()
        bar = tqdm(range(self.max_steps), desc="StyleEncodingGAN", disable=not self.progress, leave=False)
        for step in bar:
            batch = next(batches)
            x_real, y_org = batch["x"], batch["y"]
            y_trg = torch.randint(len(self.sites_), (len(x_real),), generator=rng, device=device)
            x_ref = data.tensors["x"][self._references(y_trg, members, rng)]
            losses = self._discriminator_step(opt_d, gen, enc, x_real, y_org, x_ref, y_trg)
            losses.update(self._generator_step(opt_g, gen, enc, x_real, y_org, x_ref, y_trg))
            if self.ema_decay is not None:
                for ema, net in ((self._ema_gen, gen), (self._ema_enc, enc)):
                    ema.decay = min(self.ema_decay, (1 + step) / (10 + step))
                    ema.update(net)
            for key in _HISTORY_KEYS:
                history[key].append(losses[key])
            if step % 10 == 0 or step == self.max_steps - 1:
                bar.set_postfix(D=f"{losses['d_loss']:.3f}", G=f"{losses['g_loss']:.3f}", cyc=f"{losses['cyc']:.3f}")
        bar.close()
        history["steps"], history["seconds"] = self.max_steps, time.perf_counter() - started
        return history

    @staticmethod
    def _references(y_trg: torch.Tensor, members: list[torch.Tensor], rng: torch.Generator) -> torch.Tensor:
        """For each target site, the index of a random training image of that site."""
        index = torch.empty_like(y_trg)
        for k, rows in enumerate(members):
            mask = y_trg == k
            count = int(mask.sum())
            if count:
                index[mask] = rows[torch.randint(len(rows), (count,), generator=rng, device=y_trg.device)]
        return index

    def _discriminator_step(self, opt, gen, enc, x_real, y_org, x_ref, y_trg) -> dict[str, float]:
        """softplus(−D(x)) + softplus(D(G(x, s̃))) + λ_r1 · R1 on the real images."""
        x_real = x_real.detach().requires_grad_(True)
        out_real = self.discriminator_(x_real, y_org)
        loss_real = F.softplus(-out_real).mean()
        if self.lambda_r1 > 0:
            (grad,) = torch.autograd.grad(out_real.sum(), x_real, create_graph=True)
            r1 = 0.5 * grad.pow(2).flatten(1).sum(1).mean()
        else:
            r1 = torch.zeros((), device=x_real.device)
        with torch.no_grad():
            x_fake = gen(x_real, enc(x_ref, y_trg))
        loss_fake = F.softplus(self.discriminator_(x_fake, y_trg)).mean()
        loss = loss_real + loss_fake + self.lambda_r1 * r1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"d_loss": loss.item(), "d_real": loss_real.item(), "d_fake": loss_fake.item(), "r1": r1.item()}

    def _generator_step(self, opt, gen, enc, x_real, y_org, x_ref, y_trg) -> dict[str, float]:
        """Adversarial + λ_sty·style reconstruction + λ_cyc·cycle (+ λ_id·identity); D frozen meanwhile."""
        self.discriminator_.requires_grad_(False)
        s_trg = enc(x_ref, y_trg)
        x_fake = gen(x_real, s_trg)
        adv = F.softplus(-self.discriminator_(x_fake, y_trg)).mean()
        sty = (enc(x_fake, y_trg) - s_trg).abs().mean()
        s_org = enc(x_real, y_org)
        cyc = (gen(x_fake, s_org) - x_real).abs().mean()
        loss = adv + self.lambda_sty * sty + self.lambda_cyc * cyc
        ident = torch.zeros((), device=x_real.device)
        if self.lambda_id > 0:
            ident = (gen(x_real, s_org) - x_real).abs().mean()
            loss = loss + self.lambda_id * ident
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.discriminator_.requires_grad_(True)
        return {"g_loss": loss.item(), "g_adv": adv.item(), "sty": sty.item(), "cyc": cyc.item(), "id": ident.item()}

    # ------------------------------------------------------------------ apply
    @torch.no_grad()
    def _styles(self, x: torch.Tensor, site: int) -> torch.Tensor:
        device = next(self.style_encoder_.parameters()).device
        out = []
        for chunk in torch.split(x, _CHUNK):
            chunk = chunk.to(device)
            out.append(self.style_encoder_(chunk, torch.full((len(chunk),), site, dtype=torch.long, device=device)))
        return torch.cat(out).cpu()

    def _mean_style(self, x: torch.Tensor, site: int) -> np.ndarray:
        return self._styles(x, site).mean(dim=0).numpy().astype(np.float32)

    def _to_device(self) -> torch.device:
        device = resolve_device(self.device)
        self.generator_.to(device).eval()
        self.style_encoder_.to(device).eval()
        return device

    def encode_style(self, images: Any, site: str) -> np.ndarray:
        """Style codes E(x, site), (N, style_dim), of images read as coming from `site`."""
        self._check_fitted()
        x = self._check_images(images)
        self._to_device()
        return self._styles(x, self._site_index(site, "site")).numpy()

    def transform(self, images: Any, covariates: pd.DataFrame | None, target_site: str, *,
                  reference_images: Any = None) -> np.ndarray:
        """Render every image with the style of `target_site`: (N, 1, H, W) float32 in [0, 1].

        The style is the site's mean training style (``site_styles_``), or the mean of
        E(reference_images, target_site) when reference images of that site are given. The input's
        own site is not used; `covariates` (one row per image, or None) is only checked for its length.
        """
        self._check_fitted()
        x = self._check_images(images)
        if covariates is not None:
            if not isinstance(covariates, pd.DataFrame):
                raise ValueError(f"covariates must be a pandas DataFrame or None, got {type(covariates).__name__}")
            if len(covariates) != len(x):
                raise ValueError(f"images has {len(x)} rows but covariates has {len(covariates)}")
        site = self._site_index(target_site)
        device = self._to_device()
        if reference_images is None:
            style = torch.as_tensor(self.site_styles_[site])
        else:
            style = torch.as_tensor(self._mean_style(self._check_images(reference_images, "reference_images"), site))
        out = []
        with torch.no_grad():
            for chunk in torch.split(x, _CHUNK):
                s = style.to(device).expand(len(chunk), -1)
                out.append(self.generator_(chunk.to(device), s).clamp(0.0, 1.0).cpu())
        return torch.cat(out).numpy().astype(np.float32)

    # ------------------------------------------------------------------ saving hooks
    def _networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator_, "style_encoder": self.style_encoder_}

    def _fitted_statistics(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        stats = {"sites": list(self.sites_), "image_shape": list(self.image_shape_), "site_counts": self.site_counts_}
        return stats, {"site_styles": np.asarray(self.site_styles_, dtype=np.float32)}

    def _rebuild(self, statistics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.sites_ = [str(s) for s in statistics["sites"]]
        self.image_shape_ = tuple(int(v) for v in statistics["image_shape"])
        self.site_counts_ = {str(k): int(v) for k, v in statistics["site_counts"].items()}
        self.site_styles_ = np.asarray(arrays["site_styles"], dtype=np.float32)
        self.generator_ = self._make_generator()  # moved to `device` by transform
        self.style_encoder_ = self._make_style_encoder()
        self.discriminator_ = None  # needed for training only; not saved
        self.history_ = None
