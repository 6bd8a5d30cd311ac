// fastdiffsr's page: pick a picture and a model, run a job through the HTTP API (/v1), follow
// its tiles, then compare before and after at full resolution. No framework, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], limits: {}, file: null, inputURL: null, job: null, size: null };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function showNote(message) {
  $("note").textContent = message || "";
  $("note").hidden = !message;
}

async function detail(response) {
  // The API's errors are JSON {"detail": "..."}; anything else is shown as its status.
  try {
    const body = await response.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function describe(model) {
  const psnr = Object.entries(model.psnr).map(([set, db]) => `${set} ${db.toFixed(2)}`);
  const speed = model.latency_ms === null ? "" :
    `${Math.round(model.latency_ms)} ms for 128->512 px (${model.latency_threads} threads)`;
  return [`x${model.scale}`, psnr.length ? `PSNR-Y ${psnr.join(" / ")} dB` : "", speed,
          `trained for ${model.trained_for}`].filter(Boolean).join(" · ");
}

function selectedModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function onModelChange() {
  const model = selectedModel();
  $("model-info").textContent = model ? describe(model) : "";
  $("steps-field").hidden = !(model && model.default_sampling_steps > 0);
  $("seed-field").hidden = !(model && model.seeded);
  if (model && model.default_sampling_steps > 0) {
    $("steps").placeholder = `${model.default_sampling_steps} (the model's)`;
  }
}

async function loadModels() {
  const response = await fetch("/v1/models");
  if (!response.ok) {
    showError(`cannot list the models: ${await detail(response)}`);
    return;
  }
  const body = await response.json();
  state.models = body.models;
  state.limits = body.limits;
  for (const model of body.models) {
    const option = new Option(model.name + (model.default ? " (default)" : ""), model.name);
    option.selected = model.name === body.default;
    $("model").add(option);
  }
  $("steps").max = body.limits.max_steps;
  $("outscale").max = body.limits.max_outscale;
  onModelChange();
}

function pick(file) {
  if (!file) return;
  showError("");
  if (file.size > state.limits.max_upload_bytes) {
    showError(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB: the server takes at ` +
              `most ${(state.limits.max_upload_bytes / 2 ** 20).toFixed(0)} MB`);
    return;
  }
  state.file = file;
  if (state.inputURL) URL.revokeObjectURL(state.inputURL);
  state.inputURL = URL.createObjectURL(file);
  $("drop-text").textContent = `${file.name} (${(file.size / 1024).toFixed(0)} KB)`;
  $("go").disabled = false;
}

function progress(job) {
  const total = job.total_tiles || 1;
  $("progress").value = job.done_tiles / total;
  const seconds = job.run_seconds === null ? "" : `, ${job.run_seconds.toFixed(1)} s`;
  const left = job.done_tiles > 0 && job.total_tiles > job.done_tiles ?
    `, about ${(job.run_seconds * (job.total_tiles / job.done_tiles - 1)).toFixed(0)} s left` : "";
  $("progress-text").textContent = job.state === "queued" ? "waiting in the queue" :
    `${job.state}: tile ${job.done_tiles} of ${job.total_tiles || "?"}${seconds}${left}`;
}

async function follow(job) {
  while (job.state === "queued" || job.state === "running") {
    progress(job);
    await new Promise((resolve) => setTimeout(resolve, 250));
    const response = await fetch(`/v1/jobs/${job.id}`);
    if (!response.ok) throw new Error(await detail(response));
    job = await response.json();
  }
  progress(job);
  return job;
}

async function submit(event) {
  event.preventDefault();
  if (!state.file) return;
  showError("");
  const data = new FormData();
  data.append("image", state.file, state.file.name);
  data.append("model", $("model").value);
  for (const field of ["outscale", "steps", "seed"]) {
    const input = $(field);
    if (input.value !== "" && !input.closest("label").hidden) data.append(field, input.value);
  }
  showNote(null);
  $("go").disabled = true;
  $("status").hidden = false;
  $("progress").value = 0;
  $("progress-text").textContent = "uploading";
  try {
    const response = await fetch("/v1/upscale", { method: "POST", body: data });
    if (!response.ok) throw new Error(await detail(response));
    const started = await response.json();
    showNote(started.note);  // advice on this input for this model, or none
    const job = await follow(started);
    if (job.state !== "done") throw new Error(job.error || `the job was ${job.state}`);
    await show(job);
  } catch (error) {
    showError(error.message);
    $("status").hidden = true;
  } finally {
    $("go").disabled = false;
  }
}

async function show(job) {
  const after = $("after");
  after.src = job.result;
  await after.decode();
  $("before").src = state.inputURL;
  try {
    await $("before").decode();
  } catch {  // a format this browser cannot show (HEIC): the result alone
    $("before").removeAttribute("src");
  }
  state.size = [after.naturalWidth, after.naturalHeight];
  $("size").textContent = `${state.size[0]} x ${state.size[1]} px`;
  $("download").href = job.result;  // the server's Content-Disposition names the file
  $("result").hidden = false;
  applyZoom();
  slide();
}

function applyZoom() {
  if (!state.size) return;
  const [width, height] = state.size;
  const choice = $("zoom").value;
  const zoom = choice === "fit" ? Math.min(1, ($("viewer").clientWidth - 2) / width) :
    Number(choice);
  $("stage").style.width = `${Math.round(width * zoom)}px`;
  $("stage").style.height = `${Math.round(height * zoom)}px`;
  $("stage").classList.toggle("pixels", zoom > 1);
}

function slide() {
  const percent = Number($("slider").value);
  $("before").style.clipPath = `inset(0 ${100 - percent}% 0 0)`;
  $("divider").style.left = `${percent}%`;
}

function dragTo(event) {
  const box = $("stage").getBoundingClientRect();
  const percent = Math.min(100, Math.max(0, (100 * (event.clientX - box.left)) / box.width));
  $("slider").value = percent;
  slide();
}

function setUp() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => pick(e.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); pick(e.dataTransfer.files[0]); });
  $("model").addEventListener("change", onModelChange);
  $("form").addEventListener("submit", submit);
  $("slider").addEventListener("input", slide);
  $("zoom").addEventListener("change", applyZoom);
  window.addEventListener("resize", applyZoom);
  const stage = $("stage");
  stage.addEventListener("pointerdown", (e) => { stage.setPointerCapture(e.pointerId); dragTo(e); });
  stage.addEventListener("pointermove", (e) => { if (e.buttons) dragTo(e); });
  loadModels();
}

setUp();
