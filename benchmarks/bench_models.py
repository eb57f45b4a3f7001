"""CPU latency of the reference plugins per 640x480 frame, in-process.

Each plugin in ai/models is imported with the wrapper's own loader (ruthgen.wrapper.ruth_loader)
and called as the runtime calls it: preprocess -> infer -> postprocess on a decoded RGB Frame.
JPEG decoding and Triton/gRPC transport are not included (see bench_wrapper.py for those).
Frames are synthetic 640x480 scenes (examples/scenes.py): a person for the person-based plugins,
a fall for fall_detection, a growing flame for fire_detection; temporal plugins get them in order
as one camera's stream. A ``batch`` plugin (crowd_count) runs batches of each ``--batch-sizes``
frames: every frame preprocessed, one ``infer`` for the batch, every answer postprocessed; its
figures are per frame.

    .venv/bin/python benchmarks/bench_models.py [--runs 50] [--warmup 5] [--only person_detection]
        [--batch-sizes 1 4 8]
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
    "crowd_count": ("1.0.0", lambda: scenes.upright_sequence("camera", frames=20)),
}
BATCH_PLUGINS = {"crowd_count"}


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


def bench(model_id: str, runs: int, warmup: int, batch_size: int = 0) -> tuple[float, float, int]:
    """Median and p90 ms per frame over ``runs`` calls (of ``batch_size`` frames for a batch plugin)."""
    version, frames = PLUGINS[model_id]
    modules, context, state = load(model_id, version)
    sequence = list(frames())
    times: list[float] = []
    period = sequence[-1][1] + 100

    def frame(index: int) -> Frame:
        image, timestamp_ms = sequence[index % len(sequence)]
        lap = index // len(sequence)
        return Frame(image=image, width=image.shape[1], height=image.shape[0], format="raw_rgb",
                     camera_id="bench", frame_id=str(index), timestamp_ms=timestamp_ms + lap * period,
                     sequence_start=index % len(sequence) == 0)

    def prepared(item: Frame) -> Any:
        return modules.preprocess(item, context) if modules.preprocess else item

    def finished(outputs: Any) -> None:
        if modules.postprocess:
            modules.postprocess(outputs, context)

    for index in range(warmup + runs):
        start = time.perf_counter()
        if batch_size:
            batch = [frame(index * batch_size + k) for k in range(batch_size)]
            for outputs in modules.infer(state, [prepared(item) for item in batch]):
                finished(outputs)
        else:
            finished(modules.infer(state, prepared(frame(index))))
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000 / max(batch_size, 1))
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.9 * len(times)))], len(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=sorted(PLUGINS), default=sorted(PLUGINS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8],
                        help="frames per call for a batch plugin (its figures are per frame)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="ruth-bench-mpl-"))
    print(f"machine: {machine()}")
    print(f"{'plugin':<32} {'median ms':>10} {'p90 ms':>10} {'runs':>6}")
    for model_id in args.only:
        name = f"{model_id} {PLUGINS[model_id][0]}"
        for size in args.batch_sizes if model_id in BATCH_PLUGINS else [0]:
            median, p90, count = bench(model_id, args.runs, args.warmup, size)
            label = f"{name}, batch of {size}" if size else name
            print(f"{label:<32} {median:>10.1f} {p90:>10.1f} {count:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
