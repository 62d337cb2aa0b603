// cxrlm web viewer: upload a study, stream the model's reasoning, show labels, boxes and the report, chat.
// Plain JS, no build step. Everything goes through the same /v1 API that scripts use.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { study: null, pixels: null, boxes: [], hidden: new Set(), resultId: null, chat: [], sessionId: null,
  heatmap: null };

function headers(json = true) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function status(text) { $("status").textContent = text; }

async function apiError(response) {
  try { return (await response.json()).error.message; } catch (e) { return response.status + " " + response.statusText; }
}

// Server-sent events over fetch (EventSource cannot POST): yields the JSON of each `data:` line.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await apiError(response));
  return response;
}

// Image and window/level --------------------------------------------------------------------------------------
async function upload(file) {
  status("uploading " + file.name + " ...");
  const form = new FormData();
  form.append("file", file);
  const response = await fetch("/v1/studies", { method: "POST", headers: headers(false), body: form });
  if (!response.ok) { status("upload refused: " + await apiError(response)); return; }
  await openStudy(await response.json());
  await analyse();
}

// A stored study (an upload, or one read from the PACS worklist: worklist.js) on screen, the last answers cleared.
async function openStudy(study) {
  state.study = study;
  Object.assign(state, { boxes: [], hidden: new Set(), resultId: null, chat: [], sessionId: null, heatmap: null });
  $("heatmap").checked = false; $("heatmap-of").textContent = "";
  ["reasoning", "labels", "findings", "impression", "chat", "box-toggles"].forEach((id) => { $(id).innerHTML = ""; });
  $("window-level").hidden = !state.study.metadata.Modality;  // DICOM: offer window/level
  await showImage();
}

async function showImage() {
  const blob = await (await fetch(state.study.image, { headers: headers(false) })).blob();
  state.pixels = await paintImage($("canvas"), blob);
  draw();
}

// Window/level on the 8-bit display image: level shifts the centre, window scales the width (100 = full range).
function windowed() {
  const level = Number($("level").value), width = 256 * Number($("window").value) / 100;
  const low = 128 - level - width / 2, lut = new Uint8ClampedArray(256);
  for (let v = 0; v < 256; v++) lut[v] = ((v - low) / width) * 255;
  const src = state.pixels.data, out = new ImageData(state.pixels.width, state.pixels.height);
  for (let i = 0; i < src.length; i += 4) {
    out.data[i] = lut[src[i]]; out.data[i + 1] = lut[src[i + 1]]; out.data[i + 2] = lut[src[i + 2]];
    out.data[i + 3] = 255;
  }
  return out;
}

function draw() {
  if (!state.pixels) return;
  const ctx = $("canvas").getContext("2d");
  ctx.putImageData(windowed(), 0, 0);
  // The server's overlay is the display image with the map over it, at the image's size (not windowed).
  if ($("heatmap").checked && state.heatmap) ctx.drawImage(state.heatmap, 0, 0);
  drawBoxes(ctx, state.boxes, state.hidden, state.pixels.width);
}

function setBoxes(boxes) {
  state.boxes = state.boxes.concat(boxes);
  boxToggles($("box-toggles"), state.boxes, state.hidden, draw);
  draw();
}

// Model calls ------------------------------------------------------------------------------------------------
// The report stream, then label scores. `request` opens the stream; a {"type": "study"} event (the PACS worklist's
// stream opens with one) goes to `onStudy`.
async function analyse(request = () => post("/v1/cxr/report", { study_id: state.study.id, stream: true }),
  onStudy = null) {
  status("reasoning ...");
  try {
    const response = await request();
    for await (const event of events(response)) {
      if (event.type === "study" && onStudy) await onStudy(event);
      else if (event.type === "text") $("reasoning").textContent += event.text;
      else if (event.type === "result") showReport(event);
      else if (event.error) throw new Error(event.error.message);
    }
    status("scoring labels ...");
    const scores = await (await post("/v1/cxr/classify", { study_id: state.study.id })).json();
    showLabels(scores.labels);
    status("done");
  } catch (err) { status("error: " + err.message); }
}

function showReport(event) {
  const out = event.output;
  state.resultId = event.result_id;
  if (out.reasoning) $("reasoning").textContent = out.reasoning;
  $("findings").textContent = out.findings || "(none given)";
  $("impression").textContent = out.impression || "(none given)";
  showLabels(out.labels);
  setBoxes(out.boxes);
  showNotice(out.model_notice);
}

