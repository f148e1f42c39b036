"""Reading and checking a long-format longitudinal table (ARCHITECTURE.md "Longitudinal table").

One row per subject and visit: a subject column, a visit column (1 = first visit, 2 = follow-up),
covariate (label) columns named by the user and feature columns (named by the user, or all remaining
numeric columns). Subjects with only visit 1 are the unpaired ones. Labels are read from the first
visit. Rows of any other visit (3, 4, ...) are not used, nor follow-up rows without any feature value
(those subjects count as unpaired): a :class:`IgnoredVisitsWarning` says how many and which. Subject ids are text (a CSV's ``007`` stays ``"007"``). Every problem is an error that
names the column, subject or file at fault.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class LongitudinalArrays:
    """A table as aligned arrays, one row per subject (ordered as the subjects first appear)."""

    subject_ids: np.ndarray  # (n,)
    x1: np.ndarray  # (n, D) first-visit features, NaN where missing
    x2: np.ndarray  # (n, D) follow-up features, NaN rows for unpaired subjects
    y: np.ndarray  # (n, L) labels from the first visit
    paired: np.ndarray  # (n,) bool
    feature_columns: list[str]
    label_columns: list[str]

    def subset(self, index: np.ndarray) -> LongitudinalArrays:
        return LongitudinalArrays(
            self.subject_ids[index], self.x1[index], self.x2[index], self.y[index], self.paired[index],
            self.feature_columns, self.label_columns,
        )

    def __len__(self) -> int:
        return len(self.subject_ids)


class IgnoredVisitsWarning(UserWarning):
    """A longitudinal table has rows that are not used: a visit other than 1 or 2, or a follow-up row
    without any feature value."""


def read_table(path: str | Path, *, subject: str | None = "subject_id") -> pd.DataFrame:
    """Read a CSV or Parquet table, with errors that say what to do.

    The `subject` column, where the table has one, is read as text, whatever the format, so that ids
    such as ``007`` keep their leading zeros (empty cells stay missing).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a table file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"table {path} {what}. Give a CSV or Parquet file in long format (one row per subject and visit; "
            "see docs/workflow-impute-two-visits.md); to try the tools first, `neurodiff synth longitudinal "
            "--quick --out table.csv` writes an example")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"table {path} must be .csv or .parquet, not {suffix or 'without extension'!r}")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype={subject: str} if subject else None)
        else:
            frame = pd.read_parquet(path)
    except Exception as error:
        raise ValueError(f"cannot read table {path}: {error}") from error
    if subject and subject in frame.columns and not pd.api.types.is_string_dtype(frame[subject]):
        frame[subject] = frame[subject].map(lambda value: value if pd.isna(value) else str(value)).astype(object)
    return frame


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], role: str, source: str) -> None:
    for column in columns:
        if column not in frame.columns:
            close = difflib.get_close_matches(column, [str(c) for c in frame.columns], n=3)
            hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"{source}: {role} column {column!r} is not in the table{hint}")


def resolve_features(
    frame: pd.DataFrame,
    subject: str,
    visit: str,
    labels: Sequence[str],
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    source: str = "table",
) -> list[str]:
    """The feature columns: as named, or every numeric column that is not an id, label or excluded."""
    if features:
        _require_columns(frame, features, "feature", source)
        for column in features:
            if not pd.api.types.is_numeric_dtype(frame[column]):
                example = frame[column].dropna().iloc[0] if frame[column].notna().any() else None
                raise ValueError(f"{source}: feature column {column!r} is not numeric (e.g. {example!r})")
        return list(features)
    _require_columns(frame, exclude, "excluded", source)
    skip = {subject, visit, *labels, *exclude}
    chosen = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    if not chosen:
        raise ValueError(f"{source}: no numeric feature columns besides the id, visit and label columns")
    return chosen


