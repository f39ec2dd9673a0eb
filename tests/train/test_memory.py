"""Peak memory readings on CPU: peak RSS is plausible and grows with what the process allocates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sweeper.train import memory

from ..conftest import ROOT


def test_peak_rss_grows_after_a_200_mb_allocation() -> None:
    # A fresh process, so the peak is not an earlier test's (see below).
    code = (
        "import json\n"
        "from sweeper.train import memory\n"
        "before = memory.peak_rss_mb()\n"
        "block = bytearray(b'\\x01') * (200 * memory.MIB)  # written, so every page is resident\n"
        "after = memory.peak_rss_mb()\n"
        "del block\n"
        "print(json.dumps([before, after, memory.peak_rss_mb()]))\n"
    )
    # Linux keeps ru_maxrss across exec: a child exec'd straight from pytest (hundreds of MiB once torch is
    # imported) starts with pytest's peak. A grandchild forked by sh starts from sh's.
    script = f'"{sys.executable}" -c "$CODE"; exit $?'
    proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "CODE": code})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    before, after, later = json.loads(proc.stdout)
    assert 5 < before < 200  # a bare Python process with pydantic-free imports: tens of MiB
    assert 200 <= after <= 320  # the 200 MiB block on top of the interpreter
    assert after - before >= 150  # grew by about the block (the earlier peak held some since-freed memory)
    assert later == after  # a peak never goes down after freeing


def test_nvml_is_absent_on_a_cpu_host_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    import pynvml

    def missing() -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)  # what a CPU host's nvmlInit raises

    monkeypatch.setattr(pynvml, "nvmlInit", missing)
    assert memory.nvml_used_mb() is None


def test_nvml_reads_the_device_memory_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    import pynvml

    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: f"gpu{index}")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetMemoryInfo", lambda handle: types.SimpleNamespace(used=3 * 2**30))
    assert memory.nvml_used_mb(0) == 3072.0
