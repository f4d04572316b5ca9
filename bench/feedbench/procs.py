"""Processes from /proc: CPU accounting, a process tree, labels, and taskset pinning."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, start time, user+system CPU ticks) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    # fields[0] is the state (stat field 3): ppid is field 4, utime 14, stime 15, start 22.
    return int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12])


def descendants(root: int) -> dict[int, int]:
    """``root`` and every process below it: pid -> start time."""
    parents: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat is not None:
                parents[int(entry)] = (stat[0], stat[1])
    found: dict[int, int] = {}
    if root in parents:
        found[root] = parents[root][1]
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start) in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = start
                frontier.append(pid)
    return found


def same_process_alive(pid: int, start: int) -> bool:
    stat = proc_stat(pid)
    return stat is not None and stat[1] == start and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return raw[raw.rfind(")") + 2 :].startswith("Z")


def process_label(pid: int) -> str:
    """A short name: the service of a ``cellwork serve`` instance, nats-server, ..."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    if not words:
        return "?"
    if "serve" in words and words.index("serve") + 1 < len(words):
        return words[words.index("serve") + 1].rsplit(".", 1)[-1]
    if "--serve-ceiling" in words:
        return "ceiling server"
    if any(w.endswith("nats-server") for w in words):
        return "nats-server"
    if "up" in words:
        return "supervisor"
    return Path(words[0]).name


def busy_ticks() -> tuple[int, int]:
    """(busy, of which irq + softirq) CPU ticks of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice (guest is in user)
    return sum(fields[:8]) - fields[3] - fields[4], fields[5] + fields[6]


def cpu_line(cpu: dict[str, float]) -> str:
    """'a 90%, b 10%, ...; machine busy X% of Y%' from label -> % of one core."""
    ordered = sorted(cpu.items(), key=lambda kv: -kv[1])
    return (
        ", ".join(f"{k} {v:.0f}%" for k, v in ordered if v >= 0.5)
        + f"; machine busy {sum(cpu.values()):.0f}% of {(os.cpu_count() or 1) * 100}%"
    )


@dataclass
class CpuWatch:
    """CPU used by some processes, the kernel's irqs and the rest, between start() and stop()."""

    pids: Sequence[int]
    labels: dict[int, str] = field(default_factory=dict)
    before: dict[int, int] = field(default_factory=dict)
    busy0: tuple[int, int] = (0, 0)
    t0: float = 0.0

    def start(self) -> CpuWatch:
        self.before, self.busy0, self.t0 = cpu_ticks(self.pids), busy_ticks(), time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        """label -> % of one core, plus the kernel's irq time and other processes' time."""
        after, busy1, t1 = cpu_ticks(self.pids), busy_ticks(), time.monotonic()
        seconds = max(t1 - self.t0, 1e-6)
        cpu: dict[str, float] = {}
        for pid, ticks in after.items():
            if pid in self.before:
                label = self.labels.get(pid) or process_label(pid)
                used = (ticks - self.before[pid]) / CLK_TCK / seconds * 100.0
                cpu[label] = cpu.get(label, 0.0) + used
        busy = (busy1[0] - self.busy0[0]) / CLK_TCK / seconds * 100.0
        irq = (busy1[1] - self.busy0[1]) / CLK_TCK / seconds * 100.0
        cpu["(kernel irq/softirq)"] = irq
        cpu["(other processes)"] = max(0.0, busy - sum(cpu.values()))
        return cpu


def cpu_ticks(pids: Sequence[int]) -> dict[int, int]:
    out = {}
    for pid in pids:
        stat = proc_stat(pid)
        if stat is not None:
            out[pid] = stat[2]
    return out


def taskset_prefix(cpus: str | None) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return []
    return ["taskset", "-c", cpus]
