"""trainer.cpu_memory.keep_freed_memory: a large block freed and allocated again is reused
without faulting its pages in again (counted with getrusage's minor faults, in a fresh process:
the setting is process-wide); the control, the same process without it, faults every page again."""

import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys, torch
from trainer.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def touch():
    torch.ones(64 * 2**20 // 4)  # 64 MiB, above glibc's largest mmap threshold; freed at once
for _ in range(20):
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
PAGES = 5 * 64 * 2**20 // 4096  # every page of the five blocks


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_freed_large_blocks_are_reused_without_page_faults():
    assert _faults("keep") < 0.05 * PAGES


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_control_without_it_every_block_faults_its_pages_again():
    assert _faults("system") > 0.9 * PAGES
