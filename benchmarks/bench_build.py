"""Build-time benchmark of ``ruthgen``: 200 generated plugins, full build and no-change rebuild
against the time to merely copy the same plugin files (measured in the same run).

Targets: full build <= 3x the copy time; no-change rebuild <= 0.5 s.

    .venv/bin/python benchmarks/bench_build.py [--plugins 200] [--weights-kib 64] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from ruthgen.contract import INPUT_FORMATS, INPUT_TYPES
from ruthgen.writer import build_repository

INFERENCE = """import numpy as np


def load(context):
    return {"scale": float(context.config.get("scale", 1.0))}


def infer(state, inputs):
    return float(np.asarray(inputs).mean()) * state["scale"]
"""
PREPROCESS = "def preprocess(frame, context):\n    return frame.image[::4, ::4]\n"
POSTPROCESS = 'def postprocess(outputs, context):\n    return {"value": outputs, "label": "ok"}\n'


def make_plugins(root: Path, count: int, weights_kib: int) -> int:
    """Write ``count`` plugins (a mix of input types and formats); return the number of files."""
    types, formats = INPUT_TYPES, INPUT_FORMATS
    files = 0
    for i in range(count):
        model_id = f"model_{i:03d}"
        folder = root / model_id / f"1.{i % 3}.0"
        (folder / "weights").mkdir(parents=True)
        contract = {
            "model_id": model_id,
            "version": folder.name,
            "display_name": f"Model {i}",
            "input": {"type": types[i % 3], "format": formats[i % 4], "min_width": 32, "min_height": 32},
            "output": {
                "schema": {
                    "value": {"type": "float"},
                    "label": {"type": "string", "enum": ["ok", "alert"]},
                    "boxes": {
                        "type": "array",
                        "optional": True,
                        "items": {"type": "object", "properties": {"x": {"type": "integer"}}},
                    },
                }
            },
            "hardware": {"supports_cpu": True, "supports_gpu": i % 2 == 0, "supports_jetson": i % 5 == 0},
            "performance": {"recommended_batch_size": 1 + i % 4, "recommended_fps": 15},
        }
        (folder / "model.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
        # Every file differs between plugins, as in real life.
        (folder / "inference.py").write_text(f"# {model_id}\n{INFERENCE}")
        (folder / "preprocessing.py").write_text(f"# {model_id}\n{PREPROCESS}")
        (folder / "postprocessing.py").write_text(f"# {model_id}\n{POSTPROCESS}")
        (folder / "config.yaml").write_text(f"scale: {1 + i / 100}\n")
        (folder / "weights" / "model.bin").write_bytes(os.urandom(weights_kib * 1024))
        files += 6
    return files


def timed(func, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    value = func(*args, **kwargs)
    return time.perf_counter() - start, value


def run(plugins: int, weights_kib: int, rounds: int) -> dict:
    copies, fulls, rebuilds, repo_copies = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="ruthgen-bench-") as tmp:
        root = Path(tmp)
        models = root / "models"
        files = make_plugins(models, plugins, weights_kib)
        build_repository(models, root / "warmup")  # import and template compilation, once per process
        for n in range(rounds):
            copy_s, _ = timed(shutil.copytree, models, root / f"copy{n}")
            full_s, result = timed(build_repository, models, root / f"repo{n}")
            assert len(result.written) == plugins, result.written
            again_s, result = timed(build_repository, models, root / f"repo{n}")
            assert result.written == [] and len(result.unchanged) == plugins
            repo_copy_s, _ = timed(shutil.copytree, root / f"repo{n}", root / f"repo_copy{n}", symlinks=True)
            repo_copies.append(repo_copy_s)
            copies.append(copy_s)
            fulls.append(full_s)
            rebuilds.append(again_s)
    copy_s, full_s, again_s = (statistics.median(x) for x in (copies, fulls, rebuilds))
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "plugins": plugins,
        "plugin_files": files,
        "weights_kib": weights_kib,
        "rounds": rounds,
        "copy_s": round(copy_s, 4),
        "copy_built_repository_s": round(statistics.median(repo_copies), 4),
        "full_build_s": round(full_s, 4),
        "no_change_rebuild_s": round(again_s, 4),
        "full_build_over_copy": round(full_s / copy_s, 2),
        "targets": {"full_build_over_copy_max": 3.0, "no_change_rebuild_s_max": 0.5},
        "met": full_s / copy_s <= 3.0 and again_s <= 0.5,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=200)
    parser.add_argument("--weights-kib", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    report = run(args.plugins, args.weights_kib, args.rounds)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        m = report["machine"]
        lines = [
            f"machine: {m['cpus']} CPUs, Python {m['python']}, {m['platform']}",
            f"{report['plugins']} plugins, {report['plugin_files']} files "
            f"({report['weights_kib']} KiB weights each), median of {report['rounds']} rounds",
            f"copy the plugin files : {report['copy_s']:.3f} s",
            f"copy the built repo   : {report['copy_built_repository_s']:.3f} s  (the output files)",
            f"full build            : {report['full_build_s']:.3f} s  "
            f"({report['full_build_over_copy']:.2f}x copy, target <= 3x)",
            f"no-change rebuild     : {report['no_change_rebuild_s']:.3f} s  (target <= 0.5 s)",
            f"targets met: {'yes' if report['met'] else 'NO'}",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0 if report["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
