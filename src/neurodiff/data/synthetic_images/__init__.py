"""Embedded multi-site synthetic T1 cohort with known ground truth (harmonisation, normative modelling).

Every image starts from real anatomy, the 1 mm MNI152 T1 template and its grey-matter (GM), white-matter
(WM) and brain maps shipped by nilearn (no download), and is rendered at the medial axial slice
(MNI z = 22 mm, the middle of the MNI152 grid) on a 200 mm square field of view, ``size × size`` pixels
(128 by default: 1.56 mm), intensities in [0, 1], skull-stripped. Full description, with figures:
``docs/synthetic-images.md``. Numbers below are the defaults (:mod:`.config`, :mod:`.sites`).

Subjects (anatomy, shared by all of a subject's images)
    * head size: linear scale 1.00 (male) or 0.955 (female) × exp(N(0, 0.03²)) about the FOV centre;
    * random smooth deformation: Gaussian-smoothed white noise, SD 3 mm per component, smoothness
      (Gaussian σ) 16 mm, on an 8 mm control grid;
    * age (years above 20; controls per site ~ truncated normal within [20, 90]):
      ventricle warp x ↦ v + (x − v)(1 − a·g(x)), g Gaussian around v = (0, −15, 18) mm with SDs
      (20, 34, 18) mm, a = 0.007/year (0.49 at 90: ventricle neighbourhood magnified 1.96× linearly
      at its centre; the dark central area of the slice grows ~70 % from 20 to 90 for one subject);
      cortical GM loss 0.3 %/year of the cortical GM partial volume turned to CSF (21 % at 90);
      sulcal widening 0.025 mm/year: cortical GM within that distance (+1 voxel ramp) of sulcal CSF
      becomes CSF (1.75 mm at 90). Cortex = GM less than ~25 mm deep, outside the deep-grey region.

Patients (ALS-like; n_patients, ages ~ N(62, 10²) truncated to [35, 90], 40 % female)
    * latent severity s ~ Beta(2, 2) in [0, 1] (column ``true_severity``; 0 for controls);
    * motor cortex: GM loss s × 60 % at the centre of the precentral gyrus (a Gaussian tube, SD 8 mm,
      along a path from (±56, 2, 12) to (±8, −30, 74) mm), turned to CSF;
    * corticospinal tract: WM loses s × 30 % of its WM − GM contrast at the tract centre (tube SD 4 mm,
      (±14, −18, −18) → (±36, −22, 56) mm through the internal capsule and corona radiata);
    * survival (:func:`sample_survival_times`): hazard h0(t)·exp(β s), Weibull baseline shape 1.3,
      scale 2000 days, β = 1.5 per unit severity (HR 4.48); censoring at a follow-up ~ U(365, 1825)
      days (~40 % censored). Controls have empty time and event.

Sites (n_sites, default 7; ``site0`` is the reference, IXI-like)
    * reference: identity intensity curve, bias strength 0.03, Rician σ 0.012, PSF FWHM 1 mm, 1 mm
      slices, no pose offset, ages ~ N(50, 20²), 55 % female, the largest share of controls;
    * others, Latin-hypercube over the ranges: intensity transfer curve (monotone PCHIP through the
      tissue levels) with CSF level × [0.6, 1.6], GM level × [0.9, 1.1], WM − GM contrast × [0.6, 1.5];
      multiplicative bias field exp(strength · p(u)), p a unit-norm quadratic in u = (x − c)/80 mm,
      strength [0.1, 0.4]; Rician noise σ [0.015, 0.05] (template WM = 0.87); in-plane PSF FWHM
      [1.2, 2.6] mm; slice thickness [1.2, 3.5] mm; pose offset pitch/roll ±1°, yaw ±2°, shift ±1.5 mm
      (z ±1 mm) plus per-image jitter SD 0.5° / 0.5 mm; age mean [30, 72], SD [8, 14]; female fraction
      [0.3, 0.7]; share of controls [0.5, 1.2] (reference 1.4). Site and biology are confounded.
    * images are normalised per image by the 99.5th percentile inside the brain, then clipped to [0, 1].

Travelling subjects: healthy controls (age ~ U(20, 90), sex 50/50) imaged once at every site, with the
same anatomy, age and sex, and a new pose, bias jitter and noise each time (``true_traveller_id``,
``true_reference_path`` = their site0 image).

Public API: :class:`ImageCohortConfig` (presets :meth:`~ImageCohortConfig.quick`,
:meth:`~ImageCohortConfig.paper`), :func:`generate_image_cohort` (writes the folder, returns the
manifest), :func:`iter_images` (renders without writing), :func:`plan` (sites and per-image plan),
:func:`sample_survival_times`.
"""

from neurodiff.data.synthetic_images.cohort import generate_image_cohort, iter_images, plan
from neurodiff.data.synthetic_images.config import (
    AgeEffects,
    AnatomyEffects,
    DiseaseEffects,
    ImageCohortConfig,
    SurvivalModel,
)
from neurodiff.data.synthetic_images.subjects import sample_survival_times

__all__ = [
    "AgeEffects",
    "AnatomyEffects",
    "DiseaseEffects",
    "ImageCohortConfig",
    "SurvivalModel",
    "generate_image_cohort",
    "iter_images",
    "plan",
    "sample_survival_times",
]
