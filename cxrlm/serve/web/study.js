// cxrlm reader study and teaching pages: sign in with a reader key, read each assigned case under its condition
// (no AI / labels / full reasoning), answer the form, pause and resume; in teaching mode, the reveal after each read.
// Plain JS, no build step; everything goes through /v1/study (cxrlm/serve/study_routes.py). The server keeps the
// clock (view, pause, resume and submit times), so a reload or a slow network does not change a case's time.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: null, me: null, case: null, pixels: null, imageIndex: 0, boxes: [], hidden: new Set(),
  paused: false };

// Said on every case: conditions change from case to case (interleaved order, docs/STUDY.md).
const CONDITIONS = { manual: "Read without AI", labels: "AI labels shown", reasoning: "AI reasoning, report and boxes shown",
  teaching: "Read first: the model's read and the reference follow your submit" };

function status(text) { $("status").textContent = text; }

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + state.key };
  if (options.body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error.message; } catch (e) { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();
const postJson = async (path, body) => (await api(path, { method: "POST", body: JSON.stringify(body) })).json();

// The banner's research-use disclaimer; the model's own notice is shown with its output only (showAi).
function showNotices(body) {
  if (body.disclaimer) $("disclaimer").textContent = body.disclaimer;
}

// Sign-in and progress ---------------------------------------------------------------------------------------
async function signIn(key) {
  state.key = key;
  try {
    state.me = await getJson("/v1/study/me");
  } catch (err) { state.key = null; status("sign-in refused: " + err.message); return; }
  sessionStorage.setItem("cxrlm-reader-key", key);
  showNotices(state.me);
  $("sign-in").hidden = true;
  $("study-name").textContent = state.me.study.name + (state.me.study.mode === "teaching" ? " (teaching)" : "");
  $("export").hidden = state.me.study.mode !== "teaching";
  buildForm(state.me.labels);
  showProgress(state.me.progress);
  await nextCase();
}

function showProgress(progress) {
  $("progress").textContent = `${progress.done} of ${progress.total} cases read`;
}

function buildForm(labels) {
  const findings = $("findings");
  findings.querySelectorAll("label").forEach((l) => l.remove());
  labels.forEach((name) => {
    const item = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox"; box.name = "finding"; box.value = name;
    item.append(box, " " + name);
    findings.append(item);
  });
  document.querySelectorAll("fieldset.likert").forEach((set) => {
    set.querySelectorAll("label").forEach((l) => l.remove());
    for (let v = 1; v <= 5; v++) {
      const item = document.createElement("label");
      const radio = document.createElement("input");
      radio.type = "radio"; radio.name = set.dataset.name; radio.value = String(v);
      item.append(radio, " " + v);
      set.append(item);
    }
  });
}

// One case ---------------------------------------------------------------------------------------------------
async function nextCase() {
  const next = await getJson("/v1/study/next");
  showProgress(next.progress);
  if (next.done) { finish(); return; }
  await openCase(next.position);
}

async function openCase(position) {
  status("loading case " + position + " ...");
  const payload = await getJson(`/v1/study/cases/${position}`);
  showNotices(payload);
  state.case = payload;
  Object.assign(state, { boxes: [], hidden: new Set(), paused: false, imageIndex: 0 });
  $("read-form").reset();
  $("read-form").hidden = false; $("submit").disabled = false;
  $("reveal").hidden = true;
  $("case-title").textContent = `Case ${position} of ${payload.total}`;
  $("condition").textContent = CONDITIONS[payload.condition] || payload.condition;
  $("questionnaire").hidden = !payload.ai;  // the AI questions only where AI was shown
  showViews(payload.images);
  await showImage(payload.images[0]);
  showAi(payload.ai);
  $("ai-title").textContent = "AI assistance";
  $("reading").hidden = false; $("pause").hidden = false; $("paused-cover").hidden = true;
  const clock = await postJson(`/v1/study/cases/${position}/events`, { event: "view" });
  if (clock.paused) showPaused(true);  // left paused before a reload: it stays paused until resumed
  status("");
}

// A case with several images (PA and lateral): one button per image; boxes belong to the first.
function showViews(urls) {
  const views = $("views");
  views.innerHTML = "";
  if (urls.length < 2) return;
  urls.forEach((url, i) => {
    const button = document.createElement("button");
    button.type = "button"; button.textContent = "Image " + (i + 1);
    button.onclick = () => { state.imageIndex = i; showImage(url); };
    views.append(button);
  });
}

async function showImage(url) {
  state.pixels = await paintImage($("canvas"), await (await api(url)).blob());
  draw();
}

function draw() {
  if (!state.pixels) return;
  const ctx = $("canvas").getContext("2d");
  ctx.putImageData(state.pixels, 0, 0);
  if (state.imageIndex) return;  // boxes are drawn on the first image only
  drawBoxes(ctx, state.boxes, state.hidden, state.pixels.width);
}

function setBoxes(boxes) {
  state.boxes = boxes;
  boxToggles($("box-toggles"), boxes, state.hidden, draw);
  draw();
}

// What the condition shows: nothing (manual), labels with probabilities, or reasoning, report and boxes too.
function showAi(ai) {
  $("ai").hidden = !ai;
  ["ai-labels", "ai-reasoning", "ai-findings", "ai-impression"].forEach((id) => { $(id).textContent = ""; });
  setBoxes(ai && ai.boxes ? ai.boxes : []);
  $("ai-notice").textContent = ai && ai.model_notice ? "Model notice: " + ai.model_notice : "";
  $("ai-notice").hidden = !(ai && ai.model_notice);
  if (!ai) return;
  (ai.labels || []).forEach((label) => {
    const item = document.createElement("li");
    item.className = "label";
    const p = label.probability;
    item.textContent = label.name + (p === null || p === undefined ? "" : ` ${(100 * p).toFixed(1)}%`);
    if (label.present) item.classList.add("present");
    $("ai-labels").append(item);
  });
  const full = ai.reasoning !== undefined;
  $("ai-reasoning-box").hidden = !full;
  if (full) {
    $("ai-reasoning").textContent = ai.reasoning || "(none given)";
    $("ai-findings").textContent = ai.findings || "(none given)";
    $("ai-impression").textContent = ai.impression || "(none given)";
  }
}

// Pause and resume: the server stops the case's clock; the image and form are covered while paused.
async function togglePause() {
  if (!state.case) return;
  const event = state.paused ? "resume" : "pause";
  try {
    const clock = await postJson(`/v1/study/cases/${state.case.position}/events`, { event });
    showPaused(clock.paused);
  } catch (err) { status("error: " + err.message); }
}

function showPaused(paused) {
  state.paused = paused;
  $("paused-cover").hidden = !paused;
  $("read-form").classList.toggle("paused", paused);
  $("submit").disabled = paused;
  $("pause").textContent = paused ? "Resume" : "Pause";
}

function readForm() {
  const checked = (name) => { const el = document.querySelector(`input[name="${name}"]:checked`); return el ? Number(el.value) : null; };
  const read = {
    findings: [...document.querySelectorAll('input[name="finding"]:checked')].map((b) => b.value),
    impression: $("impression").value.trim(),
    confidence: checked("confidence"),
  };
  if (state.case.ai) ["quality", "usefulness", "time_saved", "safety"].forEach((n) => { read[n] = checked(n); });
  const missing = Object.entries(read).filter(([, v]) => v === null).map(([k]) => k.replace("_", " "));
  return { read, missing };
}

async function submitRead() {
  const { read, missing } = readForm();
  if (missing.length) { status("please rate: " + missing.join(", ")); return; }
  $("submit").disabled = true;
  try {
    const saved = await postJson(`/v1/study/cases/${state.case.position}/read`, read);
    state.me.progress = saved.progress;
    showProgress(saved.progress);
    status(`saved (${saved.active_s.toFixed(1)} s of reading)`);
    if (state.me.study.mode === "teaching") await reveal();
    else await nextCase();
  } catch (err) { $("submit").disabled = false; status("error: " + err.message); }
}

// Teaching: after the read, the model's reasoning, labels and boxes beside the reference, and the scores.
async function reveal() {
  const shown = await getJson(`/v1/study/cases/${state.case.position}/reveal`);
  $("read-form").hidden = true; $("pause").hidden = true;
  showAi(shown.model);
  $("ai-title").textContent = "The model's read";
  const body = $("agreement").querySelector("tbody");
  body.innerHTML = "";
  const mark = (v) => (v === null || v === undefined ? "-" : v ? "present" : "absent");
  shown.agreement.labels.forEach((row) => {
    const tr = document.createElement("tr");
    tr.dataset.label = row.label;
    [row.label, mark(row.resident), mark(row.model), mark(row.truth)].forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1 && row.truth !== null && row.truth !== undefined) td.className = row.resident === row.truth ? "agree" : "disagree";
      if (i === 2 && row.truth !== null && row.truth !== undefined) td.className = row.model === row.truth ? "agree" : "disagree";
      tr.append(td);
    });
    body.append(tr);
  });
  $("case-score").textContent = scoreText(shown.agreement);
  $("running-score").textContent = scoreText(shown.score);
  $("reveal").hidden = false;
}

