"""Shared test settings: deterministic, single-threaded torch (fast and reproducible on 2 cores)."""

import os

import pytest
import torch

from neurodiff.data.image_manifest import load_images, read_manifest


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    torch.set_num_threads(1)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `make test` runs two workers on the two cores: what a test starts (the demo's CLI child processes,
        # ITK filters, numba) gets one thread too. Two threads there, with the other worker busy, made
        # the smoke demo twice as slow (OpenMP threads waiting for a core).
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, "1")


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


#: Test files whose module fixtures run for minutes (the smoke demo, preprocessing real heads, torchrun
#: launches), longest first. They are collected first so that `make test`'s two workers (pytest-xdist,
#: one file at a time, in collection order) start with them instead of finishing on them.
LONG_FILES = ("test_demo.py", "test_cli_preprocess.py", "test_preprocess.py", "test_distributed.py",
              "test_impute_benchmark.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONG_FILES.index(name) if name in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: the order within a file, and of the other files, is kept


@pytest.fixture(scope="session")
def tiny_image_cohort(tmp_path_factory):
    """A synthetic cohort on the real MNI152 anatomy: 32×32 slices, two sites, 16 controls and two
    travellers imaged at both sites. Returns (manifest path, checked manifest frame, images)."""
    from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort

    folder = tmp_path_factory.mktemp("tiny-image-cohort") / "cohort"
    config = ImageCohortConfig.quick(size=32, n_sites=2, n_controls=16, n_travellers=2, n_patients=0)
    generate_image_cohort(config, folder, progress=False)
    frame = read_manifest(folder / "manifest.csv")
    images, _ = load_images(frame)
    return folder / "manifest.csv", frame, images


@pytest.fixture(scope="session")
def tiny_patient_cohort(tmp_path_factory):
    """A synthetic cohort with ALS-like patients: 32×32 slices, two sites, 40 controls and 30 patients
    (severity, survival time and event known). Returns (manifest path, checked manifest frame, images)."""
    from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort

    folder = tmp_path_factory.mktemp("tiny-patient-cohort") / "cohort"
    config = ImageCohortConfig.quick(size=32, n_sites=2, n_controls=40, n_travellers=0, n_patients=30)
    generate_image_cohort(config, folder, progress=False)
    frame = read_manifest(folder / "manifest.csv")
    images, _ = load_images(frame)
    return folder / "manifest.csv", frame, images
