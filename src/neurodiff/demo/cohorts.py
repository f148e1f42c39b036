"""The cohorts stage of the demo: the embedded synthetic cohorts every later stage reads.

One image cohort serves both image methods (7 sites, travelling subjects imaged at every site for
harmonisation, ALS-like patients with survival for normative modelling) and one longitudinal table
serves imputation, so each is generated once and handed to the benchmarks as ``--manifest`` / ``--data``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Passed to :meth:`ImageCohortConfig.quick`: the quick cohort at 32×32 with enough patients for the
#: survival analysis (what ``neurodiff normative benchmark --quick`` generates without --manifest).
IMAGE_COHORT = dict(size=32, n_patients=200)
#: Smaller than the --quick table (3,000 subjects, 600 paired): half its subjects, 500 of them paired.
#: SECONDGRAM generates a follow-up for every training subject for the downstream task, which
#: dominates the imputation stage's time.
TABLE_SIZE = dict(n_subjects=1500, n_paired=500)
#: The demo's downstream task and case study are about parkinsonism. At its UK-Biobank-like prevalence
#: (0.3 %) the demo's held-out subjects hold no case, and the AUROCs and the case study come out empty;
#: at 15 % its 100 held-out subjects hold about 10.
TABLE_PREVALENCE = {"parkinsonism": 0.15}
IMAGES, TABLE = "images", "longitudinal.csv"


def cohorts_stage(folder: Path, *, smoke: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``folder/images/`` (NIfTI slices and manifest.csv), ``folder/longitudinal.csv`` and a figure.

    `smoke`: a much smaller image cohort and table (for the test of the demo itself).
    """
    from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort
    from neurodiff.data.synthetic_longitudinal import LongitudinalConfig, generate_longitudinal, write_table

    started = time.perf_counter()
    sizes = dict(n_controls=50, n_travellers=2, n_patients=30) if smoke else {}
    config = ImageCohortConfig.quick(**{**IMAGE_COHORT, **sizes})
    log(f"  images: {config.n_controls} controls, {config.n_travellers} travellers × {config.n_sites} sites, "
        f"{config.n_patients} patients at {config.size}×{config.size}")
    manifest = generate_image_cohort(config, folder / IMAGES, progress=False)
    table_config = LongitudinalConfig.quick(**(dict(n_subjects=400, n_paired=150) if smoke else TABLE_SIZE),
                                            prevalence=TABLE_PREVALENCE)
    log(f"  table: {table_config.n_subjects:,} subjects ({table_config.n_paired:,} with a follow-up), "
        f"{table_config.n_features} features")
    table = generate_longitudinal(table_config)
    write_table(table, folder / TABLE)
    _traveller_figure(manifest, folder / IMAGES, folder / "cohort_traveller.png")
    return {
        "images": int(len(manifest)), "image_size": config.size, "image_sites": int(manifest["site"].nunique()),
        "controls": config.n_controls, "travellers": config.n_travellers,
        "patients": int((manifest["group"] == "patient").sum()),
        "table_rows": int(len(table)), "table_subjects": int(table["subject_id"].nunique()),
        "table_paired": table_config.n_paired, "table_features": table_config.n_features,
        "seconds": time.perf_counter() - started,
    }


def _traveller_figure(manifest, folder: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    rows = manifest[manifest["true_traveller_id"].notna() & (manifest["true_traveller_id"] != "")]
    first = rows[rows["true_traveller_id"] == rows["true_traveller_id"].iloc[0]].sort_values("site")
    fig, axes = plt.subplots(1, len(first), figsize=(1.6 * len(first), 2.0))
    for ax, (_, row) in zip(axes, first.iterrows()):
        ax.imshow(np.asarray(nib.load(folder / row["path"]).dataobj).T, cmap="gray", origin="lower", vmin=0, vmax=1)
        ax.set_title(row["site"], fontsize=9)
        ax.axis("off")
    fig.suptitle("one travelling subject imaged at every site (synthetic cohort)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
