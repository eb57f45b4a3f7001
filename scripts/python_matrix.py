#!/usr/bin/env python3
"""Every Python the README names, each in a fresh venv: install, tests, and `ruthgen up` for real.

    python3 scripts/python_matrix.py [--keep] [--steps unit,integration,up] [--no-unit-on X.Y] [VERSION ...]

For each version (default: 3.10 3.11 3.12 3.13), in a temporary folder of its own:

  setup        `make setup PYTHON=<that Python> VENV=<tmp>/venv`. A version without a constraints file
               must instead be refused in one line (the README says why): that is its pass.
  unit         pytest -m "not integration", the whole unit suite on that Python.
  integration  tests/embedded/test_launcher_integration.py: the real tritonserver starts, answers,
               and its Python stub runs this very interpreter; the generator image stage's steps
               and `ruthgen build` run with this Python and its lock (tests/deploy).
  up           `ruthgen up` on ai/models (fresh repository, free ports): the sidecar's /readyz, every
               reference model READY in /models, a person found in skimage's astronaut photo by
               `ruthgen infer`; then SIGINT (Ctrl-C) stops it, cleanly, leaving no process behind.

A Python is `pythonX.Y` on PATH when that runs, else the newest $PYENV_ROOT/versions/X.Y.*. uv's and
pip's caches and the plugin environments' cache (~/.cache/ruth-ai-runtime/envs, keyed by Python version)
are used as they are: a second run on one machine downloads and builds less; a clean machine gets
everything from the package index. Prints the time of every step; exits 1 when any step failed.
CI runs the full suite on one Python first, and passes that version as --no-unit-on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("3.10", "3.11", "3.12", "3.13")
STEPS = ("setup", "unit", "integration", "up")
INTEGRATION_TESTS = [
    "tests/embedded/test_launcher_integration.py::test_server_is_ready_and_model_answers_within_deadline",
    "tests/embedded/test_launcher_integration.py::test_stub_runs_this_interpreter",
    # the generator image's steps with this Python and its lock: on 3.10, NVIDIA's image's Python
    "tests/deploy/test_deployments_run.py::test_the_generator_stage_builds_the_repository_with_this_python",
]
SETUP_TIMEOUT_S = 1800
TESTS_TIMEOUT_S = 1800
UP_READY_TIMEOUT_S = 1200  # a clean machine downloads and builds every plugin's environment first
UP_STOP_TIMEOUT_S = 120


class StepFailed(Exception):
    """A step's one-line failure; its output has been printed."""


@dataclass
class Result:
    version: str
    python: str = ""
    times: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    failed: str = ""


def find_python(version: str) -> Path | None:
    """`pythonX.Y` on PATH if it runs (a pyenv shim may not), else the newest pyenv build of X.Y."""
    on_path = shutil.which(f"python{version}")
    if on_path and _runs_as(Path(on_path), version):
        return Path(on_path)
    root = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser()
    builds = sorted(
        root.glob(f"versions/{version}.*/bin/python{version}"),
        key=lambda p: [int(n) if n.isdigit() else 0 for n in p.parts[-3].split(".")],
    )
    for candidate in reversed(builds):
        if _runs_as(candidate, version):
            return candidate
    return None


