import json
import shutil

import numpy as np
import pytest

from neurodiff.base import NotFittedError
from neurodiff.methods.feature_diffusion import FeatureDiffusion
from neurodiff.saving import ModelFolderError

TINY = dict(hidden=(16, 8), emb_dim=8, max_epochs=2, batch_size=32, progress=False)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    cond = rng.normal(size=(64, 2))
    return np.tanh(cond @ rng.normal(size=(2, 5))) * 10 + 3, cond


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):
    model = FeatureDiffusion(**TINY).fit(*data)
    path = model.save(tmp_path_factory.mktemp("models") / "model")
    return model, path


def test_folder_layout(saved):
    _, path = saved
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "statistics.json", "statistics.npz", "weights.safetensors",
    ]
    config = json.loads((path / "config.json").read_text())
    assert config["class"] == "neurodiff.methods.feature_diffusion.FeatureDiffusion"
    assert config["hyperparameters"]["hidden"] == [16, 8] and config["neurodiff_version"]


def test_save_load_gives_identical_outputs(saved, data):
    model, path = saved
    again = FeatureDiffusion.load(path)
    np.testing.assert_array_equal(again.sample(cond=data[1][:8], seed=3), model.sample(cond=data[1][:8], seed=3))
    assert again.get_params() == {**model.get_params(), "hidden": [16, 8]}  # JSON has lists, not tuples


def test_load_on_another_device_than_the_one_fitted_on(saved, data, tmp_path):
    """A model fitted on a GPU, used where there is none: load(..., device="cpu") replaces the device."""
    model, path = saved
    folder = _copy(path, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["hyperparameters"]["device"] = "cuda:7"
    (folder / "config.json").write_text(json.dumps(config))
    again = FeatureDiffusion.load(folder, device="cpu")
    assert again.device == "cpu"
    np.testing.assert_array_equal(again.sample(cond=data[1][:4], seed=1), model.sample(cond=data[1][:4], seed=1))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device='cpu'"):
            FeatureDiffusion.load(folder).sample(cond=data[1][:4], seed=1)


def test_a_folder_from_a_newer_neurodiff_loads_with_a_warning(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["neurodiff_version"] = "99.0.0"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="saved by neurodiff 99.0.0, newer than"):
        FeatureDiffusion.load(folder)


def test_a_folder_in_a_newer_format_names_the_version_that_wrote_it(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config.update(neurodiff_version="99.0.0", format=config["format"] + 1)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="saved by neurodiff 99.0.0.*upgrade neurodiff"):
        FeatureDiffusion.load(folder)


def _copy(path, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(path, target)
    return target


def test_missing_file_is_a_clear_error(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="incomplete: weights.safetensors is missing"):
        FeatureDiffusion.load(folder)
    with pytest.raises(ModelFolderError, match="does not exist"):
        FeatureDiffusion.load(tmp_path / "nowhere")


def test_other_class_is_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["class"] = "neurodiff.methods.normative.NormativeDiffAE"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="holds a neurodiff.methods.normative.NormativeDiffAE"):
        FeatureDiffusion.load(folder)


def test_weights_of_other_shapes_are_refused(saved, data, tmp_path):
    other = FeatureDiffusion(**{**TINY, "hidden": (16, 4)}).fit(*data).save(tmp_path / "other")
    folder = _copy(saved[1], tmp_path)
    shutil.copy(other / "weights.safetensors", folder / "weights.safetensors")
    with pytest.raises(ModelFolderError, match=r"tensors of another shape, e\.g\. denoiser\..*saved \(4"):
        FeatureDiffusion.load(folder)


def test_missing_and_unexpected_tensors_are_named(saved, data, tmp_path):
    other = FeatureDiffusion(**{**TINY, "residual_blocks": 1}).fit(*data).save(tmp_path / "other")
    folder = _copy(saved[1], tmp_path)
    shutil.copy(other / "weights.safetensors", folder / "weights.safetensors")
    with pytest.raises(ModelFolderError, match=r"missing tensors denoiser\.mid\.1\."):
        FeatureDiffusion.load(folder)


def test_corrupt_files_are_clear_errors(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    (folder / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFolderError, match="cannot read .*weights.safetensors"):
        FeatureDiffusion.load(folder)
    folder2 = _copy(saved[1], tmp_path / "b")
    (folder2 / "config.json").write_text("{ half a json")
    with pytest.raises(ModelFolderError, match="cannot read .*config.json"):
        FeatureDiffusion.load(folder2)
    folder3 = _copy(saved[1], tmp_path / "c")
    arrays = folder3 / "statistics.npz"
    arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])  # a copy cut short
    with pytest.raises(ModelFolderError, match="cannot read .*statistics.npz"):
        FeatureDiffusion.load(folder3)


def test_save_refuses_to_overwrite_unless_asked(saved, tmp_path):
    model, _ = saved
    target = tmp_path / "m"
    model.save(target)
    with pytest.raises(FileExistsError, match="not empty"):
        model.save(target)
    model.save(target, overwrite=True)
    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a neurodiff model folder"):
        model.save(stranger, overwrite=True)
    assert (stranger / "holiday.jpg").exists()


def test_unfitted_model_cannot_be_used():
    with pytest.raises(NotFittedError, match="not fitted"):
        FeatureDiffusion().save("/tmp/never")
    with pytest.raises(NotFittedError):
        FeatureDiffusion().sample(3)
