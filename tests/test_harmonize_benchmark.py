import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from neurodiff.cli import app
from neurodiff.data import image_manifest
from neurodiff.evaluation.harmonization import METRIC_NAMES
from neurodiff.evaluation.harmonization_benchmark import (
    ALL_METHODS,
    HarmonizeBenchmarkConfig,
    default_target_site,
    split_cohort,
)
from neurodiff.evaluation.label_injection import METRIC_NAMES as INJECTION_METRICS

runner = CliRunner()


def test_split_keeps_travellers_for_testing_and_patients_out(tiny_image_cohort):
    _, frame, _ = tiny_image_cohort
    frame = frame.copy()
    frame.loc[0, "group"] = "patient"
    train, test = split_cohort(frame, 0.3, seed=0)
    travellers = frame["true_traveller_id"].fillna("").astype(str).ne("").to_numpy()
    assert set(test) >= set(travellers.nonzero()[0]) and not set(train) & set(test)
    assert 0 not in train and 0 not in test
    assert not set(frame["subject_id"].iloc[train]) & set(frame["subject_id"].iloc[test])
    again, _ = split_cohort(frame, 0.3, seed=0)
    assert list(again) == list(train)


def test_benchmark_writes_every_method_and_metric(tiny_image_cohort, tmp_path):
    manifest, _, _ = tiny_image_cohort
    out = tmp_path / "bench"
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--quick", "--seeds", "1",
                                 "--steps", "2", "--baseline-steps", "2", "--no-timing", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert set(doc["methods"]) == set(ALL_METHODS)
    for method in ALL_METHODS:
        assert set(METRIC_NAMES) <= set(doc["methods"][method]), method
    assert "latent_site_accuracy" in doc["methods"]["ddae"]
    # the label-swap control, for every method: raw ignores the labels it is given, exactly
    for method in ALL_METHODS:
        assert set(INJECTION_METRICS) <= set(doc["methods"][method]), method
    assert doc["methods"]["raw"]["age_injection"]["mean"] == 0.0
    assert doc["methods"]["raw"]["age_injection_years"]["mean"] == 0.0
    assert "Label-swap control" in (out / "report.html").read_text()
    # raw images are their own travellers' reference only at the target site: a finite, imperfect score
    assert 0 < doc["methods"]["raw"]["ssim"]["mean"] < 1
    assert (out / "report.html").read_text().count("<table>") >= 4
    assert (out / "examples.png").exists() and (out / "umap_ddae.png").exists()


def test_benchmark_refuses_an_unknown_method_and_a_missing_target(tiny_image_cohort, tmp_path):
    manifest, _, _ = tiny_image_cohort
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--methods", "ddae,magic",
                                 "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and "magic" in result.output
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--target-site", "site4",
                                 "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "site4" in result.output and "sites: site0, site1" in result.output
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.fixture
def image_loads(monkeypatch):
    """Counts the CLI's calls of load_images (it imports the function when it runs)."""
    calls, load = [], image_manifest.load_images
    monkeypatch.setattr(image_manifest, "load_images", lambda *a, **k: calls.append(1) or load(*a, **k))
    return calls


def _copy(frame, path, **columns):
    """The manifest with absolute image paths (so that it can live elsewhere) and some columns replaced."""
    frame.drop(columns=["resolved_path"]).assign(path=frame["resolved_path"], **columns).to_csv(path, index=False)
    return path


def test_benchmark_refuses_sex_codes_the_evaluation_cannot_use_before_loading_images(tiny_image_cohort, tmp_path,
                                                                                     image_loads):
    _, frame, _ = tiny_image_cohort
    manifest = _copy(frame, tmp_path / "m.csv", sex=frame["sex"].map({"F": "female", "M": "male"}))
    out = tmp_path / "bench"
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--methods", "raw",
                                 "--seeds", "1", "--no-timing", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "'sex'" in result.output and "'female', 'male'" in result.output and frame["subject_id"][0] in result.output
    assert not image_loads and not out.exists()
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(_copy(frame, tmp_path / "t.csv")),
                                 "--target-site", "nowhere", "--out", str(out)])
    assert result.exit_code == 2 and "nowhere" in result.output and not image_loads


