"""The one training loop every neurodiff model is trained with.

Features: Adam/AdamW, EMA of weights, SECONDGRAM's gradient manipulation (fixed or calibrated
thresholds), early stopping on a validation score keeping the best weights, seeded and resumable
batch order, atomic checkpoints every N steps and exact resume on CPU, device choice and mixed
precision (bf16 / fp16) on GPU, a progress bar, and data-parallel training when launched by
``torchrun`` (see :mod:`neurodiff.training.distributed`: the batch size is then the global one).

A run killed and resumed from its last checkpoint ends with the same weights as an uninterrupted
run: the checkpoint holds the model, optimiser, EMA, gradient thresholds, early-stopping state,
history, the position in the epoch and every random-number generator the loop uses.

>>> trainer = Trainer(max_epochs=100, batch_size=256, lr=1e-3, seed=0)
>>> result = trainer.fit(net, lambda net, batch, g: diffusion.loss(net, batch["x"], generator=g),
...                      TensorData(x=features))
>>> result.model, result.history["loss"]
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from neurodiff.training import distributed
from neurodiff.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from neurodiff.training.data import TensorData, batches_per_epoch, epoch_order, iterate_batches, to_device
from neurodiff.training.early_stopping import EarlyStopping
from neurodiff.training.ema import EMA
from neurodiff.training.gradients import GradientManipulation, global_grad_norm

LossFn = Callable[[nn.Module, Any, torch.Generator], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]
Precision = Literal["fp32", "bf16", "fp16"]
# rank r of a torchrun launch seeds its noise with seed + r·stride (rank 0 draws as a one-process run)
RANK_SEED_STRIDE = 1_000_003
# fp16 autocast with loss scaling is offered on these devices only (fp16 on CPU is slow and pointless)
FP16_DEVICE_TYPES: tuple[str, ...] = ("cuda",)
# the calibration pass halves the fp16 loss scale until the gradients are finite, down to this
MIN_LOSS_SCALE = 2.0**-24


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns.

    model:
        The model to use for inference: the EMA copy when EMA is on, else the trained model; with
        early stopping, holding the best validated weights.
    history:
        Per-step losses and gradient norms, gradient-manipulation counts (``skipped``, ``clipped``;
        fp16's loss-scale overflows apart, in ``scaler_overflows``), validation scores, timing.
    """

    model: nn.Module
    history: dict[str, Any]


