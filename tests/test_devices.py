"""Device inventory and budgets (NVML itself needs a GPU: scripts/gpu_load_cycles.py exercises it there)."""

from __future__ import annotations

from pocket3d.config import GpuSettings, VirtualDevice
from pocket3d.models.spec import Device
from pocket3d.scheduler.devices import DeviceReading, budget_mb, discover


def test_virtual_devices_stand_in_for_the_cpu() -> None:
    gpu = GpuSettings(auto_detect=False, virtual_devices=[VirtualDevice(id="vcpu0", memory=2048),
                                                           VirtualDevice(id="vcpu1", memory=1024)])
    found = discover(gpu)
    assert [(d.id, d.kind, d.memory_total, d.virtual) for d in found] == [("vcpu0", "cpu", 2048, True),
                                                                          ("vcpu1", "cpu", 1024, True)]
    (cpu,) = discover(GpuSettings(auto_detect=False))
    assert cpu.id == "cpu" and cpu.memory_total > 0 and not cpu.virtual
    assert discover(GpuSettings(auto_detect=False, cpu_device=False)) == []


def test_a_budget_honours_utilization_the_buffer_and_other_tenants() -> None:
    gpu = GpuSettings(memory_buffer=1024, max_utilization=0.9)
    card = Device(id="cuda:0", kind="cuda", name="test", memory_total=24576, index=0)
    assert budget_mb(card, gpu) == 24576 * 0.9 - 1024
    # another process holds 12 GB of the card: only what is free, plus what our models hold, is ours
    shared = DeviceReading(memory_total=24576, memory_used=14576, memory_free=10000)
    assert budget_mb(card, gpu, shared, own_mb=2000) == 10000 + 2000 - 1024
    tiny = Device(id="vcpu0", kind="cpu", name="test", memory_total=512, virtual=True)
    assert budget_mb(tiny, gpu) == 0, "never negative"
