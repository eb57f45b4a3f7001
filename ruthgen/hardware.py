"""What this machine runs on: cpu, gpu or jetson, and its GPUs' names, memory and CUDA version.

Sources, first that answers wins: NVML (``nvidia-ml-py``, imported only when present), then
``nvidia-smi --query-gpu=...``; a Jetson is recognised by its L4T release file
(``/etc/nv_tegra_release``), whose unified memory comes from ``/proc/meminfo``. Paths, the command
and the NVML module are injectable so that tests describe any machine. ``ruthgen`` uses it for the
default build target (:func:`detected_target`); the sidecar adds what Triton's metrics say
(:mod:`sidecar.report.hardware`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger(__name__)

TEGRA_RELEASE = Path("/etc/nv_tegra_release")
MEMINFO = Path("/proc/meminfo")
SMI_QUERY = (
    "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version",
    "--format=csv,noheader,nounits",
)
_CUDA_RE = re.compile(r"CUDA Version:\s*([0-9]+(?:\.[0-9]+)*)")
_TEGRA_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")

Runner = Callable[[Sequence[str]], str]


@dataclass(frozen=True)
class GpuInfo:
    """One GPU: its index (the CUDA device id Triton places instances by), figures in MiB."""

    index: int
    uuid: str | None = None
    name: str | None = None
    memory_total_mb: int | None = None
    memory_available_mb: int | None = None
    utilization_percent: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class HardwareInfo:
    """The registration's ``hardware``: the first GPU's figures at the top, every
    GPU in ``gpus``; ``source`` says where they came from (``triton-metrics``, ``nvml``, ...)."""

    type: str  # cpu | gpu | jetson
    supports_gpu: bool
    gpu_name: str | None = None
    gpu_count: int = 0
    gpu_memory_total_mb: int | None = None
    gpu_memory_available_mb: int | None = None
    gpu_utilization_percent: float | None = None
    cuda_version: str | None = None
    driver_version: str | None = None
    l4t_release: str | None = None
    gpus: tuple[GpuInfo, ...] = ()
    source: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """The registration's ``hardware`` object (fields without a value are left out)."""
        found = {k: v for k, v in asdict(self).items() if v is not None and k not in ("gpus", "source")}
        if self.gpus:
            found["gpus"] = [gpu.to_dict() for gpu in self.gpus]
        found["source"] = self.source
        return found

    @classmethod
    def of_gpus(cls, gpus: list[GpuInfo], source: str, **extra: Any) -> HardwareInfo:
        """A GPU machine described by its GPUs (the first one's figures at the top)."""
        first = gpus[0]
        return cls(
            type="gpu", supports_gpu=True, gpu_name=first.name, gpu_count=len(gpus),
            gpu_memory_total_mb=first.memory_total_mb, gpu_memory_available_mb=first.memory_available_mb,
            gpu_utilization_percent=first.utilization_percent, gpus=tuple(gpus), source=source, **extra,
        )


def detected_target() -> str:
    """The build target this machine calls for: ``jetson``, ``gpu`` when a GPU answers, else ``cpu``."""
    info = HardwareProbe().detect()
    return info.type


def _run(command: Sequence[str]) -> str:
    return subprocess.run(list(command), capture_output=True, text=True, timeout=5, check=True).stdout


class HardwareProbe:
    """Detects the hardware; :meth:`detect` is cheap enough to call for every declaration."""

    def __init__(
        self,
        *,
        tegra_release: Path = TEGRA_RELEASE,
        meminfo: Path = MEMINFO,
        smi: str | None = "nvidia-smi",
        runner: Runner = _run,
        nvml: Any = "auto",
    ) -> None:
        self.tegra_release = tegra_release
        self.meminfo = meminfo
        self.smi = smi
        self.runner = runner
        self._nvml = _import_nvml() if nvml == "auto" else nvml

    def detect(self) -> HardwareInfo:
        if self.tegra_release.is_file():
            return self._jetson()
        for source in (self._from_nvml, self._from_smi):
            try:
                info = source()
            except Exception as exc:  # a missing driver, library or binary: try the next source
                LOGGER.debug("GPU detection through %s failed: %s", source.__name__, exc)
                continue
            if info is not None:
                return info
        return HardwareInfo(type="cpu", supports_gpu=False, source="none")

    def _jetson(self) -> HardwareInfo:
        text = self.tegra_release.read_text(errors="replace")
        match = _TEGRA_RE.search(text)
        release = f"R{match.group(1)}.{match.group(2)}" if match else text.strip().splitlines()[0][:80]
        total = available = None
        with contextlib.suppress(OSError, ValueError):
            fields = dict(
                (line.split(":")[0], int(line.split()[1])) for line in self.meminfo.read_text().splitlines()
            )
            total = fields.get("MemTotal", 0) // 1024 or None
            available = fields.get("MemAvailable", 0) // 1024 or None
        cuda = None
        with contextlib.suppress(Exception):
            cuda = self._nvml_cuda_version() if self._nvml is not None else None
        name = "NVIDIA Jetson (integrated GPU)"
        return HardwareInfo(
            type="jetson", supports_gpu=True, gpu_name=name, gpu_count=1,
            gpu_memory_total_mb=total, gpu_memory_available_mb=available, cuda_version=cuda,
            l4t_release=release, source="l4t",
            gpus=(GpuInfo(0, name=name, memory_total_mb=total, memory_available_mb=available),),
        )

    def _from_nvml(self) -> HardwareInfo | None:
        nvml = self._nvml
        if nvml is None:
            return None
        nvml.nvmlInit()
        try:
            count = nvml.nvmlDeviceGetCount()
            if count < 1:
                return None
            gpus = []
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                uuid = None
                with contextlib.suppress(Exception):
                    uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                gpus.append(GpuInfo(
                    index=index, uuid=uuid, name=_text(nvml.nvmlDeviceGetName(handle)),
                    memory_total_mb=int(memory.total) // 2**20, memory_available_mb=int(memory.free) // 2**20,
                ))
            driver = nvml.nvmlSystemGetDriverVersion()
            return HardwareInfo.of_gpus(
                gpus, "nvml", cuda_version=self._nvml_cuda_version(), driver_version=_text(driver)
            )
        finally:
            with contextlib.suppress(Exception):
                nvml.nvmlShutdown()

    def _nvml_cuda_version(self) -> str | None:
        version = int(self._nvml.nvmlSystemGetCudaDriverVersion())
        return f"{version // 1000}.{(version % 1000) // 10}" if version else None

    def _from_smi(self) -> HardwareInfo | None:
        if not self.smi or (self.runner is _run and shutil.which(self.smi) is None):
            return None
        rows = [r for r in self.runner([self.smi, *SMI_QUERY]).splitlines() if r.strip()]
        if not rows:
            return None
        gpus, driver = [], None
        for row in rows:
            index, uuid, name, total, free, driver = (part.strip() for part in row.split(","))
            gpus.append(GpuInfo(index=int(index), uuid=uuid, name=name, memory_total_mb=int(float(total)),
                                memory_available_mb=int(float(free))))
        cuda = None
        with contextlib.suppress(Exception):
            match = _CUDA_RE.search(self.runner([self.smi]))
            cuda = match.group(1) if match else None
        return HardwareInfo.of_gpus(gpus, "nvidia-smi", cuda_version=cuda, driver_version=driver)


def _import_nvml() -> Any:
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
