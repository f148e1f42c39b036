"""Keep freed tensor memory in the process on Linux (glibc), so CPU training stops page-faulting.

PyTorch allocates CPU tensors with the C library's ``malloc``. glibc serves blocks above a
threshold (128 KiB at first, adapting up to 32 MiB) straight from the OS with ``mmap`` and gives them
back on ``free``, and it returns the free top of its heap to the OS above a trim threshold. A
training step frees and re-allocates the same few-MB activations every time, so each step touches
fresh pages from the OS. ``benchmarks/malloc_effect.py`` (alternating fresh processes, 4 pairs,
2026-12-01, ``benchmarks/results/malloc_effect``) measured minor page faults per training step and
the median speed-up with the settings below: DiffAE UNet 64×64 batch 16, fp32 79,000 → 1,900 faults
and 1.04× (per pair 1.00–1.07); bf16 47,000 → 1,400 and 1.10× (1.08–1.17); SECONDGRAM's MLP U-Net at
769 features, batch 256, 1,800 → 26 and 1.07× (0.89–1.16). Peak memory stayed within 3.5 %.

:func:`keep_freed_memory` fixes the mmap threshold at its 32 MiB maximum and raises the trim
threshold to 1 GiB through ``mallopt``. The ``neurodiff`` command calls it at start-up and the speed
benchmarks call it for every network they compare; a Python user can call it once. It does nothing
where glibc is not the C library, or where the user set glibc's own ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` environment variables or ``glibc.malloc`` tunables (theirs win), or
``NEURODIFF_KEEP_FREED_MEMORY=0``.
When it applies the settings it also exports those two variables, so that processes started from
this one (parallel seeds, the benchmarks' memory probes) start with the same settings.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 1 << 30
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
OPT_OUT = "NEURODIFF_KEEP_FREED_MEMORY"

_applied = False


def keep_freed_memory() -> str:
    """Set glibc's mmap and trim thresholds for this process, once; say what was done.

    Returns "applied" (now or by an earlier call), or why nothing was changed.
    """
    global _applied
    if _applied:
        return "applied"
    if os.environ.get(OPT_OUT, "").strip() == "0":
        return f"not applied: {OPT_OUT}=0"
    if user_set := [v for v in USER_VARIABLES if v in os.environ]:
        return f"not applied: {', '.join(user_set)} set in the environment (by the user, or inherited)"
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return "not applied: GLIBC_TUNABLES sets glibc.malloc options"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "not applied: the C library is not glibc"
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "not applied: libc.so.6 could not be loaded"
    # mallopt returns 1 on success, 0 on error
    if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        return "not applied: mallopt refused the mmap threshold"
    if libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return "partly applied: mallopt set the mmap threshold but refused the trim threshold"
    # processes started from this one (parallel seeds, the benchmarks' memory probes) get the same
    # settings from glibc itself, which reads these variables at start-up
    os.environ.update({"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD)})
    _applied = True
    return "applied"


def describe() -> str:
    """How this process's malloc thresholds were set, for a results file's environment."""
    if _applied:
        return f"neurodiff: mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB"
    if user_set := {v: os.environ[v] for v in USER_VARIABLES if v in os.environ}:
        return "from the environment: " + ", ".join(f"{k}={v}" for k, v in user_set.items())
    return "C library defaults"
