"""Covariates as network inputs: a fitted, saveable encoding of manifest columns into a float32 matrix.

:meth:`CovariateEncoding.fit` learns, from the training rows only, how to encode each column:

* continuous (e.g. ``age``): standardised with the training mean and standard deviation;
* binary (e.g. ``sex``): 0/1; numbers 0/1 as they are, ``F/female`` → 0 and ``M/male`` → 1 (any case),
  or any other two values in sorted order (the mapping is stored);
* categorical (e.g. ``site``): one-hot over the categories seen in training (sorted, stored).

:meth:`~CovariateEncoding.transform` then encodes any frame the same way; a value the encoding does not
know (an unseen site, a third sex code) and missing values are errors that name the column, value and
subject, never NaNs. A continuous value far outside the training range (by more than 10 % of its width)
warns (:class:`CovariateWarning`: the networks extrapolate there), and a negative age is an error. :meth:`~CovariateEncoding.with_values` sets columns to one value ("same age and
sex, target site"). :meth:`~CovariateEncoding.to_dict` / :meth:`~CovariateEncoding.from_dict` round-trip
through JSON, for an estimator's ``statistics.json``.
"""

from __future__ import annotations

import difflib
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

FORMAT = 1

#: Column used to name the subject in error messages (when the frame has it).
SUBJECT_COLUMN = "subject_id"

_FEMALE, _MALE = {"f", "female"}, {"m", "male"}


class CovariateError(ValueError):
    """A covariate column is missing, has missing or unknown values, or cannot be encoded."""


class CovariateWarning(UserWarning):
    """Covariate values the encoding can take but the model was not trained on (far outside the range)."""


#: A continuous value further than this share of the training range's width outside it warns.
RANGE_MARGIN = 0.1
#: Continuous covariates that cannot be negative.
NON_NEGATIVE = frozenset({"age"})


@dataclass(frozen=True)
class ContinuousCovariate:
    """A standardised column: ``(value - mean) / sd``; `low`/`high` is the training range (None in encodings
    saved before it was kept)."""

    name: str
    mean: float
    sd: float
    low: float | None = None
    high: float | None = None

    def check_range(self, values: np.ndarray, frame: pd.DataFrame) -> None:
        """Warn (CovariateWarning) about values far outside the training range: the networks extrapolate
        there. Far means by more than RANGE_MARGIN of the range's width."""
        if self.low is None or self.high is None:
            return
        margin = RANGE_MARGIN * (self.high - self.low)
        outside = (values < self.low - margin) | (values > self.high + margin)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            warnings.warn(
                f"covariate {self.name!r} has {int(outside.sum())} value(s) far outside its training range "
                f"{self.low:g}–{self.high:g}, e.g. {values[first]:g} for {_where(frame, first)}: the model never saw "
                "such values and extrapolates there", CovariateWarning, stacklevel=3)


@dataclass(frozen=True)
class BinaryCovariate:
    """A 0/1 column. `kind` is ``"numeric"`` (0/1 as is), ``"sex"`` (F/female → 0, M/male → 1, any case)
    or ``"levels"`` (``levels[0]`` → 0, ``levels[1]`` → 1)."""

    name: str
    kind: str
    levels: tuple[Any, ...] = ()


@dataclass(frozen=True)
class CategoricalCovariate:
    """A one-hot column group, one output column per category (``name=category``)."""

    name: str
    categories: tuple[str, ...]


