"""Saved-model folders (ARCHITECTURE.md): config.json, weights.safetensors, fitted statistics.

A folder holds:

- ``config.json``: ``{"format": 1, "class": "neurodiff.methods....", "neurodiff_version": ...,
  "hyperparameters": {...}, "modules": {name: number of tensors}}``;
- ``weights.safetensors``: every network's state dict, keys prefixed by the network's name;
- ``statistics.json`` (and ``statistics.npz`` for arrays): what fit learned besides weights.

No pickle anywhere: loading runs no code from the folder. Loading is strict: a missing file, another
class, missing or unexpected tensors and tensors of other shapes are errors that say which. A folder
saved by a newer neurodiff than the one installed loads with a warning.
"""

from __future__ import annotations

import json
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from neurodiff import __version__
from neurodiff.atomic import atomic_dir, write_json

FORMAT = 1
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
STATISTICS = "statistics.json"
ARRAYS = "statistics.npz"


class ModelFolderError(ValueError):
    """A saved-model folder is missing, incomplete, of another class or of another architecture."""


@dataclass
class ModelFolder:
    """The parsed contents of a saved-model folder."""

    path: Path
    config: dict[str, Any]
    statistics: dict[str, Any]
    arrays: dict[str, np.ndarray]
    tensors: dict[str, torch.Tensor] = field(repr=False)


def write_model_folder(
    directory: str | Path,
    *,
    class_path: str,
    hyperparameters: dict[str, Any],
    modules: dict[str, nn.Module],
    statistics: dict[str, Any],
    arrays: dict[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a model folder atomically (all files appear together, or none)."""
    directory = Path(directory)
    if directory.is_dir() and any(directory.iterdir()) and overwrite and not (directory / CONFIG).exists():
        raise FileExistsError(f"{directory} is not empty and is not a neurodiff model folder; refusing to replace it")
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().to("cpu").contiguous()
    config = {
        "format": FORMAT,
        "class": class_path,
        "neurodiff_version": __version__,
        "hyperparameters": hyperparameters,
        "modules": {name: len(module.state_dict()) for name, module in modules.items()},
    }
    with atomic_dir(directory, overwrite=overwrite) as tmp:
        write_json(tmp / CONFIG, config)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"class": class_path})
        write_json(tmp / STATISTICS, statistics)
        if arrays:
            np.savez(tmp / ARRAYS, **arrays)
    return directory


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string ("0.1.0+local" → (0, 1, 0)); () when it has none."""
    numbers = []
    for part in version.split("+")[0].split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        numbers.append(int(digits.group()))
    return tuple(numbers)


def read_model_folder(directory: str | Path, expected_class: str | None = None) -> ModelFolder:
    """Read and check a model folder; `expected_class` is the dotted class path it must name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelFolderError(f"model folder {directory} does not exist")
    for name in (CONFIG, WEIGHTS, STATISTICS):
        if not (directory / name).is_file():
            raise ModelFolderError(f"model folder {directory} is incomplete: {name} is missing")
    config = _read_json(directory / CONFIG)
    if not isinstance(config, dict) or "class" not in config or "hyperparameters" not in config:
        raise ModelFolderError(f"{directory / CONFIG} is not a neurodiff model config (no 'class' or 'hyperparameters')")
    saved = str(config.get("neurodiff_version", ""))
    if config.get("format") != FORMAT:
        written = config.get("format")
        newer = (f": it was saved by neurodiff {saved or '(unknown version)'}, and this is {__version__}; upgrade "
                 "neurodiff to load it") if isinstance(written, int) and written > FORMAT else ""
        raise ModelFolderError(f"{directory / CONFIG} has format {written!r}; this version reads {FORMAT}{newer}")
    if _release(saved) > _release(__version__):
        warnings.warn(f"{directory} was saved by neurodiff {saved}, newer than this {__version__}: it loads if its "
                      "format and architecture match, but upgrade neurodiff if it misbehaves", stacklevel=3)
    if expected_class is not None and config["class"] != expected_class:
        raise ModelFolderError(
            f"model folder {directory} holds a {config['class']}, not a {expected_class}; load it with that class"
        )
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFolderError(f"cannot read {directory / WEIGHTS}: {error}") from error
    arrays: dict[str, np.ndarray] = {}
    if (directory / ARRAYS).is_file():
        try:
            with np.load(directory / ARRAYS, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # truncated or corrupt
            raise ModelFolderError(f"cannot read {directory / ARRAYS}: {error}") from error
    return ModelFolder(directory, config, _read_json(directory / STATISTICS), arrays, tensors)


def load_modules_strict(folder: ModelFolder, modules: dict[str, nn.Module]) -> None:
    """Load each module's weights from the folder; any difference in names or shapes is an error."""
    expected: dict[str, torch.Size] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            expected[f"{name}.{key}"] = value.shape
    missing = sorted(set(expected) - set(folder.tensors))
    unexpected = sorted(set(folder.tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(folder.tensors) if folder.tensors[k].shape != expected[k])
    problems = []
    if missing:
        problems.append(f"missing tensors {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_few(unexpected)}")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} tensors of another shape, e.g. {k}: saved {tuple(folder.tensors[k].shape)}, "
            f"architecture {tuple(expected[k])}"
        )
    if problems:
        raise ModelFolderError(
            f"weights in {folder.path / WEIGHTS} do not fit the architecture described by its config: "
            + "; ".join(problems)
        )
    for name, module in modules.items():
        prefix = f"{name}."
        state = {k[len(prefix):]: v for k, v in folder.tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFolderError(f"cannot read {path}: {error}") from error


def _few(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return f"{shown} (and {len(names) - limit} more)" if len(names) > limit else shown
