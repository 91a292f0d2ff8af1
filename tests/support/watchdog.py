"""A memory watchdog for tests that feed a server files meant to blow a child process up.

It samples the server's child processes whose command line names ``marker`` (Blender's conversion script), records
the peak RSS of them all (and their own children) and how many the server ran at once, and past ``limit_mb`` kills the server's whole process group, so a
regression fails the test instead of taking the CI machine down.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psutil


class ChildWatch:
    def __init__(self, parent_pid: int, marker: str, limit_mb: float, kill: Callable[[], None],
                 every: float = 0.02):
        self.parent_pid, self.marker, self.limit_mb, self.kill, self.every = parent_pid, marker, limit_mb, kill, every
        self.peak_rss_mb = 0.0
        self.most_at_once = 0
        self.seen: set[int] = set()
        self.command_lines: list[list[str]] = []  # of the processes the watched process started itself
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-watch", daemon=True)

    def __enter__(self) -> ChildWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _matching(self, recursive: bool = True) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.parent_pid).children(recursive=recursive)
        except psutil.Error:
            return []
        found = []
        for child in children:
            try:
                if any(self.marker in part for part in child.cmdline()):
                    found.append(child)
            except psutil.Error:
                continue
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            matching = self._matching()
            # started by the watched process itself: a helper a child forks shares its command line
            direct = self._matching(recursive=False)
            self.most_at_once = max(self.most_at_once, len(direct))
            for child in direct:
                if child.pid not in self.seen:
                    try:
                        self.command_lines.append(child.cmdline())
                    except psutil.Error:
                        pass
            total = 0.0
            for child in matching:
                self.seen.add(child.pid)
                try:
                    total += child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
            self.peak_rss_mb = max(self.peak_rss_mb, total)
            if total > self.limit_mb and not self.killed:
                self.killed = True
                self.kill()


class TreeWatch:
    """The same watch over a whole process tree (the server that reads an upload itself, and its workers): the peak
    growth of their RSS together over what it was at the start; past ``limit_mb`` of growth the server's process
    group is killed."""

    def __init__(self, pid: int, limit_mb: float, kill: Callable[[], None], every: float = 0.02):
        self.pid, self.limit_mb, self.kill, self.every = pid, limit_mb, kill, every
        self.peak_growth_mb = 0.0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-watch", daemon=True)
        self._start_mb = self._rss_mb()

    def __enter__(self) -> TreeWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _rss_mb(self) -> float:
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0.0
        for process in processes:
            try:
                total += process.memory_info().rss / 2**20
            except psutil.Error:
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            growth = self._rss_mb() - self._start_mb
            self.peak_growth_mb = max(self.peak_growth_mb, growth)
            if growth > self.limit_mb and not self.killed:
                self.killed = True
                self.kill()
