"""The estimator base class: scikit-learn conventions plus neurodiff's saved-model folders.

Subclasses keep hyperparameters only in ``__init__`` (stored unchanged as attributes of the same
name), learn in ``fit`` (returning self) and keep fitted state in attributes ending in ``_``. To be
savable they implement three hooks:

- ``_networks()``: the fitted networks by name;
- ``_fitted_statistics()``: ``(json_dict, arrays_dict)`` of everything else fit learned;
- ``_rebuild(statistics, arrays)``: set the fitted attributes from those statistics and build the
  networks with the exact architecture (untrained); :meth:`load` then fills their weights strictly.
"""

from __future__ import annotations

import abc
import inspect
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from torch import nn

from neurodiff.saving import load_modules_strict, read_model_folder, write_model_folder

E = TypeVar("E", bound="Estimator")


class NotFittedError(RuntimeError):
    """The estimator was used before ``fit`` (or ``load``)."""


class Estimator(abc.ABC):
    """Base class of neurodiff's estimators (see module docstring)."""

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [
            p.name for p in signature.parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters given to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: E, **params: Any) -> E:
        """Change hyperparameters (e.g. the sampler of a fitted model); returns self."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise ValueError(f"{type(self).__name__} has no hyperparameters {unknown}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = {k: v for k, v in self.get_params().items() if defaults.get(k) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    @classmethod
    def class_path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    def _check_fitted(self) -> None:
        if not getattr(self, "is_fitted_", False):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() or load() first")

    # ------------------------------------------------------------------ hooks
    @abc.abstractmethod
    def _networks(self) -> dict[str, nn.Module]:
        """The fitted networks, by name."""

    @abc.abstractmethod
    def _fitted_statistics(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything else fit learned: (JSON-able dict, dict of arrays)."""

    @abc.abstractmethod
    def _rebuild(self, statistics: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Set the fitted attributes from saved statistics and build untrained networks."""

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path, *, overwrite: bool = False) -> Path:
        """Write config.json, weights.safetensors and the fitted statistics to `directory`."""
        self._check_fitted()
        statistics, arrays = self._fitted_statistics()
        return write_model_folder(
            directory,
            class_path=self.class_path(),
            hyperparameters=_jsonable(self.get_params()),
            modules=self._networks(),
            statistics=statistics,
            arrays=arrays,
            overwrite=overwrite,
        )

    @classmethod
    def load(cls: type[E], directory: str | Path, *, device: str | None = None) -> E:
        """Rebuild the exact architecture from `directory` and load its weights strictly.

        `device` ("cpu", "cuda", "auto") replaces the device the model was fitted with, for what it
        computes from now on (e.g. a model fitted on a GPU, used on a laptop: ``device="cpu"``); a
        device that is not there is a ValueError before anything is read.
        """
        if device is not None:
            from neurodiff.training import resolve_device

            if "device" not in cls._param_names():
                raise ValueError(f"{cls.__name__} has no device to set")
            resolve_device(device)
        folder = read_model_folder(directory, expected_class=cls.class_path())
        params = folder.config["hyperparameters"]
        unknown = sorted(set(params) - set(cls._param_names()))
        if unknown:
            raise ValueError(f"{folder.path}/config.json has hyperparameters {unknown} that {cls.__name__} does not take")
        if device is not None:
            params["device"] = device
        estimator = cls(**params)
        estimator._rebuild(folder.statistics, folder.arrays)
        load_modules_strict(folder, estimator._networks())
        for network in estimator._networks().values():
            network.eval()
        estimator.is_fitted_ = True
        return estimator


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
