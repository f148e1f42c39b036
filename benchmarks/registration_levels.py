"""Should the affine registration stop at 2 mm instead of 1 mm? Time saved against brain points moved.

`register_to_template`'s last stage runs an affine at 4, 2 and 1 mm (`PreprocessConfig.registration_shrink`
= (4, 2, 1)). Stopping at 2 mm skips the most expensive level. This measures, on pycortex's S1 and the
three distorted copies of `make bench-preprocess` (all N4-corrected first, as the pipeline does):

- the seconds of `register_to_template` for each setting;
- how far each setting moves template brain points (every 50th voxel of the template brain mask) from
  where the default (4, 2, 1) with seed 0 puts them, in mm (mean and max);
- the same distance for the default with seed 1: the default's own spread from its random metric
  sampling, the scale the other distances are read against.

Writes OUT/results.json. Needs pycortex's data: `pip install --no-deps pycortex` (make test installs it).

    python benchmarks/registration_levels.py --out benchmarks/results/registration_levels
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from real_heads import VARIANTS, affine_matrix, distort, s1_head  # noqa: E402

from neurodiff.atomic import write_json  # noqa: E402
from neurodiff.data.preprocess import n4_bias_correct  # noqa: E402
from neurodiff.data.preprocess.registration import load_template, register_to_template  # noqa: E402
from neurodiff.reporting.results import environment  # noqa: E402

#: name → keyword arguments of register_to_template; "default_seed0" is the reference
SETTINGS = {
    "default_seed0": dict(shrink_factors=(4, 2, 1), sampling=0.05, seed=0),
    "default_seed1": dict(shrink_factors=(4, 2, 1), sampling=0.05, seed=1),
    "to_2mm_sampling5_seed0": dict(shrink_factors=(4, 2), sampling=0.05, seed=0),
    "to_2mm_sampling20_seed0": dict(shrink_factors=(4, 2), sampling=0.2, seed=0),
    "to_2mm_sampling20_seed1": dict(shrink_factors=(4, 2), sampling=0.2, seed=1),
}
POINT_STRIDE = 50


def subjects() -> dict[str, nib.Nifti1Image]:
    """S1 and the benchmark's distorted copies, as `benchmarks/preprocess_speed.py` makes them."""
    head = s1_head()
    centre = nib.affines.apply_affine(head.image.affine, (np.asarray(head.image.shape) - 1) / 2)
    images = {"S1": head.image}
    for name, spec in VARIANTS.items():
        transform = affine_matrix(spec["rotation"], spec["scale"], spec["shift"], centre)
        images[name] = distort(head, transform=transform, seed=1, **spec["options"])[0]
    return images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/registration_levels"))
    args = parser.parse_args()
    template = load_template()
    inside = np.argwhere(np.asarray(template.brain_mask.dataobj) > 0)[::POINT_STRIDE]
    points = nib.affines.apply_affine(template.brain_mask.affine, inside)
    per_subject = {}
    for name, image in subjects().items():
        corrected = n4_bias_correct(image).corrected
        found = {}
        for setting, kwargs in SETTINGS.items():
            started = time.perf_counter()
            registration = register_to_template(corrected, template=template, **kwargs)
            found[setting] = (registration.template_to_native, time.perf_counter() - started)
        reference = nib.affines.apply_affine(found["default_seed0"][0], points)
        per_subject[name] = {}
        for setting, (matrix, seconds) in found.items():
            moved = np.linalg.norm(nib.affines.apply_affine(matrix, points) - reference, axis=1)
            per_subject[name][setting] = {"seconds": round(seconds, 2), "mean_mm_from_default_seed0": float(moved.mean()),
                                          "max_mm_from_default_seed0": float(moved.max())}
        print(name, {s: (v["seconds"], round(v["mean_mm_from_default_seed0"], 3)) for s, v in per_subject[name].items()},
              flush=True)
    summary = {setting: {
        "seconds_mean": float(np.mean([per_subject[n][setting]["seconds"] for n in per_subject])),
        "mean_mm_range": [min(per_subject[n][setting]["mean_mm_from_default_seed0"] for n in per_subject),
                          max(per_subject[n][setting]["mean_mm_from_default_seed0"] for n in per_subject)],
        "max_mm": max(per_subject[n][setting]["max_mm_from_default_seed0"] for n in per_subject),
    } for setting in SETTINGS}
    results = {
        "benchmark": "registration_levels",
        "environment": {**environment(), "simpleitk": sitk.Version.VersionString()},
        "settings": {k: {**v, "shrink_factors": list(v["shrink_factors"])} for k, v in SETTINGS.items()},
        "points": f"every {POINT_STRIDE}th voxel of the 1 mm template brain mask ({len(points)} points)",
        "subjects": per_subject,
        "summary": summary,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", results)
    for setting, s in summary.items():
        print(f"{setting}: {s['seconds_mean']:.1f} s, mean {s['mean_mm_range'][0]:.2f}–{s['mean_mm_range'][1]:.2f} mm, "
              f"max {s['max_mm']:.2f} mm")
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
