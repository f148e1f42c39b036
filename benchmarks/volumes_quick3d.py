"""The quick3d preset on 32³ volumes: training time on this CPU, and what the trained models do.

Generates a 3-site synthetic cohort with volumes (32³, 6.25 mm voxels; real MNI152 anatomy), then:

- DDAE (``harmonize fit --quick`` on volumes): training time and loss; reconstruction of held-out
  volumes (encode → DDIM inversion → render) as PSNR / SSIM; the travelling subjects harmonised to
  site0 against their site0 volume, before and after (PSNR / SSIM);
- NDA (``normative fit --quick`` on the controls' volumes): training time; the similarity score's
  AUROC for patients against held-out controls.

Everything goes through the public API the commands use. Writes <out>/results.json.

    python benchmarks/volumes_quick3d.py --out benchmarks/results/volumes_quick3d
    python benchmarks/volumes_quick3d.py --smoke --out /tmp/quick3d     # the whole script, fast
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from neurodiff.data.image_manifest import load_images, read_manifest
from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort
from neurodiff.evaluation.image_quality import psnr, ssim
from neurodiff.methods.harmonization import DisentangledDiffAE
from neurodiff.methods.normative import NormativeDiffAE
from neurodiff.reporting.results import environment, write_results


def _summary(values: np.ndarray) -> dict:
    return {"mean": float(np.mean(values)), "sd": float(np.std(values)), "n": int(len(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/volumes_quick3d"))
    parser.add_argument("--smoke", action="store_true", help="a few steps and images: checks the script runs")
    args = parser.parse_args()
    steps = 3 if args.smoke else None  # None: the preset's 200
    inversion, render = (3, 3) if args.smoke else (50, 50)
    config = ImageCohortConfig.quick(size=32, n_sites=3, n_controls=34 if args.smoke else 90,
                                     n_travellers=2, n_patients=6 if args.smoke else 30, volumes=True)
    results: dict = {"task": "volumes_quick3d", "cohort": {"size": 32, "sites": 3, "controls": config.n_controls,
                                                           "travellers": 2, "patients": config.n_patients}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cohort"
        started = time.perf_counter()
        generate_image_cohort(config, folder, progress=False)
        results["cohort"]["seconds"] = time.perf_counter() - started
        frame = read_manifest(folder / "manifest-3d.csv")
        images, _ = load_images(frame)
        rng = np.random.default_rng(0)
        healthy = (frame["group"] == "control").to_numpy()
        travellers = frame["true_traveller_id"].fillna("").astype(str).ne("").to_numpy()
        single = np.flatnonzero(healthy & ~travellers)
        held_out = rng.choice(single, size=max(6, len(single) // 5), replace=False)
        train = np.setdiff1d(np.flatnonzero(healthy), held_out)

        # ---------------------------------------------------------------- DDAE
        overrides = {"max_steps": steps} if steps else {}
        ddae = DisentangledDiffAE.preset("quick3d", progress=False, **overrides)
        print(f"DDAE quick3d: training on {len(train)} volumes ...", flush=True)
        ddae.fit(frame.iloc[train].reset_index(drop=True), images[train])
        h = ddae.history_
        entry = {"train_volumes": int(len(train)), "steps": len(h["loss"]), "train_seconds": h["seconds"],
                 "seconds_per_step": h["seconds"] / len(h["loss"]),
                 "loss_first_10": float(np.mean(h["loss"][:10])), "loss_last_10": float(np.mean(h["loss"][-10:])),
                 "latent_sensitivity": h["latent_sensitivity"]}
        test = frame.iloc[held_out].reset_index(drop=True)
        started = time.perf_counter()
        z = ddae.encode(images[held_out], test)
        x_t = ddae.encode_stochastic(images[held_out], z, steps=inversion)
        recon = ddae.render(x_t, z, steps=render)
        entry["reconstruction"] = {"inversion_steps": inversion, "render_steps": render,
                                   "seconds_per_volume": (time.perf_counter() - started) / len(held_out),
                                   "psnr": _summary(psnr(recon, images[held_out])),
                                   "ssim": _summary(ssim(recon, images[held_out]))}
        moved = np.flatnonzero(travellers & (frame["site"] != "site0").to_numpy())
        reference = frame["resolved_path"].tolist()
        ref_index = [reference.index(str(folder / p)) for p in frame["true_reference_path"].iloc[moved]]
        ddae.inversion_steps, ddae.render_steps = inversion, render
        harmonised = ddae.transform(images[moved], frame.iloc[moved].reset_index(drop=True), "site0")
        entry["travellers_to_site0"] = {
            "n": int(len(moved)),
            "psnr_before": _summary(psnr(images[moved], images[ref_index])),
            "psnr_after": _summary(psnr(harmonised, images[ref_index])),
            "ssim_before": _summary(ssim(images[moved], images[ref_index])),
            "ssim_after": _summary(ssim(harmonised, images[ref_index]))}
        results["ddae"] = entry
        print(f"  {entry['train_seconds']:.0f} s; reconstruction PSNR {entry['reconstruction']['psnr']['mean']:.1f} dB",
              flush=True)

        # ---------------------------------------------------------------- NDA
        nda = NormativeDiffAE.preset("quick3d", progress=False, **overrides)
        print(f"NDA quick3d: training on {len(train)} control volumes ...", flush=True)
        nda.fit(frame.iloc[train].reset_index(drop=True), images[train])
        patients = np.flatnonzero((frame["group"] == "patient").to_numpy())
        scored = np.concatenate([held_out, patients])
        scores = nda.score(images[scored], frame.iloc[scored].reset_index(drop=True))
        is_patient = np.r_[np.zeros(len(held_out)), np.ones(len(patients))]
        results["nda"] = {"train_volumes": int(len(train)), "steps": len(nda.history_["loss"]),
                          "train_seconds": nda.history_["seconds"],
                          "auroc_similarity_patients_vs_heldout_controls":
                              float(roc_auc_score(is_patient, -scores["similarity"].to_numpy())),
                          "n_patients": int(len(patients)), "n_heldout_controls": int(len(held_out))}
        print(f"  {results['nda']['train_seconds']:.0f} s; AUROC "
              f"{results['nda']['auroc_similarity_patients_vs_heldout_controls']:.2f}", flush=True)
    results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["environment"] = environment()
    print(f"wrote {write_results(args.out / 'results.json', results)}")


if __name__ == "__main__":
    pd.options.mode.copy_on_write = True
    main()
