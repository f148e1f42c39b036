"""DiffAE speed and reconstruction: neurodiff's UNet vs MONAI's, peak memory, and reconstruction quality.

Three parts, each optional (``--parts``), all written to <out>/results.json:

- ``throughput``: training images/s (forward, MSE loss, backward, Adam step; batch 16; random t in
  [0, 1000)) of neurodiff's :class:`~neurodiff.nets.diffae_unet.DiffAEUNet` with ``latent_dim=0`` (a
  time-only DDPM UNet) and MONAI's ``DiffusionModelUNet`` of the same shape (channels 32/64/96/128,
  2 residual blocks per level, attention at the coarsest level with 8 channels per head), at 64×64
  and 128×128, in fp32 and bf16 autocast (by default only where bf16 is native: CUDA, or a CPU with
  AVX-512 BF16 or AMX), each in the default (NCHW) and channels_last memory format.
  After warm-up steps, R rounds each time K steps of one network then the other (the order
  alternating between rounds: this machine's speed drifts by ±20–50 % over minutes); reported are the
  per-round rates, their medians and the ratio ours / MONAI of the medians (≥ 1: neurodiff at least
  as fast).
- ``memory``: peak memory of a batch-16 fp32 training step at 128×128, each network in a fresh
  subprocess (CPU: peak RSS from VmHWM, which unlike ``ru_maxrss`` does not inherit the parent's peak
  through fork and exec, with the baseline after imports and after building the network; ``ru_maxrss``
  recorded too; CUDA: ``torch.cuda.max_memory_allocated`` as well).
- ``reconstruction``: a quick synthetic cohort at 64×64, ~16 held-out single-visit controls, the
  ``quick`` :class:`~neurodiff.methods.diffae.DiffusionAutoencoder` trained on the other images, then
  PSNR / SSIM (mean ± sd over held-out images) and seconds per image of the reconstruction
  encode → DDIM inversion → render for inversion steps × render steps; plus the training time, loss
  and latent-sensitivity trajectory.

    python benchmarks/diffae_speed.py --out benchmarks/results/diffae_speed
    python benchmarks/diffae_speed.py --smoke --out /tmp/diffae_smoke        # the whole script, fast
    python benchmarks/diffae_speed.py --parts throughput --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neurodiff.diffusion import Diffusion
from neurodiff.nets.diffae_unet import DiffAEUNet
from neurodiff.reporting.results import environment, write_results
from neurodiff.training.cpu_allocator import keep_freed_memory
from neurodiff.training.trainer import cpu_has_native_bf16

PARTS = ("throughput", "memory", "reconstruction")
NETWORKS = ("neurodiff", "monai")
MEMORY_MARK = "MEMORY_RESULT "


# ---------------------------------------------------------------------------------------- networks
def build(name: str, size: int) -> torch.nn.Module:
    """The two UNets of the comparison, same widths and attention (≈ 5.5 M parameters each)."""
    if name == "neurodiff":
        return DiffAEUNet(2, 1, base_channels=32, channel_mult=(1, 2, 3, 4), num_res_blocks=2,
                          attention_resolutions=(size // 8,), image_size=size, latent_dim=0, dropout=0.0,
                          head_channels=8)
    if name == "monai":
        from monai.networks.nets import DiffusionModelUNet

        return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(32, 64, 96, 128),
                                  attention_levels=(False, False, False, True), num_res_blocks=2,
                                  norm_num_groups=32)
    raise ValueError(name)


def parameters(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


class Stepper:
    """One network's training steps on a fixed batch: q_sample at random t, forward, MSE, backward, Adam."""

    def __init__(self, name: str, size: int, batch: int, device: torch.device, precision: str,
                 channels_last: bool, seed: int = 0):
        torch.manual_seed(seed)
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net = build(name, size).to(device).train()
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4)
        self.diffusion = Diffusion.from_schedule("linear", 1000, start=1e-4, end=0.02)
        g = torch.Generator().manual_seed(seed)
        self.x0 = (torch.rand(batch, 1, size, size, generator=g) * 2 - 1).to(device)
        self.noise = torch.randn(batch, 1, size, size, generator=g).to(device)
        self.generator = torch.Generator().manual_seed(seed + 1)
        self.batch = batch

    def step(self) -> float:
        t = torch.randint(0, 1000, (self.batch,), generator=self.generator).to(self.device)
        x_t = self.diffusion.q_sample(self.x0, t, self.noise).contiguous(memory_format=self.memory_format)
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            loss = F.mse_loss(self.net(x_t, t).float(), self.noise)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def timed(self, steps: int) -> tuple[float, float]:
        """Images per second over `steps` steps, and this process's CPU seconds per wall second.

        The second is a contention check on CPU: with T threads it is ≈ T on an otherwise idle
        machine; well below T, other processes took cores from this one.
        """
        sync(self.device)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.step()
        sync(self.device)
        wall = time.perf_counter() - started
        return steps * self.batch / wall, (time.process_time() - cpu) / wall


