"""The synthetic multi-site image cohort: planted effects are really there, output honours the contract."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.data.synthetic_images import (
    ImageCohortConfig,
    SurvivalModel,
    generate_image_cohort,
    iter_images,
    plan,
    sample_survival_times,
)
from neurodiff.data.synthetic_images.cohort import CONTRACT_COLUMNS, TRUTH_COLUMNS
from neurodiff.data.synthetic_images.render import Renderer, draw_acquisition, draw_anatomy
from neurodiff.data.synthetic_images.sites import make_sites

TINY = dict(n_controls=3, n_travellers=1, n_patients=2, n_sites=2, size=32)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """7 sites at 64×64: 84 controls, 3 travellers × 7 sites, 12 patients (117 images)."""
    out = tmp_path_factory.mktemp("synth") / "cohort"
    config = ImageCohortConfig(n_controls=84, n_travellers=3, n_patients=12, size=64, seed=3)
    manifest = generate_image_cohort(config, out, progress=False)
    images = {p: nib.load(out / p).get_fdata() for p in manifest["path"]}
    return out, manifest, images


def _read_manifest(folder) -> pd.DataFrame:
    return pd.read_csv(folder / "manifest.csv", keep_default_na=False, na_values=[""])


def _brain_corr(a: np.ndarray, b: np.ndarray) -> float:
    inside = (a > 0) & (b > 0)
    return float(np.corrcoef(a[inside], b[inside])[0, 1])


def _central_csf_pixels(image: np.ndarray, affine: np.ndarray) -> int:
    """Dark pixels inside the brain in the central (ventricle) region: |x| < 25 mm, −50 < y < 30 mm."""
    i, j = np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij")
    x = affine[0, 0] * i + affine[0, 3]
    y = affine[1, 1] * j + affine[1, 3]
    brain = image > 0
    central = brain & (np.abs(x) < 25) & (y > -50) & (y < 30)
    white_matter_level = np.percentile(image[brain], 75)
    return int(np.sum(central & (image < 0.5 * white_matter_level)))


# ---------------------------------------------------------------- output contract


def test_manifest_follows_the_image_cohort_contract(cohort):
    out, manifest, images = cohort
    on_disk = _read_manifest(out)
    assert list(on_disk.columns[: len(CONTRACT_COLUMNS)]) == list(CONTRACT_COLUMNS)
    assert set(TRUTH_COLUMNS) <= set(on_disk.columns)
    assert len(on_disk) == 84 + 3 * 7 + 12
    for path in on_disk["path"]:
        image = nib.load(out / path)
        assert image.shape == (64, 64)
        data = image.get_fdata()
        assert 0.0 <= data.min() and data.max() <= 1.0 and data.max() > 0.9
    assert set(on_disk["sex"]) == {"F", "M"}
    assert set(on_disk["group"]) == {"control", "patient"}
    controls, patients = on_disk[on_disk["group"] == "control"], on_disk[on_disk["group"] == "patient"]
    assert controls["time"].isna().all() and controls["event"].isna().all()
    assert (patients["time"] > 0).all() and set(patients["event"]) <= {0, 1}
    assert (controls["true_severity"] == 0).all() and (patients["true_severity"] > 0).all()
    assert (out / "sites.csv").exists() and len(pd.read_csv(out / "sites.csv")) == 7
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["counts"]["images"] == len(on_disk) and meta["reference_site"] == "site0"
    counts = meta["counts"]
    assert counts["control_images"] + counts["patient_images"] == len(on_disk)


def test_slices_carry_an_mni_affine_at_the_medial_axial_slice(cohort):
    out, manifest, _ = cohort
    affine = nib.load(out / manifest["path"][0]).affine
    assert affine[2, 3] == pytest.approx(22.0)  # MNI z of the medial axial slice
    assert np.allclose(np.diag(affine)[:2], 200.0 / 64)
    assert affine[0, 3] + 32 * affine[0, 0] == pytest.approx(0.0)  # pixel 32 is the midline


def test_travellers_are_imaged_at_every_site_with_fixed_biology(cohort):
    _, manifest, _ = cohort
    travellers = manifest[manifest["true_traveller_id"] != ""]
    assert travellers.groupby("true_traveller_id")["site"].nunique().eq(7).all()
    per_subject = travellers.groupby("subject_id")[["age", "sex", "true_head_scale"]].nunique()
    assert (per_subject == 1).all().all()
    reference = travellers[travellers["site"] == "site0"].set_index("subject_id")["path"]
    assert (travellers["true_reference_path"] == travellers["subject_id"].map(reference)).all()


# ---------------------------------------------------------------- planted effects


def test_a_classifier_tells_sites_apart_on_raw_images(cohort):
    _, manifest, images = cohort
    controls = manifest[manifest["group"] == "control"]
    features = np.stack(
        [np.histogram(images[p][images[p] > 0], bins=32, range=(0, 1), density=True)[0] for p in controls["path"]]
    )
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    accuracy = cross_val_score(model, features, controls["site"], cv=folds).mean()
    assert accuracy > 0.6, f"site accuracy {accuracy:.2f} (chance 1/7)"


def test_sites_differ_in_age_mix():
    _, rows = plan(ImageCohortConfig(n_controls=1400, n_travellers=0, n_patients=0, size=64))
    means = rows.groupby("site")["age"].mean()
    assert means.max() - means.min() > 20
    assert stats.f_oneway(*[g["age"] for _, g in rows.groupby("site")]).pvalue < 1e-6


def test_travellers_share_anatomy_across_sites_but_differ_in_pixels(cohort):
    _, manifest, images = cohort
    travellers = manifest[manifest["true_traveller_id"] != ""]
    same, diffs = [], []
    for _, rows in travellers.groupby("subject_id"):
        paths = list(rows["path"])
        for k, a in enumerate(paths):
            for b in paths[k + 1 :]:
                same.append(_brain_corr(images[a], images[b]))
                diffs.append(np.abs(images[a] - images[b]).mean())
    singles = manifest[(manifest["group"] == "control") & (manifest["true_traveller_id"] == "")]
    between = []
    for _, rows in singles.groupby("site"):
        paths = list(rows["path"])[:6]
        between += [_brain_corr(images[a], images[b]) for k, a in enumerate(paths) for b in paths[k + 1 :]]
    assert np.mean(same) > np.mean(between) + 0.15, (np.mean(same), np.mean(between))
    assert min(diffs) > 0.01


def test_ventricles_grow_with_age_across_a_cohort():
    config = ImageCohortConfig(n_controls=60, n_travellers=0, n_patients=0, n_sites=1, size=64, seed=1)
    renderer = Renderer(config)
    ages, counts = [], []
    for item in iter_images(config, renderer=renderer):
        ages.append(item.row["age"])
        counts.append(_central_csf_pixels(item.slice, renderer.slice_affine()))
    rho, p = stats.spearmanr(ages, counts)
    # Anatomy (a 3 mm random warp moves the slice through the ventricles) varies as much as age does,
    # as in real cohorts (r ≈ 0.5 between ventricle size and age).
    assert rho > 0.35 and p < 0.01, f"Spearman(age, ventricle proxy) = {rho:.2f} (p = {p:.3g})"


def test_ageing_one_subject_enlarges_ventricles_and_darkens_cortex():
    config = ImageCohortConfig(size=64)
    renderer = Renderer(config)
    site = make_sites(1, np.random.default_rng(0))[0]
    anatomy = draw_anatomy(config, 20.0, 1.0, 0.0, np.random.default_rng(0))
    acquisition = draw_acquisition(site, np.random.default_rng(1))
    young, old = (
        renderer.render_slice(anatomy.with_age(age), acquisition, np.random.default_rng(2)) for age in (20.0, 90.0)
    )
    affine = renderer.slice_affine()
    assert _central_csf_pixels(old, affine) > 1.3 * _central_csf_pixels(young, affine)
    assert old[old > 0].mean() < young[young > 0].mean()


def test_disease_changes_motor_cortex_and_corticospinal_tract_only():
    config = ImageCohortConfig(size=64)
    renderer = Renderer(config)
    site = make_sites(1, np.random.default_rng(0))[0]
    acquisition = draw_acquisition(site, np.random.default_rng(1))
    healthy, sick = (
        renderer.render_slice(
            draw_anatomy(config, 60.0, 1.0, s, np.random.default_rng(0)), acquisition, np.random.default_rng(2)
        )
        for s in (0.0, 1.0)
    )
    diff = sick - healthy
    i, j = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    affine = renderer.slice_affine()
    x, y = affine[0, 0] * i + affine[0, 3], affine[1, 1] * j + affine[1, 3]
    region = (np.abs(x) > 15) & (y > -40) & (y < 20)  # lateral motor strip and corona radiata
    brain = healthy > 0
    assert diff[brain].mean() < 0  # tissue loss and darker tract
    assert np.abs(diff[region & brain]).mean() > 5 * np.abs(diff[~region & brain]).mean()


def test_cox_fit_on_true_severity_recovers_the_planted_hazard_ratio():
    model = SurvivalModel()
    rng = np.random.default_rng(0)
    severity = rng.beta(2.0, 2.0, size=2000)
    time, event = sample_survival_times(severity, rng, model)
    assert time.min() > 0 and time.max() <= model.followup_max_days
    assert 0.1 < 1 - event.mean() < 0.7  # some, not all, censored
    frame = pd.DataFrame({"time": time, "event": event, "severity": severity})
    fit = CoxPHFitter().fit(frame, duration_col="time", event_col="event")
    lower, upper = fit.confidence_intervals_.loc["severity"]
    assert lower < model.log_hr_per_severity < upper, (lower, upper)
    assert lower > 0  # clearly harmful


def test_survival_sampler_is_deterministic_and_monotone_in_severity():
    a = sample_survival_times(np.full(500, 0.0), np.random.default_rng(5))
    b = sample_survival_times(np.full(500, 0.0), np.random.default_rng(5))
    high = sample_survival_times(np.full(500, 1.0), np.random.default_rng(5))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.median(high[0]) < np.median(a[0]) and high[1].mean() > a[1].mean()


# ---------------------------------------------------------------- determinism, volumes, CLI, errors


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    config = ImageCohortConfig(seed=11, **TINY)
    first = generate_image_cohort(config, tmp_path / "a", progress=False)
    generate_image_cohort(config, tmp_path / "b", progress=False)
    generate_image_cohort(config.replace(seed=12), tmp_path / "c", progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == len(first) + 3
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    a, c = (nib.load(tmp_path / d / first["path"][0]).get_fdata() for d in ("a", "c"))
    assert not np.array_equal(a, c)


def test_volumes_match_their_slice(tmp_path):
    config = ImageCohortConfig(n_controls=2, n_travellers=0, n_patients=0, n_sites=1, size=32, volumes=True)
    manifest = generate_image_cohort(config, tmp_path / "v", progress=False)
    row = manifest.iloc[0]
    volume = nib.load(tmp_path / "v" / row["volume_path"])
    image = nib.load(tmp_path / "v" / row["path"])
    assert volume.shape == (32, 32, 32)
    assert np.allclose(volume.affine @ [0, 0, 16, 1], image.affine @ [0, 0, 0, 1])
    assert _brain_corr(volume.get_fdata()[:, :, 16], image.get_fdata()) > 0.8
    slices_only = generate_image_cohort(config.replace(volumes=False), tmp_path / "s", progress=False)
    same = nib.load(tmp_path / "s" / slices_only["path"][0]).get_fdata()
    # the slab used when rendering slices only changes nothing but float rounding
    assert np.abs(same - image.get_fdata()).max() < 1e-3


def test_template_slabs_are_exact_copies_of_the_whole_volume():
    from neurodiff.data.synthetic_images.template import load_template

    whole, slab = load_template(None), load_template((10.0, 20.5))
    lo = int(np.floor(10.0 - whole.origin_mm[2]))
    assert slab.shape == (*whole.shape[:2], 12) and slab.origin_mm[2] == whole.origin_mm[2] + lo
    assert np.array_equal(slab.maps.numpy(), whole.maps[..., lo:lo + 12].numpy())
    # a copy: changing a slab cannot change the cached whole volume or another slab
    assert slab.maps.untyped_storage().data_ptr() != whole.maps.untyped_storage().data_ptr()
    assert slab.tissue_means == whole.tissue_means and slab.tissue_means is not whole.tissue_means


def test_cli_writes_a_small_cohort(tmp_path):
    out = tmp_path / "cli"
    args = ["synth", "images", "--size", "32", "--sites", "2", "--controls", "3", "--travellers", "1"]
    result = CliRunner().invoke(app, [*args, "--patients", "2", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = _read_manifest(out)
    assert len(manifest) == 3 + 2 + 2
    assert all((out / p).exists() for p in manifest["path"])


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"size": 3}, "size=3"),
        ({"size": -64}, "size=-64"),
        ({"size": 100}, "size=100"),
        ({"n_sites": 0}, "n_sites=0"),
        ({"n_patients": -1}, "n_patients=-1"),
        ({"n_controls": 2.5}, "n_controls=2.5"),
        ({"age_range": (90.0, 20.0)}, "age_range"),
        ({"age_range": (18.0, 30.0)}, "leaves no age for the patients"),
    ],
)
def test_bad_config_raises_naming_the_value_and_writes_nothing(tmp_path, change, named):
    out = tmp_path / "bad"
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        generate_image_cohort(ImageCohortConfig(**{**TINY, **change}), out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--size", "3"], "--size=3"),
        (["--size", "-1"], "--size=-1"),
        (["--sites", "0"], "--sites=0"),
        (["--bogus", "1"], "--bogus"),
        (["--size", "abc"], "--size"),
    ],
)
def test_cli_bad_input_exits_2_names_the_value_and_writes_nothing(tmp_path, args, named):
    out = tmp_path / "bad"
    result = CliRunner().invoke(app, ["synth", "images", "--quick", "--out", str(out), *args])
    assert result.exit_code == 2
    assert named in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_refuses_a_non_empty_output_folder(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["synth", "images", "--size", "32", "--controls", "1", "--out", str(out)])
    assert result.exit_code == 2 and str(out) in result.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_an_output_that_is_a_file_is_refused_without_suggesting_overwrite(tmp_path):
    out = tmp_path / "a-file"
    out.write_text("mine")
    result = CliRunner().invoke(app, ["synth", "images", "--size", "32", "--controls", "1", "--overwrite",
                                      "--out", str(out)])
    assert result.exit_code == 2 and "is a file, not a folder" in result.output
    assert "or pass --overwrite" not in result.output and out.read_text() == "mine"
