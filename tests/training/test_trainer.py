import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from neurodiff.diffusion import Diffusion
from neurodiff.nets import MLPUNet
from neurodiff.training import EarlyStopping, GradientManipulation, TensorData, Trainer

DIFFUSION = Diffusion.from_schedule("linear", 100, start=0.0015, end=0.02)


def make_net(seed=0):
    torch.manual_seed(seed)
    return MLPUNet(4, cond_dim=2, hidden=(16, 8), emb_dim=8)


def make_data(n=40):
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(n, 2, generator=g)
    x = torch.tanh(cond @ torch.randn(2, 4, generator=g))
    return TensorData(x=x, cond=cond)


def diffusion_loss(net, batch, generator):
    return DIFFUSION.loss(net, batch["x"], batch["cond"], generator=generator)


def weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class _Interrupt(Exception):
    """What :func:`_stop_at` raises to kill a run mid-way."""


def _stop_at(step):
    """An ``on_step`` callback that interrupts training after `step` steps."""

    def on_step(pos, loss):
        if pos.step == step:
            raise _Interrupt

    return on_step


def test_training_reduces_the_loss_and_is_reproducible():
    trainer = Trainer(max_epochs=30, batch_size=8, lr=3e-3, seed=3, progress=False)
    a = trainer.fit(make_net(), diffusion_loss, make_data())
    b = Trainer(max_epochs=30, batch_size=8, lr=3e-3, seed=3, progress=False).fit(make_net(), diffusion_loss, make_data())
    assert len(a.history["loss"]) == 30 * 5 and len(a.history["epoch_loss"]) == 30
    assert a.history["epoch_loss"][-1] < 0.7 * a.history["epoch_loss"][0]
    assert torch.equal(weights(a.model), weights(b.model))
    c = Trainer(max_epochs=30, batch_size=8, lr=3e-3, seed=4, progress=False).fit(make_net(), diffusion_loss, make_data())
    assert not torch.equal(weights(a.model), weights(c.model))


def test_max_steps_stops_mid_epoch():
    result = Trainer(max_steps=7, batch_size=8, progress=False).fit(make_net(), diffusion_loss, make_data())
    assert len(result.history["loss"]) == 7


def test_injected_huge_gradient_is_skipped_in_training():
    calls = {"n": 0}

    def loss_with_spike(net, batch, generator):
        calls["n"] += 1
        loss = diffusion_loss(net, batch, generator)
        if calls["n"] == 15:
            return loss * 2  # an ordinary-sized spike: clipped, not skipped
        return loss * 1e6 if calls["n"] == 12 else loss  # one step whose gradient explodes

    net = make_net()
    policy = GradientManipulation.calibrated()
    result = Trainer(max_epochs=3, batch_size=8, gradient_manipulation=policy, progress=False).fit(
        net, loss_with_spike, make_data()
    )
    norms = result.history["calibration_norms"]
    assert len(norms) == 5  # one preliminary pass over 40 rows in batches of 8
    assert policy.clip == pytest.approx(sum(norms) / len(norms))
    assert policy.skip == pytest.approx(3 * max(norms))
    # call 12 is training step 7 (steps are counted from 0 after the 5 calibration calls)
    assert result.history["skipped_steps"] == [6] and result.history["skipped"] == 1
    assert result.history["grad_norm"][9] > policy.clip and result.history["clipped"] >= 1
    assert all(math.isfinite(v) for v in weights(result.model).tolist())


def test_calibration_after_warmup():
    policy = GradientManipulation.calibrated()
    result = Trainer(max_epochs=3, batch_size=8, gradient_manipulation=policy, calibration_warmup=7,
                     progress=False).fit(make_net(), diffusion_loss, make_data())
    assert result.history["calibrated_at_step"] == 7 and len(result.history["calibration_norms"]) == 5
    assert result.history["thresholds"]["clip"] == pytest.approx(sum(result.history["calibration_norms"]) / 5)
    with pytest.raises(ValueError, match="calibration_warmup must be >= 0"):
        Trainer(max_steps=1, calibration_warmup=-1)


def test_resume_across_a_warmup_calibration(tmp_path):
    settings = dict(max_epochs=4, batch_size=8, lr=3e-3, seed=2, progress=False, calibration_warmup=9)
    full = Trainer(**settings, gradient_manipulation=GradientManipulation.calibrated()).fit(
        make_net(), diffusion_loss, make_data())

    with pytest.raises(_Interrupt):
        Trainer(**settings, gradient_manipulation=GradientManipulation.calibrated(), checkpoint_dir=tmp_path,
                checkpoint_every=4, on_step=_stop_at(14)).fit(make_net(), diffusion_loss, make_data())
    resumed = Trainer(**settings, gradient_manipulation=GradientManipulation.calibrated(), checkpoint_dir=tmp_path,
                      checkpoint_every=4).fit(make_net(), diffusion_loss, make_data())
    assert torch.equal(weights(resumed.model), weights(full.model))


