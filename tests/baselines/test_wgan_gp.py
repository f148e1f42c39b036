import numpy as np
import pandas as pd
import pytest
import torch

from neurodiff.base import NotFittedError
from neurodiff.baselines.wgan_gp import ConditionalWGANGP, gradient_penalty
from neurodiff.evaluation.imputation import pearson_feature
from neurodiff.nets.gan import ConditionalCritic, ConditionalGenerator

TINY = dict(noise_dim=8, cond_emb_dim=16, generator_hidden=(32, 32), critic_hidden=(32, 32), progress=False)


def conditional_problem(n: int = 256, n_cond: int = 4, n_features: int = 6, seed: int = 0):
    """x2 = tanh(cond · A) + small noise, clipped to [-1, 1]."""
    rng = np.random.default_rng(seed)
    cond = rng.uniform(-1, 1, size=(n, n_cond))
    a = rng.normal(size=(n_cond, n_features))
    x2 = np.clip(np.tanh(cond @ a) + 0.05 * rng.normal(size=(n, n_features)), -1, 1)
    return x2, cond


def n_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_networks_have_the_papers_architecture():
    generator, critic = ConditionalGenerator(6, 4), ConditionalCritic(6, 4)
    x = generator(torch.randn(5, 100), torch.randn(5, 4))
    assert x.shape == (5, 6) and x.abs().max() <= 1.0
    assert critic(x, torch.randn(5, 4)).shape == (5,)
    widths = [m.out_features for m in generator.body if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 256, 512, 1024, 6]
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.4 for m in critic.body.modules()) == 1
    # SECONDGRAM's sizes: D = 769 features, C = 14 labels + 769 first-visit features
    assert n_parameters(ConditionalGenerator(769, 783)) == 1_724_545
    assert n_parameters(ConditionalCritic(769, 783)) == 989_185


def test_gradient_penalty_vanishes_for_a_unit_norm_linear_critic():
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(6, generator=generator)
    real, fake, cond = (torch.randn(32, k, generator=generator) for k in (6, 6, 3))

    def critic(x, c, scale=1.0):
        return x @ (scale * w / w.norm()) + c.sum(dim=1)

    assert gradient_penalty(critic, real, fake, cond, generator).item() == pytest.approx(0.0, abs=1e-10)
    steep = gradient_penalty(lambda x, c: critic(x, c, scale=3.0), real, fake, cond, generator)
    assert steep.item() == pytest.approx(4.0, rel=1e-5)  # (‖∇‖ − 1)² = (3 − 1)²


def test_learns_a_simple_conditional_problem():
    x2, cond = conditional_problem()
    model = ConditionalWGANGP(**TINY, epochs=40, batch_size=16, lr=3e-3).fit(x2, cond)
    predicted = model.predict(cond)
    assert predicted.shape == x2.shape
    assert np.abs(predicted).max() <= 1.0
    assert pearson_feature(x2, predicted) > 0.5
    history = model.history_
    assert len(history["critic_loss"]) == len(history["wasserstein"]) == 40
    assert history["critic_steps"] == 40 * 16 and history["generator_steps"] == 40 * 16 // 5
    samples = model.predict(cond[:10], n_samples=3)
    assert samples.shape == (3, 10, 6)
    assert not np.allclose(samples[0], samples[1])  # the noise matters


def test_a_fixed_seed_gives_identical_runs():
    x2, cond = conditional_problem(n=48)
    first = ConditionalWGANGP(**TINY, epochs=3, batch_size=16, seed=7).fit(x2, cond)
    second = ConditionalWGANGP(**TINY, epochs=3, batch_size=16, seed=7).fit(x2, cond)
    other = ConditionalWGANGP(**TINY, epochs=3, batch_size=16, seed=8).fit(x2, cond)
    np.testing.assert_array_equal(first.predict(cond), second.predict(cond))
    assert first.history_["critic_loss"] == second.history_["critic_loss"]
    assert not np.allclose(first.predict(cond), other.predict(cond))
    assert not np.allclose(first.predict(cond, seed=1), first.predict(cond, seed=2))


def test_save_and_load_give_identical_predictions(tmp_path):
    x2, cond = conditional_problem(n=48, n_cond=3, n_features=5)
    model = ConditionalWGANGP(**TINY, epochs=2, batch_size=16, betas=(0.0, 0.9)).fit(x2, cond)
    model.save(tmp_path / "gan")
    loaded = ConditionalWGANGP.load(tmp_path / "gan")
    assert loaded.n_features_ == 5 and loaded.n_cond_ == 3
    assert list(loaded.betas) == [0.0, 0.9] and list(loaded.generator_hidden) == [32, 32]
    np.testing.assert_array_equal(loaded.predict(cond, seed=3), model.predict(cond, seed=3))
    np.testing.assert_array_equal(loaded.predict(cond, n_samples=2), model.predict(cond, n_samples=2))


def test_validation_keeps_the_best_generator():
    x2, cond = conditional_problem(n=96)
    x2_val, cond_val = x2[64:], cond[64:]
    model = ConditionalWGANGP(**TINY, epochs=12, batch_size=16, lr=3e-3, patience=2)
    model.fit(x2[:64], cond[:64], validation=(cond_val, x2_val))
    scores = model.history_["validation"]
    assert 1 <= len(scores) <= 12 and len(scores) == len(model.history_["critic_loss"])
    assert model.history_["best_score"] == max(scores)
    assert scores[model.history_["best_epoch"]] == max(scores)
    if len(scores) < 12:  # stopped early: exactly `patience` epochs after the best one
        assert len(scores) - 1 - model.history_["best_epoch"] == 2
    # the kept generator is the best one: its validation sample scores the best score again
    regenerated = model.predict(cond_val, seed=model.seed + 1)
    assert pearson_feature(x2_val, regenerated) == pytest.approx(max(scores))


def test_bad_input_is_named():
    x2, cond = conditional_problem(n=10)
    with pytest.raises(ValueError, match="x2 has 10 rows but cond has 9"):
        ConditionalWGANGP(**TINY, epochs=1).fit(x2, cond[:9])
    with_nan = pd.DataFrame(cond.copy(), columns=["age", "sex", "x1_a", "x1_b"])
    with_nan.loc[3, "x1_a"] = np.nan
    with pytest.raises(ValueError, match="cond has missing or non-finite values in column 'x1_a'"):
        ConditionalWGANGP(**TINY, epochs=1).fit(x2, with_nan)
    x2_nan = x2.copy()
    x2_nan[0, 2] = np.inf
    with pytest.raises(ValueError, match="x2 has missing or non-finite values in column 2"):
        ConditionalWGANGP(**TINY, epochs=1).fit(x2_nan, cond)
    with pytest.raises(ValueError, match="n_critic must be a positive integer"):
        ConditionalWGANGP(**TINY, n_critic=0).fit(x2, cond)
    with pytest.raises(ValueError, match="validation has 6 x2 and 3 cond columns"):
        ConditionalWGANGP(**TINY, epochs=1).fit(x2, cond, validation=(cond[:, :3], x2))
    with pytest.raises(NotFittedError):
        ConditionalWGANGP(**TINY).predict(cond)
    with pytest.warns(UserWarning, match="outside \\[-1, 1\\]"):
        model = ConditionalWGANGP(**TINY, epochs=1).fit(3 * x2, cond)
    with pytest.raises(ValueError, match="cond has 2 columns, the model was fitted with 4"):
        model.predict(cond[:, :2])
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        model.predict(cond, n_samples=0)