def other_cpu_load(seconds: float = 0.5) -> float | None:
    """Cores busy over `seconds` while this process sleeps: other processes' load (Linux; else None)."""
    def busy_idle():
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, idle

    try:
        b0, i0 = busy_idle()
        time.sleep(seconds)
        b1, i1 = busy_idle()
    except (OSError, ValueError, IndexError):
        return None
    total = (b1 - b0) + (i1 - i0)
    return (os.cpu_count() or 1) * (b1 - b0) / total if total else 0.0


def wait_until_quiet(max_wait: float, threshold: float = 0.3) -> dict:
    """Before a timed block on CPU: wait (at most `max_wait` s) until other processes use < `threshold` cores.

    On this 2-core machine another process running PyTorch makes both run 5–10× slower (their OpenMP
    threads spin against each other), so a round timed under such contention measures the neighbour.
    """
    started, load = time.perf_counter(), other_cpu_load()
    while load is not None and load >= threshold and time.perf_counter() - started < max_wait:
        time.sleep(5)
        load = other_cpu_load()
    return {"waited_s": round(time.perf_counter() - started, 1), "other_load": load,
            "quiet": load is None or load < threshold}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------- throughput
def throughput(sizes, steps, rounds, warmup, batch, device, variants, quiet_wait: float = 0.0) -> list[dict]:
    rows = []
    for size, k in zip(sizes, steps):
        for precision, channels_last in variants:
            label = f"{size}x{size} {precision}{' channels_last' if channels_last else ''}"
            print(f"throughput {label}: building, {warmup} warm-up steps each ...", flush=True)
            steppers = {name: Stepper(name, size, batch, device, precision, channels_last) for name in NETWORKS}
            for stepper in steppers.values():
                for _ in range(warmup):
                    stepper.step()
            rates: dict[str, list[float]] = {name: [] for name in NETWORKS}
            cpu_use: dict[str, list[float]] = {name: [] for name in NETWORKS}
            quiet: list[dict] = []
            load_before = os.getloadavg()[0]
            for r in range(rounds):
                order = NETWORKS if r % 2 == 0 else NETWORKS[::-1]  # alternate who goes first
                for name in order:
                    if quiet_wait and device.type == "cpu":
                        quiet.append({"network": name, "round": r + 1, **wait_until_quiet(quiet_wait)})
                        if not quiet[-1]["quiet"] or quiet[-1]["waited_s"] > 1:
                            print(f"    waited {quiet[-1]['waited_s']} s for other processes "
                                  f"(their load now {quiet[-1]['other_load']:.2f} cores)", flush=True)
                    rate, use = steppers[name].timed(k)
                    rates[name].append(rate)
                    cpu_use[name].append(use)
                print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {rates[n][-1]:.2f} img/s (cpu/wall "
                                                                f"{cpu_use[n][-1]:.2f})" for n in NETWORKS), flush=True)
            medians = {name: statistics.median(v) for name, v in rates.items()}
            row = {
                "size": size, "precision": precision, "channels_last": channels_last, "batch_size": batch,
                "steps_per_round": k, "rounds": rounds, "warmup_steps": warmup,
                "parameters": {name: parameters(s.net) for name, s in steppers.items()},
                "images_per_s": {name: {"rounds": rates[name], "median": medians[name]} for name in NETWORKS},
                "ratio_neurodiff_over_monai": medians["neurodiff"] / medians["monai"],
                "cpu_seconds_per_wall_second": cpu_use, "torch_threads": torch.get_num_threads(),
                "quiet_checks": quiet,
                "load_average_1min": [load_before, os.getloadavg()[0]],
            }
            print(f"  median: neurodiff {medians['neurodiff']:.2f}, monai {medians['monai']:.2f} img/s, "
                  f"ratio {row['ratio_neurodiff_over_monai']:.3f}", flush=True)
            rows.append(row)
            del steppers
    return rows


