"""Expected change of a feature group with vs without a diagnosis in the embedded longitudinal cohort.

One table of :mod:`neurodiff.data.synthetic_longitudinal` holds few cases of a rare diagnosis (about 11
paired parkinsonism cases at the paper size), so its own case-vs-non-case means are noisy.
:func:`expected_change` estimates what they are *under the model*, by Monte Carlo over many draws; the
SNc case study of ``docs/synthetic-longitudinal.md`` and ``benchmarks/synth_longitudinal_properties.py``
quote it.

It repeats the generator's own steps (the subjects, who returns, the features of a chunk of subjects), so
this module is the one place outside the generator that depends on its private functions
(``_model``, ``_catalogue``, ``_subjects_and_pairs``, ``_simulate_chunk``);
``tests/data/test_synthetic_longitudinal_expectation.py`` guards it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from neurodiff.data import synthetic_longitudinal as sl
from neurodiff.data.synthetic_longitudinal import DIAGNOSIS_COLUMNS, LongitudinalConfig

_CHUNK = 2048  # subjects per feature draw (a subject's features depend only on its own draws)
_KEYS = ("with", "with_no_extra_rate", "without")


def expected_change(config: LongitudinalConfig, columns: Sequence[str], label: str, *, seeds: int,
                    replicates: int, controls: int, seed: int = 12345) -> dict[str, Any]:
    """Expected change (visit 2 - visit 1) of the mean of `columns` among the subjects with a follow-up,
    with vs without the diagnosis `label`, over draws of the table (Monte Carlo with the generator's steps).

    For each table seed 0, ..., `seeds` - 1 (``config`` with that seed; ``config.seed`` itself is not
    used), the subjects and who returns are drawn exactly as in the table. The features of the paired
    cases (``label`` = 1) are then drawn `replicates` times and those of `controls` random paired
    non-cases once. The cases are drawn a second time with the same random numbers but without the
    diagnosis' extra atrophy rate, which splits their excess change into the rate and the rest (age,
    baseline size, baseline shift). `seed` seeds the Monte Carlo's own stream (which non-cases, the
    feature draws). `columns` may be any feature of the full catalogue (``feature_catalogue()``), whatever
    ``config.n_features``; the draws have no missing cells (``config.missing_fraction`` is not used).

    Returns ``{"seeds", "replicates_per_case", "controls_per_seed", "with", "with_no_extra_rate",
    "without", "cases_per_table"}``; each of the three groups is ``{"draws": number of subject draws,
    "mean_change_mm3": mean change in the features' unit (mm³ for volumes), "se": its standard error
    (a case's replicates count as one subject, so conservative), "age_visit1": mean first-visit age,
    "group_visit1": mean of `columns` at the first visit}``. Floats are not rounded; a group without
    draws (no paired case in any table) has ``draws`` 0 and NaN means.

    Example (the SNc case study: −2.41 vs −1.73 mm³ at the paper size, seeds=200, replicates=10,
    controls=500)::

        expected_change(LongitudinalConfig.paper(), ("vol_lh_snc", "vol_rh_snc"), "parkinsonism",
                        seeds=200, replicates=10, controls=500)

    Raises ValueError naming the bad value: an unknown feature, a `label` that is not one of
    :data:`DIAGNOSIS_COLUMNS`, `seeds`, `replicates` or `controls` below 1, or a bad `config`.
    """
    columns = _check(config, columns, label, seeds=seeds, replicates=replicates, controls=controls)
    m = sl._model()
    no_rate = dataclasses.replace(m, extra_rate=m.extra_rate.copy())
    no_rate.extra_rate[DIAGNOSIS_COLUMNS.index(label)] = 0.0
    names = list(sl._catalogue()["name"])
    cols = [names.index(c) for c in columns]
    rng = np.random.default_rng(seed)
    change, baseline, ages = ({k: [] for k in _KEYS} for _ in range(3))

    def draw(key: str, model: Any, chunk: np.ndarray, stream: int) -> None:
        x1, x2 = sl._simulate_chunk(np.random.default_rng(stream), s, chunk, paired, model, 0.0)
        change[key].append((x2[:, cols] - x1[:, cols]).mean(axis=1))
        baseline[key].append(x1[:, cols].mean(axis=1))
        ages[key].append(s["age"][chunk])

    for table_seed in range(seeds):
        s, paired = sl._subjects_and_pairs(dataclasses.replace(config, seed=table_seed))
        cases = np.tile(np.flatnonzero(paired & (s[label] == 1)), replicates)
        others = np.flatnonzero(paired & (s[label] == 0))
        others = rng.choice(others, min(controls, len(others)), replace=False)
        for start in range(0, len(cases), _CHUNK):
            stream = int(rng.integers(2**63))  # the same random numbers with and without the extra rate
            draw("with", m, cases[start:start + _CHUNK], stream)
            draw("with_no_extra_rate", no_rate, cases[start:start + _CHUNK], stream)
        for start in range(0, len(others), _CHUNK):
            draw("without", m, others[start:start + _CHUNK], int(rng.integers(2**63)))
    out: dict[str, Any] = {"seeds": seeds, "replicates_per_case": replicates, "controls_per_seed": controls}
    for key in _KEYS:
        c, age, base = (_joined(v[key]) for v in (change, ages, baseline))
        n = len(c) / (1 if key == "without" else replicates)  # conservative: a case's replicates count once
        out[key] = {"draws": len(c), "mean_change_mm3": _mean(c),
                    "se": float(c.std() / np.sqrt(n)) if len(c) else float("nan"),
                    "age_visit1": _mean(age), "group_visit1": _mean(base)}
    out["cases_per_table"] = out["with"]["draws"] / replicates / seeds
    return out


def _check(config: LongitudinalConfig, columns: Sequence[str], label: str, **counts: int) -> list[str]:
    """Validate the arguments (ValueError naming the bad value); return `columns` as a list."""
    config.validate()
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if label not in DIAGNOSIS_COLUMNS:
        raise ValueError(f"label must be a diagnosis column, got {label!r}; known: {', '.join(DIAGNOSIS_COLUMNS)}")
    columns = [columns] if isinstance(columns, str) else list(columns)
    if not columns:
        raise ValueError("columns must name at least one feature, got none")
    known = set(sl._catalogue()["name"])
    for col in columns:
        if col not in known:
            raise ValueError(f"unknown feature column {col!r} (see feature_catalogue())")
    return columns


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0)


def _mean(a: np.ndarray) -> float:
    return float(a.mean()) if len(a) else float("nan")
