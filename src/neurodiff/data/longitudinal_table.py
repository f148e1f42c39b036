"""Reading and checking a long-format longitudinal table (ARCHITECTURE.md "Longitudinal table").

One row per subject and visit: a subject column, a visit column (1 = first visit, 2 = follow-up),
covariate (label) columns named by the user and feature columns (named by the user, or all remaining
numeric columns). Subjects with only visit 1 are the unpaired ones. Labels are read from the first
visit. Rows of any other visit (3, 4, ...) are not used, nor follow-up rows without any feature value
(those subjects count as unpaired): a :class:`IgnoredVisitsWarning` says how many and which. A subject
whose first visit has no feature value at all draws an :class:`EmptyFirstVisitWarning` (its features
are then all imputed). Subject ids are text (a CSV's ``007`` stays ``"007"``). Every problem is an
error that names the column, subject or file at fault: among them an infinite feature or label value,
and, with automatic feature detection, a column of numbers with a few text cells in it (e.g.
``4012,5``), which would otherwise be left out of the features without a word.
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

    def fingerprint(self) -> str:
        """SHA-256 of the subjects, values and column names: equal for the same table read twice, different
        when any value, subject or column differs (``impute merge`` checks it)."""
        import hashlib

        digest = hashlib.sha256()
        digest.update("\x1f".join(map(str, self.subject_ids)).encode())
        for array in (self.x1, self.x2, self.y, self.paired):
            data = np.ascontiguousarray(array, dtype=np.float64)
            digest.update(str(data.shape).encode())
            digest.update(data.tobytes())
        digest.update("\x1f".join([*self.feature_columns, "|", *self.label_columns]).encode())
        return digest.hexdigest()


class TableWarning(UserWarning):
    """Something in a longitudinal table the user should know about (the CLI prints these as lines)."""


class IgnoredVisitsWarning(TableWarning):
    """A longitudinal table has rows that are not used: a visit other than 1 or 2, or a follow-up row
    without any feature value."""


class EmptyFirstVisitWarning(TableWarning):
    """Subjects whose first visit (visit 1) has no feature value at all: every feature of theirs is
    imputed, so a follow-up generated for them rests on their labels and the imputer's fill only."""


class UnusedColumnsWarning(TableWarning):
    """A table given to a fitted model has numeric columns that are not among the model's features
    (they are not generated, and stay empty in generated rows)."""


def describe_subjects(ids: Sequence[object], limit: int = 5) -> str:
    """``subject 'a'`` / ``subjects 'a', 'b', ... and 3 more``: up to `limit` ids, then a count."""
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:limit])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"subject{'s' if len(ids) > 1 else ''} {shown}{more}"


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
    """The feature columns: as named, or every numeric column that is not an id, label or excluded.

    A named column that is not numeric is an error showing its first value that is not a number. With
    automatic detection, a text column whose non-blank values are mostly (at least half) numbers is an
    error too, naming its first cells that are not: a stray ``4012,5`` or ``n.a`` in a column of
    volumes would otherwise drop the whole column from the features without a word. Columns of text
    (e.g. a site name) are left out as before.
    """
    if features:
        _require_columns(frame, features, "feature", source)
        for column in features:
            if not pd.api.types.is_numeric_dtype(frame[column]):
                bad = _not_numbers(frame[column])
                if bad.any():
                    raise ValueError(f"{source}: feature column {column!r} is not numeric: e.g. "
                                     f"{_cells(frame, column, bad, subject, limit=1)}")
                raise ValueError(f"{source}: feature column {column!r} is not numeric (stored as "
                                 f"{frame[column].dtype} values); store it as numbers")
        return list(features)
    _require_columns(frame, exclude, "excluded", source)
    skip = {subject, visit, *labels, *exclude}
    for column in frame.columns:
        if column in skip or pd.api.types.is_numeric_dtype(frame[column]):
            continue
        values = frame[column]
        present = values.notna().to_numpy()
        blank = present & values.astype(str).str.strip().eq("").to_numpy()
        numbers = pd.to_numeric(values, errors="coerce").notna().to_numpy()
        bad = _not_numbers(values)
        n_values = int((present & ~blank).sum())
        if n_values and numbers.sum() >= 0.5 * n_values and bad.any():
            raise ValueError(
                f"{source}: column {column!r} holds numbers ({int(numbers.sum())} of {n_values} non-blank values) "
                f"but also text that is not a number: {_cells(frame, column, bad, subject)}. As it is, it would "
                f"not be a feature; fix those cells (or leave them empty), or --exclude the column"
            )
    chosen = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
    if not chosen:
        raise ValueError(f"{source}: no numeric feature columns besides the id, visit and label columns")
    return chosen


