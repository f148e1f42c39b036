"""Preprocessing of real T1 scans (METHODS.md "Shared preprocessing"): NIfTI in, registered,
bias-corrected, skull-stripped volumes and slices out.

Each step is a function that can be used alone:

- :func:`load_t1` — read, check and reorient to RAS (nibabel);
- :func:`n4_bias_correct` — N4 bias-field correction (SimpleITK);
- :func:`register_to_template` — affine registration to nilearn's MNI152 template (SimpleITK);
- :func:`template_brain_mask` — skull stripping by the template brain mask carried through the
  registration and refined on the image (:func:`hdbet_brain_mask` is the optional HD-BET backend);
- :func:`normalise_intensity` — robust-percentile normalisation to [0, 1];
- :func:`to_template` / :func:`template_grid` — resampling to the template grid (130³ by default);
- :func:`axial_slices` — the medial axial slice(s) on the synthetic cohorts' 128×128 grid.

:func:`preprocess_scan` chains them for one file, :func:`preprocess_manifest` for a manifest, in
parallel, writing the fixed output layout that ``neurodiff harmonize`` and ``neurodiff normative`` read.
"""

from neurodiff.data.preprocess.batch import PreprocessSummary, preprocess_manifest
from neurodiff.data.preprocess.bias import BiasCorrection, n4_bias_correct
from neurodiff.data.preprocess.intensity import normalise_intensity
from neurodiff.data.preprocess.pipeline import OUTPUT_FILES, PreprocessConfig, PreprocessedScan, preprocess_scan, write_scan
from neurodiff.data.preprocess.registration import (
    AffineRegistration,
    Template,
    load_template,
    register_to_template,
    template_grid,
    to_native,
    to_template,
)
from neurodiff.data.preprocess.skull_strip import hdbet_brain_mask, refine_brain_mask, template_brain_mask
from neurodiff.data.preprocess.slices import axial_slices, slice_affine, slice_positions
from neurodiff.data.preprocess.volume import PreprocessError, load_t1, reorient_like

__all__ = [
    "OUTPUT_FILES", "AffineRegistration", "BiasCorrection", "PreprocessConfig", "PreprocessError",
    "PreprocessSummary", "PreprocessedScan", "Template", "axial_slices", "hdbet_brain_mask", "load_t1",
    "load_template", "n4_bias_correct", "normalise_intensity", "preprocess_manifest", "preprocess_scan",
    "refine_brain_mask", "register_to_template", "reorient_like", "slice_affine", "slice_positions",
    "template_brain_mask", "template_grid", "to_native", "to_template", "write_scan",
]
