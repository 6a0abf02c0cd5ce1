// The try-it page: plain browser JavaScript against the public API, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], model: null, versions: [], version: null, image: null, imageUrl: null, heatUrl: null, drawn: false, seq: 0 };

// ---- errors: the API answers RFC 9457 problem details; say what to fix -------------------------
async function problem(response) {
  let body = {};
  try { body = await response.json(); } catch { /* not JSON: fall back to the status text */ }
  const detail = body.detail || body.error || response.statusText;
  if (response.status === 413) return `That file is too large: ${detail}`;
  if (response.status === 415) return `That is not an image the service can read: ${detail}`;
  if (response.status === 503) {
    const wait = response.headers.get("Retry-After") || "a few";
    return `The service is busy; try again in ${wait} s. (${detail})`;
  }
  return `${body.title || "Error " + response.status}: ${detail}`;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// A service run with API keys answers 401: ask once, keep the key for this tab only, and send it.
async function api(path, options = {}, retried = false) {
  let response;
  const key = sessionStorage.getItem("apiKey");
  const headers = key ? { ...(options.headers || {}), Authorization: `Bearer ${key}` } : options.headers;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new Error(`The service cannot be reached (${err.message}). Is it running?`);
  }
  if (response.status === 401 && !retried) {
    const given = window.prompt("This service needs an API key. Paste yours:");
    if (given) {
      sessionStorage.setItem("apiKey", given.trim());
      return api(path, options, true);
    }
  }
  if (!response.ok) throw new Error(await problem(response));
  return response;
}

// ---- models ---------------------------------------------------------------------------------------
async function loadModels() {
  const list = await (await api("/models")).json();
  state.models = list.models;
  const select = $("model");
  select.replaceChildren(...list.models.map((m) => {
    const option = new Option(`${m.name} · ${(m.test_accuracy * 100).toFixed(1)}% · ${m.input.channels}×${m.input.height}×${m.input.width}`, m.name);
    option.disabled = m.status !== "ready";
    return option;
  }));
  select.value = list.models.some((m) => m.name === list.default_model) ? list.default_model : list.models[0].name;
  await selectModel();
}

async function selectModel() {
  state.model = state.models.find((m) => m.name === $("model").value);
  const m = state.model;
  // Each version's own facts (an int8 version has its own accuracy), so the picker can say which is which.
  const infos = await Promise.all(m.versions.map(async (v) =>
    (await api(`/models/${encodeURIComponent(m.name)}?version=${encodeURIComponent(v)}`)).json()));
  if (state.model !== m) return;  // another model was picked meanwhile
  state.versions = infos;
  $("version").replaceChildren(...infos.map((info) => {
    const option = new Option(`v${info.version} · ${info.precision} · ${(info.test_accuracy * 100).toFixed(1)}%`, info.version);
    option.disabled = info.status !== "ready";
    return option;
  }));
  $("version").value = m.default_version;
  $("heat-class").replaceChildren(new Option("top-1", ""), ...m.labels.map((label, i) => new Option(label, String(i))));
  $("heat-method").replaceChildren(...m.heatmap_methods.map((x) => new Option(m.heatmap_titles[x] || x, x)));
  selectVersion();
}

const EXTERNAL_NAMES = {
  sklearn_digits: "other writers' handwriting, 8×8 scans (scikit-learn digits)",
  printed_heldout: "printed digits in fonts it never saw, photographed",
  mnist_full_frame: "MNIST digits filling the whole frame",
};

function selectVersion() {
  const v = state.versions.find((info) => info.version === $("version").value);
  state.version = v.version;
  $("model-info").textContent = `${v.description}. Version ${v.version} (${v.precision}): test accuracy ` +
    `${(v.test_accuracy * 100).toFixed(1)}% on the ${v.test_dataset} test split; input ${v.input.width}×${v.input.height} ` +
    `${v.input.color}; ${v.parameters.toLocaleString("en")} parameters. On digits from outside its training data:`;
  $("external").replaceChildren(...Object.entries(v.external || {}).flatMap(([name, score]) => {
    const value = document.createElement("dt");
    value.textContent = `${(score.accuracy * 100).toFixed(1)}%`;
    const what = document.createElement("dd");
    what.textContent = EXTERNAL_NAMES[name] || score.description;
    what.title = `${score.description}: ${score.size} images`;
    return [value, what];
  }));
  $("summary").hidden = true;
  $("show-summary").setAttribute("aria-expanded", "false");
  $("show-summary").textContent = "Show the layer table";
  if (state.image) analyse();
}

