"""SECONDGRAM epoch time on the paper-sized cohort: training, validation sampling, metric, data.

One epoch = ≈36,500 training samples (769 features, batch 256) plus DDPM-100 sampling of ~400
paired validation subjects and their per-feature Pearson r, as in the issue's target (≤ 8 s on the
2-core CPU, fp32); each is measured `--repeats` times (this VM's speed drifts by ±20–30 %) and the
run with the median epoch time is reported with all epoch times. Also measures bf16 autocast (by
default only on a CPU with native bf16: emulated, it is ~17× slower than fp32) and whether it changes
the validation Pearson after a short training on the --quick cohort, and records this CPU's
matrix-multiply rate with the epoch's arithmetic at that rate (the floor no implementation can beat
here), since the VMs this runs on differ by 2× in GEMM speed. Writes <out>/results.json.

    python benchmarks/secondgram_speed.py --out benchmarks/results/secondgram_speed
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from neurodiff.data.synthetic_longitudinal import LABEL_COLUMNS, LongitudinalConfig, generate_longitudinal
from neurodiff.diffusion import Diffusion
from neurodiff.evaluation.imputation import pearson_feature
from neurodiff.methods.longitudinal import SecondGram
from neurodiff.nets import MLPUNet
from neurodiff.reporting.results import environment, write_results
from neurodiff.training.cpu_allocator import keep_freed_memory
from neurodiff.training import TensorData, Trainer
from neurodiff.training.trainer import cpu_has_native_bf16
from neurodiff.training.data import epoch_order, iterate_batches

D, LABELS, SAMPLES, VAL, BATCH = 769, 14, 36_500, 400, 256


def epoch_breakdown(precision: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    data = TensorData(x=torch.rand(SAMPLES, D, generator=g) * 2 - 1, c=torch.rand(SAMPLES, D, generator=g) * 2 - 1,
                      y=torch.randn(SAMPLES, LABELS, generator=g))
    diffusion = Diffusion.from_schedule("linear", 100, start=0.0015, end=0.02)
    torch.manual_seed(seed)
    net = MLPUNet(D, LABELS + D)

    def loss(model, b, gen):
        return diffusion.loss(model, b["x"], torch.cat([b["y"], b["c"]], 1), generator=gen)

    Trainer(max_steps=3, batch_size=BATCH, precision=precision, progress=False).fit(net, loss, data)  # warm-up
    started = time.perf_counter()
    for _ in iterate_batches(data, epoch_order(SAMPLES, seed, 0), BATCH):
        pass
    data_seconds = time.perf_counter() - started
    result = Trainer(max_epochs=1, batch_size=BATCH, precision=precision, progress=False).fit(net, loss, data)
    train_seconds = result.history["seconds"]

    x1, y = torch.rand(VAL, D) * 2 - 1, torch.randn(VAL, LABELS)
    started = time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        # as SecondGram's validation does: the conditioning's share of each step computed once
        generated = diffusion.ddpm_sample(result.model.conditioned(torch.cat([y, x1], 1)), (VAL, D), clamp=(-1, 1),
                                          generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    sampling_seconds = time.perf_counter() - started
    real = (torch.rand(VAL, D) * 2 - 1).numpy()
    started = time.perf_counter()
    pearson_feature(real, generated.float().numpy())
    metric_seconds = time.perf_counter() - started
    total = train_seconds + sampling_seconds + metric_seconds
    return {
        "precision": precision, "training_samples": SAMPLES, "validation_subjects": VAL,
        "epoch_seconds": total, "train_seconds": train_seconds,
        "data_seconds_within_train": data_seconds, "validation_sampling_seconds": sampling_seconds,
        "metric_seconds": metric_seconds, "train_samples_per_s": SAMPLES / train_seconds,
    }


def linear_macs(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    """Multiply-adds of one row through every Linear of `module` whose name starts with none of `skip`."""
    return sum(m.in_features * m.out_features for name, m in module.named_modules()
               if isinstance(m, torch.nn.Linear) and not name.startswith(skip))


def gemm_gflops(seconds: float = 3.0) -> dict:
    """This CPU's fp32 matrix-multiply rate: the network's largest layer at batch 256, and 2048² × 2048²."""
    rates = {}
    for name, (a, b) in {"layer_256x769x512": (torch.randn(BATCH, D), torch.randn(D, 512)),
                         "square_2048": (torch.randn(2048, 2048), torch.randn(2048, 2048))}.items():
        a @ b
        n, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 2:
            a @ b
            n += 1
        rates[name] = 2 * a.shape[0] * a.shape[1] * b.shape[1] * n / (time.perf_counter() - started) / 1e9
    return rates


def arithmetic_floor(gflops: float) -> dict:
    """The epoch's GEMM arithmetic and its time at `gflops`: training is forward + two backward GEMMs
    per layer (3× the forward), sampling one forward of the trunk per step (the conditioning's part is
    computed once, the time part once per step for all rows)."""
    net = MLPUNet(D, LABELS + D)
    train = 3 * 2 * linear_macs(net) * SAMPLES
    trunk = linear_macs(net, skip=("time_embedding", "cond_embedding")) - sum(
        b.emb.in_features * b.emb.out_features for b in net.blocks)
    sampling = 2 * trunk * VAL * 100
    return {"gemm_gflops": gflops, "train_gflop": train / 1e9, "sampling_gflop": sampling / 1e9,
            "train_seconds_at_gemm_rate": train / 1e9 / gflops,
            "sampling_seconds_at_gemm_rate": sampling / 1e9 / gflops,
            "epoch_seconds_at_gemm_rate": (train + sampling) / 1e9 / gflops}


def quality(precision: str, epochs: int) -> dict:
    """Best validation Pearson after `epochs` on the --quick cohort, same seed, fp32 vs bf16."""
    table = generate_longitudinal(LongitudinalConfig.quick())
    model = SecondGram(labels=list(LABEL_COLUMNS), exclude=["years_since_first"], max_epochs=epochs, patience=None,
                       precision=precision, progress=False).fit(table)
    return {"precision": precision, "epochs": epochs, "best_validation_pearson": model.history_["best_score"],
            "seconds": model.history_["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/secondgram_speed"))
    parser.add_argument("--quality-epochs", type=int, default=30)
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep: glibc keeps freed memory in the process, as the neurodiff command does "
                             "(neurodiff.training.cpu_allocator); default: glibc's own thresholds")
    parser.add_argument("--repeats", type=int, default=3,
                        help="epoch measurements per precision; the run with the median epoch time is reported")
    parser.add_argument("--bf16", choices=("auto", "always", "never"), default="auto",
                        help="measure bf16 autocast: auto = only on a CPU with native bf16 (AVX-512 BF16 or AMX); "
                             "emulated bf16 on an AVX2 CPU took 277 s per epoch against 16 s in fp32")
    args = parser.parse_args()
    if args.malloc == "keep":
        keep_freed_memory()  # before any tensor is allocated; environment() records it
    native = cpu_has_native_bf16()
    precisions = ("fp32", "bf16") if args.bf16 == "always" or (args.bf16 == "auto" and native is not False) \
        else ("fp32",)
    results = {"task": "secondgram_speed", "epoch": [], "quality": []}
    if "bf16" not in precisions:
        results["bf16_skipped"] = ("not measured: --bf16 never" if args.bf16 == "never" else
                                   "not measured: this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 autocast "
                                   "is emulated (277 s per epoch against 16 s in fp32 on the AVX2 host of "
                                   "2026-11-30); --bf16 always measures it anyway")
        print(results["bf16_skipped"], flush=True)
    print("matrix-multiply rate of this CPU ...", flush=True)
    rates = gemm_gflops()
    results["gemm_gflops"] = rates
    results["arithmetic_floor"] = arithmetic_floor(rates["layer_256x769x512"])
    print(f"  {rates}; {results['arithmetic_floor']}", flush=True)
    for precision in precisions:
        runs = []
        for repeat in range(args.repeats):
            print(f"epoch breakdown, {precision}, run {repeat + 1}/{args.repeats} ...", flush=True)
            runs.append(epoch_breakdown(precision))
            print(f"  {runs[-1]}", flush=True)
        median = sorted(runs, key=lambda r: r["epoch_seconds"])[len(runs) // 2]
        floor = results["arithmetic_floor"]["epoch_seconds_at_gemm_rate"]
        results["epoch"].append({**median, "epoch_seconds_all_runs": [r["epoch_seconds"] for r in runs],
                                 "fraction_of_gemm_rate": floor / median["epoch_seconds"]})
    for precision in precisions:
        print(f"validation Pearson after {args.quality_epochs} epochs, {precision} ...", flush=True)
        results["quality"].append(quality(precision, args.quality_epochs))
        print(f"  {results['quality'][-1]}", flush=True)
    results["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["target"] = "≤ 8 s per epoch including validation sampling and Pearson, fp32, 2-core CPU"
    results["environment"] = environment()
    print(f"wrote {write_results(args.out / 'results.json', results)}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
