"""What the loopback benches share: a percentile of their samples, and the
CPU time the processes they measure have used."""
from __future__ import annotations

import os
from pathlib import Path


def percentile(values: list[float], fraction: float) -> float:
    """The sample at `fraction` of the sorted samples; NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def cpu_seconds(*pids: int) -> float:
    """User and system CPU seconds these processes have used (/proc)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")