/** The query naming the chosen model version, for every model route. */
function chosen() {
  return `version=${encodeURIComponent(state.version)}`;
}

// ---- the image: drawn on the pad, or a file ---------------------------------------------------------
const pad = $("pad");
const ctx = pad.getContext("2d");

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  state.drawn = false;
}

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return [(event.clientX - rect.left) * pad.width / rect.width, (event.clientY - rect.top) * pad.height / rect.height];
}

let drawing = false;
let lastSent = 0;
pad.addEventListener("pointerdown", (event) => {
  if (!$("preview").hidden) { $("preview").hidden = true; clearPad(); }
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  ctx.lineWidth = 20; ctx.lineCap = "round"; ctx.lineJoin = "round"; ctx.strokeStyle = "#000";
  ctx.beginPath();
  ctx.moveTo(...padPoint(event));
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  ctx.lineTo(...padPoint(event));
  ctx.stroke();
  state.drawn = true;
  if (performance.now() - lastSent > 250) { lastSent = performance.now(); usePad(false); }  // live while drawing
});
const endStroke = () => { if (drawing) { drawing = false; if (state.drawn) usePad(true); } };
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("keydown", (event) => {
  if (event.key === "Delete" || event.key === "Backspace") { event.preventDefault(); reset(); }
});

function usePad(withHeatmap) {
  pad.toBlob((blob) => setImage(blob, withHeatmap), "image/png");
}

function reset() {
  clearPad();
  $("preview").hidden = true;
  state.image = null;
  $("predictions").replaceChildren();
  $("judgement").hidden = true;
  $("heat-caption").textContent = "";
  $("overlay-base").removeAttribute("src");
  $("overlay-heat").removeAttribute("src");
  $("overlay").hidden = true;
  $("heat-empty").hidden = false;
  showError("");
}

function useFile(file) {
  if (!file) return;
  const url = URL.createObjectURL(file);
  const preview = $("preview");
  preview.src = url;
  preview.hidden = false;
  setImage(file, true);
}

function setImage(blob, withHeatmap) {
  state.image = blob;
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = URL.createObjectURL(blob);
  analyse(withHeatmap);
}

$("clear").addEventListener("click", reset);
$("file").addEventListener("change", (event) => useFile(event.target.files[0]));
const inputPanel = $("input-title").closest(".panel");
inputPanel.addEventListener("dragover", (event) => { event.preventDefault(); inputPanel.classList.add("dragging"); });
inputPanel.addEventListener("dragleave", () => inputPanel.classList.remove("dragging"));
inputPanel.addEventListener("drop", (event) => {
  event.preventDefault();
  inputPanel.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});

// ---- prediction and heatmap ---------------------------------------------------------------------------
function form() {
  const data = new FormData();
  data.append("file", state.image, state.image.name || "drawing.png");
  return data;
}

async function analyse(withHeatmap = true) {
  const seq = ++state.seq;  // answers to older requests are dropped
  try {
    const response = await api(`/predict?model=${encodeURIComponent(state.model.name)}&${chosen()}&top_k=5`, { method: "POST", body: form() });
    const result = await response.json();
    if (seq !== state.seq) return;
    showError("");
    renderPredictions(result);
    if (withHeatmap) await heatmap(seq);
  } catch (err) {
    if (seq === state.seq) { showError(err.message); $("predictions").replaceChildren(); $("judgement").hidden = true; }
  }
}

function renderPredictions(result) {
  $("predictions").replaceChildren(...result.predictions.map((p) => {
    const item = document.createElement("li");
    const percent = (p.probability * 100).toFixed(1);
    item.innerHTML = `<span class="label"></span><span class="bar" role="presentation"><span></span></span><span class="num"></span>`;
    item.querySelector(".label").textContent = p.label;
    item.querySelector(".bar span").style.width = `${percent}%`;
    item.querySelector(".num").textContent = `${percent}%`;
    item.setAttribute("aria-label", `class ${p.label}: ${percent} percent`);
    return item;
  }));
  const judgement = $("judgement");
  judgement.textContent = result.confidence.unsure ? `${result.confidence.message}` :
    `${result.confidence.message} (${(result.confidence.probability * 100).toFixed(1)}% sure)`;
  judgement.classList.toggle("unsure", result.confidence.unsure);
  judgement.hidden = false;
  const t = result.timings;
  $("timing").textContent = `${result.model} v${result.version} on ${result.provider}: ${t.total_ms.toFixed(1)} ms` +
    (result.inverted ? " · light background, so the image was inverted MNIST-style" : "");
}

