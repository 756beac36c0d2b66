"""What the benchmark scripts share: CPU accounting on a machine other jobs also use.

On a 2-core machine another job doubles every timing.  Each script waits for
a quiet moment before it measures (:func:`wait_for_idle`) and reports how much
CPU the rest of the machine used while it measured (:class:`OtherProcesses`),
so a reader can tell clean figures from contaminated ones.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Callable

_TICK = os.sysconf("SC_CLK_TCK")


def make_log(tag: str) -> Callable[[str], None]:
    """A progress printer for stderr (stdout carries only a script's JSON)."""

    def log(message: str) -> None:
        print(f"[{tag} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    return log


def system_busy_cpu() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat; idle and iowait excluded)."""
    with open("/proc/stat") as handle:
        fields = [int(v) for v in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def rusage_cpu(who: int) -> float:
    """User + system CPU seconds of ``who`` (RUSAGE_SELF or RUSAGE_CHILDREN)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def own_cpu() -> float:
    """CPU seconds of this process (all threads) and its finished children."""
    return rusage_cpu(resource.RUSAGE_SELF) + rusage_cpu(resource.RUSAGE_CHILDREN)


def wait_for_idle(max_wait_s: float, log: Callable[[str], None] | None = None, busy_cores: float = 0.25,
                  window_s: float = 3.0) -> float:
    """Waits up to ``max_wait_s`` until other processes use under ``busy_cores`` cores; returns seconds waited.

    The caller is idle while it waits, so all the busy time it sees is
    someone else's.  ``max_wait_s <= 0`` returns at once.
    """
    log = log or (lambda _: None)
    start = time.perf_counter()
    while max_wait_s > 0:
        before = system_busy_cpu()
        time.sleep(window_s)
        busy = (system_busy_cpu() - before) / window_s
        waited = time.perf_counter() - start
        if busy < busy_cores or waited >= max_wait_s:
            if waited > window_s + 0.5 or busy >= busy_cores:
                log(f"waited {waited:.0f} s for the machine to be idle (now {busy:.2f} cores busy)")
            break
        if waited < window_s + 0.5:
            log(f"{busy:.2f} cores busy with other work; waiting up to {max_wait_s:.0f} s for the machine to be idle")
    return round(time.perf_counter() - start, 1)


class OtherProcesses:
    """CPU seconds the rest of the machine used since construction (or :meth:`restart`).

    ``/proc/stat`` busy time minus this process's own CPU (and that of its
    finished children); near 0 means nothing else competed for the cores.
    """

    NOTE = ("CPU seconds the rest of the machine used while the measurements ran; "
            "near 0 means nothing else competed for the cores")

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self._busy0, self._own0 = system_busy_cpu(), own_cpu()

    def cpu_s(self) -> float:
        return round(max(0.0, system_busy_cpu() - self._busy0 - (own_cpu() - self._own0)), 1)
