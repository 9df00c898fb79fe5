// The tessera web page: pick a workflow, fill its inputs, start it, follow its steps live over
// server-sent events, and look at the outputs. Deep links: #workflow=NAME&input.X=VALUE&autostart=1
// fills (and starts) a run; #run=ID shows one.
"use strict";

const $ = (selector) => document.querySelector(selector);
let workflows = [];
let watching = null;

function token() {
  return localStorage.getItem("tessera-token") || "";
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token()) headers["Authorization"] = "Bearer " + token();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("#token-box").hidden = false;
  }
  return response;
}

async function json(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.statusText;
    throw new Error(message);
  }
  return body;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function hashParams() {
  return new URLSearchParams(location.hash.replace(/^#/, ""));
}

function renderInputs() {
  const chosen = workflows.find((w) => w.name === $("#workflow").value);
  const box = $("#inputs");
  box.replaceChildren();
  if (!chosen) return;
  $("#workflow-description").textContent =
    (chosen.description || "") + (chosen.runnable ? "" : " (not runnable here: " + chosen.problems.join("; ") + ")");
  const params = hashParams();
  for (const input of chosen.inputs) {
    const label = element("label", { text: `${input.name} (${input.domain}) ` });
    let field;
    if (input.kind === "image") {
      field = element("input", { type: "file", accept: "image/png,image/jpeg" });
    } else if (input.kind === "tokens") {
      field = element("textarea", { placeholder: "token ids as JSON, e.g. [1, 2, 3]" });
    } else {
      field = element("input", { type: "text" });
      field.value = params.get("input." + input.name) || input.default || input.example || "";
    }
    field.dataset.input = input.name;
    field.dataset.kind = input.kind;
    label.append(field);
    box.append(label);
  }
}

async function loadWorkflows() {
  workflows = await json("/v1/workflows");
  const select = $("#workflow");
  select.replaceChildren(...workflows.map((w) => element("option", { value: w.name, text: w.name })));
  const wanted = hashParams().get("workflow");
  if (wanted) select.value = wanted;
  renderInputs();
}

async function loadModel() {
  try {
    const [model] = await json("/v1/models");
    $("#model-summary").textContent =
      `${model.path} · ${(model.parameters / 1e6).toFixed(1)}M parameters · ${model.dtype} · ${model.device}`;
  } catch (error) {
    $("#model-summary").textContent = String(error.message);
  }
}

async function loadRuns() {
  const runs = await json("/v1/runs");
  $("#runs").replaceChildren(
    ...runs.slice(0, 50).map((run) => {
      const item = element("li", {}, element("code", { text: run.id }), " ", run.workflow, " ",
        element("span", { class: "state " + run.state, text: run.state }));
      item.addEventListener("click", () => show(run.id));
      return item;
    }),
  );
}

async function start(event) {
  if (event) event.preventDefault();
  $("#form-error").textContent = "";
  const form = new FormData();
  form.append("workflow", $("#workflow").value);
  form.append("seed", $("#seed").value || "0");
  for (const field of document.querySelectorAll("#inputs [data-input]")) {
    const name = "inputs." + field.dataset.input;
    if (field.type === "file") {
      if (field.files.length) form.append(name, field.files[0]);
    } else if (field.dataset.kind === "tokens") {
      if (field.value.trim()) form.append(name, new Blob([field.value], { type: "application/json" }));
    } else {
      form.append(name, field.value);
    }
  }
  try {
    const run = await json("/v1/runs", { method: "POST", body: form });
    location.hash = "run=" + encodeURIComponent(run.id);
    show(run.id);
    loadRuns();
  } catch (error) {
    $("#form-error").textContent = error.message;
  }
}

function renderSteps(run) {
  const list = $("#steps");
  for (const step of run.steps) {
    let item = list.querySelector(`li[data-step="${CSS.escape(step.id)}"]`);
    if (!item) {
      item = element("li", { "data-step": step.id });
      list.append(item);
    }
    item.dataset.status = step.status;
    const progress = element("progress", { max: "1" });
    progress.value = step.progress || 0;
    let detail = step.status;
    if (step.cached) detail = "cached";
    if (step.elapsed_ms != null) detail += ` in ${(step.elapsed_ms / 1000).toFixed(1)} s`;
    if (step.error) detail += ": " + step.error;
    if (step.skip_reason) detail += ` (${step.skip_reason})`;
    item.replaceChildren(element("strong", { text: step.id }), ` → ${step.generate} `, progress, " ",
      element("span", { class: "detail", text: detail }));
  }
}

function renderState(run) {
  const state = $("#run-state");
  state.textContent = run.state;
  state.className = "state " + run.state;
  $("#run-error").textContent = run.error || "";
  $("#cancel-run").hidden = run.state !== "queued" && run.state !== "running";
}

async function fileText(url) {
  const response = await api(url);
  return response.text();
}

async function fileUrl(url) {
  const response = await api(url);
  return URL.createObjectURL(await response.blob());
}

function drawBoxes(canvas, image, boxes) {
  const width = image ? image.naturalWidth : 320;
  const height = image ? image.naturalHeight : 320;
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.fillStyle = "#f4f4f4";
  context.fillRect(0, 0, width, height);
  if (image) context.drawImage(image, 0, 0);
  context.lineWidth = Math.max(1, width / 160);
  context.font = `${Math.max(10, width / 24)}px sans-serif`;
  for (const box of boxes) {
    const x = box.xmin * width, y = box.ymin * height;
    context.strokeStyle = "#ff3b30";
    context.strokeRect(x, y, (box.xmax - box.xmin) * width, (box.ymax - box.ymin) * height);
    context.fillStyle = "#ff3b30";
    context.fillText(box.label, x + 2, y + Math.max(10, width / 24));
  }
}

async function renderOutputs(run) {
  const box = $("#outputs");
  box.replaceChildren();
  let image = null;
  const boxesToDraw = [];
  for (const output of run.outputs) {
    const card = element("div", { class: "output", "data-output": output.name },
      element("h3", { text: `${output.name} ← ${output.from}${output.domain ? " (" + output.domain + ")" : ""}` }));
    for (const file of output.files) {
      if (file.content_type.startsWith("image/")) {
        const img = element("img", { alt: `${output.name}: ${file.name}` });
        img.src = await fileUrl(file.url);
        if (file.kind === "raw-tokens-preview") {
          card.append(element("p", { class: "label-note",
            text: "Raw token ids in false colour (no plugin decodes this domain yet) — not an image." }));
        } else if (!image) {
          image = img;
        }
        card.append(img);
      } else if (file.content_type.startsWith("application/json")) {
        const text = await fileText(file.url);
        let parsed = null;
        try { parsed = JSON.parse(text); } catch (_) { /* shown as text */ }
        if (output.domain === "det" && Array.isArray(parsed)) boxesToDraw.push([card, parsed]);
        card.append(element("pre", { text: parsed ? JSON.stringify(parsed, null, file.kind === "raw-tokens" ? 0 : 2) : text }));
      } else if (file.content_type.startsWith("text/")) {
        card.append(element("pre", { text: await fileText(file.url) }));
      } else {
        card.append(element("a", { href: file.url, text: `${file.name} (${file.bytes} bytes)` }));
      }
    }
    const warnings = output.warnings || [];
    if (warnings.length) {
      const details = element("details", {}, element("summary", { class: "label-note",
        text: `${warnings.length} warning${warnings.length === 1 ? "" : "s"} from the plugin` }));
      for (const warning of warnings) details.append(element("div", { class: "label-note", text: warning }));
      card.append(details);
    }
    box.append(card);
  }
  for (const [card, boxes] of boxesToDraw) {
    if (!boxes.length) {
      card.insertBefore(element("p", { class: "muted", text: "No boxes." }), card.children[1] || null);
      continue;
    }
    const canvas = element("canvas", { "data-boxes": String(boxes.length) });
    if (image && !image.complete) await new Promise((done) => { image.onload = done; image.onerror = done; });
    drawBoxes(canvas, image, boxes);
    card.insertBefore(canvas, card.children[1] || null);
  }
  box.dataset.ready = "true";
}

// Server-sent events read through fetch, so the bearer token can be sent.
async function follow(id, onEvent) {
  let after = 0;
  for (let attempt = 0; attempt < 100 && watching === id; attempt++) {
    try {
      const response = await api(`/v1/runs/${encodeURIComponent(id)}/events?after=${after}`);
      if (!response.ok) return;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = { id: null, kind: "message", data: "" };
          for (const line of frame.split("\n")) {
            if (line.startsWith("id:")) event.id = Number(line.slice(3).trim());
            else if (line.startsWith("event:")) event.kind = line.slice(6).trim();
            else if (line.startsWith("data:")) event.data += line.slice(5).trim();
          }
          if (event.id != null) after = event.id;
          if (event.data) onEvent(event.kind, JSON.parse(event.data));
        }
        if (watching !== id) return;
      }
    } catch (_) {
      await new Promise((done) => setTimeout(done, 500)); // reconnect, resuming after `after`
    }
  }
}