async function heatmap(seq = ++state.seq) {
  if (!state.image) return;
  const params = new URLSearchParams({ format: "png", method: $("heat-method").value });
  if ($("heat-class").value !== "") params.set("class", $("heat-class").value);
  try {
    const response = await api(`/models/${encodeURIComponent(state.model.name)}/cam?${params}&${chosen()}`, { method: "POST", body: form() });
    const blob = await response.blob();
    if (seq !== state.seq) return;
    if (state.heatUrl) URL.revokeObjectURL(state.heatUrl);
    state.heatUrl = URL.createObjectURL(blob);
    $("overlay-base").src = state.imageUrl;
    $("overlay-heat").src = state.heatUrl;
    $("overlay-heat").style.opacity = $("opacity").value;
    $("overlay").hidden = false;
    $("heat-empty").hidden = true;
    const method = state.model.heatmap_titles[response.headers.get("X-Method")] || response.headers.get("X-Method");
    $("heat-caption").textContent = `${method} for class ${response.headers.get("X-Class-Label")} ` +
      `(probability ${(parseFloat(response.headers.get("X-Score")) * 100).toFixed(1)}%)`;
  } catch (err) {
    if (seq === state.seq) showError(err.message);
  }
}

$("heat-class").addEventListener("change", () => heatmap());
$("heat-method").addEventListener("change", () => heatmap());
$("model").addEventListener("change", () => selectModel().catch((err) => showError(err.message)));
$("version").addEventListener("change", selectVersion);
$("opacity").addEventListener("input", (event) => {
  $("overlay-heat").style.opacity = event.target.value;
  $("opacity-value").textContent = `${Math.round(event.target.value * 100)}%`;
});

// ---- architecture summary -------------------------------------------------------------------------------
function formula(layer) {
  if (!layer.kernel) return "";
  const [W, F, P, S, D] = [layer.input_shape[2], layer.kernel[1], layer.padding[1], layer.stride[1], (layer.dilation || [1, 1])[1]];
  const effective = D > 1 ? `${D}·(${F}−1)+1` : `${F}`;
  return `(${W} − ${effective} + 2·${P}) / ${S} + 1 = ${layer.output_shape[2]}`;
}

async function showSummary() {
  const button = $("show-summary");
  const open = button.getAttribute("aria-expanded") === "true";
  if (open) {
    $("summary").hidden = true;
    button.setAttribute("aria-expanded", "false");
    button.textContent = "Show the layer table";
    return;
  }
  try {
    const s = await (await api(`/models/${encodeURIComponent(state.model.name)}/summary?${chosen()}`)).json();
    const n = (x) => x.toLocaleString("en");
    $("summary-caption").textContent = `${s.model} v${s.version}: input ${s.input_shape.join("×")}`;
    $("summary-table").tBodies[0].replaceChildren(...s.layers.map((layer) => {
      const row = document.createElement("tr");
      for (const [text, numeric] of [[layer.name, false], [layer.type, false], [layer.output_shape.join("×"), false],
        [formula(layer), false], [n(layer.params), true], [n(layer.macs), true]]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (numeric) cell.className = "num";
        row.append(cell);
      }
      return row;
    }));
    const t = s.totals;
    $("summary-table").tFoot.innerHTML = "";
    const foot = $("summary-table").tFoot.insertRow();
    foot.innerHTML = `<td colspan="4">Total (trainable ${n(t.trainable_params)}; ${n(t.size_bytes)} bytes of float32 weights)</td>` +
      `<td class="num" id="total-params">${n(t.total_params)}</td><td class="num">${n(t.macs)}</td>`;
    $("summary").hidden = false;
    button.setAttribute("aria-expanded", "true");
    button.textContent = "Hide the layer table";
  } catch (err) {
    showError(err.message);
  }
}
$("show-summary").addEventListener("click", showSummary);

clearPad();
loadModels().catch((err) => showError(err.message));
