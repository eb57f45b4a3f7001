"""CPU latency of the reference plugins per 640x480 frame, in-process.

Each plugin in ai/models is imported with the wrapper's own loader (ruthgen.wrapper.ruth_loader)
and called as the runtime calls it: preprocess -> infer -> postprocess on a decoded RGB Frame.
JPEG decoding and Triton/gRPC transport are not included (see bench_wrapper.py for those).
Frames are synthetic 640x480 scenes (examples/scenes.py): a person for the person-based plugins,
a fall for fall_detection, a growing flame for fire_detection; temporal plugins get them in order
as one camera's stream.

    .venv/bin/python benchmarks/bench_models.py [--runs 50] [--warmup 5] [--only person_detection]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ruthgen.wrapper.ruth_api import Frame, PluginContext, ScopedLogger, freeze
from ruthgen.wrapper.ruth_loader import import_plugin, package_name, plugin_on_path, read_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import scenes  # noqa: E402

PLUGINS: dict[str, tuple[str, Callable[[], Iterator[tuple[np.ndarray, int]]]]] = {
    "person_detection": ("1.0.0", lambda: scenes.upright_sequence("camera", frames=20)),
    "helmet_detection": ("0.1.0", lambda: scenes.upright_sequence("astronaut", frames=20)),
    "fall_detection": ("1.0.0", lambda: scenes.fall_sequence("camera")),
    "fire_detection": ("2.1.0", lambda: scenes.flame_sequence(frames=20)),
}


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}; {os.cpu_count()} logical CPUs; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; numpy {np.__version__}; OpenCV {cv2.__version__}; "
            f"cv2 threads {cv2.getNumThreads()}")


def load(model_id: str, version: str) -> tuple[Any, Any, Any]:
    import yaml

    plugin_dir = ROOT / "ai" / "models" / model_id / version
    contract = yaml.safe_load((plugin_dir / "model.yaml").read_text("utf-8"))
    context = PluginContext(model_id, version, plugin_dir, plugin_dir / "weights",
                            freeze(read_config(plugin_dir, {})), ScopedLogger(model_id, version))
    with plugin_on_path(plugin_dir):
        entry_points = contract.get("entry_points") or {}
        modules = import_plugin(plugin_dir, package_name(model_id, version), entry_points)
        state = modules.load(context)
    return modules, context, state


def bench(model_id: str, runs: int, warmup: int) -> tuple[float, float, int]:
    version, frames = PLUGINS[model_id]
    modules, context, state = load(model_id, version)
    sequence = list(frames())
    times: list[float] = []
    period = sequence[-1][1] + 100
    for index in range(warmup + runs):
        image, timestamp_ms = sequence[index % len(sequence)]
        lap = index // len(sequence)
        frame = Frame(image=image, width=image.shape[1], height=image.shape[0], format="raw_rgb",
                      camera_id="bench", frame_id=str(index), timestamp_ms=timestamp_ms + lap * period,
                      sequence_start=index % len(sequence) == 0)
        start = time.perf_counter()
        inputs = modules.preprocess(frame, context) if modules.preprocess else frame
        outputs = modules.infer(state, inputs)
        if modules.postprocess:
            modules.postprocess(outputs, context)
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], len(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=sorted(PLUGINS), default=sorted(PLUGINS))
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="ruth-bench-mpl-"))
    print(f"machine: {machine()}")
    print(f"{'plugin':<28} {'median ms':>10} {'p90 ms':>10} {'runs':>6}")
    for model_id in args.only:
        median, p90, count = bench(model_id, args.runs, args.warmup)
        print(f"{model_id + ' ' + PLUGINS[model_id][0]:<28} {median:>10.1f} {p90:>10.1f} {count:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
