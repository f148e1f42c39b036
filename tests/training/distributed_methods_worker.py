"""The three fit commands in one torchrun launch (tests/training/test_distributed.py).

    python -m torch.distributed.run --standalone --nproc_per_node 2 distributed_methods_worker.py \
        TABLE IMAGE_MANIFEST PATIENT_MANIFEST OUT
"""

from __future__ import annotations

import sys
from pathlib import Path

from typer.testing import CliRunner

from neurodiff.cli import _check_torchrun, app
from neurodiff.training.distributed import current


def main() -> None:
    table, images, patients, out = sys.argv[1:5]
    out = Path(out)
    commands = {
        "impute": ["impute", "fit", "--data", table, "--labels", "age,disease", "--epochs", "2"],
        "harmonize": ["harmonize", "fit", "--manifest", images, "--quick", "--steps", "2"],
        "normative": ["normative", "fit", "--manifest", patients, "--controls-only", "--quick", "--steps", "2"],
    }
    rank = current().rank
    for name, command in commands.items():
        _check_torchrun(command)  # as `neurodiff` itself does first
        result = CliRunner().invoke(app, [*command, "--out", str(out / name)])
        if result.exit_code != 0:
            raise SystemExit(f"rank {rank}: {name} fit failed ({result.exit_code}): {result.output}{result.exception!r}")
        (out / f"{name}.rank{rank}.log").write_text(result.output)


if __name__ == "__main__":
    main()