# ---------------------------------------------------------------------------------------- memory
def _peak_rss_mb() -> float:
    """This process's peak resident memory (MiB): VmHWM on Linux, else ru_maxrss.

    VmHWM belongs to the process's own address space, so it starts afresh at exec; ru_maxrss does not
    (on Linux a child starts with its parent's peak at fork and keeps it across exec, so a child of
    the benchmark, which has grown while timing, would report the parent's peak).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return _ru_maxrss_mb()


def _ru_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_child(name: str, size: int, batch: int, device: torch.device, steps: int) -> None:
    """In a fresh process: peak memory of `steps` fp32 training steps; prints one JSON line."""
    from monai.networks.nets import DiffusionModelUNet  # noqa: F401  same imports for both networks

    after_imports = _peak_rss_mb()
    stepper = Stepper(name, size, batch, device, "fp32", channels_last=False)
    after_build = _peak_rss_mb()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        allocated_before = torch.cuda.memory_allocated(device)
    for _ in range(steps):
        stepper.step()
    result = {
        "network": name, "size": size, "batch_size": batch, "steps": steps, "device": device.type,
        "parameters": parameters(stepper.net),
        "rss_after_imports_mb": after_imports, "rss_after_build_mb": after_build, "peak_rss_mb": _peak_rss_mb(),
        "ru_maxrss_mb": _ru_maxrss_mb(),
    }
    result["peak_rss_minus_after_build_mb"] = result["peak_rss_mb"] - after_build
    if device.type == "cuda":
        sync(device)
        result["cuda_allocated_before_steps_mb"] = allocated_before / 2**20
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    print(MEMORY_MARK + json.dumps(result), flush=True)


def memory(size: int, batch: int, device: str, steps: int, threads: int | None, malloc: str = "keep") -> dict:
    out = {}
    for name in NETWORKS:
        print(f"memory: {name}, {size}x{size}, batch {batch}, fresh subprocess ...", flush=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", name, "--memory-size", str(size),
                   "--batch", str(batch), "--device", device, "--memory-steps", str(steps), "--malloc", malloc]
        if threads:
            command += ["--threads", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        lines = [line for line in done.stdout.splitlines() if line.startswith(MEMORY_MARK)]
        if done.returncode or not lines:
            raise RuntimeError(f"memory subprocess for {name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        out[name] = json.loads(lines[-1][len(MEMORY_MARK):])
        print(f"  {out[name]}", flush=True)
    key = "cuda_max_allocated_mb" if device.startswith("cuda") else "peak_rss_minus_after_build_mb"
    out["ratio_neurodiff_over_monai"] = {key: out["neurodiff"][key] / out["monai"][key],
                                         "peak_rss_mb": out["neurodiff"]["peak_rss_mb"] / out["monai"]["peak_rss_mb"]}
    return out


# ---------------------------------------------------------------------------------------- reconstruction
def reconstruction(args, device: str) -> dict:
    from neurodiff.data.image_manifest import load_images, read_manifest
    from neurodiff.data.synthetic_images import ImageCohortConfig, generate_image_cohort
    from neurodiff.evaluation.image_quality import psnr, ssim
    from neurodiff.methods.diffae import PRESETS, DiffusionAutoencoder

    config = ImageCohortConfig.quick(**({"n_controls": 40, "n_travellers": 1, "n_patients": 4} if args.smoke else {}))
    with tempfile.TemporaryDirectory() as tmp:
        print(f"reconstruction: generating the quick cohort ({config.n_images} images, {config.size}x{config.size}) "
              "...", flush=True)
        started = time.perf_counter()
        generate_image_cohort(config, Path(tmp) / "cohort", progress=True)
        generation_seconds = time.perf_counter() - started
        frame = read_manifest(Path(tmp) / "cohort" / "manifest.csv")
        images, _ = load_images(frame, progress=False)
    single_controls = np.flatnonzero((frame["group"] == "control").to_numpy()
                                     & (frame["true_traveller_id"].fillna("") == "").to_numpy())
    held = np.sort(np.random.default_rng(args.seed).choice(single_controls, size=args.held_out, replace=False))
    train = np.setdiff1d(np.arange(len(frame)), held)
    train_frame = frame.iloc[train].reset_index(drop=True)

    overrides = {"device": device, "progress": True, "seed": args.seed}
    if args.train_steps:
        overrides["max_steps"] = args.train_steps
    if args.smoke:
        overrides["sensitivity_every"] = 8
    model = DiffusionAutoencoder.preset("quick", **overrides)
    print(f"reconstruction: training DiffusionAutoencoder.preset('quick') on {len(train)} images, "
          f"{model.max_steps} steps of batch {model.batch_size} on {device} ...", flush=True)
    quiet_before_training = wait_until_quiet(args.quiet_wait) if args.quiet_wait and device == "cpu" else None
    load_before, cpu = os.getloadavg()[0], time.process_time()
    model.fit(train_frame, images[train])
    history = model.history_
    cpu_per_wall = (time.process_time() - cpu) / history["seconds"]
    losses = history["loss"]
    train_seconds = history["seconds"]
    training = {
        "preset": "quick", "preset_parameters": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in PRESETS["quick"].items()},
        "max_steps": model.max_steps, "batch_size": model.batch_size, "training_images": len(train),
        "parameters": parameters(model.net_), "seconds": train_seconds,
        "images_per_s": model.max_steps * model.batch_size / train_seconds,
        "seconds_per_step": train_seconds / model.max_steps,
        "final_loss": losses[-1], "final_loss_mean_last_50": float(np.mean(losses[-50:])),
        "loss_mean_first_50": float(np.mean(losses[:50])),
        "latent_sensitivity": history["latent_sensitivity"],
        "cpu_seconds_per_wall_second": cpu_per_wall, "torch_threads": torch.get_num_threads(),
        "load_average_1min": [load_before, os.getloadavg()[0]],
        "quiet_check_before": quiet_before_training,
    }
    print(f"  trained in {train_seconds:.0f} s ({training['images_per_s']:.1f} img/s), final loss "
          f"{training['final_loss_mean_last_50']:.4f} (mean of last 50)", flush=True)

    x = images[held]
    n = len(x)
    quiet_before_reconstruction = wait_until_quiet(args.quiet_wait) if args.quiet_wait and device == "cpu" else None
    # reconstruct() = encode → encode_stochastic → render; each stage is timed once and reused
    started = time.perf_counter()
    z = model.encode(x)
    encode_seconds = time.perf_counter() - started
    rows = []
    for inversion_steps in args.inversion_steps:
        print(f"  inverting {n} images with {inversion_steps} DDIM steps ...", flush=True)
        started = time.perf_counter()
        x_T = model.encode_stochastic(x, z, steps=inversion_steps)
        inversion_seconds = time.perf_counter() - started
        for render_steps in args.render_steps:
            started = time.perf_counter()
            rendered = model.render(x_T, z, steps=render_steps)
            render_seconds = time.perf_counter() - started
            p, s = psnr(rendered, x), ssim(rendered, x)
            total = encode_seconds + inversion_seconds + render_seconds
            rows.append({
                "inversion_steps": inversion_steps, "render_steps": render_steps,
                "psnr_mean": float(p.mean()), "psnr_sd": float(p.std(ddof=1)),
                "ssim_mean": float(s.mean()), "ssim_sd": float(s.std(ddof=1)),
                "seconds_per_image": total / n,
                "seconds": {"encode": encode_seconds, "inversion": inversion_seconds, "render": render_seconds},
                "psnr_values": p.tolist(), "ssim_values": s.tolist(),
            })
            print(f"    render {render_steps:4d} steps: PSNR {p.mean():.2f} ± {p.std(ddof=1):.2f} dB, "
                  f"SSIM {s.mean():.4f} ± {s.std(ddof=1):.4f}, {total / n:.3f} s/image", flush=True)
    return {
        "cohort": {"config": "ImageCohortConfig.quick()" + (" (smoke: 40 controls, 1 traveller, 4 patients)"
                                                              if args.smoke else ""),
                   "images": len(frame), "size": config.size, "generation_seconds": generation_seconds},
        "held_out": {"n": int(n), "selection": f"single-visit controls, numpy default_rng({args.seed}).choice",
                     "subject_ids": frame["subject_id"].iloc[held].tolist()},
        "training": training,
        "metrics": "PSNR and SSIM (data_range 1, neurodiff.evaluation.image_quality) of reconstruct() vs the image; "
                   "sd over held-out images (ddof=1)",
        "table": rows,
        "quiet_check_before_reconstruction": quiet_before_reconstruction,
    }


# ---------------------------------------------------------------------------------------- main
def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/diffae_speed"))
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes and step counts: checks the whole script in a few minutes")
    parser.add_argument("--sizes", type=_ints, default=None, help="throughput image sizes (default 64,128)")
    parser.add_argument("--steps", type=_ints, default=None,
                        help="timed steps per round for each size (default cpu 4,2; cuda 20,10)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--memory-size", type=int, default=128)
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=None, help="override the quick preset's max_steps")
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--inversion-steps", type=_ints, default=[100, 250])
    parser.add_argument("--render-steps", type=_ints, default=[20, 100])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", choices=("auto", "always", "never"), default="auto",
                        help="throughput in bf16 autocast too: auto = on CUDA, or on a CPU with native bf16 "
                             "(AVX-512 BF16 or AMX); emulated bf16 measures the emulation, slowly")
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep: glibc keeps freed memory in the process, as the neurodiff command does "
                             "(neurodiff.training.cpu_allocator); default: glibc's own thresholds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quiet-wait", type=float, default=None,
                        help="CPU: before each timed block and before training, wait up to this many seconds until "
                             "other processes use < 0.3 cores (default 180, with --smoke 0; 0: don't)")
    parser.add_argument("--no-merge", action="store_true",
                        help="with a subset of --parts, replace <out>/results.json instead of keeping the parts "
                             "it already holds that were not run now")
    parser.add_argument("--memory-child", choices=NETWORKS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()  # before any tensor is allocated; environment() records it
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but no CUDA device is available")
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.memory_child:
        memory_child(args.memory_child, args.memory_size, args.batch, device, args.memory_steps)
        return
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {','.join(PARTS)}")
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.smoke else 180.0
    if args.smoke:
        args.sizes = args.sizes or [32]
        args.steps = args.steps or [1]
        args.rounds, args.warmup, args.memory_size, args.memory_steps = 2, 1, 32, 2
        args.train_steps = args.train_steps or 32
        args.held_out = min(args.held_out, 4)
        args.inversion_steps, args.render_steps = [10, 20], [5, 10]
    args.sizes = args.sizes or [64, 128]
    args.steps = args.steps or ([20, 10] if device.type == "cuda" else [4, 2])
    if len(args.steps) != len(args.sizes):
        parser.error(f"--steps needs one value per size ({len(args.sizes)})")
    native_bf16 = device.type == "cuda" or cpu_has_native_bf16() is not False
    bf16 = args.bf16 == "always" or (args.bf16 == "auto" and native_bf16)
    variants = [(p, cl) for cl in (False, True) for p in ("fp32", "bf16") if p == "fp32" or bf16]

    path = args.out / "results.json"
    results: dict = {"task": "diffae_speed"}
    if not args.no_merge and set(parts) != set(PARTS) and path.is_file():
        previous = json.loads(path.read_text())
        results.update({k: previous[k] for k in (*PARTS, "runs") if k in previous})
        print(f"keeping the parts {sorted(set(PARTS) & set(previous) - set(parts))} of {path}", flush=True)
    run = {"parts": parts, "command": " ".join([Path(sys.executable).name, *sys.argv]), "device": args.device,
           "bf16": bf16 or "not measured: no native bf16 on this CPU (AVX-512 BF16 or AMX); --bf16 always forces it",
           "smoke": args.smoke, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "torch_threads": torch.get_num_threads()}
    results["runs"] = [r for r in results.get("runs", []) if set(r["parts"]) - set(parts)] + [run]
    started = time.perf_counter()
    if "throughput" in parts:
        t0 = time.perf_counter()
        results["throughput"] = {
            "note": "images/s of full training steps (q_sample at random t, forward, MSE, backward, Adam); "
                    "rounds alternate which network goes first; ratio = median(neurodiff) / median(monai)",
            "networks": {
                "neurodiff": "DiffAEUNet(2, 1, base_channels=32, channel_mult=(1,2,3,4), num_res_blocks=2, "
                             "attention_resolutions=(size//8,), image_size=size, latent_dim=0, dropout=0.0, "
                             "head_channels=8)",
                "monai": "monai DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, "
                         "channels=(32,64,96,128), attention_levels=(F,F,F,T), num_res_blocks=2, norm_num_groups=32)",
            },
            "rows": throughput(args.sizes, args.steps, args.rounds, args.warmup, args.batch, device, variants,
                               args.quiet_wait),
        }
        results["throughput"]["seconds"] = time.perf_counter() - t0
    if "memory" in parts:
        t0 = time.perf_counter()
        results["memory"] = memory(args.memory_size, args.batch, args.device, args.memory_steps, args.threads, args.malloc)
        results["memory"]["seconds"] = time.perf_counter() - t0
    if "reconstruction" in parts:
        t0 = time.perf_counter()
        results["reconstruction"] = reconstruction(args, args.device)
        results["reconstruction"]["seconds"] = time.perf_counter() - t0
    run["seconds"] = time.perf_counter() - started
    try:
        import monai

        results["monai_version"] = monai.__version__
    except ImportError:
        pass
    results["environment"] = environment()
    print(f"wrote {write_results(path, results)}", flush=True)


if __name__ == "__main__":
    main()
