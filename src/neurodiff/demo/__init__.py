"""The main job (`neurodiff demo`, what `make demo` runs): the three methods end to end on embedded data.

Stages, in order (each resumable, see :mod:`neurodiff.demo.runner`): the embedded synthetic cohorts;
the shared diffusion engine on a toy ring; longitudinal imputation (SECONDGRAM), harmonisation (DDAE)
and normative modelling with survival (NDA), each against its baselines with 2 seeds at the demo
budget (:mod:`neurodiff.demo.budget`); then one summary page (:mod:`neurodiff.demo.summary`).
"""

from neurodiff.demo.runner import STAGES, DemoError, run_demo

__all__ = ["STAGES", "DemoError", "run_demo"]
