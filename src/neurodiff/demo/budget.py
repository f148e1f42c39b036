"""How much the demo trains: one :class:`Budget` for the real demo, one for its smoke test.

The demo runs every method and baseline of the three benchmarks with 2 seeds, but with shorter
training than their ``--quick`` presets, so that ``make demo`` (install included) fits in about 20
minutes on a 2-core CPU. The ``--quick`` benchmarks themselves take 15–45 minutes each there
(benchmarks/results/*_quick). At these budgets the diffusion models are far from trained; the demo
shows the whole workflow and an honest comparison at that budget, not the papers' numbers.

``expected_seconds`` are measured wall-clock times of each stage on the reference 2-core CPU; they
drive the remaining-time estimate (rescaled by how fast the finished stages actually ran).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Budget:
    name: str
    seeds: int
    smoke_cohorts: bool
    ring_epochs: int
    impute_epochs: int
    impute_patience: int
    impute_baseline_epochs: int
    ddae_steps: int
    harmonize_baseline_steps: int
    gan_steps: int
    nda_steps: int
    normative_baseline_steps: int
    expected_seconds: dict[str, float] = field(default_factory=dict, compare=False)
    #: Raised whenever the demo's cohorts or what its stages compute change (2: parkinsonism at 15 %,
    #: direction-aware survival and transfer-probe headlines; 3: the harmonisation label-swap control and
    #: the GAN's validation selection), so a folder from an earlier version is not resumed with its old
    #: cohorts and stage results.
    revision: int = 3

    def settings(self) -> dict[str, Any]:
        """What a resumed run must share with the run it resumes (everything but the time estimates)."""
        values = asdict(self)
        values.pop("expected_seconds")
        return values


DEMO = Budget(
    name="demo", seeds=2, smoke_cohorts=False, ring_epochs=150,
    impute_epochs=10, impute_patience=5, impute_baseline_epochs=10,
    ddae_steps=200, harmonize_baseline_steps=200, gan_steps=40, nda_steps=200, normative_baseline_steps=200,
    expected_seconds={"cohorts": 40, "engine": 30, "impute": 240, "harmonize": 330, "normative": 270},
)

SMOKE = Budget(
    name="smoke", seeds=1, smoke_cohorts=True, ring_epochs=40,
    impute_epochs=2, impute_patience=2, impute_baseline_epochs=2,
    ddae_steps=10, harmonize_baseline_steps=10, gan_steps=3, nda_steps=10, normative_baseline_steps=10,
    expected_seconds={"cohorts": 8, "engine": 5, "impute": 40, "harmonize": 30, "normative": 25},
)
