"""Device inventory: NVIDIA GPUs through NVML, the CPU with a RAM budget, and virtual devices from the config.

A device's budget is what the scheduler may fill: its memory × ``gpu.max_utilization`` less ``gpu.memory_buffer``,
and never more than is free right now plus what pocket3d itself holds there (another tenant's memory on a shared
GPU is not ours to promise).
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass

import psutil

from pocket3d.config import GpuSettings
from pocket3d.models.spec import Device

log = logging.getLogger(__name__)
MB = 1024 * 1024


@dataclass(frozen=True)
class DeviceReading:
    memory_total: int  # MB
    memory_used: int  # MB, by every process
    memory_free: int  # MB
    utilization: float | None = None  # 0..1, compute, where the device reports it
    temperature: float | None = None  # degrees Celsius


def discover(gpu: GpuSettings) -> list[Device]:
    devices = nvml_devices() if gpu.auto_detect else []
    if gpu.virtual_devices:
        devices += [Device(id=v.id, kind="cpu", name=v.name or f"virtual CPU device ({v.memory} MB)",
                           memory_total=v.memory, virtual=True) for v in gpu.virtual_devices]
    elif gpu.cpu_device:
        devices.append(cpu_device())
    return devices


def cpu_device() -> Device:
    mem = psutil.virtual_memory()
    return Device(id="cpu", kind="cpu", name=platform.processor() or platform.machine(),
                  memory_total=mem.total // MB, memory_used=(mem.total - mem.available) // MB)


def nvml_devices() -> list[Device]:
    """Every GPU NVML sees; none (and one log line) where there is no NVIDIA driver."""
    nvml = _nvml()
    if nvml is None:
        return []
    devices = []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        name = nvml.nvmlDeviceGetName(handle)
        devices.append(Device(id=f"cuda:{index}", kind="cuda", name=name.decode() if isinstance(name, bytes) else name,
                              memory_total=memory.total // MB, memory_used=memory.used // MB, index=index))
    return devices


def read(device: Device) -> DeviceReading:
    """The device's memory and load now. A virtual device reports its budget as its total; what is used on it
    is the scheduler's own bookkeeping, so it is not read here."""
    if device.kind == "cuda" and device.index is not None and (nvml := _nvml()) is not None:
        handle = nvml.nvmlDeviceGetHandleByIndex(device.index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        try:
            utilization = nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
        except nvml.NVMLError:
            utilization = None
        try:
            temperature = float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        except nvml.NVMLError:
            temperature = None
        return DeviceReading(memory.total // MB, memory.used // MB, memory.free // MB, utilization, temperature)
    if device.virtual:
        return DeviceReading(device.memory_total, 0, device.memory_total)
    mem = psutil.virtual_memory()
    return DeviceReading(mem.total // MB, (mem.total - mem.available) // MB, mem.available // MB,
                         psutil.cpu_percent(interval=None) / 100)


def budget_mb(device: Device, gpu: GpuSettings, reading: DeviceReading | None = None, own_mb: float = 0.0) -> float:
    """MB the scheduler may fill on this device. ``own_mb`` is what pocket3d's models hold there now."""
    budget = device.memory_total * gpu.max_utilization - gpu.memory_buffer
    if reading is not None and not device.virtual:
        budget = min(budget, reading.memory_free + own_mb - gpu.memory_buffer)
    return max(0.0, budget)


_NVML_STATE: dict[str, object] = {}


def _nvml():  # noqa: ANN202 - the pynvml module, or None
    """pynvml, initialised once; None without a driver (CPU machines, CI)."""
    if "module" in _NVML_STATE:
        return _NVML_STATE["module"]
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as e:  # no library, no driver, no device: all mean "no NVIDIA GPUs here"
        log.info("no NVIDIA GPUs found through NVML (%s)", e)
        _NVML_STATE["module"] = None
        return None
    _NVML_STATE["module"] = pynvml
    return pynvml