// "you 11/14 (78.6%), model 9/14 (64.3%)" of the labels that have a reference.
function scoreText(counts) {
  if (!counts.labels_scored) return "no reference labels to score against";
  const part = (who, n) => `${who} ${n}/${counts.labels_scored} (${(100 * n / counts.labels_scored).toFixed(1)}%)`;
  return part("you", counts.resident_correct) + ", " + part("model", counts.model_correct);
}

function finish() {
  state.case = null;
  $("reading").hidden = true; $("pause").hidden = true;
  $("finished").hidden = false;
  status("");
}

async function exportTeachingFile() {
  try {
    const response = await api("/v1/study/teaching-file");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = "cxrlm-teaching-file.zip";
    link.click();
  } catch (err) { status("export: " + err.message); }
}

// Wiring -----------------------------------------------------------------------------------------------------
function wire() {
  $("sign-in").addEventListener("submit", (ev) => { ev.preventDefault(); signIn($("reader-key").value.trim()); });
  $("read-form").addEventListener("submit", (ev) => { ev.preventDefault(); submitRead(); });
  $("pause").addEventListener("click", togglePause);
  $("resume").addEventListener("click", togglePause);
  $("next").addEventListener("click", () => nextCase().catch((err) => status("error: " + err.message)));
  $("export").addEventListener("click", exportTeachingFile);
  // A hidden page (another tab, a locked screen) pauses the clock; the reader resumes by hand.
  document.addEventListener("visibilitychange", () => { if (document.hidden && state.case && !state.paused) togglePause(); });
  fetch("/v1/disclaimer").then((r) => r.json()).then(showNotices);
  const saved = sessionStorage.getItem("cxrlm-reader-key");
  if (saved) signIn(saved);
}

wire();
