// The Frame2Frame web page: submit an edit, follow its events, scrub the path, select a frame, download.
// Every call goes to this origin's /v1 API with the typed-in key as a bearer token; outputs are fetched
// with it and shown as blob: URLs (an <img src> could not send the header). The event stream is read with
// fetch for the same reason (EventSource cannot send an Authorization header). Errors are shown from the
// API's typed body {error: {message, type, param, code}}. The page asks for previews: each `preview` event's
// image (the predicted last frame, approximate) is shown as it comes, and always before the result.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { job: null, frames: [], urls: [], frameUrls: new Map(), resultLabel: null, wanted: null, preview: null };

class ApiError extends Error {
  constructor(status, error) {
    super(error.message);
    this.status = status;
    this.code = error.code;
  }
}

function headers() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!response.ok) {
    let error = { message: `the server answered ${response.status}`, code: null };
    try {
      error = (await response.json()).error || error;
    } catch {
      // not the typed body (a proxy's page): keep the status
    }
    throw new ApiError(response.status, error);
  }
  return response;
}

async function blobUrl(path) {
  const url = URL.createObjectURL(await (await api(path)).blob());
  state.urls.push(url);
  return url;
}

// Frame `label` of the path as a blob: URL, fetched once per job.
function frameUrl(label) {
  if (!state.frameUrls.has(label)) {
    const loading = blobUrl(state.frames[label].url);
    loading.catch(() => state.frameUrls.delete(label));
    state.frameUrls.set(label, loading);
  }
  return state.frameUrls.get(label);
}

function forgetBlobs() {
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  state.frameUrls.clear();
}

function showError(error) {
  const box = $("error");
  const message = String(error.message || error);
  box.textContent = error.code ? `${message} (${error.code})` : message; // an ApiError, or a job's error
  box.hidden = false;
}

function setStatus(text) {
  $("status").textContent = text;
}

function reset() {
  forgetBlobs();
  Object.assign(state, { job: null, frames: [], resultLabel: null, wanted: null, preview: null });
  $("error").hidden = true;
  $("collage-box").hidden = $("path").hidden = $("result").hidden = $("preview-box").hidden = true;
  $("progress").value = 0;
  $("progress").max = 1;
}

// --- submit and follow ---------------------------------------------------------------------------

async function submit(event) {
  event.preventDefault();
  const file = $("image").files[0];
  if (!file) return;
  reset();
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("prompt", $("prompt").value);
  form.append("n", $("seeds").value);
  if ($("steps").value) form.append("steps", $("steps").value);
  form.append("previews", "true");
  $("submit").disabled = true;
  try {
    setStatus("Uploading...");
    const job = await (await api("/v1/edits", { method: "POST", body: form })).json();
    setStatus(`Job ${job.id}: ${job.status}`);
    await finish(await follow(job));
  } catch (error) {
    setStatus("Stopped.");
    showError(error);
  } finally {
    $("submit").disabled = false;
  }
}

// The job's server-sent events until `done` (the finished job); the job as it is now if the stream ends early.
async function follow(job) {
  const response = await api(`/v1/edits/${job.id}/events`);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (message.event === "done") return message.data;
      onEvent(message);
    }
  }
  return (await api(`/v1/edits/${job.id}`)).json();
}

function parseEvent(block) {
  let event = "message";
  let data = "";
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("data: ")) data += line.slice(6);
  }
  return { event, data: JSON.parse(data) };
}

function onEvent({ event, data }) {
  if (event === "progress") {
    $("progress").max = data.total;
    $("progress").value = data.step;
    setStatus(`${data.stage}: step ${data.step} of ${data.total}`);
  } else if (event === "stage") {
    setStatus(`${data.stage}...`);
  } else if (event === "status") {
    setStatus(data.status);
  } else if (event === "preview") {
    state.preview = showPreview(data, state.preview);
  }
}

