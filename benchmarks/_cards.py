"""The memory bandwidth of the GPU a benchmark runs on: the datasheet figure of known cards by the name
torch.cuda.get_device_name gives, and a measured device-to-device copy (bytes read plus bytes written over the
time), so that a share of "the limit" is taken against the card in hand, never a constant.

Datasheet figures (bytes/s) are the vendor's, for the memory the named part ships with. The first entry whose
every word is in the device name wins, so the more specific names come first ("GH200" before "H200", "H100 PCIe"
before "H100").
"""

from __future__ import annotations

import time
from typing import Any

DATASHEET: list[tuple[str, float]] = [
    ("GH200", 4.0e12),
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM5, HBM3 ("NVIDIA H100 80GB HBM3")
    ("H800", 3.35e12),
    ("B200", 8.0e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100", 1.555e12),  # the 40 GB parts
    ("L40S", 0.864e12),
    ("L40", 0.864e12),
    ("L4", 0.300e12),
    ("A10G", 0.600e12),
    ("A10", 0.600e12),
    ("RTX 6000 Ada", 0.960e12),
    ("RTX A6000", 0.768e12),
    ("RTX 4090", 1.008e12),
    ("RTX 3090", 0.936e12),
    ("V100", 0.900e12),
    ("T4", 0.320e12),
]


def datasheet_bandwidth(name: str) -> float | None:
    """Bytes/s of the card named `name` (as torch.cuda.get_device_name spells it), or None when unknown."""
    for key, bandwidth in DATASHEET:
        if all(word in name for word in key.split()):
            return bandwidth
    return None


def measured_bandwidth(device: Any = "cuda", gib: float = 2.0, repeats: int = 10) -> float:
    """Bytes/s of a device-to-device copy of `gib` GiB, counting bytes read and written; median of `repeats`
    after a warm-up, timed with CUDA events (fresh random data, not zeros)."""
    import torch

    n = int(gib * 2**30) // 2
    src = torch.randn(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize(device)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    times.sort()
    return 2 * n * 2 / times[len(times) // 2]


def card(device: Any = "cuda", measure: bool = True) -> dict:
    """{name, datasheet_bytes_s, measured_bytes_s, bandwidth_bytes_s (datasheet, else measured), memory_bytes}."""
    import torch

    props = torch.cuda.get_device_properties(device)
    name = torch.cuda.get_device_name(device)
    measured = measured_bandwidth(device) if measure else None
    sheet = datasheet_bandwidth(name)
    return {"name": name, "datasheet_bytes_s": sheet, "measured_bytes_s": measured and round(measured),
            "bandwidth_bytes_s": sheet or measured, "memory_bytes": int(props.total_memory),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
