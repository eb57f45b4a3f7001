"""Hot-reload benchmark: a plugin folder appearing -> READY, and requests lost during reloads.

Runs the real embedded tritonserver and an in-process sidecar, with either entry source
(``--source``): ``plugins``, a temporary plugin folder the sidecar owns and watches (``ruthgen
up``), or ``repository``, a repository that ``ruthgen build`` rebuilds after each change and the
sidecar serves read-only, polling its manifest every ``--poll-s`` (Compose, Kubernetes).

1. ``--appear`` times: a complete plugin folder is moved into the models folder (one rename, as a
   deployment tool would do) and the time until ``/models`` reports it READY is measured, split
   with the lifecycle history into detection (watcher debounce), validation, and generation + Triton
   load (which includes the plugin's own warmup, reported by the plugin as ``warmup_ms``).
   Target: <= 1 s plus the plugin's warmup.
2. ``--reloads`` zero-drop reloads of a model under steady load (``--workers`` clients sending
   unary Infer in a loop): each edits the plugin's config.yaml; counted are the failed requests
   (target: 0) and the time from the edit to the first answer of the new copy.

    .venv/bin/python benchmarks/bench_reload.py [--appear 5] [--reloads 5] [--workers 4] [--warmup-ms 0]
        [--debounce-s 0.25] [--source plugins|repository] [--poll-s 0.1] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from ruthgen.embedded import EmbeddedTriton
from ruthgen.writer import build_repository
from sidecar.client import AIRuntimeClient, result_dict
from sidecar.main import Sidecar
from sidecar.settings import load_settings

MODEL_YAML = """model_id: {model_id}
version: "1.0.0"
display_name: Reload benchmark plugin
input:
  type: frame
  format: jpeg
output:
  schema:
    generation: {{type: integer}}
"""
INFERENCE = """import time


def load(context):
    return {{"generation": int(context.config.get("generation", 0)), "warm": False}}


def infer(state, frame):
    if not state["warm"]:
        time.sleep({warmup_s})  # the plugin's own warmup cost, paid on the warmup frame
        state["warm"] = True
    return {{"generation": state["generation"]}}
