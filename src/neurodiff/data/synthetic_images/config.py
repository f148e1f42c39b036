"""Configuration of the synthetic image cohort: cohort sizes, planted effect sizes, survival model.

Every number that shapes the ground truth lives here, in small frozen dataclasses with the values
documented in ``docs/synthetic-images.md``. :class:`ImageCohortConfig` holds the cohort sizes and
one instance of each effect group; :meth:`ImageCohortConfig.validate` rejects impossible values with
a message that names them, before anything is rendered or written.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

#: Allowed image sizes (pixels per side): powers of two from 32 to 512.
VALID_SIZES: tuple[int, ...] = (32, 64, 128, 256, 512)

#: Largest size at which 3D volumes may be rendered.
MAX_VOLUME_SIZE = 256

#: Largest number of sites (each needs a distinct acquisition profile).
MAX_SITES = 64


#: The youngest age a synthetic patient is drawn at (the disease's onset is adult).
PATIENT_MIN_AGE = 35.0


@dataclass(frozen=True)
class AnatomyEffects:
    """Between-subject anatomy: head size by sex and a random smooth deformation.

    head_scale_male, head_scale_female
        Mean linear scale of the brain relative to the MNI152 template (female brains ~4.5 % smaller
        linearly, ~13 % in volume).
    head_scale_log_sd
        SD of the individual log scale around the sex mean.
    deformation_sd_mm
        SD of each component of the random displacement field (mm).
    deformation_smoothness_mm
        Correlation length of the displacement field (Gaussian smoothing of white noise, mm).
    """

    head_scale_male: float = 1.0
    head_scale_female: float = 0.955
    head_scale_log_sd: float = 0.03
    deformation_sd_mm: float = 3.0
    deformation_smoothness_mm: float = 16.0


@dataclass(frozen=True)
class AgeEffects:
    """Normal ageing, linear in the years above `reference_age` (no effect at or below it).

    ventricle_expansion_per_year
        Growth of the ventricle expansion parameter ``a`` per year. The warp magnifies the region
        around the lateral ventricles by ``1 / (1 - a)`` linearly at its centre; at 90 years
        ``a = 0.49``, a 1.96× linear magnification at the centre.
    cortical_gm_loss_per_year
        Fraction of cortical grey matter (partial volume) turned into CSF per year: 21 % at 90.
    sulcal_widening_mm_per_year
        Cortical grey matter within this many mm per year of sulcal CSF becomes CSF: 1.75 mm at 90.
    """

    reference_age: float = 20.0
    ventricle_expansion_per_year: float = 0.007
    cortical_gm_loss_per_year: float = 0.003
    sulcal_widening_mm_per_year: float = 0.025


@dataclass(frozen=True)
class DiseaseEffects:
    """ALS-like disease of a patient with latent severity ``s`` in [0, 1].

    severity_beta
        Shape parameters (a, b) of the Beta distribution of ``s`` over patients.
    motor_gm_loss
        Fraction of motor-cortex grey matter lost at the centre of the precentral region at ``s = 1``.
    cst_contrast_loss
        Fraction of the white-minus-grey matter T1 contrast lost at the centre of the corticospinal
        tract at ``s = 1`` (white matter there darkens towards grey matter).
    patient_age_mean, patient_age_sd, patient_female_fraction
        Demographics of patients (truncated normal age within the cohort age range, >= 35 years).
    """

    severity_beta: tuple[float, float] = (2.0, 2.0)
    motor_gm_loss: float = 0.6
    cst_contrast_loss: float = 0.3
    patient_age_mean: float = 62.0
    patient_age_sd: float = 10.0
    patient_female_fraction: float = 0.4


@dataclass(frozen=True)
class SurvivalModel:
    """Proportional hazards in the severity ``s`` with a Weibull baseline, and censoring.

    Hazard ``h(t | s) = h0(t) · exp(log_hr_per_severity · s)`` with baseline
    ``h0(t) = (k / λ) (t / λ)^(k - 1)`` (shape k, scale λ in days). Each patient is followed for
    a time drawn uniformly in [followup_min_days, followup_max_days] (staggered entry, administrative
    censoring); the observed time is ``min(T, C)`` and ``event = T <= C``.
    """

    weibull_shape: float = 1.3
    weibull_scale_days: float = 2000.0
    log_hr_per_severity: float = 1.5
    followup_min_days: float = 365.0
    followup_max_days: float = 1825.0

    @property
    def hazard_ratio_per_severity(self) -> float:
        return math.exp(self.log_hr_per_severity)


@dataclass(frozen=True)
class ImageCohortConfig:
    """A synthetic multi-site T1 cohort: who is imaged, where, at what size, with which effects.

    n_controls
        Healthy controls imaged once, spread over the sites by the sites' shares.
    n_travellers
        Healthy travelling subjects, each imaged once at every site (``n_travellers × n_sites``
        images of the same anatomy).
    n_patients
        ALS-like patients imaged once (severity, survival time and censoring known).
    n_sites
        Number of sites; ``site0`` is the reference site (identity intensity curve, low noise, no
        pose offset), like IXI in the paper.
    size
        Pixels per side of the axial slice (and of the volume with `volumes`).
    volumes
        Also write the 3D volumes (``size³``, isotropic, 200 mm field of view).
    slice_z_mm
        MNI z of the medial axial slice (the middle of the MNI152 grid).
    """

    n_controls: int = 4050
    n_travellers: int = 10
    n_patients: int = 200
    n_sites: int = 7
    size: int = 128
    seed: int = 0
    volumes: bool = False
    age_range: tuple[float, float] = (20.0, 90.0)
    slice_z_mm: float = 22.0
    fov_mm: float = 200.0
    anatomy: AnatomyEffects = field(default_factory=AnatomyEffects)
    ageing: AgeEffects = field(default_factory=AgeEffects)
    disease: DiseaseEffects = field(default_factory=DiseaseEffects)
    survival: SurvivalModel = field(default_factory=SurvivalModel)

    @classmethod
    def paper(cls, **overrides) -> ImageCohortConfig:
        """The papers' size: 4,120 control slices (4,050 single visits + 10 travellers × 7 sites)
        from 7 sites at 128×128, plus 200 patients."""
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides) -> ImageCohortConfig:
        """A CPU-minutes cohort: 150 controls, 4 travellers × 7 sites, 40 patients at 64×64."""
        values = {"n_controls": 150, "n_travellers": 4, "n_patients": 40, "size": 64}
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> ImageCohortConfig:
        return dataclasses.replace(self, **changes)

    @property
    def site_names(self) -> list[str]:
        return [f"site{k}" for k in range(self.n_sites)]

    @property
    def reference_site(self) -> str:
        return "site0"

    @property
    def n_images(self) -> int:
        return self.n_controls + self.n_travellers * self.n_sites + self.n_patients

    def validate(self) -> None:
        """Raise ValueError naming the first impossible value."""
        _check_int("size", self.size)
        if self.size not in VALID_SIZES:
            raise ValueError(
                f"size={self.size!r} is not allowed: choose a power of two from "
                f"{VALID_SIZES[0]} to {VALID_SIZES[-1]} ({', '.join(map(str, VALID_SIZES))})"
            )
        if self.volumes and self.size > MAX_VOLUME_SIZE:
            raise ValueError(
                f"size={self.size} is too large with volumes (a {self.size}³ volume needs several GB while "
                f"rendering): use size <= {MAX_VOLUME_SIZE} with volumes"
            )
        _check_int("n_sites", self.n_sites)
        if not 1 <= self.n_sites <= MAX_SITES:
            raise ValueError(f"n_sites={self.n_sites!r} is not allowed: need 1 to {MAX_SITES} sites")
        for name in ("n_controls", "n_travellers", "n_patients", "seed"):
            value = getattr(self, name)
            _check_int(name, value)
            if value < 0:
                raise ValueError(f"{name}={value!r} is negative")
        if self.n_images == 0:
            raise ValueError("the cohort is empty: n_controls, n_travellers and n_patients are all 0")
        lo, hi = self.age_range
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo < hi <= 120):
            raise ValueError(f"age_range={self.age_range!r} is not an interval within [0, 120]")
        if self.n_patients and hi <= PATIENT_MIN_AGE:
            raise ValueError(f"age_range={self.age_range!r} leaves no age for the patients, who are at least "
                             f"{PATIENT_MIN_AGE:g}: raise its top above {PATIENT_MIN_AGE:g} or set n_patients=0")
        if not 10.0 <= self.fov_mm <= 400.0:
            raise ValueError(f"fov_mm={self.fov_mm!r} is outside [10, 400] mm")
        if not -60.0 <= self.slice_z_mm <= 80.0:
            raise ValueError(f"slice_z_mm={self.slice_z_mm!r} is outside the brain (MNI z in [-60, 80])")
        survival = self.survival
        if survival.weibull_shape <= 0 or survival.weibull_scale_days <= 0:
            raise ValueError("survival: weibull_shape and weibull_scale_days must be positive")
        if not 0 < survival.followup_min_days <= survival.followup_max_days:
            raise ValueError(
                f"survival: follow-up [{survival.followup_min_days}, {survival.followup_max_days}] days is not "
                "a positive interval"
            )


def _check_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not an integer")
