"""Peak memory readings that need no torch: the process's peak RSS and device-wide GPU use via NVML.

Per-process CUDA peaks (allocated / reserved) come from torch and live in ``sweeper.train.trial``.
Light module: imports neither torch nor ray.
"""

from __future__ import annotations

import resource
import sys

MIB = 1024 * 1024


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024


def reset_peak_rss() -> bool:
    """Start the peak RSS over from the current RSS (Linux: ``/proc/self/clear_refs``; also resets ru_maxrss).

    A Ray worker reused for a later trial (``resources.reuse_actors``) would otherwise report the peak of
    an earlier trial. Returns False where the kernel does not allow it (the peak is then process-wide).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def nvml_used_mb(device_index: int = 0) -> float | None:
    """Memory in use on a whole GPU (all processes) in MiB, or None where NVML is unavailable (CPU hosts)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(device_index)
            return float(pynvml.nvmlDeviceGetMemoryInfo(handle).used) / MIB
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound and friends: no GPU here
        return None
