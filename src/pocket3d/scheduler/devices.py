"""Device inventory. This first cut knows the CPU; NVML GPUs and virtual devices come with the VRAM scheduler."""

from __future__ import annotations

import platform

import psutil

from pocket3d.models.spec import Device


def cpu_device() -> Device:
    mem = psutil.virtual_memory()
    return Device(id="cpu", kind="cpu", name=platform.processor() or platform.machine(),
                  memory_total=mem.total // (1024 * 1024), memory_used=(mem.total - mem.available) // (1024 * 1024))


def discover() -> list[Device]:
    return [cpu_device()]
