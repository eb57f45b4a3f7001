"""The hardware the runtime declares in its registration, right even where the sidecar has no GPU.

A sidecar container gets no GPU of its own (Kubernetes gives the GPU to Triton's container), so the
figures come first from what Triton already exports on its metrics port: the DCGM gauges
``nv_gpu_memory_total_bytes``, ``nv_gpu_memory_used_bytes`` and ``nv_gpu_utilization`` (0-1) per
``gpu_uuid`` (Triton 2.51 exports no GPU name; the local probe adds one when it sees the same GPU).
When Triton's metrics are off, unreachable or hold no GPU, the sidecar's own probe decides
(:class:`ruthgen.hardware.HardwareProbe`: NVML, nvidia-smi, L4T). Both are pure functions of their
inputs, so tests describe any machine with a metrics text and a fake NVML.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from ruthgen.interface import GpuInfo, HardwareInfo, HardwareProbe

LOGGER = logging.getLogger(__name__)

_GAUGES = {
    "nv_gpu_memory_total_bytes": "total",
    "nv_gpu_memory_used_bytes": "used",
    "nv_gpu_utilization": "utilization",
}

__all__ = ["GpuInfo", "HardwareInfo", "HardwareProbe", "detect", "gpus_from_metrics"]


def gpus_from_metrics(text: str) -> list[GpuInfo]:
    """The GPUs Triton's metrics text describes, in the order Triton lists them (its device order)."""
    figures: dict[str, dict[str, float]] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        LOGGER.info("Triton's metrics are unreadable: %s", exc)
        return []
    for family in families:
        key = _GAUGES.get(family.name)
        if key is None:
            continue
        for sample in family.samples:
            uuid = sample.labels.get("gpu_uuid")
            if uuid:
                figures.setdefault(uuid, {})[key] = sample.value
    gpus = []
    for index, (uuid, values) in enumerate(figures.items()):
        total, used = values.get("total"), values.get("used")
        utilization = values.get("utilization")
        available = total - used if total is not None and used is not None else None
        gpus.append(GpuInfo(
            index=index, uuid=uuid,
            memory_total_mb=int(total) // 2**20 if total is not None else None,
            memory_available_mb=int(available) // 2**20 if available is not None else None,
            utilization_percent=round(utilization * 100.0, 1) if utilization is not None else None,
        ))
    return gpus


def detect(probe: HardwareProbe, metrics_text: str | None) -> HardwareInfo:
    """Triton's GPU figures when its metrics have any (names, driver and CUDA version from the local
    probe when it sees the same GPUs), else the local probe alone."""
    local = probe.detect()
    gpus = gpus_from_metrics(metrics_text) if metrics_text else []
    if not gpus or local.type == "jetson":
        return local
    names = {gpu.uuid: gpu.name for gpu in local.gpus if gpu.uuid}
    gpus = [replace(gpu, name=names.get(gpu.uuid)) for gpu in gpus]
    return HardwareInfo.of_gpus(
        gpus, "triton-metrics", cuda_version=local.cuda_version, driver_version=local.driver_version
    )