@dataclass(frozen=True)
class CovariateEncoding:
    """How to encode covariate columns into a float32 matrix; build it with :meth:`fit`.

    Output columns: the continuous ones, then the binary ones, then each categorical's one-hot group.
    """

    continuous: tuple[ContinuousCovariate, ...] = ()
    binary: tuple[BinaryCovariate, ...] = ()
    categorical: tuple[CategoricalCovariate, ...] = ()

    # ------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        continuous: Sequence[str] = ("age",),
        binary: Sequence[str] = ("sex",),
        categorical: Sequence[str] = ("site",),
    ) -> CovariateEncoding:
        """Learn the encoding of the named columns from the (training) rows of `frame`.

        Raises
        ------
        CovariateError
            A column is missing or named twice, has missing values, a continuous column is not numeric
            or constant, a binary column has more than two values (or one value that is not 0/1 or a
            sex code).
        """
        continuous, binary, categorical = (_names(x) for x in (continuous, binary, categorical))
        _distinct_roles(continuous, binary, categorical)
        if frame.empty:
            raise CovariateError("cannot fit a covariate encoding on an empty frame (no rows)")
        for name in (*continuous, *binary, *categorical):
            _check_present(frame, name)
        return cls(
            continuous=tuple(_fit_continuous(frame, name) for name in continuous),
            binary=tuple(_fit_binary(frame, name) for name in binary),
            categorical=tuple(_fit_categorical(frame, name) for name in categorical),
        )

    # ------------------------------------------------------------ description

    @property
    def names(self) -> list[str]:
        """The input columns encoded, in output order."""
        return [c.name for c in (*self.continuous, *self.binary, *self.categorical)]

    @property
    def columns(self) -> list[str]:
        """Names of the output columns, e.g. ``["age", "sex", "site=site0", "site=site1"]``."""
        out = [c.name for c in (*self.continuous, *self.binary)]
        for covariate in self.categorical:
            out += [f"{covariate.name}={category}" for category in covariate.categories]
        return out

    @property
    def width(self) -> int:
        """Number of output columns."""
        return len(self.continuous) + len(self.binary) + sum(len(c.categories) for c in self.categorical)

    def categories(self, name: str) -> list:
        """The categories of a categorical column (or the two values of a binary one, 0 first)."""
        covariate = self._find(name)
        if isinstance(covariate, CategoricalCovariate):
            return list(covariate.categories)
        if isinstance(covariate, BinaryCovariate):
            return {"numeric": [0, 1], "sex": ["female", "male"]}.get(covariate.kind, list(covariate.levels))
        raise CovariateError(f"covariate {name!r} is continuous: it has no categories")

    # ------------------------------------------------------------ encoding

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode `frame`'s covariate columns: float32, shape ``(len(frame), width)``."""
        for name in self.names:
            _check_present(frame, name)
        parts = [np.zeros((len(frame), 0), dtype=np.float64)]
        for covariate in self.continuous:
            values = _numeric(frame, covariate.name)
            covariate.check_range(values, frame)
            parts.append(((values - covariate.mean) / covariate.sd)[:, None])
        for covariate in self.binary:
            _no_missing(frame, covariate.name)
            codes = [_binary_code(covariate, v, frame, i) for i, v in enumerate(frame[covariate.name])]
            parts.append(np.array(codes, dtype=np.float64)[:, None])
        for covariate in self.categorical:
            index = self.category_indices(frame, covariate.name)
            parts.append(np.eye(len(covariate.categories))[index].reshape(len(frame), -1))
        return np.concatenate(parts, axis=1).astype(np.float32)

    def category_indices(self, frame: pd.DataFrame, name: str) -> np.ndarray:
        """Each row's category of the categorical column `name`, as its position in :meth:`categories`
        (values compared as the encoding compares them: ``" site0"`` is ``"site0"``, 1.0 is ``"1"``)."""
        covariate = self._find(name)
        if not isinstance(covariate, CategoricalCovariate):
            raise CovariateError(f"covariate {name!r} is not categorical")
        _check_present(frame, name)
        _no_missing(frame, name)
        return np.array([_category_index(covariate, v, frame, i) for i, v in enumerate(frame[name])], dtype=np.int64)

    def with_values(self, frame: pd.DataFrame, **overrides: Any) -> pd.DataFrame:
        """A copy of `frame` with each named column set to one value, e.g. ``with_values(f, site="site0")``.

        Values of encoded columns are checked now: an unknown site is an error here, not later.
        """
        out = frame.copy()
        for name, value in overrides.items():
            if name not in out.columns and name not in self.names:
                close = difflib.get_close_matches(name, [*self.names, *map(str, out.columns)], n=3)
                hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
                raise CovariateError(f"cannot set column {name!r}: it is neither a covariate nor a column{hint}")
            if name in self.names:
                self._check_value(name, value)
            out[name] = value
        return out

    def _check_value(self, name: str, value: Any) -> None:
        covariate = self._find(name)
        if _is_missing(value):
            raise CovariateError(f"cannot set covariate {name!r} to a missing value")
        if isinstance(covariate, CategoricalCovariate):
            _category_index(covariate, value)
        elif isinstance(covariate, BinaryCovariate):
            _binary_code(covariate, value)
        elif not _is_number(value):
            raise CovariateError(f"continuous covariate {name!r} must be set to a number, not {value!r}")

    def _find(self, name: str) -> ContinuousCovariate | BinaryCovariate | CategoricalCovariate:
        for covariate in (*self.continuous, *self.binary, *self.categorical):
            if covariate.name == name:
                return covariate
        close = difflib.get_close_matches(name, self.names, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        known = ", ".join(self.names) or "none"
        raise CovariateError(f"{name!r} is not an encoded covariate (covariates: {known}){hint}")

    # ------------------------------------------------------------ saving

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (plain floats, strings and lists)."""
        return {
            "format": FORMAT,
            "continuous": [{"name": c.name, "mean": float(c.mean), "sd": float(c.sd),
                            **({"low": float(c.low), "high": float(c.high)} if c.low is not None else {})}
                           for c in self.continuous],
            "binary": [{"name": c.name, "kind": c.kind, "levels": [_plain(v) for v in c.levels]} for c in self.binary],
            "categorical": [{"name": c.name, "categories": list(c.categories)} for c in self.categorical],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CovariateEncoding:
        """Rebuild an encoding from :meth:`to_dict`'s output."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise CovariateError(f"not a covariate encoding of format {FORMAT} (found format {found!r})")
        try:
            encoding = cls(
                continuous=tuple(ContinuousCovariate(str(c["name"]), float(c["mean"]), float(c["sd"]),
                                                     *((float(c["low"]), float(c["high"])) if "low" in c else ()))
                                 for c in data["continuous"]),
                binary=tuple(BinaryCovariate(str(c["name"]), str(c["kind"]), tuple(c["levels"]))
                             for c in data["binary"]),
                categorical=tuple(CategoricalCovariate(str(c["name"]), tuple(str(v) for v in c["categories"]))
                                  for c in data["categorical"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CovariateError(f"malformed covariate encoding: {error!r}") from error
        for covariate in encoding.binary:
            if covariate.kind not in ("numeric", "sex", "levels"):
                raise CovariateError(f"binary covariate {covariate.name!r} has unknown kind {covariate.kind!r}")
            if covariate.kind == "levels" and len(covariate.levels) != 2:
                raise CovariateError(
                    f"binary covariate {covariate.name!r} needs two levels, not {list(covariate.levels)}"
                )
        return encoding


# ---------------------------------------------------------------- fitting helpers


def _names(names: Sequence[str] | str | None) -> tuple[str, ...]:
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _distinct_roles(*roles: tuple[str, ...]) -> None:
    seen: set[str] = set()
    for names in roles:
        for name in names:
            if name in seen:
                raise CovariateError(f"column {name!r} is named twice; give each covariate one role")
            seen.add(name)


def _check_present(frame: pd.DataFrame, name: str) -> None:
    if name not in frame.columns:
        close = difflib.get_close_matches(name, [str(c) for c in frame.columns], n=3)
        close += [str(c) for c in frame.columns if str(c).lower() == name.lower() and str(c) not in close]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise CovariateError(f"covariate column {name!r} is not in the frame{hint}")


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))


def _where(frame: pd.DataFrame, position: int) -> str:
    """'subject 'sub-003' (row 7)', the row being the frame's index label."""
    row = f"row {_plain(frame.index[position])!r}"
    if SUBJECT_COLUMN in frame.columns and not _is_missing(frame[SUBJECT_COLUMN].iloc[position]):
        return f"subject {_plain(frame[SUBJECT_COLUMN].iloc[position])!r} ({row})"
    return row


def _no_missing(frame: pd.DataFrame, name: str) -> None:
    missing = np.array([_is_missing(v) for v in frame[name]], dtype=bool)
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        raise CovariateError(
            f"covariate {name!r} has no value for {_where(frame, first)} ({int(missing.sum())} missing in all)"
        )


def _numeric(frame: pd.DataFrame, name: str) -> np.ndarray:
    _no_missing(frame, name)
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise CovariateError(
            f"continuous covariate {name!r} has the non-numeric value {frame[name].iloc[first]!r} "
            f"for {_where(frame, first)}"
        )
    if name in NON_NEGATIVE and (values < 0).any():
        first = int(np.flatnonzero(values < 0)[0])
        raise CovariateError(f"covariate {name!r} has the negative value {values[first]:g} for {_where(frame, first)}")
    return values


def _fit_continuous(frame: pd.DataFrame, name: str) -> ContinuousCovariate:
    values = _numeric(frame, name)
    mean, sd = float(values.mean()), float(values.std())
    if not sd > 1e-8 * max(1.0, abs(mean)):
        raise CovariateError(
            f"continuous covariate {name!r} has the same value ({values[0]:g}) in every training row "
            f"(sd 0): it cannot be standardised; drop it from the covariates"
        )
    return ContinuousCovariate(name, mean, sd, float(values.min()), float(values.max()))


def _fit_binary(frame: pd.DataFrame, name: str) -> BinaryCovariate:
    _no_missing(frame, name)
    values = list(dict.fromkeys(_plain(v) for v in frame[name]))
    if all(_is_number(v) for v in values) and {float(v) for v in values} <= {0.0, 1.0}:
        return BinaryCovariate(name, "numeric")
    if all(isinstance(v, str) and v.strip().lower() in _FEMALE | _MALE for v in values):
        return BinaryCovariate(name, "sex")
    if len(values) > 2:
        shown = sorted(map(str, values))
        listed = ", ".join(map(repr, shown[:10])) + (", ..." if len(shown) > 10 else "")
        raise CovariateError(
            f"binary covariate {name!r} has {len(values)} distinct values ({listed}); a binary column needs "
            f"two (use it as categorical instead)"
        )
    if len(values) < 2:
        raise CovariateError(
            f"binary covariate {name!r} has only the value {values[0]!r} in the training rows, which is neither "
            f"0/1 nor a sex code (F/M): cannot tell which value is 1"
        )
    try:
        levels = tuple(sorted(values))
    except TypeError:  # mixed types: sort as text
        levels = tuple(sorted(values, key=str))
    return BinaryCovariate(name, "levels", levels)


def _fit_categorical(frame: pd.DataFrame, name: str) -> CategoricalCovariate:
    _no_missing(frame, name)
    return CategoricalCovariate(name, tuple(sorted({category_key(v) for v in frame[name]})))


# ---------------------------------------------------------------- encoding helpers


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar it holds (for JSON and comparisons)."""
    return value.item() if isinstance(value, np.generic) else value


def category_key(value: Any) -> str:
    """A category as the encodings compare it: text without surrounding spaces, whole numbers as integers
    (site 1 and 1.0 are both "1")."""
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _binary_code(covariate: BinaryCovariate, value: Any, frame: pd.DataFrame | None = None, position: int = 0) -> float:
    value = _plain(value)
    if covariate.kind == "numeric":
        if _is_number(value) and float(value) in (0.0, 1.0):
            return float(value)
        known = "0 or 1"
    elif covariate.kind == "sex":
        text = str(value).strip().lower()
        if text in _FEMALE:
            return 0.0
        if text in _MALE:
            return 1.0
        known = "F/female (0) or M/male (1), any case"
    else:
        for code, level in enumerate(covariate.levels):
            if value == level or str(value) == str(level):
                return float(code)
        known = f"{covariate.levels[0]!r} (0) or {covariate.levels[1]!r} (1)"
    where = f" for {_where(frame, position)}" if frame is not None else ""
    raise CovariateError(
        f"binary covariate {covariate.name!r} has the unknown value {value!r}{where}; expected {known}"
    )


def _category_index(
    covariate: CategoricalCovariate, value: Any, frame: pd.DataFrame | None = None, position: int = 0
) -> int:
    key = category_key(value)
    try:
        return covariate.categories.index(key)
    except ValueError:
        where = f" for {_where(frame, position)}" if frame is not None else ""
        raise CovariateError(
            f"covariate {covariate.name!r} has the value {_plain(value)!r}{where}, not seen in training; known: "
            f"{', '.join(map(repr, covariate.categories))}"
        ) from None
