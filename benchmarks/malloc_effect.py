"""What keeping freed memory in the process (neurodiff.training.cpu_allocator) does to CPU training.

For each workload, alternates fresh processes with glibc's default thresholds and with
keep_freed_memory(), `--pairs` times (this VM's speed drifts, so only alternating pairs compare; one
workload per process, since glibc's thresholds adapt to what a process did before). Workloads:
training steps of the DiffAE UNet of benchmarks/diffae_speed.py (64×64, batch 16, fp32 and bf16) and
of SECONDGRAM's MLP U-Net at the paper's size (769 features, batch 256, fp32). Records rows per
second, minor page faults per step and peak memory. Writes <out>/results.json.

    python benchmarks/malloc_effect.py --out benchmarks/results/malloc_effect
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

MARK = "MALLOC_EFFECT "


WORKLOADS = ("diffae_64_fp32", "diffae_64_bf16", "secondgram_mlp_fp32")


def child(mode: str, workload: str, diffae_steps: int, mlp_steps: int) -> dict:
    import resource
    import time

    import torch

    from neurodiff.training.cpu_allocator import describe, keep_freed_memory

    status = keep_freed_memory() if mode == "keep" else "not called"
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from diffae_speed import Stepper, _peak_rss_mb

    from neurodiff.diffusion import Diffusion
    from neurodiff.nets import MLPUNet

    def faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def timed(step, steps: int, rows: int) -> dict:
        for _ in range(2):
            step()
        f0, t0 = faults(), time.perf_counter()
        for _ in range(steps):
            step()
        seconds = time.perf_counter() - t0
        return {"rows_per_s": steps * rows / seconds, "faults_per_step": (faults() - f0) / steps}

    out = {"mode": mode, "status": status, "malloc": describe()}
    if workload.startswith("diffae"):
        precision = workload.rsplit("_", 1)[1]
        stepper = Stepper("neurodiff", 64, 16, torch.device("cpu"), precision, False)
        out[workload] = timed(stepper.step, diffae_steps, 16)
    else:
        torch.manual_seed(0)
        net = MLPUNet(769, 14 + 769)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)
        diffusion = Diffusion.from_schedule("linear", 100, start=0.0015, end=0.02)
        x, c, g = torch.rand(256, 769) * 2 - 1, torch.rand(256, 783), torch.Generator().manual_seed(0)

        def mlp_step() -> None:
            opt.zero_grad(set_to_none=True)
            diffusion.loss(net, x, c, generator=g).backward()
            opt.step()

        out[workload] = timed(mlp_step, mlp_steps, 256)
    out["peak_rss_mb"] = _peak_rss_mb()  # VmHWM: ru_maxrss can carry a parent's peak
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/malloc_effect"))
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--diffae-steps", type=int, default=6)
    parser.add_argument("--mlp-steps", type=int, default=60)
    parser.add_argument("--child", choices=("default", "keep"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workload", choices=WORKLOADS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(MARK + json.dumps(child(args.child, args.workload, args.diffae_steps, args.mlp_steps)), flush=True)
        return
    from neurodiff.reporting.results import environment, write_results

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "NEURODIFF_KEEP_FREED_MEMORY"}
    runs, summary = [], {}
    for workload in WORKLOADS:
        ratios, faults, rss = [], {"default": [], "keep": []}, {"default": [], "keep": []}
        for pair in range(args.pairs):
            rate = {}
            for mode in ("default", "keep") if pair % 2 == 0 else ("keep", "default"):
                command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--workload", workload,
                           "--diffae-steps", str(args.diffae_steps), "--mlp-steps", str(args.mlp_steps)]
                done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
                if done.returncode or not lines:
                    raise SystemExit(f"child {workload} {mode} failed ({done.returncode}):\n{done.stderr[-3000:]}")
                run = {"workload": workload, "pair": pair + 1, **json.loads(lines[-1][len(MARK):])}
                runs.append(run)
                rate[mode] = run[workload]["rows_per_s"]
                faults[mode].append(run[workload]["faults_per_step"])
                rss[mode].append(run["peak_rss_mb"])
                print(f"{workload}, pair {pair + 1}, {mode}: {rate[mode]:.1f} rows/s, "
                      f"{faults[mode][-1]:.0f} faults/step", flush=True)
            ratios.append(rate["keep"] / rate["default"])
        summary[workload] = {"speed_ratio_keep_over_default_per_pair": ratios,
                             "median_speed_ratio": statistics.median(ratios),
                             "median_faults_per_step": {m: statistics.median(v) for m, v in faults.items()},
                             "median_peak_rss_mb": {m: statistics.median(v) for m, v in rss.items()}}
    # the parent's own malloc setting says nothing; each run records its own in runs[].malloc
    results = {"task": "malloc_effect", "summary": summary, "runs": runs,
               "environment": {**environment(), "malloc": "per run: runs[].malloc"},
               "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    print(json.dumps(summary, indent=1))
    print(f"wrote {write_results(args.out / 'results.json', results)}")


if __name__ == "__main__":
    main()
