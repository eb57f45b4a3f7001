// The runtime's status page: reads /status.json every two seconds and draws one card per model
// version. Text goes in with textContent only (nothing from the runtime is parsed as HTML).
"use strict";

const POLL_MS = 2000;
const HISTORY = 4;

function text(root, selector, value) {
  const node = root.querySelector(selector);
  node.textContent = value === null || value === undefined || value === "" ? "–" : String(value);
  return node;
}

function badge(node, value) {
  node.textContent = value;
  node.className = node.className.split(" ").filter((c) => c === "badge" || c === "state" || c === "health")
    .concat([value]).join(" ");
}

function pair(a, b) {
  return (a === null || a === undefined) ? "–" : `${a} / ${b === null || b === undefined ? "–" : b}`;
}

function drawRuntime(runtime, models) {
  text(document, "#runtime-id", runtime.runtime_id);
  text(document, "#runtime-version", runtime.runtime_version);
  badge(document.getElementById("runtime-health"), runtime.health);
  const triton = document.getElementById("triton");
  triton.textContent = runtime.inference_server_ready ? "ready" : "not ready";
  triton.className = `badge ${runtime.inference_server_ready ? "yes" : "no"}`;
  const serving = models.filter((m) => m.state === "READY" && m.health !== "UNHEALTHY").length;
  text(document, "#serving", `${serving} of ${models.length}`);
  const hw = runtime.hardware || {};
  const gpus = (hw.gpus || []).map((g) => {
    const memory = g.memory_total_mb ? `, ${g.memory_available_mb ?? "?"} of ${g.memory_total_mb} MiB free` : "";
    const busy = g.utilization_percent === undefined ? "" : `, ${g.utilization_percent} % busy`;
    return `GPU ${g.index} ${g.name || ""}${memory}${busy}`;
  });
  text(document, "#hardware", gpus.length ? gpus.join(", ") : hw.type || "cpu");
}

function drawModel(card, model) {
  const perf = model.performance || {};
  text(card, ".name", model.model_id);
  text(card, ".version", model.version);
  badge(card.querySelector(".state"), model.state);
  badge(card.querySelector(".health"), model.health);
  text(card, ".input", model.input_type);
  const reason = model.waiting_for || (model.state !== "READY" || model.health !== "HEALTHY"
    ? (model.health !== "HEALTHY" && perf.reason ? perf.reason : model.reason) : "");
  card.querySelector(".reason").textContent = reason || "";
  text(card, ".rate", perf.requests_per_s);
  text(card, ".latency", pair(perf.p50_inference_ms, perf.p99_inference_ms));
  text(card, ".wait", pair(perf.avg_wait_ms, perf.p99_wait_ms));
  text(card, ".errors", perf.error_rate === undefined ? null : `${(perf.error_rate * 100).toFixed(1)} %`);
  text(card, ".capacity", model.fps_capacity);
  text(card, ".upstreams", (model.upstreams || []).map((u) => `${u.model_id} ${u.version}`).join(", "));
  card.querySelector(".last-error").textContent = model.last_error ? `last error: ${model.last_error}` : "";
  const list = card.querySelector(".history");
  list.replaceChildren(...(model.history || []).slice(-HISTORY).reverse().map((h) => {
    const item = document.createElement("li");
    item.textContent = `${h.at.slice(11, 19)} ${h.from || "–"} → ${h.to}: ${h.reason}`;
    return item;
  }));
}

function drawModels(models) {
  const main = document.getElementById("models");
  const template = document.getElementById("model-card");
  const seen = new Set();
  for (const model of models) {
    const key = `${model.model_id}:${model.version}`;
    seen.add(key);
    let card = main.querySelector(`[data-model="${CSS.escape(key)}"]`);
    if (!card) {
      card = template.content.firstElementChild.cloneNode(true);
      card.dataset.model = key;
      main.appendChild(card);
    }
    card.dataset.state = model.state;
    card.dataset.health = model.health;
    drawModel(card, model);
  }
  for (const card of [...main.children]) {
    if (!seen.has(card.dataset.model)) card.remove();
  }
}

async function poll() {
  const updated = document.getElementById("updated");
  try {
    const reply = await fetch("status.json", { cache: "no-store" });
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    const status = await reply.json();
    drawRuntime(status.runtime, status.models);
    drawModels(status.models);
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    updated.className = "muted";
  } catch (error) {
    updated.textContent = `cannot reach the runtime (${error.message}); retrying`;
    updated.className = "stale";
  }
  setTimeout(poll, POLL_MS);
}

poll();
