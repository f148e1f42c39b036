"""The quality-control picture of one preprocessed scan (a PNG per subject).

Top row: the bias-corrected head in native space, sagittal, coronal and axial through the brain's
centre, with the brain-mask outline, and the output slice. Bottom row: the axial view before and after
bias correction on one intensity scale, the estimated bias field, and the registered brain in template
space with the MNI152 brain-mask outline (registration check).
"""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np

from neurodiff.data.preprocess.bias import BiasCorrection


def qc_png(
    t1: nib.Nifti1Image,
    bias: BiasCorrection | None,
    native_mask: nib.Nifti1Image,
    brain: nib.Nifti1Image,
    template_mask: nib.Nifti1Image,
    slice_image: nib.Nifti1Image,
    *,
    title: str = "",
) -> bytes:
    """Render the QC figure to PNG bytes (RAS-oriented inputs as produced by the pipeline)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    raw = np.asarray(t1.dataobj, dtype=np.float32)
    corrected = raw if bias is None else np.asarray(bias.corrected.dataobj, dtype=np.float32)
    mask = np.asarray(native_mask.dataobj) > 0
    centre = [int(round(np.mean(ix))) for ix in np.nonzero(mask)]
    vmax = float(np.percentile(corrected[mask], 99.5))

    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4), dpi=80)
    for ax, axis, name in zip(axes[0, :3], (0, 1, 2), ("sagittal", "coronal", "axial")):
        _show(ax, _cut(corrected, axis, centre[axis]), vmax, f"{name}, brain mask")
        ax.contour(_cut(mask, axis, centre[axis]).T, [0.5], colors="#ff3b30", linewidths=0.8)
    _show(axes[0, 3], np.asarray(slice_image.dataobj)[..., 0], 1.0, "output slice")

    raw_vmax = float(np.percentile(raw[mask], 99.5))
    _show(axes[1, 0], _cut(raw, 2, centre[2]), raw_vmax, "before bias correction")
    _show(axes[1, 1], _cut(corrected, 2, centre[2]), vmax, "after bias correction" if bias else "(N4 off)")
    if bias is not None:
        field = _cut(np.asarray(bias.field.dataobj, dtype=np.float32), 2, centre[2])
        field = np.where(_cut(mask, 2, centre[2]), field, np.nan)
        shown = axes[1, 2].imshow(field.T, origin="lower", cmap="coolwarm")
        fig.colorbar(shown, ax=axes[1, 2], fraction=0.046)
        axes[1, 2].set_title("bias field (in the brain)")
    axes[1, 2].axis("off")
    volume = np.asarray(brain.dataobj, dtype=np.float32)
    ref = np.asarray(template_mask.dataobj) > 0.5
    k = volume.shape[2] // 2
    _show(axes[1, 3], volume[:, :, k], 1.0, "template space, MNI152 mask")
    axes[1, 3].contour(ref[:, :, k].T, [0.5], colors="#ffcc00", linewidths=0.8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _cut(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    return np.take(volume, int(np.clip(index, 0, volume.shape[axis] - 1)), axis=axis)


def _show(ax, plane: np.ndarray, vmax: float, title: str) -> None:
    ax.imshow(plane.T, origin="lower", cmap="gray", vmin=0.0, vmax=max(vmax, 1e-6))
    ax.set_title(title)
    ax.axis("off")
