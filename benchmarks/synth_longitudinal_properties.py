"""Statistical properties of the embedded longitudinal table, as docs/synthetic-longitudinal.md quotes them.

Usage:  python benchmarks/synth_longitudinal_properties.py [--out benchmarks/results/synth_longitudinal_properties]
        [--quick]   (the quick size only, fewer seeds: a smoke check of the script)

Seed 0 at the quick (3,000 / 600 / 128) and the paper size (41,706 / 4,997 / 769): test-retest and
left-right correlations, annual change, follow-up interval, realised prevalences, correlations with
labels at visit 1, four simple imputation baselines; label AUROCs from first-visit features (paper size);
the SNc case study over seeds 0-9 and its expected value under the model. Writes results.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import sklearn
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from neurodiff import __version__
from neurodiff.atomic import write_json
from neurodiff.data.synthetic_longitudinal import (
    LABEL_COLUMNS,
    LongitudinalConfig,
    feature_columns,
    feature_groups,
    generate_longitudinal,
    hemisphere_pairs,
)
from neurodiff.data.synthetic_longitudinal_expectation import expected_change

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)  # as neurodiff.baselines.RidgeImputation
AUROC_LABELS = ("parkinsonism", "stroke", "dementia", "multiple_sclerosis", "epilepsy", "sleep_disorder")
PREVALENCE_LABELS = ("stroke", "parkinsonism", "dementia", "multiple_sclerosis", "epilepsy", "migraine",
                     "sleep_disorder", "other_movement_disorder", "died")
STRUCTURES = {"hippocampus": "hippocampus", "lateral_ventricle": "lateral_ventricle",
              "wm_hypointensities": "wm_hypointensities", "snc": "snc"}
SNC_COLUMNS = ("vol_lh_snc", "vol_rh_snc")  # feature_groups(...)["snc"], the case-study group


def rnd(x: float) -> float | None:
    """4 decimals (the docs quote 2 or 3), None for a missing value."""
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def corr(a: np.ndarray, b: np.ndarray, axis: int = 0) -> np.ndarray:
    """Pearson r along `axis` over the cells finite in both (NaN where a side is constant)."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(ok, a, np.nan), np.where(ok, b, np.nan)
    a = a - np.nanmean(a, axis=axis, keepdims=True)
    b = b - np.nanmean(b, axis=axis, keepdims=True)
    den = np.sqrt(np.nansum(a * a, axis=axis) * np.nansum(b * b, axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, np.nansum(a * b, axis=axis) / den, np.nan)


def spread(r: np.ndarray) -> dict:
    r = r[np.isfinite(r)]
    return {"n": len(r), "median": rnd(np.median(r)), "p10": rnd(np.percentile(r, 10)),
            "p90": rnd(np.percentile(r, 90)), "min": rnd(r.min()), "max": rnd(r.max())}


def visits(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Visit-1 and visit-2 rows of the paired subjects, aligned by subject."""
    second = frame[frame["visit"] == 2].set_index("subject_id")
    first = frame[frame["visit"] == 1].set_index("subject_id").loc[second.index]
    return first, second


def describe(frame: pd.DataFrame) -> dict:
    """Correlations, change, interval, prevalences and label correlations of one table."""
    features = feature_columns(frame)
    groups = feature_groups(frame)
    measure = {m: [features.index(c) for c in groups[m]] for m in ("thick", "area", "vol")}
    first, second = visits(frame)
    x1, x2 = first[features].to_numpy(), second[features].to_numpy()
    retest = corr(x1, x2)
    baseline = frame[frame["visit"] == 1]
    pairs = hemisphere_pairs(frame)
    lr = corr(baseline[[lh for lh, _ in pairs]].to_numpy(), baseline[[rh for _, rh in pairs]].to_numpy())
    years = second["years_since_first"].to_numpy()
    annual = pd.Series(np.nanmean(100 * np.log(x2 / x1) / years[:, None], axis=0), index=features)
    structures = {name: rnd(annual[[f"vol_lh_{region}", f"vol_rh_{region}"]].mean()
                           if f"vol_lh_{region}" in annual else annual[f"vol_{region}"])
                  for name, region in STRUCTURES.items()}
    age, sex = baseline["age"].to_numpy(), baseline["sex"].to_numpy()
    age_r = pd.Series(corr(baseline[features].to_numpy(), age[:, None]), index=features)
    etiv = baseline["vol_etiv"].to_numpy()
    return {
        "sizes": {"subjects": len(baseline), "paired": len(second), "features": len(features),
                  "rows": len(frame)},
        "test_retest_r": {**spread(retest), "median_by_measure": {
            m: rnd(np.nanmedian(retest[cols])) for m, cols in measure.items()}},
        "left_right_r_visit1": {**spread(lr), "pairs": len(pairs)},
        "annual_change_pct_per_year": {
            "definition": "per feature: mean over paired subjects of 100*log(x2/x1)/years; structure: mean of lh and rh",
            **structures,
            "median_by_measure": {m: rnd(annual.iloc[cols].median()) for m, cols in measure.items()}},
        "followup_years": {"mean": rnd(years.mean()), "min": rnd(years.min()), "max": rnd(years.max())},
        "prevalence_pct": {label: rnd(100 * baseline[label].mean()) for label in PREVALENCE_LABELS},
        "label_correlations_visit1": {
            "definition": "Pearson r on the raw values at visit 1; measure-age: mean over that measure's features",
            "etiv_sex": rnd(corr(etiv, sex)), "etiv_men_over_women_pct": rnd(
                100 * (np.nanmean(etiv[sex == 1]) / np.nanmean(etiv[sex == 0]) - 1)),
            **{f"{m}_age_mean": rnd(age_r.iloc[cols].mean()) for m, cols in measure.items()},
            "lh_hippocampus_age": rnd(age_r["vol_lh_hippocampus"]),
            "lh_lateral_ventricle_age": rnd(age_r["vol_lh_lateral_ventricle"]),
            "wm_hypointensities_age": rnd(age_r["vol_wm_hypointensities"])},
    }


def baselines(frame: pd.DataFrame, seed: int = 0) -> dict:
    """LOCF, ridge, ridge on the change and the training mean, scored on a seeded 20 % of the paired subjects."""
    features = feature_columns(frame)
    first, second = visits(frame)
    x1, x2 = first[features].to_numpy(), second[features].to_numpy()
    y = np.column_stack([first[list(LABEL_COLUMNS)].to_numpy(float), second["years_since_first"].to_numpy()])
    order = np.random.default_rng(seed).permutation(len(x1))
    train, test = order[: int(0.8 * len(x1))], order[int(0.8 * len(x1)):]

    def scale(a: np.ndarray, ref: np.ndarray) -> np.ndarray:  # min-max to [-1, 1], fitted on `ref`
        lo, hi = np.nanmin(ref, axis=0), np.nanmax(ref, axis=0)
        return 2 * (a - lo) / np.where(hi > lo, hi - lo, 1.0) - 1

    def fill(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(a), np.nanmean(ref, axis=0), a)

    s1, s2, sy = scale(x1, x1[train]), scale(x2, x1[train]), scale(y, y[train])
    f1 = fill(s1, s1[train])
    f2_train = fill(s2[train], s2[train])
    inputs_train, inputs_test = np.hstack([f1[train], sy[train]]), np.hstack([f1[test], sy[test]])
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(inputs_train, f2_train)
    change = RidgeCV(alphas=RIDGE_ALPHAS).fit(inputs_train, f2_train - f1[train])
    predictions = {
        "locf": f1[test],
        "ridge": ridge.predict(inputs_test),
        "ridge_change": f1[test] + change.predict(inputs_test),
        "training_mean": np.broadcast_to(f2_train.mean(axis=0), s2[test].shape),
    }
    real = s2[test]  # missing cells of the real follow-up are left out of the scores
    out = {"definition": ("paired subjects, 80/20 split (numpy default_rng(0) permutation); x and y min-max "
                          "scaled to [-1, 1] on the training visit 1; NaN inputs filled with training means; "
                          "y = the 14 labels at visit 1 + years_since_first; RidgeCV alphas " + str(RIDGE_ALPHAS)
                          + "; per-feature r averaged over features, per-subject r averaged over subjects"),
           "train": len(train), "test": len(test),
           "ridge_alpha": float(ridge.alpha_), "ridge_change_alpha": float(change.alpha_)}
    for name, pred in predictions.items():
        out[name] = {"per_feature_r": rnd(np.nanmean(corr(real, pred, 0))) if name != "training_mean" else None,
                     "per_subject_r": rnd(np.nanmean(corr(real, pred, 1)))}
    return out


def aurocs(frame: pd.DataFrame) -> dict:
    """5-fold (stratified, shuffled, seed 0) logistic regression on standardised log first-visit features,
    and on age + sex alone; AUROC of the pooled out-of-fold probabilities."""
    baseline = frame[frame["visit"] == 1]
    inputs = {"features": np.log(baseline[feature_columns(frame)].to_numpy()),
              "age_sex": baseline[["age", "sex"]].to_numpy(float)}
    out = {}
    for label in AUROC_LABELS:
        y = baseline[label].to_numpy()
        out[label] = {"cases": int(y.sum())}
        for name, x in inputs.items():
            model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=2000))
            proba = cross_val_predict(model, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                                      method="predict_proba")[:, 1]
            out[label][name] = rnd(roc_auc_score(y, proba))
        print(f"  AUROC {label}: {out[label]}", flush=True)
    return out


def snc_change(frame: pd.DataFrame) -> dict:
    """Mean change (mm³) of the snc group (mean of vol_lh_snc, vol_rh_snc) with vs without parkinsonism."""
    first, second = visits(frame)
    snc = feature_groups(frame)["snc"]
    change = (second[snc] - first[snc]).mean(axis=1).to_numpy()
    case = first["parkinsonism"].to_numpy() == 1
    with_pd = np.nanmean(change[case]) if case.any() else np.nan
    return {"cases": int(case.sum()), "with": rnd(with_pd), "without": rnd(np.nanmean(change[~case]))}


def snc_expected(base: LongitudinalConfig, seeds: int, replicates: int, controls: int) -> dict:
    """Expected snc change with vs without parkinsonism over draws of the table (Monte Carlo):
    neurodiff.data.synthetic_longitudinal_expectation.expected_change, rounded, with the visit-1 group
    mean under its results.json name "snc_visit1_mm3"."""
    out = expected_change(base, SNC_COLUMNS, "parkinsonism",
                          seeds=seeds, replicates=replicates, controls=controls)
    for key in ("with", "with_no_extra_rate", "without"):
        group = out[key]
        out[key] = {"draws": group["draws"], "mean_change_mm3": rnd(group["mean_change_mm3"]),
                    "se": rnd(group["se"]), "age_visit1": rnd(group["age_visit1"]),
                    "snc_visit1_mm3": rnd(group["group_visit1"])}
    out["cases_per_table"] = rnd(out["cases_per_table"])
    return out


def case_study(base: LongitudinalConfig, seeds: int) -> dict:
    per_seed = {}
    for seed in range(seeds):
        frame = generate_longitudinal(dataclasses.replace(base, seed=seed, n_features=8))
        per_seed[seed] = snc_change(frame)
        print(f"  SNc seed {seed}: {per_seed[seed]}", flush=True)
    with_pd = np.array([v["with"] for v in per_seed.values()], float)
    with_pd = with_pd[np.isfinite(with_pd)]  # a seed without a paired case has no mean
    without = np.array([v["without"] for v in per_seed.values()])
    cases = np.array([v["cases"] for v in per_seed.values()])
    return {"per_seed": per_seed,
            "with": {"mean": rnd(with_pd.mean()), "sd": rnd(with_pd.std(ddof=1)) if len(with_pd) > 1 else None,
                     "min": rnd(with_pd.min()), "max": rnd(with_pd.max()), "seeds_with_cases": len(with_pd)},
            "without": {"mean": rnd(without.mean()), "sd": rnd(without.std(ddof=1)),
                        "min": rnd(without.min()), "max": rnd(without.max())},
            "cases": {"mean": rnd(cases.mean()), "min": int(cases.min()), "max": int(cases.max())}}


def git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/synth_longitudinal_properties"))
    parser.add_argument("--quick", action="store_true", help="the quick size only, fewer seeds (smoke check)")
    args = parser.parse_args()
    start = time.perf_counter()
    sizes = {"quick": LongitudinalConfig.quick()}
    if not args.quick:
        sizes["paper"] = LongitudinalConfig.paper()
    results = {
        "task": "synth_longitudinal_properties",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_modified_generator_files": git("status", "--porcelain", "--", "src/neurodiff/data").splitlines(),
        "data": "neurodiff synth longitudinal (embedded UK-Biobank-like table), seed 0",
        "sizes": {},
    }
    for name, config in sizes.items():
        print(f"{name}: generating", flush=True)
        frame = generate_longitudinal(config)
        entry = describe(frame)
        entry["baselines"] = baselines(frame)
        print(f"  {entry['baselines']}", flush=True)
        if name == "paper" or args.quick:
            entry["aurocs"] = aurocs(frame)
        results["sizes"][name] = entry
        del frame
    size = "quick" if args.quick else "paper"
    seeds, expected = (2, (5, 2, 200)) if args.quick else (10, (200, 10, 500))
    print(f"SNc case study ({size} size, seeds 0-{seeds - 1})", flush=True)
    results["snc_case_study"] = {
        "size": size,
        "definition": "mean over paired subjects of the change x2 - x1 of the mean of vol_lh_snc, vol_rh_snc (mm3)",
        "seeds": case_study(sizes[size], seeds),
        "expected": snc_expected(sizes[size], *expected),
    }
    print(f"  expected: {results['snc_case_study']['expected']}", flush=True)
    results["wall_seconds"] = round(time.perf_counter() - start, 1)
    results["environment"] = {"neurodiff": __version__, "python": platform.python_version(),
                              "numpy": np.__version__, "pandas": pd.__version__, "sklearn": sklearn.__version__,
                              "platform": platform.platform()}
    write_json(args.out / "results.json", results)
    print(f"wrote {args.out / 'results.json'} in {results['wall_seconds']} s")


if __name__ == "__main__":
    main()