def _runs_as(python: Path, version: str) -> bool:
    try:
        done = subprocess.run([str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(cmd: list[str], what: str, timeout: float, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run to the end; its output is printed (the tail when long) when it fails."""
    try:
        done = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        _print_tail(f"{what} (timed out)", (exc.stdout or b"").decode() + (exc.stderr or b"").decode())
        raise StepFailed(f"{what}: no end after {timeout:.0f} s") from exc
    if done.returncode != 0:
        _print_tail(what, done.stdout + done.stderr)
        raise StepFailed(f"{what}: exit code {done.returncode}")
    return done


def _print_tail(what: str, text: str, lines: int = 60) -> None:
    tail = text.strip().splitlines()[-lines:]
    print(f"    --- {what}: last {len(tail)} lines ---", flush=True)
    for line in tail:
        print(f"    | {line}", flush=True)


def pytest_summary(output: str) -> str:
    """pytest's closing counts, e.g. '612 passed, 3 deselected'."""
    lines = [line.strip("= ") for line in output.strip().splitlines() if " in " in line and "passed" in line]
    return re.sub(r" in [\d.]+s.*", "", lines[-1]) if lines else "?"


# --- the steps ----------------------------------------------------------------------------------


def step_setup(python: Path, venv: Path, supported: bool, result: Result) -> bool:
    """Install; False when the version is refused as documented (nothing more to run for it)."""
    cmd = ["make", "--no-print-directory", "-C", str(ROOT), "setup", f"PYTHON={python}", f"VENV={venv}"]
    if supported:
        run(cmd, "make setup", SETUP_TIMEOUT_S)
        result.notes["setup"] = "installed"
        return True
    done = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=120, check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode == 0 or len(lines) != 1 or "is not supported" not in lines[0]:
        _print_tail("make setup", done.stdout + done.stderr)
        raise StepFailed("make setup: expected a one-line refusal of this unsupported Python")
    result.notes["setup"] = "refused in one line, as the README says: " + lines[0].split("*** ", 1)[-1]
    return False


def step_unit(venv: Path, work: Path, result: Result) -> None:
    pytest = [str(venv / "bin" / "python"), "-m", "pytest", "-q", "-m", "not integration",
              "-p", "no:cacheprovider", f"--basetemp={work / 'pytest-unit'}"]
    done = run(pytest, "unit tests", TESTS_TIMEOUT_S)
    result.notes["unit"] = pytest_summary(done.stdout)


def step_integration(venv: Path, work: Path, result: Result) -> None:
    done = run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                f"--basetemp={work / 'pytest-integration'}", *INTEGRATION_TESTS],
               "integration tests", TESTS_TIMEOUT_S)
    summary = pytest_summary(done.stdout)
    if not summary.startswith(f"{len(INTEGRATION_TESTS)} passed"):
        raise StepFailed(f"integration tests: {summary}")
    result.notes["integration"] = summary


def step_up(venv: Path, work: Path, result: Result) -> None:
    models = sorted(p.parent for p in (ROOT / "ai" / "models").glob("*/*/model.yaml"))
    grpc_port, http_port = free_port(), free_port()
    out = work / "up.out"
    cmd = [str(venv / "bin" / "ruthgen"), "up", "--models", str(ROOT / "ai" / "models"),
           "--out", str(work / "model_repository"), "--log-file", str(work / "tritonserver.log"),
           "--sidecar-port", str(grpc_port), "--sidecar-http-port", str(http_port)]
    with open(out, "w") as sink:
        # cwd: the sidecar's log (.ruth/) lands in the work folder; its own session: signals reach it alone
        process = subprocess.Popen(cmd, cwd=work, env=child_env(), stdout=sink, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        started = time.monotonic()
        states = wait_all_ready(process, http_port, len(models), out)
        result.times["up: ready"] = time.monotonic() - started
        found = person_in_astronaut(venv, work, grpc_port)
        result.notes["up"] = f"{len(states)} models READY, {found}"
        stop(process, out)
        leftovers = processes_under(work)
        if leftovers:
            raise StepFailed(f"ruthgen up left processes behind: {leftovers}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (OSError, ValueError):
        return 0, {}


def wait_all_ready(process: subprocess.Popen, http_port: int, expected: int, out: Path) -> dict[str, str]:
    deadline = time.monotonic() + UP_READY_TIMEOUT_S
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _print_tail("ruthgen up", out.read_text())
            raise StepFailed(f"ruthgen up exited with code {process.returncode} before serving")
        if http_get(http_port, "/readyz")[0] == 200:
            _, body = http_get(http_port, "/models")
            states = {f"{m['model_id']}/{m['version']}": m.get("state", "?") for m in body.get("models", [])}
            if len(states) == expected and set(states.values()) == {"READY"}:
                return states
        time.sleep(2)
    _print_tail("ruthgen up", out.read_text())
    raise StepFailed(f"not every model READY after {UP_READY_TIMEOUT_S} s: {states or 'sidecar not ready'}")


def person_in_astronaut(venv: Path, work: Path, grpc_port: int) -> str:
    image = work / "astronaut.jpg"
    run([str(venv / "bin" / "python"), "-c",
         "import sys; from PIL import Image; from skimage import data; "
         "Image.fromarray(data.astronaut()).save(sys.argv[1], quality=90)", str(image)],
        "write astronaut.jpg", 120)
    done = run([str(venv / "bin" / "ruthgen"), "infer", "--model", "person_detection", "--version", "1.0.0",
                "--sidecar", f"127.0.0.1:{grpc_port}", "--timeout", "60", str(image)], "ruthgen infer", 180)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    persons = (answer.get("result") or {}).get("count", 0)
    if not persons:
        raise StepFailed(f"person_detection found nobody in the astronaut photo: {answer}")
    return f"person_detection: {persons} person(s) in astronaut.jpg"


def stop(process: subprocess.Popen, out: Path) -> None:
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=UP_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        _print_tail("ruthgen up", out.read_text())
        raise StepFailed(f"ruthgen up still running {UP_STOP_TIMEOUT_S} s after SIGINT") from exc
    if code != 0:
        _print_tail("ruthgen up", out.read_text())
        raise StepFailed(f"ruthgen up exited with code {code} after SIGINT")


def processes_under(work: Path) -> list[str]:
    """Processes (tritonserver, stubs, sidecar) whose command line names the work folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(work) in cmdline:
                found.append(f"{entry.name}: {cmdline[:120]}")
    return found


# --- the matrix ---------------------------------------------------------------------------------


def check_version(version: str, steps: list[str], keep: bool, no_unit: bool) -> Result:
    result = Result(version)
    if no_unit and "unit" in steps:
        steps = [s for s in steps if s != "unit"]
        result.notes["unit"] = "not run here: the full suite ran on this Python"
    python = find_python(version)
    if python is None:
        result.failed = f"no Python {version} found (pythonX.Y on PATH, or pyenv)"
        return result
    result.python = str(python)
    supported = (ROOT / "constraints" / f"py{version}.txt").exists()
    work = Path(tempfile.mkdtemp(prefix=f"ruth-matrix-py{version}-"))
    venv = work / "venv"
    print(f"== Python {version}: {python} (work folder {work})", flush=True)
    try:
        for step in ("setup", *steps):
            started = time.monotonic()
            print(f"  {step} ...", flush=True)
            try:
                if step == "setup" and not step_setup(python, venv, supported, result):
                    result.times[step] = time.monotonic() - started
                    break  # refused as documented: nothing to run
                if step == "unit":
                    step_unit(venv, work, result)
                elif step == "integration":
                    step_integration(venv, work, result)
                elif step == "up":
                    step_up(venv, work, result)
            except StepFailed as exc:
                result.failed = "; ".join(filter(None, (result.failed, f"{step}: {exc}")))
                print(f"  {step} FAILED: {exc}", flush=True)
                if step == "setup":
                    break
                continue
            result.times[step] = time.monotonic() - started
            print(f"  {step}: {result.times[step]:.0f} s; {result.notes.get(step, '')}", flush=True)
    finally:
        if keep:
            print(f"  kept {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def report(results: list[Result], total_s: float) -> None:
    print(f"\n== Python matrix ({total_s:.0f} s in all, {os.cpu_count()} CPUs)")
    for r in results:
        times = ", ".join(f"{k} {v:.0f} s" for k, v in r.times.items())
        status = f"FAILED: {r.failed}" if r.failed else "ok"
        print(f"Python {r.version} ({r.python or '-'}): {status}")
        if times:
            print(f"    time: {times}")
        for step, note in r.notes.items():
            print(f"    {step}: {note}")
    good = sum(not r.failed for r in results)
    print(f"Python matrix: {good} of {len(results)} versions behave as the README says")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("versions", nargs="*", default=list(VERSIONS), help="Python minor versions")
    parser.add_argument("--steps", default=",".join(STEPS[1:]),
                        help="after setup, which of: unit, integration, up (comma-separated)")
    parser.add_argument("--no-unit-on", action="append", default=[], metavar="X.Y",
                        help="a version whose unit tests ran elsewhere (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep each version's work folder")
    args = parser.parse_args()
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS[1:])
    if unknown:
        parser.error(f"unknown steps: {sorted(unknown)}")
    started = time.monotonic()
    results = [check_version(v, steps, args.keep, v in args.no_unit_on) for v in args.versions]
    report(results, time.monotonic() - started)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
