"""Sites: who each site scans (age and sex mix, share of controls) and how it images them.

The reference site ``site0`` (IXI-like) images with the identity intensity curve, little noise, a 1 mm
point-spread function, 1 mm slices, a weak bias field and no pose offset, and scans a broad age range.
Every other site draws each acquisition and demographic parameter from its range in a Latin-hypercube
design: the ``n − 1`` values are evenly spaced quantiles of the range, shuffled independently per
parameter by the seeded generator, so no two sites are alike and every range is covered. Age and sex
mix differ between sites, so site and biology are confounded as in real multi-site data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

#: Ranges (low, high) of the non-reference sites' parameters.
SITE_RANGES: dict[str, tuple[float, float]] = {
    "control_share": (0.5, 1.2),  # relative share of the single-visit controls (reference: 1.4)
    "age_mean": (30.0, 72.0),  # years
    "age_sd": (8.0, 14.0),
    "female_fraction": (0.3, 0.7),
    "csf_ratio": (0.6, 1.6),  # CSF level of the intensity curve, × template CSF
    "gm_ratio": (0.9, 1.1),  # GM level, × template GM
    "wm_gm_contrast": (0.6, 1.5),  # (WM − GM) level difference, × template difference
    "bias_strength": (0.1, 0.4),  # amplitude of the log bias field
    "noise_sigma": (0.015, 0.05),  # Rician noise SD, template intensity units (WM ≈ 0.87)
    "fwhm_mm": (1.2, 2.6),  # in-plane Gaussian point-spread function
    "slice_thickness_mm": (1.2, 3.5),  # through-plane box profile
    "pitch_deg": (-1.0, 1.0),  # mean pose offset (rotation about x)
    "roll_deg": (-1.0, 1.0),  # about y
    "yaw_deg": (-2.0, 2.0),  # about z
    "shift_x_mm": (-1.5, 1.5),
    "shift_y_mm": (-1.5, 1.5),
    "shift_z_mm": (-1.0, 1.0),
}

#: The reference site's parameters.
REFERENCE_SITE: dict[str, float] = {
    "control_share": 1.4,
    "age_mean": 50.0,
    "age_sd": 20.0,
    "female_fraction": 0.55,
    "csf_ratio": 1.0,
    "gm_ratio": 1.0,
    "wm_gm_contrast": 1.0,
    "bias_strength": 0.03,
    "noise_sigma": 0.012,
    "fwhm_mm": 1.0,
    "slice_thickness_mm": 1.0,
    "pitch_deg": 0.0,
    "roll_deg": 0.0,
    "yaw_deg": 0.0,
    "shift_x_mm": 0.0,
    "shift_y_mm": 0.0,
    "shift_z_mm": 0.0,
}

#: Per-image pose jitter around the site's mean pose (SD, degrees and mm).
POSE_JITTER_DEG = 0.5
POSE_JITTER_MM = 0.5
#: SD of the per-image perturbation of the bias-field polynomial, relative to the site's pattern.
BIAS_JITTER = 0.3
#: Number of terms of the bias-field polynomial (x, y, z, x², y², z², xy, xz, yz).
BIAS_TERMS = 9


@dataclass(frozen=True)
class SiteProfile:
    """One site: demographics it recruits and the acquisition it images with."""

    name: str
    is_reference: bool
    control_share: float
    age_mean: float
    age_sd: float
    female_fraction: float
    csf_ratio: float
    gm_ratio: float
    wm_gm_contrast: float
    bias_strength: float
    noise_sigma: float
    fwhm_mm: float
    slice_thickness_mm: float
    pitch_deg: float
    roll_deg: float
    yaw_deg: float
    shift_x_mm: float
    shift_y_mm: float
    shift_z_mm: float
    bias_pattern: tuple[float, ...]

    @property
    def pose_deg(self) -> np.ndarray:
        return np.array([self.pitch_deg, self.roll_deg, self.yaw_deg])

    @property
    def shift_mm(self) -> np.ndarray:
        return np.array([self.shift_x_mm, self.shift_y_mm, self.shift_z_mm])

    def transfer_curve(self, tissue_means: dict[str, float]) -> PchipInterpolator:
        """Monotone intensity transfer curve through (0, 0), the three tissue levels and (1, ·).

        Template CSF, GM and WM intensities map to ``csf_ratio · μ_csf``, ``gm_ratio · μ_gm`` and
        ``gm_ratio · μ_gm + wm_gm_contrast · (μ_wm − μ_gm)``; the curve is a shape-preserving cubic
        (PCHIP), so it is monotone and changes both contrast and the shape of the histogram.
        """
        mc, mg, mw = tissue_means["csf"], tissue_means["gm"], tissue_means["wm"]
        yc, yg = self.csf_ratio * mc, self.gm_ratio * mg
        yw = yg + self.wm_gm_contrast * (mw - mg)
        x = np.array([0.0, mc, mg, mw, 1.0])
        y = np.array([0.0, yc, yg, yw, yw + (1.0 - mw)])
        return PchipInterpolator(x, y, extrapolate=True)


def make_sites(n_sites: int, rng: np.random.Generator) -> list[SiteProfile]:
    """The reference site and ``n_sites − 1`` others drawn by a Latin-hypercube design."""
    sites = [_profile("site0", True, REFERENCE_SITE, rng)]
    others = n_sites - 1
    if others == 0:
        return sites
    quantiles = (np.arange(others) + 0.5) / others
    columns = {name: lo + (hi - lo) * rng.permutation(quantiles) for name, (lo, hi) in SITE_RANGES.items()}
    for k in range(others):
        values = {name: float(column[k]) for name, column in columns.items()}
        sites.append(_profile(f"site{k + 1}", False, values, rng))
    return sites


def _profile(name: str, is_reference: bool, values: dict[str, float], rng) -> SiteProfile:
    pattern = rng.normal(size=BIAS_TERMS)
    pattern /= np.linalg.norm(pattern)
    return SiteProfile(name=name, is_reference=is_reference, bias_pattern=tuple(map(float, pattern)), **values)


def sites_table(sites: list[SiteProfile]) -> pd.DataFrame:
    """The sites' ground truth as a table (one row per site), bias pattern as one string column."""
    rows = []
    for site in sites:
        row = {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(site).items()}
        row["bias_pattern"] = " ".join(f"{v:.6f}" for v in site.bias_pattern)
        rows.append(row)
    return pd.DataFrame(rows)
