from __future__ import annotations

import logging

import pytest

from sidecar.errors import ErrorCode, PluginError, RequestTimeout, SidecarError
from sidecar.http import create_app
from sidecar.http.app import HealthEndpointFilter
from tests.sidecar.http.conftest import admin_settings, app_client, observe


async def test_livez_answers_200_when_the_process_serves(client):
    response = await client.get("/livez")
    assert response.status_code == 200 and response.json() == {"live": True}


async def test_readyz_answers_503_before_the_initial_loads(client):
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["initial_loads_done"] is False and response.json()["healthy_models"] == 0


async def test_readyz_answers_200_when_a_model_is_healthy(client, runtime):
    await runtime.start()
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "healthy" and response.json()["total_models"] == 1


async def test_readyz_answers_503_when_no_model_is_healthy(client, runtime):
    await runtime.start()
    for _ in range(3):
        observe(runtime, "fall_detection", "1.0.0", RequestTimeout("no answer"), latency_ms=7000.0)
    response = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "unhealthy"


async def test_capabilities_returns_the_declaration(client, runtime):
    await runtime.start()
    body = (await client.get("/capabilities")).json()
    assert body["hardware"]["type"] == "cpu"
    states = {m["model_id"]: m["state"] for m in body["models"]}
    assert states == {"broken": "INVALID", "fall_detection": "READY"}
    assert body["capacity"]["max_fps_total"] == 50.0  # from the 20 ms hint until measured
    assert body["health_summary"]["status"] == "healthy"


async def test_models_lists_state_history_and_health(client, runtime):
    await runtime.start()
    observe(runtime, "fall_detection", "1.0.0", latency_ms=12.0)
    body = (await client.get("/models", params={"model_id": "fall_detection"})).json()
    (model,) = body["models"]
    assert model["state"] == "READY" and model["health"] == "HEALTHY"
    assert [h["to"] for h in model["history"]] == ["DISCOVERED", "VALIDATING", "LOADING", "READY"]
    assert model["performance"]["requests"] == 1 and model["performance"]["avg_inference_ms"] == 12.0