// The latest preview, once the one before it is shown (so they never show out of order).
async function showPreview(preview, before) {
  await before;
  try {
    $("preview-image").src = await blobUrl(preview.url);
    $("preview-image").dataset.count = String(preview.count);
    $("preview-label").textContent = `Approximate preview of the last frame after step ${preview.step} of ${preview.total}.`;
    $("preview-box").hidden = false;
  } catch (error) {
    showError(error);
  }
}

async function finish(job) {
  await state.preview; // the previews come before the result
  state.job = job;
  if (job.progress) {
    $("progress").max = job.progress.total;
    $("progress").value = job.progress.step;
  }
  if (job.status !== "succeeded") {
    setStatus(`The edit ${job.status}.`);
    showError(job.error || { message: `the edit ${job.status}` });
    return;
  }
  const result = job.result;
  setStatus(`Done: ${result.status} (seed ${result.seed}).`);
  $("caption").textContent = `Caption: ${result.caption}`;
  $("collage").src = await blobUrl(job.links.collage);
  $("collage").dataset.job = job.id;
  $("collage-box").hidden = false;
  state.frames = result.frames;
  const chosen = currentLabel(job);
  const slider = $("frame-slider");
  slider.max = String(state.frames.length - 1);
  slider.value = String(chosen ?? 0);
  $("path").hidden = state.frames.length === 0;
  await Promise.all([showFrame(Number(slider.value)), showResult(job)]);
}

// The label whose frame /image serves: the caller's selection, else the VLM's choice (null: none could be read).
function currentLabel(job) {
  return job.selection ? job.selection.label : job.result.selected_label;
}

// --- the path and the result -------------------------------------------------------------------

async function showFrame(label) {
  state.wanted = label;
  const frame = state.frames[label];
  const note = label === 0 ? "the source" : `tile ${label}`;
  const vlm = label === state.job.result.selected_label ? ", the VLM's choice" : "";
  $("frame-label").textContent = `Frame ${frame.frame} (${note}${vlm})`;
  $("use-frame").disabled = label === state.resultLabel;
  try {
    const url = await frameUrl(label);
    if (state.wanted !== label) return; // the slider moved on meanwhile
    $("frame-image").src = url;
    $("frame-image").dataset.label = String(label);
  } catch (error) {
    showError(error);
  }
}

async function showResult(job) {
  const url = await blobUrl(job.links.image);
  const label = currentLabel(job);
  state.resultLabel = label;
  $("result-image").src = url;
  $("result-image").dataset.label = label === null ? "" : String(label);
  const link = $("download");
  link.href = url;
  link.download = `${job.id}-${label === null ? "edited" : "label-" + label}.png`;
  $("result-label").textContent = job.selection
    ? `Frame ${job.selection.frame}, selected by ${job.selection.by} at ${new Date(job.selection.at * 1000).toLocaleString()}.`
    : `The VLM's choice (${job.result.status}).`;
  $("result").hidden = false;
  $("use-frame").disabled = Number($("frame-slider").value) === label;
}

async function useFrame() {
  const label = Number($("frame-slider").value);
  $("use-frame").disabled = true;
  try {
    const body = JSON.stringify({ label });
    const init = { method: "POST", body, headers: { "Content-Type": "application/json" } };
    state.job = await (await api(`/v1/edits/${state.job.id}/select`, init)).json();
    await showResult(state.job);
  } catch (error) {
    showError(error);
    $("use-frame").disabled = false;
  }
}

function previewSource() {
  const file = $("image").files[0];
  const preview = $("source-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !file;
  if (file) preview.src = URL.createObjectURL(file);
}

document.addEventListener("DOMContentLoaded", () => {
  $("edit-form").addEventListener("submit", submit);
  $("image").addEventListener("change", previewSource);
  $("frame-slider").addEventListener("input", (event) => showFrame(Number(event.target.value)));
  $("use-frame").addEventListener("click", useFrame);
});