// The model's own notice (a demonstration model says so), next to the research-use disclaimer.
function showNotice(text) {
  $("model-notice").textContent = text ? "Model notice: " + text : "";
  $("model-notice").hidden = !text;
}

function showLabels(labels) {
  const list = $("labels");
  list.innerHTML = "";
  labels.filter((l) => l.present || l.probability !== null).forEach((label) => {
    const item = document.createElement("li");
    item.className = "label";
    const p = label.probability;
    item.textContent = label.name + (p === null ? "" : ` ${(100 * p).toFixed(1)}%`);
    if (p !== null) {
      const bar = document.createElement("span");
      bar.className = "prob"; bar.style.width = (80 * p) + "px";
      item.append(bar);
    }
    list.append(item);
  });
}

async function ground(phrase) {
  status("locating " + phrase + " ...");
  try {
    const out = await (await post("/v1/cxr/ground", { study_id: state.study.id, phrase })).json();
    setBoxes(out.boxes);
    status(out.boxes.length ? "done" : "no box given for " + phrase);
  } catch (err) { status("error: " + err.message); }
}

// The heatmap of the most probable label (classify with heatmap: true), fetched the first time it is shown.
async function toggleHeatmap() {
  if (!$("heatmap").checked || state.heatmap || !state.study) { draw(); return; }
  status("computing the heatmap ...");
  try {
    const out = await (await post("/v1/cxr/classify", { study_id: state.study.id, heatmap: true })).json();
    const image = new Image();
    image.src = out.heatmap;
    await image.decode();
    state.heatmap = image;
    $("heatmap-of").textContent = "(" + out.heatmap_of + ")";
    status("done");
  } catch (err) { $("heatmap").checked = false; status("error: " + err.message); }
  draw();
}

function chatTurn(role, text) {
  const div = document.createElement("div");
  div.className = "turn " + role; div.textContent = text;
  $("chat").append(div);
  return div;
}

async function ask(question) {
  const first = state.chat.length === 0;
  const content = first
    ? [{ type: "image_url", image_url: { url: state.study.url } }, { type: "text", text: question }]
    : question;
  state.chat.push({ role: "user", content });
  chatTurn("user", question);
  const answer = chatTurn("assistant", "");
  try {
    const response = await post("/v1/chat/completions",
      { messages: state.chat, stream: true, session_id: state.sessionId });
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const delta = chunk.choices[0].delta;
      if (delta.content) answer.textContent += delta.content;
      if (chunk.cxrlm) { state.sessionId = chunk.cxrlm.session_id; setBoxes(chunk.cxrlm.output.boxes); }
    }
    state.chat.push({ role: "assistant", content: answer.textContent });
  } catch (err) { state.chat.pop(); answer.textContent = "error: " + err.message; }
}

async function exportResult(format) {
  if (!state.resultId) { status("nothing to export yet"); return; }
  const response = await fetch(`/v1/results/${state.resultId}/export?format=${format}`, { headers: headers(false) });
  if (!response.ok) { status("export: " + await apiError(response)); return; }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `cxrlm-${state.resultId}.${format === "dicom-sr" ? "dcm" : "json"}`;
  link.click();
}

// Wiring -----------------------------------------------------------------------------------------------------
function wire() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((e) => drop.addEventListener(e, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (ev) => { ev.preventDefault(); if (ev.dataTransfer.files[0]) upload(ev.dataTransfer.files[0]); });
  $("file").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); });
  $("level").addEventListener("input", draw);
  $("heatmap").addEventListener("change", toggleHeatmap);
  $("window").addEventListener("input", draw);
  $("reset-wl").addEventListener("click", () => { $("level").value = 0; $("window").value = 100; draw(); });
  $("ground-form").addEventListener("submit", (ev) => { ev.preventDefault(); if (state.study && $("phrase").value) ground($("phrase").value); });
  $("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = $("question").value.trim();
    if (q && state.study) { $("question").value = ""; ask(q); }
  });
  document.querySelectorAll("#exports button").forEach((b) => b.addEventListener("click", () => exportResult(b.dataset.format)));
  $("api-key").value = localStorage.getItem("cxrlm-key") || "";
  $("api-key").addEventListener("change", () => localStorage.setItem("cxrlm-key", $("api-key").value));
  fetch("/v1/disclaimer").then((r) => r.json()).then((d) => {
    $("disclaimer").textContent = d.disclaimer; $("model-name").textContent = "model: " + d.model;
    showNotice(d.model_notice);
  });
}

wire();