async def test_models_answers_404_when_nothing_matches(client, runtime):
    await runtime.start()
    response = await client.get("/models", params={"model_id": "nope"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "MODEL_NOT_FOUND"


async def test_metrics_exposes_requests_latency_state_and_health(client, runtime):
    await runtime.start()
    observe(runtime, "fall_detection", "1.0.0", latency_ms=12.0)
    failure = PluginError("infer: boom", ErrorCode.INFERENCE_ERROR)
    observe(runtime, "fall_detection", "1.0.0", failure, latency_ms=3.0)
    response = await client.get("/metrics")
    text = response.text
    assert response.headers["content-type"].startswith("text/plain")
    assert 'ruth_requests_total{code="OK",model_id="fall_detection",version="1.0.0"} 1.0' in text
    assert 'ruth_requests_total{code="INFERENCE_ERROR",model_id="fall_detection",version="1.0.0"} 1.0' in text
    bucket = 'ruth_request_duration_seconds_bucket{le="0.025",model_id="fall_detection",version="1.0.0"}'
    assert f"{bucket} 2.0" in text
    assert 'ruth_model_state{model_id="fall_detection",state="READY",version="1.0.0"} 1.0' in text
    assert 'ruth_model_state{model_id="broken",state="INVALID",version="0.1.0"} 1.0' in text
    assert 'ruth_model_health{health="DEGRADED",model_id="fall_detection",version="1.0.0"} 1.0' in text
    assert 'ruth_runtime_health{health="DEGRADED"} 1.0' in text
    assert "ruth_inference_server_ready 1.0" in text
    runtime.readiness.ready = False  # what the next readiness check finds when Triton is gone
    assert "ruth_inference_server_ready 0.0" in (await client.get("/metrics")).text


async def test_metrics_and_models_keep_the_wait_apart_from_the_models_own_time(client, runtime):
    await runtime.start()
    for _ in range(5):
        observe(runtime, "fall_detection", "1.0.0", latency_ms=400.0, model_ms=20.0)
    text = (await client.get("/metrics")).text
    labels = 'model_id="fall_detection",version="1.0.0"'
    assert f'ruth_model_compute_seconds_bucket{{le="0.025",{labels}}} 5.0' in text
    assert f'ruth_request_wait_seconds_bucket{{le="0.25",{labels}}} 0.0' in text
    assert f'ruth_request_wait_seconds_bucket{{le="0.5",{labels}}} 5.0' in text
    assert f'ruth_request_duration_seconds_bucket{{le="0.5",{labels}}} 5.0' in text
    (model,) = (await client.get("/models", params={"model_id": "fall_detection"})).json()["models"]
    assert model["health"] == "HEALTHY"
    assert model["performance"]["avg_inference_ms"] == 20.0
    assert model["performance"]["avg_wait_ms"] == 380.0


async def test_admin_rescan_is_refused_when_no_token_is_configured(client_without_token):
    response = await client_without_token.post("/admin/rescan", headers={"Authorization": "Bearer x"})
    assert response.status_code == 403 and "RUTH_ADMIN_TOKEN" in response.json()["error"]["message"]


async def test_admin_rescan_answers_401_when_the_token_is_wrong(client):
    assert (await client.post("/admin/rescan")).status_code == 401
    response = await client.post("/admin/rescan", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


async def test_admin_rescan_loads_new_plugins_when_authorized(client, runtime, entries, token):
    await runtime.start()
    entries.add("crowd", "2.0.0")
    response = await client.post("/admin/rescan", params={"model_id": "crowd"},
                                 headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert [(m["model_id"], m["state"]) for m in response.json()["models"]] == [("crowd", "READY")]


async def test_metrics_exposes_open_streams_connections_and_refusals(client, runtime):
    runtime.streams.max_per_connection = 2
    runtime.streams.max_streams = 3
    slots = [runtime.admit_stream("ipv4:10.0.0.1:1000") for _ in range(2)]
    slots.append(runtime.admit_stream("ipv4:10.0.0.2:2000"))
    for connection in ("ipv4:10.0.0.1:1000", "ipv4:10.0.0.3:3000"):
        with pytest.raises(SidecarError) as refused:
            runtime.admit_stream(connection)
        assert refused.value.code is ErrorCode.OVERLOADED
    slots[0].release()
    text = (await client.get("/metrics")).text
    assert "ruth_streams_open 2.0" in text and "ruth_stream_connections 2.0" in text
    assert "ruth_streams_max 3.0" in text
    assert 'ruth_streams_refused_total{limit="connection"} 1.0' in text
    assert 'ruth_streams_refused_total{limit="process"} 1.0' in text
    assert "ruth_streams_closed_idle_total 0.0" in text


@pytest.mark.parametrize(
    ("address", "scheme", "allow_plaintext", "status"),
    [
        ("127.0.0.1", "http", False, 200),
        ("127.8.9.10", "http", False, 200),
        ("::1", "http", False, 200),
        ("::ffff:127.0.0.1", "http", False, 200),
        ("10.1.2.3", "http", False, 403),
        ("fd00::5", "http", False, 403),
        ("10.1.2.3", "https", False, 200),
        ("10.1.2.3", "http", True, 200),
    ],
)
async def test_admin_rescan_over_plain_http_is_refused_from_a_non_loopback_client(
    runtime, token, address, scheme, allow_plaintext, status
):
    await runtime.start()
    app = create_app(admin_settings(token, allow_plaintext), runtime)
    async with app_client(app, address, scheme) as client:
        response = await client.post("/admin/rescan", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == status, response.text
    if status == 403:
        message = response.json()["error"]["message"]
        assert "loopback only" in message and "RUTH_HTTP_TLS" in message


async def test_admin_rescan_refuses_plain_http_from_afar_before_judging_the_token(runtime):
    async with app_client(create_app(admin_settings("a-token"), runtime), "192.0.2.7") as client:
        response = await client.post("/admin/rescan", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "FORBIDDEN"


def test_access_log_filter_drops_probe_endpoints_only():
    def record(path):
        return logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:1", "GET", path, "1.1", 200), None)

    quiet = HealthEndpointFilter()
    assert not quiet.filter(record("/livez")) and not quiet.filter(record("/readyz"))
    assert not quiet.filter(record("/metrics?x=1")) and quiet.filter(record("/models"))


async def test_the_status_page_and_its_files_come_from_this_port_alone(client):
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert 'src="status.js"' in page.text and 'href="status.css"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets
    for name, media in (("status.js", "text/javascript"), ("status.css", "text/css")):
        served = await client.get(f"/{name}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(media)
        assert "http://" not in served.text and "https://" not in served.text
    script = (await client.get("/status.js")).text
    assert "innerHTML" not in script  # the runtime's text never goes in as HTML


async def test_status_json_holds_the_runtime_and_every_version_as_models_does(client, runtime):
    await runtime.start()
    observe(runtime, "fall_detection", "1.0.0", latency_ms=12.0, model_ms=10.0)
    status = (await client.get("/status.json")).json()
    assert status["runtime"]["health"] == "HEALTHY" and status["runtime"]["inference_server_ready"] is True
    assert status["runtime"]["hardware"]["type"] == "cpu"
    models = {m["model_id"]: m for m in status["models"]}
    listed = (await client.get("/models")).json()["models"]
    assert {(m["model_id"], m["state"], m["health"]) for m in listed} == {
        (m["model_id"], m["state"], m["health"]) for m in models.values()
    }
    fall = models["fall_detection"]
    assert (fall["state"], fall["health"], fall["input_type"]) == ("READY", "HEALTHY", "frame")
    assert fall["performance"]["requests"] == 1 and fall["performance"]["requests_per_s"] >= 0
    assert fall["performance"]["p50_inference_ms"] == fall["performance"]["p99_inference_ms"] == 10.0
    assert [h["to"] for h in fall["history"]][-1] == "READY"
