"""deploy/monitoring with the real Prometheus tools (Debian's ``prometheus`` package, installed when
missing): promtool checks the rules and the Compose scrape config and runs the rules' unit tests
(every alert firing and not firing), and a real Prometheus scrapes a running runtime (a sidecar in
front of tritonserver) with that config, evaluates every rule without an error, and answers every
query of the Grafana dashboard with data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.debian_tools import debian_tool
from tests.integration.test_lifecycle import FRAME, V, state_is, until
from tests.integration.test_told_truthfully import stack
from tests.processes import stop

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "ruth-rules.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"


def prometheus_tool(name: str) -> str:
    """``prometheus`` or ``promtool`` (Debian's ``prometheus`` package, installed when missing)."""
    return debian_tool([name], "prometheus")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([prometheus_tool("promtool"), *args], capture_output=True, text=True, timeout=120,
                          cwd=MONITORING)


def test_promtool_checks_the_rules_and_the_compose_scrape_config():
    rules = promtool("check", "rules", RULES.name)
    assert rules.returncode == 0 and "SUCCESS: 18 rules found" in rules.stdout, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_expect():
    done = promtool("test", "rules", "ruth-rules.test.yml")
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    tests = yaml.safe_load((MONITORING / "ruth-rules.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    assert firing == alerts, f"alerts without a firing case: {sorted(alerts - firing)}"


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"].replace("$instance", ".*") for panel in panels for target in panel["targets"]]


@contextlib.contextmanager
def running_prometheus(config: Path, data: Path) -> Iterator[str]:
    """A Prometheus on a free loopback port (another is tried if the port was taken meanwhile)."""
    binary = prometheus_tool("prometheus")
    for _ in range(5):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log = data.parent / f"prometheus-{port}.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={data}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 60
            while process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200:
                        yield f"http://127.0.0.1:{port}"
                        return
                time.sleep(0.2)
            if process.poll() is None or "address already in use" not in log.read_text():
                pytest.fail(f"Prometheus did not become ready:\n{log.read_text()[-3000:]}")
        finally:
            stop(process, 30.0)
    pytest.fail("no free port for Prometheus after 5 tries")


async def _calibrated(http: httpx.AsyncClient) -> bool:
    models = (await http.get("/models")).json()["models"]
    return all(m.get("fps_capacity") for m in models)


async def query(http: httpx.AsyncClient, expr: str) -> list[dict]:
    reply = (await http.get("/api/v1/query", params={"query": expr})).json()
    assert reply["status"] == "success", (expr, reply)
    return reply["data"]["result"]


async def test_a_real_prometheus_scrapes_the_runtime_and_evaluates_every_rule_and_dashboard_query(
    triton_factory, tmp_path
):
    async with stack(triton_factory, tmp_path, ["lc_echo", "sc_flaky"]) as (sidecar, http, client):
        for model_id in ("lc_echo", "sc_flaky"):
            await until(lambda m=model_id: state_is(http, m, "READY"), timeout=60.0)
        await until(lambda: _calibrated(http), timeout=60.0)  # the fps capacity the dashboard shows

        async def traffic(first: int) -> None:  # sc_flaky fails every third frame: the error panels
            for n in range(first, first + 5):
                assert not (await client.infer("lc_echo", V, FRAME, frame_id=f"p{n}")).HasField("error")
                await client.infer("sc_flaky", V, FRAME, frame_id=f"f-{n}")
                await asyncio.sleep(0.3)

        await traffic(0)
        triton_metrics = sidecar.settings.metrics_url_of_triton.split("//", 1)[1].split("/", 1)[0]

        # the Compose config as shipped, its targets pointed at this runtime and scraped every second
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(RULES)]
        targets = {"ruth-sidecar": f"127.0.0.1:{sidecar.http_port}", "ruth-triton": triton_metrics}
        for job in config["scrape_configs"]:
            job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))

        with running_prometheus(path, tmp_path / "tsdb") as url:
            async with httpx.AsyncClient(base_url=url, timeout=10) as prom:
                async def scraped() -> bool:
                    up = await query(prom, "up")
                    return {r["metric"]["job"] for r in up if r["value"][1] == "1"} == set(targets)

                await until(scraped, timeout=60.0, interval=0.5)
                await traffic(5)  # answers between scrapes, so that rates have two samples
                await until(lambda: query(prom, "ruth:requests:rate5m > 0"), timeout=60.0, interval=0.5)

                rules = (await prom.get("/api/v1/rules")).json()["data"]["groups"]
                evaluated = [r for g in rules for r in g["rules"]]
                assert len(evaluated) == 18
                assert [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"] == []
                firing = {r["name"] for r in evaluated if r["type"] == "alerting" and r["state"] == "firing"}
                assert firing == set()  # every alert waits its `for:` (or, without one, sees nothing)

                empty = [expr for expr in dashboard_queries() if not await query(prom, expr)]
                assert empty == [], "dashboard queries without data"
                (ready,) = await query(prom, 'ruth_model_state{model_id="lc_echo", state="READY"}')
                assert ready["value"][1] == "1"
