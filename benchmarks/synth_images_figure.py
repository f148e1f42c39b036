"""Figure of the synthetic image cohort: a travelling subject at every site, ageing, disease, site curves.

python benchmarks/synth_images_figure.py --out docs/figures/synthetic_traveller_and_age.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from neurodiff.atomic import atomic_path  # noqa: E402
from neurodiff.data.synthetic_images import ImageCohortConfig, plan  # noqa: E402
from neurodiff.data.synthetic_images.render import Renderer, draw_acquisition, draw_anatomy  # noqa: E402

AGES = (20, 35, 50, 65, 80, 90)
SEVERITIES = (0.0, 0.5, 1.0)


def _show(ax, image, title, **kwargs):
    options = {"cmap": "gray", "vmin": 0, "vmax": 1} | kwargs
    shown = ax.imshow(image.T, origin="lower", **options)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return shown


def make_figure(seed: int, size: int) -> plt.Figure:
    config = ImageCohortConfig(size=size, seed=seed)
    sites, _ = plan(config)
    renderer = Renderer(config)
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(config, 45.0, 1.0, 0.0, rng)
    fig, axes = plt.subplots(3, 7, figsize=(17, 8.2))
    fig.subplots_adjust(left=0.05, right=0.96, bottom=0.06, top=0.96, wspace=0.04, hspace=0.18)

    for ax, site in zip(axes[0], sites):
        image = renderer.render_slice(anatomy, draw_acquisition(site, rng), rng)
        _show(ax, image, f"{site.name}{' (reference)' if site.is_reference else ''}")
    for ax in axes[0, len(sites) :]:
        ax.axis("off")
    axes[0, 0].set_ylabel("one travelling subject,\nage 45, every site", fontsize=10)

    reference = sites[0]
    acquisition = draw_acquisition(reference, rng)
    aged = [renderer.render_slice(anatomy.with_age(age), acquisition, np.random.default_rng(1)) for age in AGES]
    for ax, age, image in zip(axes[1], AGES, aged):
        _show(ax, image, f"age {age}")
    _show(axes[1, 6], aged[-1] - aged[0], "age 90 − age 20", cmap="RdBu_r", vmin=-0.5, vmax=0.5)
    axes[1, 0].set_ylabel("the same subject ageing\n(reference site)", fontsize=10)

    patient = [draw_anatomy(config, 60.0, 1.0, s, np.random.default_rng(seed + 1)) for s in SEVERITIES]
    sick = [renderer.render_slice(p, acquisition, np.random.default_rng(2)) for p in patient]
    for ax, s, image in zip(axes[2], SEVERITIES, sick):
        _show(ax, image, f"ALS-like, severity {s:g}")
    _show(axes[2, 3], sick[-1] - sick[0], "severity 1 − severity 0", cmap="RdBu_r", vmin=-0.3, vmax=0.3)
    axes[2, 0].set_ylabel("disease (age 60,\nreference site)", fontsize=10)

    for ax in axes[2, 4:]:
        ax.remove()
    curves = fig.add_subplot(axes[0, 0].get_gridspec()[2, 4:])
    x = np.linspace(0, 1, 200)
    for site in sites:
        curves.plot(x, site.transfer_curve(renderer.template.tissue_means)(x), label=site.name)
    for name, level in renderer.template.tissue_means.items():
        curves.axvline(level, color="grey", lw=0.6, ls=":")
        curves.text(level, 0.02, name.upper(), fontsize=7, color="grey", ha="center")
    curves.set_xlabel("template T1 intensity")
    curves.set_ylabel("site intensity")
    curves.yaxis.set_label_position("right")
    curves.yaxis.tick_right()
    curves.set_title("site intensity transfer curves (before bias, noise, normalisation)", fontsize=9)
    curves.legend(fontsize=7, ncol=2)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures/synthetic_traveller_and_age.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args(argv)
    figure = make_figure(args.seed, args.size)
    with atomic_path(args.out) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
