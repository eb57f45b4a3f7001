"""CPU latency of the reference plugins per 640x480 frame, in-process.

Each plugin in ai/models is imported with the wrapper's own loader (ruthgen.wrapper.ruth_loader)
and called as the runtime calls it: preprocess -> infer -> postprocess on a decoded RGB Frame.
JPEG decoding and Triton/gRPC transport are not included (see bench_wrapper.py for those).
Frames are synthetic 640x480 scenes (examples/scenes.py): a person for the person-based plugins,
a fall for fall_detection, a growing flame for fire_detection; temporal plugins get them in order
as one camera's stream. A ``batch`` plugin (crowd_count) runs batches of each ``--batch-sizes``
frames: every frame preprocessed, one ``infer`` for the batch, every answer postprocessed; its
figures are per frame.

A plugin that declares upstreams (helmet_detection, fall_detection and crowd_count take
person_detection's boxes) gets each frame with its upstreams' results in ``frame.upstreams``, as
the runtime gives them: each upstream runs on the frame first, untimed, and its result goes through
JSON. Its figure is its own work given those results; the upstreams are measured on their own
lines (the runtime runs an upstream once per frame, however many models need it), and the total
column adds their medians. ``--models benchmarks/fixtures/islands`` measures the plugins as they
were with their own copies of the detector.

    .venv/bin/python benchmarks/bench_models.py [--runs 50] [--warmup 5] [--only person_detection]
        [--batch-sizes 1 4 8] [--models DIR]
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ruthgen.wrapper.ruth_api import Frame, PluginContext, ScopedLogger, freeze
from ruthgen.wrapper.ruth_loader import import_plugin, package_name, plugin_on_path, read_config

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "ai" / "models"
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


@dataclass
class Plugin:
    modules: Any
    context: Any
    state: Any
    upstreams: list[tuple[str, str]]  # (model_id, version) of each declared upstream

    def run(self, item: Frame | list[Frame]) -> Any:
        """preprocess -> infer -> postprocess, as the runtime calls them (a list: one batch)."""
        frames = item if isinstance(item, list) else [item]
        inputs = [self.modules.preprocess(f, self.context) if self.modules.preprocess else f for f in frames]
        outputs = self.modules.infer(self.state, inputs if isinstance(item, list) else inputs[0])
        outputs = outputs if isinstance(item, list) else [outputs]
        results = [self.finish(output, frame) for output, frame in zip(outputs, frames, strict=True)]
        return results if isinstance(item, list) else results[0]

    def finish(self, outputs: Any, frame: Frame) -> Any:
        post = self.modules.postprocess
        if post is None:
            return outputs
        if len(inspect.signature(post).parameters) >= 3:  # postprocess(outputs, context, frame)
            return post(outputs, self.context, frame)
        return post(outputs, self.context)


def contract_of(plugin_dir: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((plugin_dir / "model.yaml").read_text("utf-8"))


def declared_upstreams(contract: dict[str, Any]) -> list[tuple[str, str]]:
    return [(u["model_id"], str(u["version"])) for u in contract.get("upstreams") or []]


def load(model_id: str, version: str, models: Path = MODELS) -> Plugin:
    plugin_dir = models / model_id / version
    contract = contract_of(plugin_dir)
    context = PluginContext(model_id, version, plugin_dir, plugin_dir / "weights",
                            freeze(read_config(plugin_dir, {})), ScopedLogger(model_id, version))
    with plugin_on_path(plugin_dir):
        entry_points = contract.get("entry_points") or {}
        package = package_name(model_id, version) + ("" if models == MODELS else f"_{models.name}")
        modules = import_plugin(plugin_dir, package, entry_points)
        state = modules.load(context)
    return Plugin(modules, context, state, declared_upstreams(contract))


@functools.cache
def loaded_upstream(model_id: str, version: str, models: Path) -> Plugin:
    return load(model_id, version, models)


def upstream_results(
    plugin: Plugin, sequence: list[tuple[np.ndarray, int]], models: Path
) -> list[dict[str, Any]]:
    """Per frame of ``sequence``, its upstreams' results ``{model_id: result}`` as the runtime passes them."""
    results: list[dict[str, Any]] = [{} for _ in sequence]
    for model_id, version in plugin.upstreams:
        upstream = loaded_upstream(model_id, version, models)
        for index, (image, timestamp_ms) in enumerate(sequence):
            frame = Frame(image=image.copy(), width=image.shape[1], height=image.shape[0], format="raw_rgb",
                          camera_id="bench", frame_id=str(index), timestamp_ms=timestamp_ms)
            results[index][model_id] = json.loads(json.dumps(upstream.run(frame)))
    return results


def bench(
    model_id: str, runs: int, warmup: int, batch_size: int = 0, models: Path = MODELS
) -> tuple[float, float, int]:
    """Median and p90 ms per frame over ``runs`` calls (of ``batch_size`` frames for a batch plugin),
    the plugin's own work: its upstreams' results are ready before the clock starts."""
    version, frames = PLUGINS[model_id]
    plugin = load(model_id, version, models)
    sequence = list(frames())
    upstreams = upstream_results(plugin, sequence, models)
    times: list[float] = []
    period = sequence[-1][1] + 100

    def frame(index: int) -> Frame:
        image, timestamp_ms = sequence[index % len(sequence)]
        lap = index // len(sequence)
        return Frame(image=image, width=image.shape[1], height=image.shape[0], format="raw_rgb",
                     camera_id="bench", frame_id=str(index), timestamp_ms=timestamp_ms + lap * period,
                     sequence_start=index % len(sequence) == 0, upstreams=upstreams[index % len(sequence)])

    for index in range(warmup + runs):
        item = [frame(index * batch_size + k) for k in range(batch_size)] if batch_size else frame(index)
        start = time.perf_counter()
        plugin.run(item)
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
    parser.add_argument("--models", type=Path, default=MODELS,
                        help="the models folder (benchmarks/fixtures/islands: each with its own detector)")
    args = parser.parse_args(argv)
    models = args.models.resolve()
    os.environ.setdefault("MPLCONFIGDIR", tempfile.mkdtemp(prefix="ruth-bench-mpl-"))
    print(f"machine: {machine()}")
    print(f"models: {models}")
    present = {m: models / m / v for m, (v, _) in PLUGINS.items() if (models / m / v).is_dir()}
    upstreams = {m: [u for u, _ in declared_upstreams(contract_of(d))] for m, d in present.items()}
    chosen = [m for m in args.only if m in present]
    # the upstreams first: a dependent's total adds their medians
    order = list(dict.fromkeys([u for m in chosen for u in upstreams[m] if u in present] + chosen))
    medians: dict[str, float] = {}
    print(f"{'plugin':<32} {'median ms':>10} {'p90 ms':>10} {'runs':>6}  with its upstreams")
    for model_id in order:
        name = f"{model_id} {PLUGINS[model_id][0]}"
        ups = upstreams[model_id]
        for size in args.batch_sizes if model_id in BATCH_PLUGINS else [0]:
            median, p90, count = bench(model_id, args.runs, args.warmup, size, models)
            medians.setdefault(model_id, median)
            label = f"{name}, batch of {size}" if size else name
            total = f"{median + sum(medians[u] for u in ups):.2f} (+ {', '.join(ups)})" if ups else ""
            print(f"{label:<32} {median:>10.2f} {p90:>10.2f} {count:>6}  {total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