async function show(id) {
  watching = id;
  $("#run").hidden = false;
  $("#run-id").textContent = id;
  $("#steps").replaceChildren();
  $("#outputs").replaceChildren();
  delete $("#outputs").dataset.ready;
  let run = await json(`/v1/runs/${encodeURIComponent(id)}`);
  renderState(run);
  renderSteps(run);
  if (["succeeded", "failed", "cancelled"].includes(run.state)) {
    await renderOutputs(run);
    return;
  }
  await follow(id, (kind, data) => {
    const step = run.steps.find((s) => s.id === data.step);
    if (kind === "run") {
      run.state = data.state;
      renderState(run);
      return;
    }
    if (!step) return;
    if (kind === "progress") step.progress = data.fraction;
    else if (kind === "started") step.status = "running";
    else if (kind === "finished") Object.assign(step, { status: "finished", progress: 1, elapsed_ms: data.elapsed_ms });
    else if (kind === "cached") Object.assign(step, { status: "cached", progress: 1, cached: true });
    else if (kind === "failed") Object.assign(step, { status: "failed", error: data.error });
    else if (kind === "skipped") Object.assign(step, { status: "skipped", skip_reason: data.reason });
    renderSteps(run);
  });
  if (watching !== id) return;
  run = await json(`/v1/runs/${encodeURIComponent(id)}`);
  renderState(run);
  renderSteps(run);
  await renderOutputs(run);
  loadRuns();
}

async function main() {
  $("#token").value = token();
  $("#token").addEventListener("change", () => {
    localStorage.setItem("tessera-token", $("#token").value);
    main();
  });
  $("#workflow").addEventListener("change", renderInputs);
  $("#run-form").onsubmit = start;
  $("#cancel-run").onclick = () => api(`/v1/runs/${encodeURIComponent(watching)}/cancel`, { method: "POST" });
  try {
    await Promise.all([loadWorkflows(), loadModel(), loadRuns()]);
  } catch (error) {
    $("#form-error").textContent = error.message;
    return;
  }
  const params = hashParams();
  if (params.get("run")) show(params.get("run"));
  else if (params.get("autostart") === "1") start();
}

main();
