"""Shared test settings: deterministic, single-threaded torch (fast and reproducible on 2 cores)."""

import pytest
import torch

from neurodiff.data.image_manifest import load_images, read_manifest


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


def pytest_configure(config):
    torch.set_num_threads(1)


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