def longitudinal_arrays(
    frame: pd.DataFrame,
    *,
    labels: Sequence[str],
    features: Sequence[str] | None = None,
    subject: str = "subject_id",
    visit: str = "visit",
    exclude: Sequence[str] = (),
    source: str = "table",
) -> LongitudinalArrays:
    """Check a long-format table and turn it into per-subject arrays (visit 1 and visit 2)."""
    _require_columns(frame, [subject, visit], "id", source)
    _require_columns(frame, labels, "label", source)
    feature_columns = resolve_features(frame, subject, visit, labels, features, exclude, source)
    for column in labels:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise ValueError(f"{source}: label column {column!r} is not numeric; encode it as numbers (e.g. 0/1)")
    visits = pd.to_numeric(frame[visit], errors="coerce")
    if visits.isna().any():
        row = int(np.flatnonzero(visits.isna().to_numpy())[0])
        raise ValueError(f"{source}: visit column {visit!r} has a non-numeric or empty value in row {row + 2}")
    if frame[subject].isna().any():
        row = int(np.flatnonzero(frame[subject].isna().to_numpy())[0])
        raise ValueError(f"{source}: subject column {subject!r} has an empty value in row {row + 2}")
    other = ~visits.isin((1, 2))
    if other.any():
        values = np.unique(visits[other].to_numpy())
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        warnings.warn(
            f"{source}: ignoring {int(other.sum())} row(s) whose visit ({visit!r}) is neither 1 nor 2 "
            f"(visit {shown}); only the first visit (1) and the follow-up (2) are used",
            IgnoredVisitsWarning, stacklevel=2,
        )

    first, follow = frame[visits == 1], frame[visits == 2]
    _no_duplicates(first, subject, "first visits (visit 1)", source)
    _no_duplicates(follow, subject, "follow-up visits (visit 2)", source)
    orphans = set(follow[subject]) - set(first[subject])
    if orphans:
        raise ValueError(f"{source}: subject {sorted(orphans, key=str)[0]!r} has a follow-up but no first visit (visit 1)")
    if first.empty:
        raise ValueError(f"{source}: no first-visit rows ({visit} == 1)")
    missing_labels = first[labels].isna().any(axis=1)
    if missing_labels.any():
        row = first[missing_labels].iloc[0]
        column = next(c for c in labels if pd.isna(row[c]))
        raise ValueError(f"{source}: subject {row[subject]!r} has no value for label {column!r} at visit 1")

    x1 = first[feature_columns].to_numpy(dtype=np.float64)
    empty = np.isnan(x1).all(axis=0)
    if empty.any():
        raise ValueError(f"{source}: feature column {feature_columns[int(np.flatnonzero(empty)[0])]!r} has no values at visit 1")
    ids = first[subject].to_numpy()
    x2 = np.full_like(x1, np.nan)
    position = pd.Index(ids).get_indexer(follow[subject])
    x2[position] = follow[feature_columns].to_numpy(dtype=np.float64)
    paired = np.zeros(len(ids), dtype=bool)
    paired[position] = True
    blank = paired & np.isnan(x2).all(axis=1)
    if blank.any():  # e.g. a wide table exported with a visit-2 row for everyone, imaging or not
        shown = ", ".join(repr(i) for i in ids[blank][:3]) + (", ..." if blank.sum() > 3 else "")
        warnings.warn(
            f"{source}: ignoring {int(blank.sum())} follow-up row(s) (visit 2) with no feature values "
            f"(subject {shown}); these subjects count as having no follow-up, so predict generates one",
            IgnoredVisitsWarning, stacklevel=2,
        )
        paired &= ~blank
    return LongitudinalArrays(ids, x1, x2, first[list(labels)].to_numpy(dtype=np.float64), paired,
                              list(feature_columns), list(labels))


def _no_duplicates(rows: pd.DataFrame, subject: str, what: str, source: str) -> None:
    duplicated = rows[subject].duplicated()
    if duplicated.any():
        raise ValueError(f"{source}: subject {rows[subject][duplicated].iloc[0]!r} has two {what}")


def keep_integer_columns(frame: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every integer column of `like` integer again where that loses nothing.

    Appending rows (generated follow-ups, whose labels pass through floats and whose other columns are
    empty) turns integer columns into floats. A column whose values are all whole numbers or missing
    gets back the dtype it has in `like`, or pandas' nullable ``Int64`` where values are missing;
    a column with a fractional value (e.g. a generated feature) stays float.
    """
    frame = frame.copy()
    for column in like.columns:
        if column not in frame.columns or not pd.api.types.is_integer_dtype(like[column]):
            continue
        values = frame[column]
        if values.dtype == like[column].dtype or not pd.api.types.is_numeric_dtype(values):
            continue
        numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
        present = numbers[~np.isnan(numbers)]
        if not np.array_equal(present, np.round(present)):
            continue
        missing = bool(np.isnan(numbers).any())
        plain = not isinstance(like[column].dtype, pd.api.extensions.ExtensionDtype)
        frame[column] = values.astype("Int64" if missing and plain else like[column].dtype)
    return frame
