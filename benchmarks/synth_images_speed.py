"""Speed of the synthetic image cohort generator on this machine.

Measures, for 128×128 and 64×64 slices: rendering only (images/s, from the library's iterator) and
the whole `generate_image_cohort` (rendering + NIfTI writing + manifest), after the one-off template
preparation, which is timed on its own. Writes results.json into --out.

    python benchmarks/synth_images_speed.py --out benchmarks/results/synth_images
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neurodiff import __version__
from neurodiff.atomic import write_json
from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort, iter_images
from neurodiff.data.synthetic_images.render import Renderer
from neurodiff.data.synthetic_images.template import load_template


def _cohort(size: int, n_controls: int) -> ImageCohortConfig:
    # Same mix as the paper preset (controls, travellers at 7 sites, patients), scaled down.
    return ImageCohortConfig(n_controls=n_controls, n_travellers=2, n_patients=n_controls // 20, size=size, seed=0)


def _time_rendering(config: ImageCohortConfig, renderer: Renderer) -> float:
    start = time.perf_counter()
    for _ in iter_images(config, renderer=renderer):
        pass
    return time.perf_counter() - start


def _time_generation(config: ImageCohortConfig) -> float:
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        generate_image_cohort(config, Path(folder) / "cohort", progress=False)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synth_images"))
    parser.add_argument("--controls", type=int, default=200, help="single-visit controls per timed cohort")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (the best is kept)")
    args = parser.parse_args(argv)

    load_average_before = os.getloadavg()[0]
    start = time.perf_counter()
    load_template(None)
    template_full_s = time.perf_counter() - start
    load_template.cache_clear()
    start = time.perf_counter()
    Renderer(ImageCohortConfig())
    template_slab_s = time.perf_counter() - start

    sizes = {}
    paper = ImageCohortConfig.paper()
    for size in (128, 64):
        config = _cohort(size, args.controls)
        renderer = Renderer(config)
        render_s = min(_time_rendering(config, renderer) for _ in range(args.repeats))
        generate_s = min(_time_generation(config) for _ in range(args.repeats))
        rate = config.n_images / generate_s
        sizes[f"{size}x{size}"] = {
            "images": config.n_images,
            "render_seconds": round(render_s, 3),
            "render_images_per_s": round(config.n_images / render_s, 2),
            "generate_seconds": round(generate_s, 3),
            "generate_images_per_s": round(rate, 2),
            "ms_per_image": round(1000 * generate_s / config.n_images, 1),
            "projected_paper_minutes": round(paper.replace(size=size).n_images / rate / 60 + template_slab_s / 60, 1),
        }
        print(f"{size}×{size}: {sizes[f'{size}x{size}']}", flush=True)

    results = {
        "task": "synthetic image cohort generation speed (neurodiff synth images)",
        "data": {
            "cohort": "7 sites; controls + 2 travellers × 7 sites + patients (5 %); slice only, no volumes",
            "controls": args.controls,
            "paper_preset_images": paper.n_images,
        },
        "seeds": [0],
        "timings": {
            "template_preparation_seconds": {
                "slab": round(template_slab_s, 2),
                "full_volume": round(template_full_s, 2),
            },
            "sizes": sizes,
        },
        "note": (
            "images/s = subjects/s for single-visit subjects; generate = render + write NIfTI + manifest; "
            "best of repeats; the CPU may be shared (load average recorded)."
        ),
        "environment": {
            "neurodiff": __version__,
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": {"before": round(load_average_before, 2), "after": round(os.getloadavg()[0], 2)},
        },
    }
    write_json(args.out / "results.json", results)
    print(f"wrote {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
