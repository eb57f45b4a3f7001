"""What the runtime runs on: cpu, gpu or jetson, and the GPU's name, memory and CUDA version.

Sources, first that answers wins: NVML (``nvidia-ml-py``, imported only when present), then
``nvidia-smi --query-gpu=...``; a Jetson is recognised by its L4T release file
(``/etc/nv_tegra_release``), whose unified memory comes from ``/proc/meminfo``. Paths, the command
and the NVML module are injectable so that tests describe any machine.
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
SMI_QUERY = ("--query-gpu=name,memory.total,memory.free,driver_version", "--format=csv,noheader,nounits")
_CUDA_RE = re.compile(r"CUDA Version:\s*([0-9]+(?:\.[0-9]+)*)")
_TEGRA_RE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)")

Runner = Callable[[Sequence[str]], str]


@dataclass(frozen=True)
class HardwareInfo:
    type: str  # cpu | gpu | jetson
    supports_gpu: bool
    gpu_name: str | None = None
    gpu_count: int = 0
    gpu_memory_total_mb: int | None = None
    gpu_memory_available_mb: int | None = None
    cuda_version: str | None = None
    driver_version: str | None = None
    l4t_release: str | None = None
    source: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """The §7.2 ``hardware`` object (fields without a value are left out)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k != "source"}


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
        return HardwareInfo(
            type="jetson", supports_gpu=True, gpu_name="NVIDIA Jetson (integrated GPU)", gpu_count=1,
            gpu_memory_total_mb=total, gpu_memory_available_mb=available, cuda_version=cuda,
            l4t_release=release, source="l4t",
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
            handle = nvml.nvmlDeviceGetHandleByIndex(0)
            name = nvml.nvmlDeviceGetName(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            driver = nvml.nvmlSystemGetDriverVersion()
            return HardwareInfo(
                type="gpu", supports_gpu=True, gpu_name=_text(name), gpu_count=count,
                gpu_memory_total_mb=int(memory.total) // 2**20,
                gpu_memory_available_mb=int(memory.free) // 2**20,
                cuda_version=self._nvml_cuda_version(), driver_version=_text(driver), source="nvml",
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
        name, total, free, driver = (part.strip() for part in rows[0].split(","))
        cuda = None
        with contextlib.suppress(Exception):
            match = _CUDA_RE.search(self.runner([self.smi]))
            cuda = match.group(1) if match else None
        return HardwareInfo(
            type="gpu", supports_gpu=True, gpu_name=name, gpu_count=len(rows),
            gpu_memory_total_mb=int(float(total)), gpu_memory_available_mb=int(float(free)),
            cuda_version=cuda, driver_version=driver, source="nvidia-smi",
        )


def _import_nvml() -> Any:
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
