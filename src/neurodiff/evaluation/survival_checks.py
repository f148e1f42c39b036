"""Validation of a survival table (time, event, score), for :mod:`neurodiff.evaluation.survival`.

:func:`check_survival_frame` converts and checks the table; every problem raises
:class:`SurvivalDataError` naming the column and up to 5 subjects with their values. The small helpers
that name offending rows are shared with the Cox model's covariate checks.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Hashable
from typing import Any

import numpy as np
import pandas as pd

MIN_ROWS = 3
MIN_EVENTS_REQUIRED = 2
MAX_SHOWN = 5  # offending subjects named in an error message
_TRUE_STRINGS = {"1", "true"}
_FALSE_STRINGS = {"0", "false"}


class SurvivalDataError(ValueError):
    """A survival table that cannot be analysed; the message names the column and the subjects."""


class SurvivalWarning(UserWarning):
    """A survival analysis that runs but whose results deserve caution (few events, convergence)."""


# ---------------------------------------------------------------------------------------- checks
def _subject_ids(frame: pd.DataFrame, subject: str | None) -> tuple[np.ndarray, str]:
    """The ids naming each row in messages, and what they are ("subject_id" or "row")."""
    if subject is not None and subject in frame.columns:
        return frame[subject].to_numpy(dtype=object), str(subject)
    return frame.index.to_numpy(dtype=object), "row"


def _offenders(ids: np.ndarray, kind: str, series: pd.Series, mask: np.ndarray) -> str:
    """'2 entries: subject_id S3 (time=-1.0), S9 (time=nan)' for the rows where mask is true (5 at most)."""
    where = np.flatnonzero(mask)
    raw = [v.item() if isinstance(v, np.generic) else v for v in series.to_numpy(dtype=object)]
    shown = ", ".join(f"{ids[i]} ({series.name}={raw[i]!r})" for i in where[:MAX_SHOWN])
    more = f" and {len(where) - MAX_SHOWN} more" if len(where) > MAX_SHOWN else ""
    return f"{len(where)} {'entry' if len(where) == 1 else 'entries'}: {kind} {shown}{more}"


def _missing_mask(series: pd.Series) -> np.ndarray:
    blank = series.map(lambda v: isinstance(v, str) and v.strip() == "").to_numpy(dtype=bool)
    return series.isna().to_numpy(dtype=bool) | blank


def _require_column(frame: pd.DataFrame, name: Hashable, role: str) -> None:
    if name in frame.columns:
        return
    columns = [str(c) for c in frame.columns]
    close = difflib.get_close_matches(str(name), columns, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise SurvivalDataError(
        f"{role} column {name!r} not found in the survival table{hint} (columns: {columns})"
    )


def _numeric_column(frame: pd.DataFrame, name: Hashable, role: str, ids: np.ndarray, kind: str) -> np.ndarray:
    """The column as finite float64, or SurvivalDataError naming missing / non-numeric / non-finite rows."""
    series = frame[name]
    missing = _missing_mask(series)
    if missing.any():
        raise SurvivalDataError(f"{role} column {name!r} has missing values, "
                                f"{_offenders(ids, kind, series, missing)}")
    if pd.api.types.is_bool_dtype(series):
        numeric = series.astype(np.float64)
    else:
        numeric = pd.to_numeric(series, errors="coerce")
    values = numeric.to_numpy(dtype=np.float64)
    bad = np.isnan(values)
    if bad.any():
        raise SurvivalDataError(f"{role} column {name!r} has non-numeric values, "
                                f"{_offenders(ids, kind, series, bad)}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise SurvivalDataError(f"{role} column {name!r} has infinite values, "
                                f"{_offenders(ids, kind, series, bad)}")
    return values


def _event_flag(value: Any) -> int | None:
    """0 / 1 from True/False, 0/1 (int or float) or "0"/"1"/"true"/"false"; None when not a flag."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return int(value) if value in (0, 1) else None
    if isinstance(value, str):
        text = value.strip().lower()
        return 1 if text in _TRUE_STRINGS else 0 if text in _FALSE_STRINGS else None
    return None


def check_survival_frame(
    frame: pd.DataFrame,
    score: Hashable | None = None,
    *,
    time: Hashable = "time",
    event: Hashable = "event",
    subject: Hashable | None = "subject_id",
    min_events: int = 10,
) -> pd.DataFrame:
    """A validated copy of `frame`: float64 `time`, int64 `event` (0/1) and float64 `score` if given.

    Raises SurvivalDataError (naming the column and up to 5 offending subjects with their values) for:
    a missing column (with a close name suggested), a missing or non-numeric time, a time that is not
    finite and > 0, a missing event flag or one that is not 0/1 (True/False, 0/1 and "0"/"1" are
    accepted, also "true"/"false"), a missing or non-finite score, a constant score, fewer than 3
    rows, or fewer than 2 events. Fewer than `min_events` events warns (SurvivalWarning). Other
    columns are copied unchanged.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"the survival table must be a pandas DataFrame, got {type(frame).__name__}")
    _require_column(frame, time, "time")
    _require_column(frame, event, "event")
    if score is not None:
        _require_column(frame, score, "score")
    ids, kind = _subject_ids(frame, subject)

    times = _numeric_column(frame, time, "time", ids, kind)
    bad = times <= 0
    if bad.any():
        raise SurvivalDataError(f"time column {time!r} must be > 0 (survival time, e.g. days), "
                                f"{_offenders(ids, kind, frame[time], bad)}")

    raw_events = frame[event]
    missing = _missing_mask(raw_events)
    if missing.any():
        raise SurvivalDataError(f"event column {event!r} has missing values (1 = died, 0 = censored), "
                                f"{_offenders(ids, kind, raw_events, missing)}")
    flags = [_event_flag(v) for v in raw_events.to_numpy(dtype=object)]
    bad = np.array([f is None for f in flags], dtype=bool)
    if bad.any():
        raise SurvivalDataError(f"event column {event!r} must be 0/1 (1 = died, 0 = censored) or "
                                f"True/False, {_offenders(ids, kind, raw_events, bad)}")
    events = np.asarray(flags, dtype=np.int64)

    out = frame.copy()
    out[time] = times
    out[event] = events
    if score is not None:
        values = _numeric_column(frame, score, "score", ids, kind)
        if len(values) and values.min() == values.max():
            raise SurvivalDataError(f"score column {score!r} is constant ({float(values[0]):g} for all "
                                    f"{len(values)} subjects): it cannot predict survival")
        out[score] = values

    if len(out) < MIN_ROWS:
        raise SurvivalDataError(f"the survival table has {len(out)} rows; at least {MIN_ROWS} are needed")
    n_events = int(events.sum())
    if n_events < MIN_EVENTS_REQUIRED:
        raise SurvivalDataError(
            f"event column {event!r} has {n_events} events (deaths) among {len(out)} subjects; at least "
            f"{MIN_EVENTS_REQUIRED} are needed for a survival analysis"
        )
    if n_events < min_events:
        warnings.warn(
            f"only {n_events} events (deaths) among {len(out)} subjects (fewer than {min_events}): hazard "
            "ratios, their confidence intervals and p-values will be unreliable",
            SurvivalWarning,
            stacklevel=2,
        )
    return out
