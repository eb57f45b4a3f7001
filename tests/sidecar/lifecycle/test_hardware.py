from __future__ import annotations

import http.server
import threading
from types import SimpleNamespace

from sidecar.main import build_core
from sidecar.report.hardware import HardwareProbe, detect, gpus_from_metrics
from sidecar.settings import load_settings

SMI_QUERY_OUT = "0, GPU-5d0c4a4e-0000-0000-0000-000000000001, NVIDIA Tesla T4, 15360, 12000, 535.104.05\n"
SMI_PLAIN_OUT = "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2     |\n"


def _smi_runner(command):
    return SMI_QUERY_OUT if len(command) > 1 else SMI_PLAIN_OUT


def test_probe_reports_cpu_when_no_gpu_source_answers(tmp_path):
    def failing(command):
        raise FileNotFoundError("nvidia-smi")

    info = HardwareProbe(tegra_release=tmp_path / "none", runner=failing, nvml=None).detect()
    assert info.type == "cpu" and info.supports_gpu is False
    assert info.to_dict() == {"type": "cpu", "supports_gpu": False, "gpu_count": 0, "source": "none"}


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

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle:08d}-aaaa-bbbb-cccc-000000000000"

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


# What Triton 2.51 exports on its metrics port with two GPUs (DCGM gauges, label gpu_uuid only)
TRITON_GPU_METRICS = """\
# HELP nv_inference_request_success Number of successful inference requests, all batch sizes
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="m__1.0.0",version="1"} 42
# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{gpu_uuid="GPU-00000000-aaaa-bbbb-cccc-000000000000"} 0.25
nv_gpu_utilization{gpu_uuid="GPU-00000001-aaaa-bbbb-cccc-000000000000"} 0
# HELP nv_gpu_memory_total_bytes GPU total memory, in bytes
# TYPE nv_gpu_memory_total_bytes gauge
nv_gpu_memory_total_bytes{gpu_uuid="GPU-00000000-aaaa-bbbb-cccc-000000000000"} 85899345920
nv_gpu_memory_total_bytes{gpu_uuid="GPU-00000001-aaaa-bbbb-cccc-000000000000"} 85899345920
# HELP nv_gpu_memory_used_bytes GPU used memory, in bytes
# TYPE nv_gpu_memory_used_bytes gauge
nv_gpu_memory_used_bytes{gpu_uuid="GPU-00000000-aaaa-bbbb-cccc-000000000000"} 21474836480
nv_gpu_memory_used_bytes{gpu_uuid="GPU-00000001-aaaa-bbbb-cccc-000000000000"} 1073741824
"""
# What it exports on a machine without a GPU (seen on this one): no nv_gpu_* at all
TRITON_CPU_METRICS = """\
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0]
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.05
"""


def test_gpus_from_metrics_reads_memory_and_utilisation_per_gpu():
    first, second = gpus_from_metrics(TRITON_GPU_METRICS)
    assert (first.index, first.memory_total_mb, first.memory_available_mb, first.utilization_percent) == (
        0, 81920, 61440, 25.0,
    )
    assert second.index == 1 and second.memory_available_mb == 80896 and second.name is None
    assert gpus_from_metrics(TRITON_CPU_METRICS) == [] and gpus_from_metrics("not metrics {") == []


def test_detect_takes_tritons_figures_and_the_local_names_when_the_sidecar_sees_the_gpus(tmp_path):
    probe = HardwareProbe(tegra_release=tmp_path / "none", runner=_smi_runner, nvml=_FakeNvml(count=2))
    info = detect(probe, TRITON_GPU_METRICS)
    assert info.source == "triton-metrics" and info.gpu_count == 2
    assert info.gpu_name == "NVIDIA H100 80GB HBM3" and info.gpu_memory_available_mb == 61440
    assert info.gpu_utilization_percent == 25.0 and info.cuda_version == "12.4"
    assert [g["index"] for g in info.to_dict()["gpus"]] == [0, 1]


def test_detect_declares_the_gpu_from_tritons_metrics_when_the_sidecar_has_no_gpu(tmp_path):
    def no_smi(command):
        raise FileNotFoundError("nvidia-smi")

    probe = HardwareProbe(tegra_release=tmp_path / "none", runner=no_smi, nvml=None)
    info = detect(probe, TRITON_GPU_METRICS)
    assert (info.type, info.supports_gpu, info.gpu_count, info.gpu_memory_total_mb) == ("gpu", True, 2, 81920)
    assert info.gpu_name is None  # Triton 2.51 exports no name


def test_detect_falls_back_to_the_local_probe_when_triton_has_no_gpu_metrics(tmp_path):
    probe = HardwareProbe(tegra_release=tmp_path / "none", runner=_smi_runner, nvml=None)
    for text in (TRITON_CPU_METRICS, None):
        info = detect(probe, text)
        assert info.source == "nvidia-smi" and info.gpus[0].uuid.startswith("GPU-5d0c")


class _MetricsHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a reused client sends on the connection it has
    peers: list[int] = []

    def do_GET(self):
        body = TRITON_GPU_METRICS.encode()
        self.peers.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


async def test_the_runtime_reads_tritons_metrics_with_one_client_for_its_lifetime(tmp_path, fake_triton):
    # Making an HTTP client costs ~20 ms of the event loop (its TLS context): not at every heartbeat
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _MetricsHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = load_settings(
        grpc_port=0, http_port=None, model_repository=tmp_path, calibrate=False, watch_models=False,
        triton_metrics_url=f"http://127.0.0.1:{server.server_address[1]}/metrics",
    )  # fmt: skip
    runtime = build_core(settings, fake_triton)

    def no_smi(command):
        raise FileNotFoundError("nvidia-smi")

    runtime.hardware_probe = HardwareProbe(tegra_release=tmp_path / "none", runner=no_smi, nvml=None)
    try:
        first, second = [await runtime.detect_hardware() for _ in range(2)]
    finally:
        await runtime.stop()
        server.shutdown()
    assert first.source == second.source == "triton-metrics" and first.gpu_count == second.gpu_count == 2
    assert len(_MetricsHandler.peers) == 2 and len(set(_MetricsHandler.peers)) == 1  # one connection
