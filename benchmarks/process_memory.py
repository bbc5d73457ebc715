"""Resident memory of a group of processes, each address space counted once (features_bench, soak).

Why not a plain sum of RSS: a process that starts a program (the JVM runs `chmod` through
jspawnhelper dozens of times a feature run; CPython's subprocess does the same) first makes a
child that shares its memory until the child execs (vfork, CLONE_VM). A sample taken in that
window sees the parent's RSS twice: the lone 3.4 and 4.4 GB peaks of the feature job's runs were
its JVM counted twice. kcmp(2) tells whether two processes share one address space; where the
kernel refuses it (no CONFIG_KCMP, or no ptrace right), every process is counted, as before.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

_KCMP_SYSCALL = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
_KCMP_VM = 1
_libc = ctypes.CDLL(None, use_errno=True)


def same_address_space(pid_a: int, pid_b: int) -> bool:
    if _KCMP_SYSCALL is None:
        return False
    return _libc.syscall(_KCMP_SYSCALL, pid_a, pid_b, _KCMP_VM, 0, 0) == 0


def can_compare() -> bool:
    """Whether this kernel answers kcmp here (else every process is counted)."""
    return same_address_space(os.getpid(), os.getpid())


@dataclass(frozen=True)
class Sample:
    mb: float  # every address space once
    parts: list[tuple[str, int, float]]  # (name, pid, RSS MB) of each process counted
    shared: list[tuple[str, int, float]]  # processes left out: they share a counted one's memory


def resident(processes: Sequence[psutil.Process]) -> Sample:
    """RSS of `processes` (gone ones skipped), a process sharing an already counted one's memory left out."""
    parts: list[tuple[str, int, float]] = []
    shared: list[tuple[str, int, float]] = []
    for process in processes:
        try:
            part = (process.name(), process.pid, process.memory_info().rss / 2**20)
        except psutil.Error:
            continue
        if any(same_address_space(process.pid, pid) for _, pid, _ in parts):
            shared.append(part)
        else:
            parts.append(part)
    return Sample(sum(mb for _, _, mb in parts), parts, shared)


def tree(process: psutil.Process) -> list[psutil.Process]:
    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return [process]