@dataclass
class _Position:
    epoch: int = 0
    batch: int = 0  # next batch of the epoch
    step: int = 0  # iterations done (skipped updates included)
    done: bool = False


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. not on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool | None:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX); None when it cannot be told."""
    flags = cpu_flags()
    return bool(flags & {"avx512_bf16", "amx_bf16"}) if flags else None


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" → cuda when available else cpu; a name that is not a device, or a cuda device that is not
    there, is a ValueError that says what to use."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a device; use cpu, cuda (or cuda:N) or auto") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available on this machine; use "
                         "--device cpu (in Python: device='cpu', or Model.load(folder, device='cpu'))")
    return device


class Trainer:
    """Hyperparameters of a training run; :meth:`fit` runs it.

    Parameters
    ----------
    max_epochs, max_steps:
        Stop after this many passes over the data / iterations (at least one must be given).
    batch_size, lr, optimizer, weight_decay:
        Optimisation: "adam" (default) or "adamw".
    ema_decay:
        Keep an exponential moving average of the weights with this decay (None: off).
    gradient_manipulation:
        A :class:`GradientManipulation` policy (None: plain updates).
    calibration_warmup:
        With a calibrated policy: plain updates for this many steps, then the calibration pass on
        the current weights (0: calibrate before training, as the SECONDGRAM paper does).
    early_stopping:
        An :class:`EarlyStopping` with the validation score (None: no validation).
    validate_every:
        Validate every this many steps (None: at the end of every epoch).
    checkpoint_dir, checkpoint_every:
        Where and how often (in steps) to write the checkpoint; also written at each epoch end
        when `checkpoint_every` is None, and at the end of training.
    resume:
        Continue from the checkpoint in `checkpoint_dir` when there is one.
    step_log:
        Called with the step number after every update, before that step's checkpoint: a dict it
        returns is kept in ``history["step_log"]`` as ``{"step": s, **values}``, checkpointed with the
        rest of the history, so a resumed run has the entries from before the interruption (e.g.
        DiffAE's latent sensitivity). None or an empty dict: nothing kept.
    seed:
        Seeds batch order, noise, timesteps and dropout: CPU runs are exactly reproducible.
        Under torchrun, every rank uses the same batch order and its own noise.
    device, precision:
        "cpu", "cuda", "cuda:1" or "auto"; "fp32", "bf16" or "fp16" (fp16 only on CUDA).
    """

    def __init__(
        self,
        *,
        max_epochs: int | None = None,
        max_steps: int | None = None,
        batch_size: int = 256,
        lr: float = 1e-3,
        optimizer: Literal["adam", "adamw"] = "adam",
        weight_decay: float = 0.0,
        ema_decay: float | None = None,
        gradient_manipulation: GradientManipulation | None = None,
        calibration_warmup: int = 0,
        early_stopping: EarlyStopping | None = None,
        validate_every: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        resume: bool = True,
        seed: int = 0,
        device: str | torch.device = "cpu",
        precision: Precision = "fp32",
        num_workers: int = 0,
        progress: bool = True,
        description: str = "training",
        on_step: Callable[[_Position, float], None] | None = None,
        step_log: Callable[[int], dict[str, float] | None] | None = None,
    ):
        if max_epochs is None and max_steps is None:
            raise ValueError("give max_epochs or max_steps")
        for name, value in (("max_epochs", max_epochs), ("max_steps", max_steps), ("batch_size", batch_size),
                            ("validate_every", validate_every), ("checkpoint_every", checkpoint_every)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {optimizer!r}")
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'fp32', 'bf16' or 'fp16', got {precision!r}")
        self.max_epochs, self.max_steps, self.batch_size = max_epochs, max_steps, batch_size
        self.lr, self.optimizer, self.weight_decay, self.ema_decay = lr, optimizer, weight_decay, ema_decay
        if calibration_warmup < 0:
            raise ValueError(f"calibration_warmup must be >= 0, got {calibration_warmup}")
        self.gradient_manipulation, self.early_stopping = gradient_manipulation, early_stopping
        self.calibration_warmup = calibration_warmup
        self.validate_every, self.checkpoint_every = validate_every, checkpoint_every
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume, self.seed, self.device, self.precision = resume, seed, device, precision
        self.num_workers, self.progress, self.description, self.on_step = num_workers, progress, description, on_step
        self.step_log = step_log

    # ------------------------------------------------------------------ public
    def fit(self, model: nn.Module, loss_fn: LossFn, data: TensorData | Dataset) -> TrainResult:
        """Train `model` on `data` with ``loss_fn(model, batch, generator)``; return the result."""
        n = len(data)
        if n == 0:
            raise ValueError("the training data are empty")
        group = self.group = distributed.current()
        device = distributed.device_for(group, resolve_device(self.device))
        if self.precision == "fp16" and device.type not in FP16_DEVICE_TYPES:
            raise ValueError("fp16 mixed precision needs a CUDA device; use precision='bf16' or 'fp32' on CPU")
        if group.active and self.batch_size < group.world_size:
            raise ValueError(f"batch size {self.batch_size} is smaller than the {group.world_size} processes of this "
                             "torchrun launch; the batch size is the global one, shared between them")
        if self.precision == "bf16" and device.type == "cpu" and cpu_has_native_bf16() is False:
            warnings.warn("this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 autocast emulates it and is "
                          "several times slower than fp32 here (measured 15 against 128 GFLOP/s on an AVX2-only "
                          "CPU); use precision='fp32'", RuntimeWarning, stacklevel=2)
        distributed.join(group, device)
        model.to(device).train()
        replica = distributed.wrap(model, group, device)
        opt = self._make_optimizer(model)
        scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        ema = EMA(model, self.ema_decay) if self.ema_decay else None
        eval_model = ema.model if ema else model
        generator = torch.Generator(device).manual_seed(self.seed + RANK_SEED_STRIDE * group.rank)
        torch.manual_seed(self.seed + RANK_SEED_STRIDE * group.rank)
        pos, history = _Position(), _new_history()
        per_epoch = batches_per_epoch(n, self.batch_size, group.world_size)
        if per_epoch == 0:
            raise ValueError(f"{n} training rows cannot be shared between {group.world_size} processes")
        total = min(self.max_steps or math.inf, (self.max_epochs or math.inf) * per_epoch)

        ckpt_path = self.checkpoint_dir / CHECKPOINT_NAME if self.checkpoint_dir else None
        if ckpt_path is not None and self.resume and ckpt_path.exists():
            pos = self._restore(ckpt_path, n, model, opt, scaler, ema, generator, history)
            # a finished run continues when this run allows more steps, unless early stopping ended it
            stopped = self.early_stopping is not None and self.early_stopping.patience is not None and (
                self.early_stopping.bad_validations >= self.early_stopping.patience)
            pos.done = stopped or pos.step >= total
        elif self._calibration_due(pos):
            self._calibrate(replica, model, loss_fn, data, device, history, scaler)
        history["thresholds"] = self.gradient_manipulation.to_dict() if self.gradient_manipulation else None

        started = time.perf_counter()
        cleanup = contextlib.ExitStack()
        cleanup.enter_context(_flush_denormals(device))
        bar = tqdm(total=total, initial=pos.step, desc=self.description,
                   disable=not (self.progress and group.is_main), leave=False)
        save = lambda: self._save(ckpt_path, n, pos, model, opt, scaler, ema, generator, history)  # noqa: E731
        try:
            while not pos.done:
                order = epoch_order(n, self.seed, pos.epoch)
                for batch, n_batch in iterate_batches(data, order, self.batch_size, pos.batch, self.num_workers,
                                                      group=group, with_sizes=True,
                                                      loader_seed=self.seed * 1_000_003 + pos.epoch):
                    loss = self._step(replica, model, opt, scaler, ema, loss_fn, to_device(batch, device), n_batch,
                                      generator, history)
                    pos.step += 1
                    pos.batch += 1
                    if self.step_log is not None and (values := self.step_log(pos.step)):
                        history["step_log"].append({"step": pos.step, **{k: float(v) for k, v in values.items()}})
                    if self._calibration_due(pos):
                        self._calibrate(replica, model, loss_fn, data, device, history, scaler)
                        history["thresholds"] = self.gradient_manipulation.to_dict()
                        history["calibrated_at_step"] = pos.step
                    epoch_end = pos.batch == per_epoch
                    if epoch_end:
                        pos.epoch, pos.batch = pos.epoch + 1, 0
                        # from the history, which a resumed run restores: the epoch's steps before
                        # the interruption count too
                        history["epoch_loss"].append(sum(history["loss"][-per_epoch:]) / per_epoch)
                    due = epoch_end if self.validate_every is None else pos.step % self.validate_every == 0
                    stop = self._validate(eval_model, pos, history) if due and self.early_stopping else False
                    pos.done = stop or pos.step >= total
                    if ckpt_path is not None and (
                        pos.done
                        or (self.checkpoint_every and pos.step % self.checkpoint_every == 0)
                        or (self.checkpoint_every is None and epoch_end)
                    ):
                        save()
                    bar.update(1)
                    if pos.step % 10 == 0 or pos.done:
                        bar.set_postfix(loss=f"{loss:.4f}", epoch=pos.epoch, skipped=history["skipped"], refresh=False)
                    if self.on_step is not None:
                        self.on_step(pos, loss)
                    if pos.done:
                        break
        finally:
            bar.close()
            cleanup.close()
        history["seconds"] += time.perf_counter() - started
        if self.early_stopping is not None and self.early_stopping.best_state is not None:
            eval_model.load_state_dict(self.early_stopping.best_state, strict=True)
            history["best_step"] = self.early_stopping.best_step
            history["best_score"] = self.early_stopping.best_score
        eval_model.eval()
        return TrainResult(model=eval_model, history=history)

    # ------------------------------------------------------------------ one step
    def _step(self, replica, model, opt, scaler, ema, loss_fn, batch, n_batch, generator, history) -> float:
        opt.zero_grad(set_to_none=True)
        loss, metrics = self._backward(replica, loss_fn, batch, n_batch, generator, scaler)
        if scaler is not None:
            scaler.unscale_(opt)
        params = [p for p in model.parameters() if p.requires_grad]
        norm_t = global_grad_norm(params)
        if scaler is not None and not torch.isfinite(norm_t):
            # fp16 loss scaling probing its range, not a bad batch: GradScaler skips this update and
            # lowers its scale; counted apart from gradient manipulation's skips
            action, norm = "overflow", float(norm_t)
            history["scaler_overflows"] += 1
            scaler.update()
        elif self.gradient_manipulation is not None and self.gradient_manipulation.ready:
            action, norm = self.gradient_manipulation.apply(params, norm=norm_t)
        else:
            action, norm = ("step" if torch.isfinite(norm_t) else "skipped"), float(norm_t)
        if action == "skipped":
            history["skipped"] += 1
            history["skipped_steps"].append(len(history["loss"]))
            if scaler is not None:
                scaler.update()
        elif action != "overflow":
            history["clipped"] += action == "clipped"
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            if ema is not None:
                ema.update(model)
        value = float(loss.detach())
        if self.group.active:  # the global batch's mean loss, the same in every process
            value = self.group.sum(value * _rows(batch)) / n_batch
        history["loss"].append(value)
        history["grad_norm"].append(norm)
        for key, v in metrics.items():
            history["metrics"].setdefault(key, []).append(float(v))
        return value

    def _backward(self, replica, loss_fn, batch, n_batch, generator, scaler=None, factor=1.0):
        """Loss and gradients of one (shard of a) batch; under torchrun, DDP averages the gradients.

        The gradients are of the loss times the scaler's scale (fp16), else times `factor`.
        """
        with self._autocast(batch):
            out = loss_fn(replica, batch, generator)
        loss, metrics = out if isinstance(out, tuple) else (out, {})
        scaled = loss
        if self.group.active:
            replica.check_one_call()
            scaled = loss * self.group.loss_weight(_rows(batch), n_batch)
        if scaler is not None:
            scaled = scaler.scale(scaled)
        elif factor != 1.0:
            scaled = scaled * factor
        scaled.backward()
        return loss, metrics

    def _autocast(self, batch):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        device_type = _first_tensor_device(batch)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=device_type, dtype=dtype)

    # ------------------------------------------------------------------ calibration and validation
    def _calibration_due(self, pos: _Position) -> bool:
        gm = self.gradient_manipulation
        return gm is not None and not gm.ready and pos.step >= self.calibration_warmup

    def _calibrate(self, replica, model, loss_fn, data, device, history, scaler=None) -> None:
        """One pass over the data recording gradient norms (no update); set the thresholds.

        In fp16 the loss is scaled as in training (unscaled, small gradients underflow to zero and the
        thresholds come out too low); a batch whose scaled gradients overflow is redone at half the
        scale, which every process of a torchrun launch decides alike (the norm is of the averaged
        gradients).
        """
        norms = []
        factor = float(scaler.get_scale()) if scaler is not None else 1.0
        generator = torch.Generator(device).manual_seed(self.seed + 1 + RANK_SEED_STRIDE * self.group.rank)
        order = epoch_order(len(data), self.seed, -1)
        params = [p for p in model.parameters() if p.requires_grad]
        batches = iterate_batches(data, order, self.batch_size, 0, self.num_workers, group=self.group,
                                  with_sizes=True)
        for batch, n_batch in tqdm(batches, desc="calibrating gradient thresholds",
                                   disable=not (self.progress and self.group.is_main), leave=False):
            batch = to_device(batch, device)
            while True:
                model.zero_grad(set_to_none=True)
                self._backward(replica, loss_fn, batch, n_batch, generator, factor=factor)
                norm = float(global_grad_norm(params)) / factor
                if math.isfinite(norm) or scaler is None or factor / 2 < MIN_LOSS_SCALE:
                    break
                factor /= 2
            norms.append(norm)
        model.zero_grad(set_to_none=True)
        self.gradient_manipulation.calibrate(norms)
        history["calibration_norms"] = norms

    @torch.no_grad()
    def _validate(self, eval_model: nn.Module, pos: _Position, history) -> bool:
        was_training = eval_model.training
        eval_model.eval()
        # under torchrun the weights are the same on every rank: rank 0 scores them for all
        score = float(self.early_stopping.score(eval_model)) if self.group.is_main else None
        score = self.group.broadcast(score)
        eval_model.train(was_training)
        history["validation"].append({"step": pos.step, "epoch": pos.epoch, "score": score})
        return self.early_stopping.update(score, pos.step, eval_model)

    # ------------------------------------------------------------------ checkpoints
    def _fingerprint(self, n: int) -> dict[str, Any]:
        return {"rows": n, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
                "optimizer": self.optimizer, "ema_decay": self.ema_decay,
                "calibration_warmup": self.calibration_warmup, "processes": self.group.world_size}

    def _save(self, path, n, pos, model, opt, scaler, ema, generator, history) -> None:
        """Rank 0 writes the checkpoint, with every rank's random-number generators."""
        rank_generators = self.group.gather(generator.get_state())
        rank_torch_rng = self.group.gather(torch.get_rng_state())
        # each process's own GPU (cuda:<local rank>): its dropout masks come from that device's generator
        cuda_rng = torch.cuda.get_rng_state(generator.device) if generator.device.type == "cuda" else None
        rank_cuda_rng = self.group.gather(cuda_rng)
        if not self.group.is_main:
            self.group.barrier()
            return
        state = {
            "fingerprint": self._fingerprint(n),
            "position": vars(pos).copy(),
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "ema_updates": ema.updates if ema is not None else None,
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda_rng,
            "thresholds": self.gradient_manipulation.to_dict() if self.gradient_manipulation else None,
            "early_stopping": self.early_stopping.state_dict() if self.early_stopping else None,
            "history": history,
            "rank_generators": rank_generators if self.group.active else None,
            "rank_torch_rng": rank_torch_rng if self.group.active else None,
            "rank_cuda_rng": rank_cuda_rng if self.group.active else None,
        }
        save_checkpoint(path, state)
        self.group.barrier()

    def _restore(self, path, n, model, opt, scaler, ema, generator, history) -> _Position:
        state = load_checkpoint(path)
        expected = self._fingerprint(n)
        written = {"processes": 1, **state["fingerprint"]}  # checkpoints from before torchrun support
        for key, value in expected.items():
            if written.get(key) != value:
                raise ValueError(
                    f"checkpoint {path} was written by a run with {key}={written.get(key)!r}, "
                    f"this run has {key}={value!r}; use the same settings to resume, or another checkpoint folder"
                )
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
            # a checkpoint from before the bias-corrected EMA: continue as a plain EMA
            updates = state.get("ema_updates")
            ema.updates = 10**9 if updates is None else updates
        if self.group.active:
            generator.set_state(state["rank_generators"][self.group.rank])
            torch.set_rng_state(state["rank_torch_rng"][self.group.rank])
        else:
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
        cuda_rng = state["rank_cuda_rng"][self.group.rank] if state.get("rank_cuda_rng") else state["cuda_rng"]
        if isinstance(cuda_rng, list) and torch.cuda.is_available():  # before: every device's state, rank 0's
            torch.cuda.set_rng_state_all(cuda_rng)
        elif cuda_rng is not None and generator.device.type == "cuda":
            torch.cuda.set_rng_state(cuda_rng, generator.device)
        if self.gradient_manipulation is not None and state["thresholds"] is not None:
            self.gradient_manipulation.clip = state["thresholds"]["clip"]
            self.gradient_manipulation.skip = state["thresholds"]["skip"]
        if self.early_stopping is not None and state["early_stopping"] is not None:
            self.early_stopping.load_state_dict(state["early_stopping"])
        history.update(state["history"])
        history["resumed_at_step"] = state["position"]["step"]
        return _Position(**state["position"])

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters")
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        # the fused kernel updates all parameters in one pass (about 10 % of a SECONDGRAM step on CPU)
        fused = all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
        return cls(params, lr=self.lr, weight_decay=self.weight_decay, fused=fused)


@contextlib.contextmanager
def _flush_denormals(device: torch.device):
    """On CPU, treat denormal floats as zero while training, then back to PyTorch's default.

    The backward pass of 3D convolutions on CPU (no oneDNN kernel) slows down 10–20× when denormal
    values appear, as they do in a 3D DiffAE after a few steps (measured: 12 s per step at 32³
    instead of 2 s). Values below 1.2e-38 are numerically zero for training.
    """
    if device.type != "cpu" or not torch.set_flush_denormal(True):
        yield
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _new_history() -> dict[str, Any]:
    return {"loss": [], "grad_norm": [], "epoch_loss": [], "validation": [], "metrics": {},
            "skipped": 0, "clipped": 0, "skipped_steps": [], "scaler_overflows": 0, "step_log": [],
            "seconds": 0.0}


def _rows(batch: Any) -> int:
    """Rows of a batch: the length of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else []
    for v in values:
        found = _rows(v)
        if found:
            return found
    return 0


def _first_tensor_device(batch: Any) -> str:
    if isinstance(batch, torch.Tensor):
        return batch.device.type
    values = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else []
    for v in values:
        found = _first_tensor_device(v)
        if found:
            return found
    return "cpu"
