"""A tiny training run for tests/training/test_distributed.py, launched once plainly and once by torchrun.

The diffusion loss takes its timesteps and noise from the data (fixed per row), so a one-process run
and a two-process run see the same randomness and must end with the same weights.

    python tests/training/distributed_worker.py --out DIR [--epochs N]
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/training/distributed_worker.py --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neurodiff.diffusion import Diffusion
from neurodiff.nets import MLPUNet
from neurodiff.training import EarlyStopping, GradientManipulation, TensorData, Trainer
from neurodiff.training.distributed import is_main_process

ROWS, DIM, COND, BATCH = 51, 6, 3, 8  # 51 rows: the last batch (3 rows) splits unevenly, 2 + 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--checkpoints", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    diffusion = Diffusion.from_schedule("linear", 20, start=0.001, end=0.2)
    data = TensorData(x=torch.randn(ROWS, DIM, generator=g), c=torch.randn(ROWS, COND, generator=g),
                      t=torch.randint(0, 20, (ROWS,), generator=g), noise=torch.randn(ROWS, DIM, generator=g))
    val_x, val_c = torch.randn(16, DIM, generator=g), torch.randn(16, COND, generator=g)
    val_t, val_noise = torch.randint(0, 20, (16,), generator=g), torch.randn(16, DIM, generator=g)

    def loss(net, b, generator):
        return diffusion.loss(net, b["x"], b["c"], t=b["t"], noise=b["noise"])

    def score(net):
        return -float(diffusion.loss(net, val_x, val_c, t=val_t, noise=val_noise))

    torch.manual_seed(0)
    net = MLPUNet(DIM, COND, hidden=(16, 8), residual_blocks=1, emb_dim=16)
    trainer = Trainer(max_epochs=args.epochs, batch_size=BATCH, lr=3e-3, ema_decay=0.9,
                      gradient_manipulation=GradientManipulation.calibrated(skip_factor=0.7),
                      early_stopping=EarlyStopping(score, patience=None), checkpoint_dir=args.checkpoints,
                      checkpoint_every=3, progress=False, seed=5)
    result = trainer.fit(net, loss, data)
    if is_main_process():
        args.out.mkdir(parents=True, exist_ok=True)
        h = result.history
        torch.save({"weights": result.model.state_dict(), "trained": net.state_dict(), "loss": h["loss"],
                    "grad_norm": h["grad_norm"], "skipped": h["skipped"], "clipped": h["clipped"],
                    "validation": [v["score"] for v in h["validation"]], "best_step": h["best_step"],
                    "thresholds": h["thresholds"]}, args.out / "result.pt")


if __name__ == "__main__":
    main()
