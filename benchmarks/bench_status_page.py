"""What an open status page costs the request path, in one run on one embedded tritonserver.

The sidecar of ``bench_sidecar.py`` (the same trivial plugin and ~100 KB JPEG requests) is measured
with nobody watching and with the status page open, in turns within each round: "open" is what a
browser showing ``/`` does (the page and its two files once, then ``/status.json`` every
``--poll`` seconds: 2, as the page does; lower it to exaggerate), from a thread of this process.
Per configuration (unary and InferStream at 1 and 16 in flight): frames/s, p50, and the sidecar's
CPU ms per request; then open/closed ratios of the medians over rounds.

    .venv/bin/python benchmarks/bench_status_page.py [--duration 5] [--rounds 3] [--poll 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_sidecar import MODELS, VERSIONS, build, make_jpeg, run_config, shape  # noqa: E402

from ruthgen.embedded import EmbeddedTriton  # noqa: E402
from sidecar.process import SidecarProcess  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "bench_status_page.json"


class PageWatcher:
    """A browser's traffic for an open status page: its files once, then /status.json every ``poll_s``."""

    def __init__(self, base: str, poll_s: float) -> None:
        self.base, self.poll_s = base, poll_s
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PageWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as http:
            for path in ("/", "/status.css", "/status.js"):
                http.get(path).raise_for_status()
            while not self._stop.is_set():
                http.get("/status.json").raise_for_status()
                self.polls += 1
                self._stop.wait(self.poll_s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--poll", type=float, default=2.0, help="seconds between the page's /status.json")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()

    jpeg = make_jpeg()
    workdir = Path(tempfile.mkdtemp(prefix="bench-status-page-"))
    jpeg_path = workdir / "frame.jpg"
    jpeg_path.write_bytes(jpeg)
    print(f"frame: 640x480 JPEG, {len(jpeg)} bytes; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; the page polls every {args.poll} s")
    repo = build(workdir)
    name = f"{MODELS['trivial']}__{VERSIONS['trivial']}"
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with EmbeddedTriton(repo, load_models=[name], log_path=workdir / "triton.log") as triton:
            http_port = free_port()
            sidecar = SidecarProcess(
                triton.grpc_url, repo, port=0, log_path=workdir / "sidecar.log",
                extra_args=["--log-level", "WARNING", "--http-host", "127.0.0.1",
                            "--http-port", str(http_port), "--no-calibrate"],
            ).start()  # fmt: skip
            try:
                for round_index in range(args.rounds):
                    for concurrency in args.concurrency:
                        for mode in ("unary", "stream"):
                            processes, in_flight = shape(concurrency, mode)
                            spec = {
                                "mode": mode, "model": MODELS["trivial"], "version": VERSIONS["trivial"],
                                "in_flight": in_flight, "jpeg": str(jpeg_path), "address": sidecar.address,
                                "triton": triton.grpc_url, "path": "sidecar",
                            }  # fmt: skip
                            order = ("closed", "open") if round_index % 2 == 0 else ("open", "closed")
                            for page in order:
                                base = f"{mode}/c{concurrency}/{page}"
                                if page == "open":
                                    with PageWatcher(f"http://127.0.0.1:{http_port}", args.poll):
                                        row = run_config(spec, processes, args.duration, args.warmup, sidecar)
                                else:
                                    row = run_config(spec, processes, args.duration, args.warmup, sidecar)
                                results.setdefault(base, []).append(row)
                                print(f"round {round_index + 1} {base:22s} {row['fps']:7.0f} fps  "
                                      f"p50 {row['p50_ms']:6.2f} ms  sidecar "
                                      f"{row['sidecar_cpu_ms_per_request']:.3f} ms CPU/req", flush=True)
            finally:
                sidecar.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\nmedians over rounds; ratio = page open / page closed")
    print(f"{'mode/concurrency':18s} {'fps closed':>10s} {'fps open':>9s} {'ratio':>6s} "
          f"{'p50 closed':>10s} {'p50 open':>9s} {'CPU/req closed':>14s} {'open':>7s}")
    summary = []
    for concurrency in args.concurrency:
        for mode in ("unary", "stream"):
            rows = {page: results[f"{mode}/c{concurrency}/{page}"] for page in ("closed", "open")}
            med = {page: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                   for page, runs in rows.items()}
            item = {"config": f"{mode}/c{concurrency}", **{f"{page}_{k}": v for page, m in med.items()
                                                             for k, v in m.items()}}
            item["fps_ratio"] = med["open"]["fps"] / med["closed"]["fps"]
            summary.append(item)
            config = f"{mode}/c{concurrency}"
            print(f"{config:18s} {med['closed']['fps']:10.0f} {med['open']['fps']:9.0f} "
                  f"{item['fps_ratio']:6.3f} {med['closed']['p50_ms']:8.2f}ms {med['open']['p50_ms']:7.2f}ms "
                  f"{med['closed']['sidecar_cpu_ms_per_request']:12.3f}ms "
                  f"{med['open']['sidecar_cpu_ms_per_request']:5.3f}ms")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": results, "summary": summary, "poll_s": args.poll,
                                     "duration_s": args.duration, "rounds": args.rounds}, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