def test_skipped_step_leaves_weights_untouched():
    net = make_net()
    before = weights(net).clone()
    policy = GradientManipulation.fixed(clip=1e-9, skip=1e-9)  # every step is "huge"
    result = Trainer(max_steps=3, batch_size=8, gradient_manipulation=policy, progress=False).fit(
        net, diffusion_loss, make_data()
    )
    assert result.history["skipped"] == 3
    assert torch.equal(weights(result.model), before)


def test_ema_tracks_the_weights():
    net = make_net()
    start = weights(net).clone()
    result = Trainer(max_steps=20, batch_size=8, ema_decay=0.9, lr=1e-2, progress=False).fit(
        net, diffusion_loss, make_data()
    )
    assert result.model is not net and not result.model.training
    ema, raw = weights(result.model), weights(net)
    assert not torch.equal(ema, raw) and not torch.equal(ema, start)
    assert (ema - start).norm() < (raw - start).norm()  # an average lags behind


def test_early_stopping_keeps_the_best_model_and_stops():
    scores = iter([0.1, 0.5, 0.4, 0.3, 0.2, 0.9])
    snapshots = []

    def score(model):
        snapshots.append(weights(model).clone())
        return next(scores)

    stopper = EarlyStopping(score, patience=3, mode="max")
    result = Trainer(max_epochs=50, batch_size=8, early_stopping=stopper, progress=False).fit(
        make_net(), diffusion_loss, make_data()
    )
    assert [v["score"] for v in result.history["validation"]] == [0.1, 0.5, 0.4, 0.3, 0.2]
    assert result.history["best_score"] == 0.5 and result.history["best_step"] == 10
    assert torch.equal(weights(result.model), snapshots[1])


def test_validate_every_steps():
    stopper = EarlyStopping(lambda m: 0.0, patience=None)
    result = Trainer(max_steps=12, batch_size=8, validate_every=4, early_stopping=stopper, progress=False).fit(
        make_net(), diffusion_loss, make_data()
    )
    assert [v["step"] for v in result.history["validation"]] == [4, 8, 12]


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    settings = dict(max_epochs=4, batch_size=8, lr=3e-3, seed=5, ema_decay=0.9, progress=False)
    policy = GradientManipulation.calibrated
    full = Trainer(**settings, gradient_manipulation=policy()).fit(make_net(), diffusion_loss, make_data())

    ckpt = tmp_path / "run"
    with pytest.raises(_Interrupt):
        Trainer(**settings, gradient_manipulation=policy(), checkpoint_dir=ckpt, checkpoint_every=3,
                on_step=_stop_at(13)).fit(make_net(), diffusion_loss, make_data())
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint.pt"]  # no temporary files left
    resumed = Trainer(**settings, gradient_manipulation=policy(), checkpoint_dir=ckpt, checkpoint_every=3).fit(
        make_net(seed=99), diffusion_loss, make_data()
    )
    assert resumed.history["resumed_at_step"] == 12
    assert torch.equal(weights(resumed.model), weights(full.model))
    assert resumed.history["loss"] == full.history["loss"]
    assert resumed.history["epoch_loss"] == full.history["epoch_loss"]  # epoch 2 began before the interruption


def test_step_log_entries_are_checkpointed_and_survive_a_resume(tmp_path):
    """The step log of the checkpoint's step is in the checkpoint: asked for before that step's save."""
    settings = dict(max_steps=10, batch_size=8, lr=3e-3, seed=5, progress=False)

    def step_log(step):
        return {"step_squared": step * step} if step % 2 == 0 else None

    full = Trainer(**settings, step_log=step_log).fit(make_net(), diffusion_loss, make_data())
    assert full.history["step_log"] == [{"step": s, "step_squared": float(s * s)} for s in (2, 4, 6, 8, 10)]
    ckpt = tmp_path / "run"
    with pytest.raises(_Interrupt):  # checkpoint at step 6, killed after step 7
        Trainer(**settings, step_log=step_log, checkpoint_dir=ckpt, checkpoint_every=3,
                on_step=_stop_at(7)).fit(make_net(), diffusion_loss, make_data())
    resumed = Trainer(**settings, step_log=step_log, checkpoint_dir=ckpt, checkpoint_every=3).fit(
        make_net(), diffusion_loss, make_data())
    assert resumed.history["resumed_at_step"] == 6
    assert resumed.history["step_log"] == full.history["step_log"]