"""


def write_plugin(parent: Path, model_id: str, warmup_ms: float, generation: int = 1) -> Path:
    folder = parent / model_id / "1.0.0"
    folder.mkdir(parents=True)
    (folder / "model.yaml").write_text(MODEL_YAML.format(model_id=model_id))
    (folder / "inference.py").write_text(INFERENCE.format(warmup_s=warmup_ms / 1000.0))
    (folder / "config.yaml").write_text(f"generation: {generation}\n")
    return parent / model_id


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


async def model_entry(http: httpx.AsyncClient, model_id: str) -> dict[str, Any] | None:
    for item in (await http.get("/models", params={"model_id": model_id})).json().get("models", []):
        return item
    return None


def parse_at(text: str) -> float:
    """Unix time of a history timestamp (``2026-01-14T10:00:00.123Z``)."""
    return calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) + int(text[20:23]) / 1000


async def measure_appear(
    http: httpx.AsyncClient, models: Path, staging: Path, i: int, warmup_ms: float, publish
) -> dict[str, Any]:
    model_id = f"bench_appear_{i}"
    source = write_plugin(staging, model_id, warmup_ms)
    started = time.time()
    os.rename(source, models / model_id)
    publish()
    while True:
        entry = await model_entry(http, model_id)
        if entry is not None and entry["state"] in ("READY", "FAILED", "INVALID"):
            break
        await asyncio.sleep(0.005)
    ready = time.time()
    steps = {h["to"]: parse_at(h["at"]) for h in entry["history"]}
    return {
        "state": entry["state"],
        "appear_to_ready_s": round(ready - started, 3),
        "detect_s": round(steps["DISCOVERED"] - started, 3),
        "validate_s": round(steps["LOADING"] - steps["VALIDATING"], 3),
        "generate_and_load_s": round(steps.get("READY", ready) - steps["LOADING"], 3),
    }


async def measure_reloads(
    client: AIRuntimeClient, models: Path, reloads: int, workers: int, publish
) -> dict:
    frame, generations, failures = jpeg(), [], []
    stop = asyncio.Event()
    sent = 0

    async def worker(w: int) -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            response = await client.infer("bench_reload", "1.0.0", frame, frame_id=f"{w}-{sent}")
            if response.HasField("error"):
                failures.append(response.error.message)
            else:
                generations.append(int(result_dict(response)["generation"]))

    tasks = [asyncio.ensure_future(worker(w)) for w in range(workers)]
    switch_s = []
    try:
        await asyncio.sleep(1.0)
        for generation in range(2, reloads + 2):
            edited = time.monotonic()
            (models / "bench_reload" / "1.0.0" / "config.yaml").write_text(f"generation: {generation}\n")
            publish()
            while not generations or generations[-1] != generation:
                assert time.monotonic() - edited < 60, "the reload did not happen"
                await asyncio.sleep(0.002)
            switch_s.append(time.monotonic() - edited)
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return {
        "reloads": reloads,
        "workers": workers,
        "requests": len(generations) + len(failures),
        "failed_requests": len(failures),
        "failures": failures[:5],
        "edit_to_new_answers_s": {
            "median": round(statistics.median(switch_s), 3), "max": round(max(switch_s), 3),
        },
        "answers_in_order": generations == sorted(generations),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    models, repo, staging = root / "models", root / "model_repository", root / "staging"
    for folder in (models, repo, staging):
        folder.mkdir()
    write_plugin(models, "bench_reload", args.warmup_ms)
    if args.source == "plugins":
        source: dict[str, Any] = {"models_dir": models, "watch_debounce_s": args.debounce_s}

        def publish() -> None:
            """The sidecar watches the folder itself."""
    else:
        source = {"manifest_poll_s": args.poll_s}

        def publish() -> None:
            build_repository(models, repo)

        publish()
    try:
        with EmbeddedTriton(repo, log_path=root / "tritonserver.log") as triton:
            settings = load_settings(
                grpc_port=0, http_port=0, triton_url=triton.grpc_url, model_repository=repo,
                triton_pid=triton.process.pid, log_level="WARNING", **source,
            )
            async with Sidecar(settings) as sidecar:
                base = f"http://127.0.0.1:{sidecar.http_port}"
                grpc_address = f"127.0.0.1:{sidecar.port}"
                async with httpx.AsyncClient(base_url=base) as http, AIRuntimeClient(grpc_address) as client:
                    appear = []
                    for i in range(args.appear):
                        appear.append(
                            await measure_appear(http, models, staging, i, args.warmup_ms, publish)
                        )
                    reload = await measure_reloads(client, models, args.reloads, args.workers, publish)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    totals = [a["appear_to_ready_s"] for a in appear]
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "settings": {"source": args.source, "watch_debounce_s": args.debounce_s,
                     "manifest_poll_s": args.poll_s, "plugin_warmup_ms": args.warmup_ms},
        "appear_to_ready": {
            "median_s": round(statistics.median(totals), 3), "max_s": round(max(totals), 3),
            "target_s": round(1.0 + args.warmup_ms / 1000.0, 3), "runs": appear,
        },
        "reload_under_load": reload,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appear", type=int, default=5)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--warmup-ms", type=float, default=0.0)
    parser.add_argument("--debounce-s", type=float, default=0.25)
    parser.add_argument("--source", choices=["plugins", "repository"], default="plugins")
    parser.add_argument("--poll-s", type=float, default=0.1, help="manifest poll of --source repository")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    a, r = result["appear_to_ready"], result["reload_under_load"]
    print(f"{result['machine']}; source: {args.source}")
    print(f"folder appears -> READY: median {a['median_s']} s, max {a['max_s']} s "
          f"(target <= {a['target_s']} s)")
    for run_ in a["runs"]:
        print(f"  detect {run_['detect_s']} s, validate {run_['validate_s']} s, "
              f"generate+load {run_['generate_and_load_s']} s -> {run_['state']}")
    switch = r["edit_to_new_answers_s"]
    print(f"{r['reloads']} reloads under load ({r['workers']} clients, {r['requests']} requests): "
          f"{r['failed_requests']} failed; edit -> new answers median {switch['median']} s, "
          f"max {switch['max']} s; answers in order: {r['answers_in_order']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