def test_config_check_names_column_and_values_and_ignores_patients(tiny_image_cohort):
    _, frame, _ = tiny_image_cohort
    config = HarmonizeBenchmarkConfig()
    with pytest.raises(ValueError, match=r"'age' must hold a number.*'old' in 1 row"):
        config.check(frame.assign(age=["old"] + list(frame["age"][1:])))
    with pytest.raises(ValueError, match=r"'sex' must hold 'F' or 'M'.*found 0, 1 in 20 row"):
        config.check(frame.assign(sex=[1, 0] * (len(frame) // 2)))
    with pytest.raises(ValueError, match=r"'site' must hold a site name"):
        config.check(frame.assign(site=[None] + list(frame["site"][1:])))
    patients = frame.assign(group=["patient"] + ["control"] * (len(frame) - 1))
    config.check(patients.assign(sex=["unknown"] + list(frame["sex"][1:])))  # the benchmark leaves patients out


def test_default_target_is_the_site_with_most_images_ties_sorted():
    frame = pd.DataFrame({"site": ["b", "a", "b", "c", "a", "c"]})
    assert default_target_site(frame) == "a"
    assert default_target_site(frame.iloc[:4]) == "b"
    assert HarmonizeBenchmarkConfig(target_site="c").with_target(frame).target_site == "c"
    assert HarmonizeBenchmarkConfig().with_target(frame).target_site == "a"


def test_default_target_is_site0_in_the_embedded_cohorts():
    from neurodiff.data.synthetic_images import ImageCohortConfig
    from neurodiff.data.synthetic_images.cohort import plan
    from neurodiff.demo.cohorts import IMAGE_COHORT

    smoke = dict(IMAGE_COHORT, n_controls=50, n_travellers=2, n_patients=30)  # the demo's, as in test_demo
    for cohort in (ImageCohortConfig(), ImageCohortConfig.quick(size=32), ImageCohortConfig.quick(**IMAGE_COHORT),
                   ImageCohortConfig.quick(**smoke)):
        assert default_target_site(plan(cohort)[1]) == "site0"


def test_benchmark_without_target_site_uses_the_largest_site(tiny_image_cohort, tmp_path):
    _, frame, _ = tiny_image_cohort
    # no site0 here; "zeta" (site0's 12 images) outnumbers "alpha" (site1's 8) though it sorts last
    manifest = _copy(frame, tmp_path / "m.csv", site=frame["site"].map({"site0": "zeta", "site1": "alpha"}))
    out = tmp_path / "bench"
    result = runner.invoke(app, ["harmonize", "benchmark", "--manifest", str(manifest), "--methods", "raw,combat",
                                 "--seeds", "1", "--no-timing", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Target site: zeta (the site with the most images, 12 of 20" in result.output
    assert json.loads((out / "results.json").read_text())["config"]["target_site"] == "zeta"


def _small_site_frame(small: int = 3) -> pd.DataFrame:
    """Controls: 12 at site0, 12 at site1, `small` at site2; two travellers imaged at every site."""
    rows = [{"subject_id": f"c{site}-{i}", "site": f"site{site}", "true_traveller_id": ""}
            for site, n in ((0, 12), (1, 12), (2, small)) for i in range(n)]
    rows += [{"subject_id": f"t{t}", "site": f"site{site}", "true_traveller_id": f"trv{t}"}
             for t in range(2) for site in range(3)]
    frame = pd.DataFrame(rows)
    return frame.assign(age=50.0 + frame.index % 30, sex=["F", "M"] * (len(frame) // 2) + ["F"] * (len(frame) % 2))


def test_config_check_refuses_a_seed_whose_split_leaves_a_site_without_training_images():
    """A site whose every control subject the seeded split holds out would crash that seed after the
    first methods trained (DDAE refuses a site not seen in training): refused up front, split unchanged."""
    frame = _small_site_frame()
    sites = frame["site"].to_numpy()
    bad = next(s for s in range(200) if "site2" not in set(sites[split_cohort(frame, 0.3, s)[0]]))
    good = next(s for s in range(200) if "site2" in set(sites[split_cohort(frame, 0.3, s)[0]]))
    HarmonizeBenchmarkConfig(seeds=(good,)).check(frame)
    config = HarmonizeBenchmarkConfig(seeds=(good, bad), methods=("raw", "ddae"))
    with pytest.raises(ValueError, match=rf"seed {bad}: site\(s\) site2 have test images but no training "
                                         r"images.*site2: 3 control subject\(s\).*Add control subjects at that "
                                         r"site, or leave it out of the manifest"):
        config.check(frame)
    with pytest.raises(ValueError, match=f"seed {bad}"):  # run_benchmark checks before any method is fitted
        from neurodiff.evaluation.harmonization_benchmark import run_benchmark

        run_benchmark(frame, None, config, log=lambda _: None)
    # a site of travellers only can never be trained on
    only_travellers = _small_site_frame(small=0)
    with pytest.raises(ValueError, match=r"site2: 0 control subject"):
        HarmonizeBenchmarkConfig(seeds=(0,)).check(only_travellers)


def test_every_method_is_given_the_swapped_labels_for_the_label_swap_control(tiny_image_cohort, monkeypatch):
    """run_seed harmonises the test images twice: with their own age and sex, then with the permuted ones of
    swapped_covariates; the control's values come from the second output."""
    from neurodiff.baselines.combat import ComBat
    from neurodiff.evaluation.harmonization_benchmark import run_seed
    from neurodiff.evaluation.label_injection import swapped_covariates

    _, frame, images = tiny_image_cohort
    given = []
    transform = ComBat.transform

    def spy(self, x, covariates, target_site):
        given.append(covariates[["age", "sex"]].copy())
        return transform(self, x, covariates, target_site)

    monkeypatch.setattr(ComBat, "transform", spy)
    config = HarmonizeBenchmarkConfig(seeds=(0,), methods=("combat", "raw"), target_site="site0", progress=False)
    result = run_seed(frame, images, config, 0, log=lambda _: None)
    test_frame = result["test_frame"]
    swapped = swapped_covariates(test_frame, 0)
    assert len(given) == 2
    pd.testing.assert_frame_equal(given[0], test_frame[["age", "sex"]])
    pd.testing.assert_frame_equal(given[1], swapped[["age", "sex"]])
    assert not given[1]["age"].equals(given[0]["age"])
    assert set(INJECTION_METRICS) <= set(result["metrics"]["combat"])
