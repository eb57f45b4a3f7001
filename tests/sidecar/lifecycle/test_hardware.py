from __future__ import annotations

from types import SimpleNamespace

from sidecar.report.hardware import HardwareProbe

SMI_QUERY_OUT = "NVIDIA Tesla T4, 15360, 12000, 535.104.05\n"
SMI_PLAIN_OUT = "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2     |\n"


def _smi_runner(command):
    return SMI_QUERY_OUT if len(command) > 1 else SMI_PLAIN_OUT


def test_probe_reports_cpu_when_no_gpu_source_answers(tmp_path):
    def failing(command):
        raise FileNotFoundError("nvidia-smi")

    info = HardwareProbe(tegra_release=tmp_path / "none", runner=failing, nvml=None).detect()
    assert info.type == "cpu" and info.supports_gpu is False
    assert info.to_dict() == {"type": "cpu", "supports_gpu": False, "gpu_count": 0}


def test_probe_reads_nvidia_smi_when_nvml_is_absent(tmp_path):
    info = HardwareProbe(tegra_release=tmp_path / "none", runner=_smi_runner, nvml=None).detect()
    assert (info.type, info.gpu_name, info.gpu_memory_total_mb, info.gpu_memory_available_mb) == (
        "gpu", "NVIDIA Tesla T4", 15360, 12000,
    )
    assert info.cuda_version == "12.2" and info.source == "nvidia-smi"


class _FakeNvml:
    def __init__(self, count=1):
        self.count = count
        self.shutdown = False

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=80 * 2**30, free=79 * 2**30)

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040


def test_probe_prefers_nvml_when_present(tmp_path):
    nvml = _FakeNvml()
    info = HardwareProbe(tegra_release=tmp_path / "none", runner=_smi_runner, nvml=nvml).detect()
    assert info.source == "nvml" and info.gpu_name == "NVIDIA H100 80GB HBM3"
    assert info.gpu_memory_total_mb == 81920 and info.gpu_memory_available_mb == 80896
    assert info.cuda_version == "12.4" and nvml.shutdown


def test_probe_falls_back_to_smi_when_nvml_finds_no_device(tmp_path):
    info = HardwareProbe(tegra_release=tmp_path / "none", runner=_smi_runner, nvml=_FakeNvml(0)).detect()
    assert info.source == "nvidia-smi"


def test_probe_reports_jetson_when_the_l4t_release_file_exists(tmp_path):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n")
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       31998848 kB\nMemFree:  100 kB\nMemAvailable:   20480000 kB\n")
    info = HardwareProbe(tegra_release=release, meminfo=meminfo, runner=_smi_runner, nvml=None).detect()
    assert info.type == "jetson" and info.l4t_release == "R35.4.1" and info.supports_gpu
    assert info.gpu_memory_total_mb == 31248 and info.gpu_memory_available_mb == 20000
