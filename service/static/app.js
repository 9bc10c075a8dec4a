// The page: a photo in (file, drop or camera), its faces out in the 3D view, errors as messages.
// document.body.dataset.state says where it stands: idle, busy, ready or error.

import { ApiError, reconstructFile, reconstructJson } from "./api.js";
import { boundingSphere, buildFaces, photoPlacement } from "./meshes.js";
import { Viewer, decodePhoto } from "./viewer.js";
import { captureFrame, startWebcam, webcamAvailable } from "./webcam.js";

const $ = (selector) => document.querySelector(selector);
const checked = (name) => document.querySelector(`input[name="${name}"]:checked`).value;

let viewer = null;
let photo = null; // the File being shown
let results = new Map(); // space -> Promise of the API's JSON for `photo`
let latest = 0; // number of the newest show(); older ones drop their outcome

function setState(state) {
  document.body.dataset.state = state;
  $("#spinner").hidden = state !== "busy";
}

function showError(title, detail = "") {
  const message = $("#message");
  message.replaceChildren(Object.assign(document.createElement("strong"), { textContent: title }));
  if (detail) message.append(Object.assign(document.createElement("p"), { textContent: detail }));
  message.hidden = false;
  setState("error");
}

/** [title, detail] of a failure: the API's problem, or what the page itself ran into. */
function explain(err) {
  return err instanceof ApiError ? [err.title, err.detail] : ["Something went wrong", err.message];
}

function faceOptions() {
  return { faces: $("#all-faces").checked ? "all" : "largest" };
}

/** The API's JSON for the current photo in `space`, asked for once per photo and options. */
function resultFor(space) {
  if (!results.has(space)) {
    const cache = results;
    const request = reconstructJson(photo, { space, ...faceOptions() });
    request.catch(() => cache.delete(space)); // a failed request is asked again next time
    cache.set(space, request);
  }
  return results.get(space);
}

/** Reconstruct (or take from the cache) and draw the current photo in the chosen space. */
async function show() {
  if (!photo) return;
  const ticket = ++latest;
  setState("busy");
  $("#message").hidden = true;
  try {
    const space = checked("space");
    // image space always: it lines the mesh up with the photo, for the overlay and the texture
    const [imageResult, result] = await Promise.all([resultFor("image"), resultFor(space)]);
    const placement = photoPlacement(imageResult);
    const faces = buildFaces(result, imageResult, placement);
    if (ticket !== latest) return;
    viewer.setScene(faces, space === "image" ? placement : null, boundingSphere(faces));
    const count = result.face_count;
    $("#status").textContent = `${count} face${count === 1 ? "" : "s"} · ${result.width}×${result.height} photo`;
    setState("ready");
  } catch (err) {
    if (ticket !== latest) return;
    viewer.clear();
    $("#status").textContent = "";
    showError(...explain(err));
  }
}

async function usePhoto(file) {
  if (!viewer) return;
  photo = file;
  results = new Map();
  for (const button of document.querySelectorAll(".download")) button.disabled = true;
  // decoded here for the backdrop and the texture; the server decides what it accepts, so a
  // file this browser cannot decode still gets sent, and gets the server's answer
  viewer.setPhoto(null);
  decodePhoto(file).then((bitmap) => photo === file && viewer.setPhoto(bitmap), () => {});
  await show();
  const ready = photo === file && document.body.dataset.state === "ready";
  for (const button of document.querySelectorAll(".download")) button.disabled = !ready;
}

async function download(format) {
  setState("busy");
  $("#message").hidden = true;
  try {
    const { blob, filename } = await reconstructFile(photo, { format, space: checked("space"), ...faceOptions() });
    const link = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: filename });
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
    setState("ready");
  } catch (err) {
    showError(...explain(err));
  }
}

function syncOverlay() {
  const imageSpace = checked("space") === "image";
  $("#overlay").disabled = !imageSpace;
  viewer?.setOverlay($("#overlay").checked && imageSpace);
}

function wirePhotoInputs() {
  $("#photo-input").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = ""; // choosing the same file again is a change too
    if (file) usePhoto(file);
  });
  const zone = $("#drop-zone");
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) zone.classList.remove("dragging");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const [file] = event.dataTransfer.files;
    if (file) usePhoto(file);
  });
}

function wireWebcam() {
  if (!webcamAvailable()) return;
  const video = $("#webcam-video");
  let stop = null;
  const close = () => {
    stop?.();
    stop = null;
    video.hidden = $("#webcam-buttons").hidden = true;
    $("#webcam-start").hidden = false;
  };
  $("#webcam").hidden = false;
  $("#webcam-start").addEventListener("click", async () => {
    try {
      stop = await startWebcam(video);
      video.hidden = $("#webcam-buttons").hidden = false;
      $("#webcam-start").hidden = true;
    } catch (err) {
      showError("The camera could not be opened", err.message);
    }
  });
  $("#webcam-capture").addEventListener("click", async () => {
    try {
      const file = await captureFrame(video);
      close();
      usePhoto(file);
    } catch (err) {
      showError("The camera gave no picture", err.message);
    }
  });
  $("#webcam-stop").addEventListener("click", close);
}

function wireOptions() {
  for (const input of document.querySelectorAll('input[name="mode"]')) {
    input.addEventListener("change", () => viewer?.setMode(checked("mode")));
  }
  for (const input of document.querySelectorAll('input[name="space"]')) {
    input.addEventListener("change", () => {
      syncOverlay();
      show();
    });
  }
  $("#overlay").addEventListener("change", syncOverlay);
  $("#all-faces").addEventListener("change", () => {
    results = new Map();
    show();
  });
  $("#reset-view").addEventListener("click", () => viewer?.resetView());
  for (const button of document.querySelectorAll(".download")) {
    button.addEventListener("click", () => download(button.dataset.format));
  }
}

try {
  viewer = new Viewer($("#view"));
  viewer.setMode(checked("mode"));
  syncOverlay();
  setState("idle");
} catch (err) {
  showError("The 3D view cannot start", err.message);
}
wirePhotoInputs();
wireWebcam();
wireOptions();