def _not_numbers(values: pd.Series) -> np.ndarray:
    """Where a cell holds something (not NaN) that is not a number: text such as ``4012,5`` or ``" "``."""
    return (values.notna() & pd.to_numeric(values, errors="coerce").isna()).to_numpy()


def _cells(frame: pd.DataFrame, column: str, where: np.ndarray, subject: str, limit: int = 3) -> str:
    """The first `limit` cells of `column` where `where` holds: value, subject and row (as in a CSV file,
    the header being row 1), then how many more."""
    positions = np.flatnonzero(where)
    shown = []
    for position in positions[:limit]:
        who = f"subject {frame[subject].iloc[position]!r}, " if subject in frame.columns else ""
        shown.append(f"{frame[column].iloc[position]!r} ({who}row {position + 2})")
    more = f" and {len(positions) - limit} more" if len(positions) > limit else ""
    return ", ".join(shown) + more


def _no_infinity(rows: pd.DataFrame, columns: Sequence[str], role: str, visit: str, subject: str,
                 source: str) -> None:
    """An infinite value (``inf``, ``-inf``) cannot be scaled or imputed: name the column and subjects."""
    values = rows[list(columns)].to_numpy(dtype=np.float64)
    infinite = np.isinf(values)
    if not infinite.any():
        return
    j = int(np.flatnonzero(infinite.any(axis=0))[0])
    ids = rows[subject].to_numpy()[infinite[:, j]]
    fix = "replace it with a number, or leave the cell empty to have it imputed" if role == "feature" else \
        "replace it with a number"
    raise ValueError(f"{source}: {role} column {columns[j]!r} has an infinite value (inf or -inf) at {visit} for "
                     f"{describe_subjects(ids)} ({len(ids)} in all); {fix}")


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

    _no_infinity(first, feature_columns, "feature", "visit 1", subject, source)
    _no_infinity(follow, feature_columns, "feature", "visit 2", subject, source)
    _no_infinity(first, labels, "label", "visit 1", subject, source)
    x1 = first[feature_columns].to_numpy(dtype=np.float64)
    empty = np.isnan(x1).all(axis=0)
    if empty.any():
        raise ValueError(f"{source}: feature column {feature_columns[int(np.flatnonzero(empty)[0])]!r} has no values at visit 1")
    ids = first[subject].to_numpy()
    no_values = np.isnan(x1).all(axis=1)
    if no_values.any():  # the imputer fills every feature: a generated follow-up rests on the labels alone
        warnings.warn(
            f"{source}: {int(no_values.sum())} subject(s) have no feature values at visit 1 "
            f"({describe_subjects(ids[no_values])}); their first visit is entirely imputed, so a follow-up "
            f"generated for them rests on their labels and the imputer's fill, not on their measurements",
            EmptyFirstVisitWarning, stacklevel=2,
        )
    x2 = np.full_like(x1, np.nan)
    position = pd.Index(ids).get_indexer(follow[subject])
    x2[position] = follow[feature_columns].to_numpy(dtype=np.float64)
    paired = np.zeros(len(ids), dtype=bool)
    paired[position] = True
    blank = paired & np.isnan(x2).all(axis=1)
    if blank.any():  # e.g. a wide table exported with a visit-2 row for everyone, imaging or not
        warnings.warn(
            f"{source}: ignoring {int(blank.sum())} follow-up row(s) (visit 2) with no feature values "
            f"({describe_subjects(ids[blank])}); these subjects count as having no follow-up, so predict generates one",
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
