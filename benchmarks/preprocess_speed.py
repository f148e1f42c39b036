"""Speed and quality of `neurodiff preprocess` on real heads with skull (pycortex's S1 and distorted copies).

Measures, on this machine:
- seconds per subject for a 1 mm head (S1, 256³) through the whole pipeline with the default settings,
  step by step (load, N4, registration, skull strip, normalise, resample, write), and the peak memory
  of `neurodiff preprocess --jobs 1` on the four subjects;
- the throughput of a 4-subject manifest with --jobs 1 and --jobs 2;
- quality: Dice of the native brain mask against S1's pial-surface reference (supratentorial region)
  for S1 and three distorted copies (moved, warped, tilted), with and without the refinement, and the
  registration error of the moved and tilted copies against S1's registration composed with the known
  affine.

Writes OUT/results.json. Needs pycortex's data: `pip install --no-deps pycortex` (make test installs it).

    python benchmarks/preprocess_speed.py --out benchmarks/results/preprocess_speed
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "data"))
from real_heads import VARIANTS, affine_matrix, dice, distort, s1_head  # noqa: E402

from neurodiff.atomic import write_json  # noqa: E402
from neurodiff.data.preprocess import (  # noqa: E402
    AffineRegistration,
    PreprocessConfig,
    load_t1,
    n4_bias_correct,
    preprocess_manifest,
    template_brain_mask,
)
from neurodiff.reporting.results import environment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preprocess_speed"))
    args = parser.parse_args()
    head = s1_head()
    with tempfile.TemporaryDirectory(prefix="neurodiff-preprocess-bench-") as tmp:
        folder = Path(tmp) / "scans"
        folder.mkdir()
        nib.save(head.image, folder / "S1.nii.gz")
        truth = {"S1": (np.eye(4), head.reference, head.region)}
        centre = nib.affines.apply_affine(head.image.affine, (np.asarray(head.image.shape) - 1) / 2)
        for name, spec in VARIANTS.items():
            transform = affine_matrix(spec["rotation"], spec["scale"], spec["shift"], centre)
            image, reference, region, _ = distort(head, transform=transform, seed=1, **spec["options"])
            nib.save(image, folder / f"{name}.nii.gz")
            truth[name] = (transform, reference, region)
        names = list(truth)
        pd.DataFrame({"subject_id": names, "path": [f"{n}.nii.gz" for n in names]}).to_csv(
            folder / "manifest.csv", index=False)

        runs = {}
        # --jobs 1 through the command line in a fresh process (fork + exec), so that its peak memory
        # is its own; then --jobs 2 through the library.
        out = Path(tmp) / "out-jobs1"
        print(f"preprocessing {len(names)} subjects with neurodiff preprocess --jobs 1 ...", flush=True)
        start = time.perf_counter()
        command = [str(Path(sys.executable).with_name("neurodiff")), "preprocess", "--manifest",
                   str(folder / "manifest.csv"), "--out", str(out), "--jobs", "1"]
        subprocess.run(command, check=True)
        runs[1] = dict(out=out, wall=time.perf_counter() - start)
        peak_cli_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        out = Path(tmp) / "out-jobs2"
        print(f"preprocessing {len(names)} subjects with --jobs 2 ...", flush=True)
        start = time.perf_counter()
        summary = preprocess_manifest(folder / "manifest.csv", out, PreprocessConfig(), jobs=2, progress=True)
        assert not summary.failed, [o.message for o in summary.failed]
        runs[2] = dict(out=out, wall=time.perf_counter() - start)
        out = runs[1]["out"]
        records = {n: json.loads((out / n / "preprocess.json").read_text()) for n in names}

        quality = {}
        s1_matrix = np.loadtxt(out / "S1" / "native_to_template.txt")
        brain_points = nib.affines.apply_affine(head.image.affine, np.argwhere(head.reference)[::20])
        for name in names:
            transform, reference, region = truth[name]
            mask = np.asarray(nib.load(out / name / "native_brain_mask.nii.gz").dataobj) > 0
            entry = {"dice_supratentorial": dice(mask, reference, region),
                     "dice_whole_mask_vs_cerebrum": dice(mask, reference, np.ones_like(region))}
            # the carried mask without refinement, on the same registration
            image = load_t1(folder / f"{name}.nii.gz")
            corrected = n4_bias_correct(image).corrected
            registration = AffineRegistration.from_native_to_template(np.loadtxt(out / name / "native_to_template.txt"))
            carried = nib.as_closest_canonical(template_brain_mask(corrected, registration, refine=False))
            native = nib.load(folder / f"{name}.nii.gz")
            carried = np.asarray(carried.as_reoriented(
                nib.orientations.ornt_transform(nib.orientations.io_orientation(carried.affine),
                                                nib.orientations.io_orientation(native.affine))).dataobj) > 0
            entry["dice_supratentorial_without_refinement"] = dice(carried, reference, region)
            if name in ("moved", "tilted"):
                points = nib.affines.apply_affine(transform, brain_points)
                expected = s1_matrix @ np.linalg.inv(transform)
                found = np.loadtxt(out / name / "native_to_template.txt")
                error = np.linalg.norm(nib.affines.apply_affine(found, points)
                                       - nib.affines.apply_affine(expected, points), axis=1)
                entry["registration_error_mm_vs_s1_composed"] = {"mean": float(error.mean()), "max": float(error.max())}
            quality[name] = entry
            print(name, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()}, flush=True)

    s1 = records["S1"]["seconds"]
    results = {
        "benchmark": "preprocess_speed",
        "environment": {**environment(), "simpleitk": sitk.Version.VersionString()},
        "settings": PreprocessConfig().to_dict(),
        "subject": "pycortex S1, 256x256x256 at 1 mm, head with skull and neck",
        "seconds_per_subject_1mm": s1["total"],
        "seconds_per_step_1mm": s1,
        "target_seconds_per_subject": 60.0,
        "meets_target": s1["total"] <= 60.0,
        "manifest_wall_seconds": {f"jobs_{j}": round(r["wall"], 1) for j, r in runs.items()},
        "manifest_seconds_per_subject": {f"jobs_{j}": round(r["wall"] / len(names), 1) for j, r in runs.items()},
        "subjects": {n: {"seconds": records[n]["seconds"]["total"], "brain_volume_ml": records[n]["brain_volume_ml"]}
                     for n in names},
        "quality": quality,
        "peak_memory_mb_jobs_1": round(peak_cli_mb, 1),
        "variants": VARIANTS,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", results)
    print(f"S1 at 1 mm: {s1['total']:.1f} s per subject ({s1}); wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