def test_a_finished_run_continues_when_given_more_steps(tmp_path):
    settings = dict(batch_size=8, lr=3e-3, seed=5, progress=False)
    straight = Trainer(**settings, max_steps=10).fit(make_net(), diffusion_loss, make_data())
    Trainer(**settings, max_steps=6, checkpoint_dir=tmp_path).fit(make_net(), diffusion_loss, make_data())
    extended = Trainer(**settings, max_steps=10, checkpoint_dir=tmp_path).fit(make_net(), diffusion_loss, make_data())
    assert extended.history["resumed_at_step"] == 6 and len(extended.history["loss"]) == 10
    assert torch.equal(weights(extended.model), weights(straight.model))


def test_an_early_stopped_run_stays_stopped(tmp_path):
    def run(max_epochs):
        stopper = EarlyStopping(lambda m: 0.0, patience=2, mode="max")
        return Trainer(max_epochs=max_epochs, batch_size=8, early_stopping=stopper, checkpoint_dir=tmp_path,
                       progress=False).fit(make_net(), diffusion_loss, make_data())

    first = run(20)
    assert len(first.history["validation"]) == 3  # best, then two without improvement
    again = run(40)
    assert again.history["loss"] == first.history["loss"]


def test_resume_with_other_settings_is_refused(tmp_path):
    Trainer(max_steps=3, batch_size=8, checkpoint_dir=tmp_path, progress=False).fit(
        make_net(), diffusion_loss, make_data()
    )
    with pytest.raises(ValueError, match="batch_size=8, this run has batch_size=4"):
        Trainer(max_steps=6, batch_size=4, checkpoint_dir=tmp_path, progress=False).fit(
            make_net(), diffusion_loss, make_data()
        )


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from test_trainer import Trainer, diffusion_loss, make_data, make_net
    def kill(pos, loss):
        if pos.step == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    torch.set_num_threads(1)
    Trainer(max_epochs=4, batch_size=8, lr=3e-3, seed=7, progress=False, checkpoint_dir=sys.argv[1],
            checkpoint_every=4, on_step=kill).fit(make_net(), diffusion_loss, make_data())
    """
)


def test_a_killed_process_resumes_to_the_same_weights(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN.format(tests=str(Path(__file__).parent)))
    ckpt = tmp_path / "ckpt"
    proc = subprocess.run([sys.executable, str(script), str(ckpt), "10"], capture_output=True, env=os.environ)
    assert proc.returncode == -9, proc.stderr.decode()  # really killed (SIGKILL) at step 10
    resumed = Trainer(max_epochs=4, batch_size=8, lr=3e-3, seed=7, progress=False, checkpoint_dir=ckpt,
                      checkpoint_every=4).fit(make_net(), diffusion_loss, make_data())
    full = Trainer(max_epochs=4, batch_size=8, lr=3e-3, seed=7, progress=False).fit(
        make_net(), diffusion_loss, make_data()
    )
    assert resumed.history["resumed_at_step"] == 8
    assert torch.equal(weights(resumed.model), weights(full.model))


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="max_epochs or max_steps"):
        Trainer()
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        Trainer(max_steps=1, batch_size=0)
    with pytest.raises(ValueError, match="fp16 mixed precision needs a CUDA device"):
        Trainer(max_steps=1, precision="fp16", progress=False).fit(make_net(), diffusion_loss, make_data())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Trainer(max_steps=1, device="cuda", progress=False).fit(make_net(), diffusion_loss, make_data())
    with pytest.raises(ValueError, match="empty"):
        Trainer(max_steps=1, progress=False).fit(make_net(), diffusion_loss, TensorData(x=torch.zeros(0, 4)))


@pytest.mark.filterwarnings("ignore:this CPU has no native bf16")  # the warning is tested below
def test_bf16_autocast_runs_on_cpu():
    result = Trainer(max_steps=2, batch_size=8, precision="bf16", progress=False).fit(
        make_net(), diffusion_loss, make_data()
    )
    assert all(math.isfinite(v) for v in result.history["loss"])


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_native_bf16_warns_that_it_is_slow(monkeypatch, recwarn, native):
    import neurodiff.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_flags", lambda: frozenset({"avx2", "fma", *(["avx512_bf16"] * native)}))
    Trainer(max_steps=1, batch_size=8, precision="bf16", progress=False).fit(make_net(), diffusion_loss, make_data())
    slow = [w for w in recwarn if "no native bf16" in str(w.message)]
    assert len(slow) == (0 if native else 1)


def _fp16_on_cpu(monkeypatch):
    """Let the fp16 path (GradScaler and float16 autocast) run on CPU, where it is otherwise refused."""
    import neurodiff.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "FP16_DEVICE_TYPES", ("cuda", "cpu"))


def _linear_sum_loss(factor):
    """Loss ``factor · Σ net(x)``: its gradient at every fp16 output of the layer is `factor`."""
    return lambda net, batch, generator: factor * net(batch["x"]).float().sum()


def _linear():
    torch.manual_seed(0)
    return nn.Linear(4, 1)


def test_fp16_loss_scale_overflows_are_counted_apart_from_skipped_steps(monkeypatch):
    _fp16_on_cpu(monkeypatch)
    data = TensorData(x=torch.randn(16, 4, generator=torch.Generator().manual_seed(0)))
    before = weights(_linear())
    # GradScaler starts at 65536: the fp16 gradients (65536 at the output, more at the weights) overflow
    # fp16's 65504 until the scale has halved a few times; then every step is finite
    result = Trainer(max_steps=12, batch_size=16, precision="fp16", progress=False).fit(
        _linear(), _linear_sum_loss(1.0), data)
    finite = [math.isfinite(v) for v in result.history["grad_norm"]]
    overflows = finite.index(True)
    assert overflows >= 1 and all(finite[overflows:])
    assert result.history["scaler_overflows"] == overflows
    assert result.history["skipped"] == 0 and result.history["skipped_steps"] == []
    assert not torch.equal(weights(result.model), before)


def test_fp16_calibration_scales_the_loss_like_training(monkeypatch):
    _fp16_on_cpu(monkeypatch)
    data = TensorData(x=torch.randn(16, 4, generator=torch.Generator().manual_seed(0)))

    def norms(precision, factor):
        trainer = Trainer(max_steps=1, batch_size=8, precision=precision, progress=False,
                          gradient_manipulation=GradientManipulation.calibrated())
        return trainer.fit(_linear(), _linear_sum_loss(factor), data).history["calibration_norms"]

    # 1e-8 underflows to zero in fp16 unless scaled; 1.0 overflows at the first scale and is redone
    for factor in (1e-8, 1.0):
        expected = norms("fp32", factor)
        assert norms("fp16", factor) == pytest.approx(expected, rel=2e-3)
        assert min(expected) > 0


class _Squares(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"x": torch.full((4,), float(i) / 10), "cond": torch.zeros(2)}


def test_map_style_datasets_are_batched_in_seeded_order():
    seen = []

    def loss(net, batch, generator):
        seen.append(batch["x"][:, 0].tolist())
        return diffusion_loss(net, batch, generator)

    Trainer(max_epochs=1, batch_size=4, progress=False).fit(make_net(), loss, _Squares())
    assert [len(b) for b in seen] == [4, 4, 2]
    assert sorted(v for b in seen for v in b) == pytest.approx([i / 10 for i in range(10)])
    assert nn.Module  # keep import used


class _WithDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net, self.drop = make_net(), nn.Dropout(0.5)

    def forward(self, x, t, cond=None):
        return self.net(self.drop(x), t, cond)


def test_a_torch_dataset_with_dropout_resumes_to_the_same_weights(tmp_path):
    """The DataLoader of a torch Dataset must not draw from the global generator that dropout uses: a
    resumed run starts one more epoch iterator than an unbroken one."""
    settings = dict(max_epochs=4, batch_size=4, lr=3e-3, seed=2, progress=False)
    torch.manual_seed(0)
    full = Trainer(**settings).fit(_WithDropout(), diffusion_loss, _Squares())

    with pytest.raises(_Interrupt):
        Trainer(**settings, checkpoint_dir=tmp_path, checkpoint_every=4, on_step=_stop_at(5)).fit(
            _WithDropout(), diffusion_loss, _Squares())
    resumed = Trainer(**settings, checkpoint_dir=tmp_path).fit(_WithDropout(), diffusion_loss, _Squares())
    assert resumed.history["resumed_at_step"] == 4  # mid-epoch (3 batches per epoch)
    assert resumed.history["loss"] == full.history["loss"]
    assert torch.equal(weights(resumed.model), weights(full.model))
