"""Training throughput with one process and with two torchrun processes (gloo), on this machine.

Two workloads, each through the real :class:`~neurodiff.training.Trainer` (and so through DDP when
launched by torchrun): SECONDGRAM's MLP U-Net at the paper's size (769 features, 14 labels, global
batch 256) and the DiffAE of the quick preset at 64×64 (global batch 16). Each is measured as one
process using every core's thread, and as ``torchrun --nproc_per_node 2`` with the threads split
between the processes. After warm-up steps, the rate is rows per second of the timed steps;
each configuration is run ``--repeats`` times (this VM's speed drifts) and the median is kept.

    python benchmarks/distributed_scaling.py --out benchmarks/results/distributed_scaling
    python benchmarks/distributed_scaling.py --smoke --out /tmp/scaling     # the whole script, fast
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

WORKLOADS = ("secondgram", "diffae")


# ---------------------------------------------------------------------------------------- worker
def _secondgram(steps: int, smoke: bool) -> tuple[float, int]:
    """Seconds of `steps` Trainer steps of SECONDGRAM's MLP U-Net (paper size) and the global batch."""
    from neurodiff.diffusion import Diffusion
    from neurodiff.nets import MLPUNet
    from neurodiff.training import TensorData, Trainer

    dim, labels, rows = (64, 4, 2048) if smoke else (769, 14, 16_384)
    g = torch.Generator().manual_seed(0)
    diffusion = Diffusion.from_schedule("linear", 100, start=0.0015, end=0.02)
    data = TensorData(x=torch.rand(rows, dim, generator=g) * 2 - 1, c=torch.randn(rows, labels + dim, generator=g))
    torch.manual_seed(0)
    net = MLPUNet(dim, labels + dim)
    result = Trainer(max_steps=steps, batch_size=256, progress=False).fit(
        net, lambda m, b, gen: diffusion.loss(m, b["x"], b["c"], generator=gen), data)
    return result.history["seconds"], 256


def _diffae(steps: int, smoke: bool) -> tuple[float, int]:
    """Seconds of `steps` training steps of the quick-preset DiffAE at 64×64 and the global batch."""
    import numpy as np
    import pandas as pd

    from neurodiff.methods.diffae import DiffusionAutoencoder

    size, n = (16, 64) if smoke else (64, 256)
    images = np.random.default_rng(0).random((n, 1, size, size), dtype=np.float32)
    frame = pd.DataFrame({"subject_id": [f"s{i}" for i in range(n)]})
    model = DiffusionAutoencoder.preset("quick", max_steps=steps, sensitivity_every=0, progress=False,
                                        **({"base_channels": 8} if smoke else {}))
    model.fit(frame, images)
    return model.history_["seconds"], model.batch_size


def worker(name: str, steps: int, warmup: int, smoke: bool, result: Path) -> None:
    from neurodiff.training.distributed import current

    run = _secondgram if name == "secondgram" else _diffae
    run(warmup, smoke)
    seconds, batch = run(steps, smoke)
    group = current()
    if group.is_main:
        result.write_text(json.dumps({"seconds": seconds, "steps": steps, "global_batch": batch,
                                      "rows_per_s": steps * batch / seconds, "processes": group.world_size,
                                      "threads_per_process": torch.get_num_threads()}))


# ---------------------------------------------------------------------------------------- driver
def measure(name: str, processes: int, args) -> dict:
    cores = os.cpu_count() or 1
    threads = max(1, cores // processes)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        script = [str(Path(__file__).resolve()), "--worker", name, "--steps", str(args.steps),
                  "--warmup", str(args.warmup), "--result", str(result), *(["--smoke"] if args.smoke else [])]
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command = [*launcher, *script] if processes > 1 else [sys.executable, *script]
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        done = subprocess.run(command, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": str(threads)})
        if done.returncode != 0:
            raise SystemExit(f"{name} with {processes} process(es) failed:\n{done.stderr[-3000:]}")
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/distributed_scaling"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny networks, few steps: checks the script runs")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.warmup, args.smoke, args.result)
        return
    from neurodiff.reporting.results import environment, write_results

    if args.smoke:
        args.steps, args.warmup, args.repeats = 4, 1, 1
    results = {"task": "distributed_scaling", "workloads": {}}
    for name in WORKLOADS:
        rows = {}
        for processes in (1, 2):
            runs = []
            for repeat in range(args.repeats):
                print(f"{name}: {processes} process(es), run {repeat + 1}/{args.repeats} ...", flush=True)
                runs.append(measure(name, processes, args))
                print(f"  {runs[-1]['rows_per_s']:.1f} rows/s", flush=True)
            rates = [r["rows_per_s"] for r in runs]
            rows[f"{processes}_process"] = {**runs[0], "rows_per_s": statistics.median(rates), "rows_per_s_runs": rates}
        rows["speedup_2_over_1"] = rows["2_process"]["rows_per_s"] / rows["1_process"]["rows_per_s"]
        results["workloads"][name] = rows
    results["note"] = ("one process uses every core's thread; two processes share the same cores with one thread "
                       "each, so on a 2-core machine this measures the data-parallel overhead, not added hardware")
    results["environment"] = environment()
    print(f"wrote {write_results(args.out / 'results.json', results)}")


if __name__ == "__main__":
    main()
