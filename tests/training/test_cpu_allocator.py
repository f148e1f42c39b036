"""keep_freed_memory: glibc stops handing every step's activations back to the OS (page faults)."""

import os
import platform
import subprocess
import sys

import pytest

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Training steps in miniature: a two-layer conv net's forward and backward on 2 MiB feature maps,
# twenty times; the minor page faults of the last ten are counted.
CHURN = """
import resource, sys, torch
from neurodiff.training import cpu_allocator
status = cpu_allocator.keep_freed_memory() if sys.argv[1] == "keep" else "not called"
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 8, 3, padding=1))
x = torch.randn(8, 8, 64, 64)
for step in range(20):
    if step == 10:
        start = faults()
    net(x).square().mean().backward()
print(status, faults() - start, cpu_allocator.describe(), sep="|")
"""


def _churn(mode: str, **env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "NEURODIFF_KEEP_FREED_MEMORY"}
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True,
                          env={**clean, **env})
    return done.stdout.strip().split("|")


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_keeping_freed_memory_removes_the_page_faults_of_reallocation():
    status, kept_faults, described = _churn("keep")
    default_status, default_faults, default_described = _churn("default")
    assert status == "applied" and described.startswith("neurodiff: mmap threshold 32 MiB")
    assert default_described == "C library defaults"
    # glibc's defaults: freed feature maps go back to the OS and are faulted in again (about 13,000 here)
    assert int(default_faults) > 2_000
    assert int(kept_faults) < int(default_faults) / 10


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_user_settings_and_the_opt_out_win():
    status, faults, described = _churn("keep", MALLOC_TRIM_THRESHOLD_="0")
    assert status == "not applied: MALLOC_TRIM_THRESHOLD_ set in the environment (by the user, or inherited)"
    assert described == "from the environment: MALLOC_TRIM_THRESHOLD_=0"
    status, _, described = _churn("keep", NEURODIFF_KEEP_FREED_MEMORY="0")
    assert status == "not applied: NEURODIFF_KEEP_FREED_MEMORY=0" and described == "C library defaults"


@pytest.mark.skipif(not GLIBC, reason="the thresholds are glibc's")
def test_processes_started_after_it_inherit_the_settings():
    """A process started by one that kept freed memory is spared the page faults without calling it."""
    code = ("import subprocess, sys; from neurodiff.training.cpu_allocator import keep_freed_memory; "
            "keep_freed_memory(); "
            "print(subprocess.run([sys.executable, '-c', sys.argv[1], 'inherit'], capture_output=True, text=True, "
            "check=True).stdout)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "NEURODIFF_KEEP_FREED_MEMORY"}
    done = subprocess.run([sys.executable, "-c", code, CHURN], capture_output=True, text=True, check=True, env=clean)
    status, faults, described = done.stdout.strip().split("|")
    assert status == "not called" and described == (
        f"from the environment: MALLOC_MMAP_THRESHOLD_={32 << 20}, MALLOC_TRIM_THRESHOLD_={1 << 30}")
    _, default_faults, _ = _churn("default")
    assert int(faults) < int(default_faults) / 10
