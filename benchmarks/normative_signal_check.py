"""How visible is the embedded cohort's planted disease in its slices? A supervised ceiling for the
normative benchmark.

No unsupervised normative score can recover a disease that a supervised model trained on the
patients' own severities cannot. For the quick cohort with 200 patients (as `neurodiff normative
benchmark --quick` uses) at each size and slice height, this script reports:

- the cross-validated (5-fold) Spearman correlation with the planted severity of ridge regression on
  the patients' pixels (with and without a PCA to 50 components);
- the cross-validated AUROC of a logistic classifier of patients vs controls on PCA-50 of the pixels;
- for one rendered patient at severity 1 vs the same anatomy and acquisition at severity 0: the largest
  pixel change and how many pixels change by more than 0.05 (intensities in [0, 1]).

Usage:  python benchmarks/normative_signal_check.py [--out benchmarks/results/normative_signal]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegressionCV, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline

from neurodiff.atomic import write_json
from neurodiff.data.image_manifest import load_images, read_manifest
from neurodiff.data.synthetic_images import (
    ImageCohortConfig,
    generate_image_cohort,
    plan,
)
from neurodiff.data.synthetic_images.render import (
    Renderer,
    draw_acquisition,
    draw_anatomy,
)
from neurodiff.reporting.results import environment

SETTINGS = ((32, 22.0), (64, 22.0), (32, 50.0))


def supervised_ceiling(size: int, slice_z: float, folder: Path) -> dict[str, float]:
    config = ImageCohortConfig.quick(size=size, n_patients=200, slice_z_mm=slice_z)
    generate_image_cohort(config, folder, progress=False)
    frame = read_manifest(folder / "manifest.csv")
    images, _ = load_images(frame)
    pixels = images.reshape(len(images), -1)
    patients = frame["group"].eq("patient").to_numpy()
    severity = frame["true_severity"].to_numpy(float)
    alphas = np.logspace(-2, 5, 15)
    out = {}
    for name, model in (("ridge_pixels", RidgeCV(alphas)), ("ridge_pca50", make_pipeline(PCA(50), RidgeCV(alphas)))):
        predicted = cross_val_predict(model, pixels[patients], severity[patients], cv=5)
        out[f"spearman_severity_{name}"] = float(spearmanr(predicted, severity[patients])[0])
    probability = cross_val_predict(make_pipeline(PCA(50), LogisticRegressionCV(max_iter=2000)), pixels, patients,
                                    cv=5, method="predict_proba")[:, 1]
    out["auroc_patient_vs_control_pca50"] = float(roc_auc_score(patients, probability))
    return out


def disease_footprint(size: int, slice_z: float) -> dict[str, float]:
    config = ImageCohortConfig.quick(size=size, slice_z_mm=slice_z)
    sites, _ = plan(config)
    renderer = Renderer(config)
    anatomy = draw_anatomy(config, 60.0, 1.0, 1.0, np.random.default_rng(1))
    acquisition = draw_acquisition(sites[0], np.random.default_rng(2))
    sick = renderer.render_slice(anatomy, acquisition, np.random.default_rng(3))
    healthy = renderer.render_slice(dataclasses.replace(anatomy, severity=0.0), acquisition, np.random.default_rng(3))
    change = np.abs(sick - healthy)
    return {"max_pixel_change_at_severity_1": float(change.max()),
            "pixels_changed_over_0.05": int((change > 0.05).sum()), "pixels": int(change.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/normative_signal"))
    args = parser.parse_args()
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for size, slice_z in SETTINGS:
            print(f"size {size}, slice z = {slice_z} mm ...", flush=True)
            row = {"size": size, "slice_z_mm": slice_z,
                   **supervised_ceiling(size, slice_z, Path(scratch) / f"cohort-{size}-{slice_z}"),
                   **disease_footprint(size, slice_z)}
            print(row, flush=True)
            rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "results.json", {"task": "normative_signal_check", "settings": rows,
                                           "seconds": time.perf_counter() - started, "environment": environment()})
    print(f"Wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
