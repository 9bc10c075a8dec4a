// The page: a photo in (file, drop or camera), its faces out in the 3D view, errors as messages.
// Three tasks: one photo; an expression transferred from a second photo onto the first one's face
// (/v1/transfer); several photos of one person fused into one face (/v1/reconstruct/person).
// document.body.dataset.state says where it stands: idle, busy, ready or error.

import { ApiError, meshFile, personJson, reconstructJson, transferJson } from "./api.js";
import { boundingSphere, buildFaces, photoPlacement } from "./meshes.js";
import { Viewer, decodePhoto } from "./viewer.js";
import { captureFrame, startWebcam, webcamAvailable } from "./webcam.js";

const $ = (selector) => document.querySelector(selector);
const checked = (name) => document.querySelector(`input[name="${name}"]:checked`).value;
const PROMPTS = { single: "Choose a photo", transfer: "Choose the face photo", person: "" };

let viewer = null;
let photo = null; // the File of one photo, or of the face in a transfer
let expressionPhoto = null; // the File whose expression is transferred
let personPhotos = []; // the Files of one person
let shownPhoto = null; // the File whose face is drawn (and behind it): the person's photo chosen in the list
let results = new Map(); // space -> Promise of the API's JSON for what is chosen now
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

function pose() {
  return $("#expression-pose").checked ? "expression" : "identity";
}

/** What the page sends for the chosen task: { endpoint, files, options }, or null until its photos are chosen. */
function currentRequest() {
  const task = checked("task");
  if (task === "transfer") {
    if (!photo || !expressionPhoto) return null;
    return { endpoint: "/v1/transfer", files: [["identity", photo], ["expression", expressionPhoto]], options: { pose: pose() } };
  }
  if (task === "person") {
    if (!personPhotos.length) return null;
    return { endpoint: "/v1/reconstruct/person", files: personPhotos.map((file) => ["images", file]), options: {} };
  }
  return photo ? { endpoint: "/v1/reconstruct", files: [["image", photo]], options: faceOptions() } : null;
}

/** The API's JSON in `space` for what is chosen now, asked for once per choice. `space` "own": what textures
 * the faces, the photo's own faces in image space (their projection into the photo); that is the "image"
 * answer itself except for a transfer, whose face has another expression (and pose) than its photo shows. */
function resultFor(space) {
  const task = checked("task");
  if (space === "own" && task !== "transfer") return resultFor("image");
  if (!results.has(space)) {
    const cache = results;
    const request = space === "own" ? reconstructJson(photo, { space: "image", faces: "largest" })
      : task === "transfer" ? transferJson(photo, expressionPhoto, { space, pose: pose() })
      : task === "person" ? personJson(personPhotos, { space }) : reconstructJson(photo, { space, ...faceOptions() });
    request.catch(() => cache.delete(space)); // a failed request is asked again next time
    cache.set(space, request);
  }
  return results.get(space);
}

/** The person answer's list of photos: used or why not, each used one a button that shows its face. */
function listPersonPhotos(answer) {
  const items = answer.photos.map((item) => {
    const li = document.createElement("li");
    const text = item.used ? `${item.filename}: used, weight ${item.weight.toFixed(2)}`
      : `${item.filename}: not used, ${item.reason}`;
    if (item.used) {
      const button = Object.assign(document.createElement("button"), { type: "button", textContent: text });
      button.addEventListener("click", () => showPersonPhoto(personPhotos[item.index]));
      li.append(button);
    } else {
      li.textContent = text;
      li.className = "rejected";
    }
    if (personPhotos[item.index] === shownPhoto) li.classList.add("shown");
    return li;
  });
  $("#person-photos").replaceChildren(...items);
}

/** The face of the person's photo `file`: it goes behind the face and textures it. */
function showPersonPhoto(file) {
  shownPhoto = file;
  viewer.setPhoto(null);
  decodePhoto(file).then((bitmap) => shownPhoto === file && viewer.setPhoto(bitmap), () => {});
  show();
}

/** A ReconstructionJSON for the viewer: the answer itself, or (person) the shown photo's result. */
function faceResult(answer) {
  if (!answer.photos) return answer;
  let item = answer.photos.find((p) => p.used && personPhotos[p.index] === shownPhoto);
  if (!item) {
    item = answer.photos.find((p) => p.used);
    shownPhoto = personPhotos[item.index];
    decodePhoto(shownPhoto).then((bitmap) => shownPhoto === personPhotos[item.index] && viewer.setPhoto(bitmap),
      () => {});
  }
  return item.result;
}

function statusText(answer, result) {
  const photoSize = `${result.width}×${result.height} photo`;
  if (answer.photos) {
    const rejected = answer.photos_sent - answer.photos_used;
    return `${answer.photos_used} of ${answer.photos_sent} photos used` + (rejected ? `, ${rejected} not` : "") +
      ` · showing ${shownPhoto.name} (${photoSize})`;
  }
  if (checked("task") === "transfer") return `${expressionPhoto.name}'s expression on ${photo.name}'s face · ${photoSize}`;
  const count = result.face_count;
  return `${count} face${count === 1 ? "" : "s"} · ${photoSize}`;
}

/** Reconstruct (or take from the cache) and draw what is chosen, in the chosen space. */
async function show() {
  const request = currentRequest();
  for (const button of document.querySelectorAll(".download")) button.disabled = true;
  if (!request || !viewer) return;
  const ticket = ++latest;
  setState("busy");
  $("#message").hidden = true;
  try {
    const space = checked("space");
    // the photo's own faces in image space always: they line the mesh up with the photo, for the overlay
    // and the texture
    const [ownAnswer, answer] = await Promise.all([resultFor("own"), resultFor(space)]);
    if (ticket !== latest) return;
    const [own, result] = [faceResult(ownAnswer), faceResult(answer)];
    if (answer.photos) listPersonPhotos(answer);
    const placement = photoPlacement(own);
    const faces = buildFaces(result, own, placement);
    viewer.setScene(faces, space === "image" ? placement : null, boundingSphere(faces));
    $("#status").textContent = statusText(answer, result);
    setState("ready");
    for (const button of document.querySelectorAll(".download")) button.disabled = false;
  } catch (err) {
    if (ticket !== latest) return;
    viewer.clear();
    $("#status").textContent = "";
    showError(...explain(err));
  }
}

/** Something chosen changed: forget the answers and show it anew. */
function refresh() {
  results = new Map();
  show();
}

function usePhoto(file) {
  if (!viewer) return;
  photo = shownPhoto = file;
  // decoded here for the backdrop and the texture; the server decides what it accepts, so a
  // file this browser cannot decode still gets sent, and gets the server's answer
  viewer.setPhoto(null);
  decodePhoto(file).then((bitmap) => photo === file && viewer.setPhoto(bitmap), () => {});
  refresh();
}

function useExpressionPhoto(file) {
  expressionPhoto = file;
  $("#expression-name").textContent = file.name;
  refresh();
}

function usePersonPhotos(files) {
  personPhotos = files;
  shownPhoto = null;
  viewer?.setPhoto(null);
  $("#person-photos").replaceChildren();
  refresh();
}

/** Another task: its inputs shown, its photo (the single or face photo; the person's, once answered) behind
 * the face. */
function chooseTask() {
  const task = checked("task");
  $("#transfer").hidden = task !== "transfer";
  $("#person").hidden = task !== "person";
  $("#drop-zone").hidden = task === "person";
  $("#photo-prompt").textContent = PROMPTS[task];
  $("#all-faces").disabled = task !== "single";
  shownPhoto = task === "person" ? null : photo;
  viewer?.setPhoto(null);
  if (shownPhoto) decodePhoto(photo).then((bitmap) => shownPhoto === photo && viewer.setPhoto(bitmap), () => {});
  viewer?.clear();
  $("#status").textContent = "";
  $("#message").hidden = true;
  setState("idle");
  refresh();
}

async function download(format) {
  setState("busy");
  $("#message").hidden = true;
  try {
    const { endpoint, files, options } = currentRequest();
    const texture = checked("mode") === "albedo" ? "albedo" : "uv";
    const { blob, filename } = await meshFile({ endpoint, files }, { format, texture, space: checked("space"), ...options });
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
  $("#expression-input").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) useExpressionPhoto(file);
  });
  $("#person-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    if (files.length) usePersonPhotos(files);
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
    const files = [...event.dataTransfer.files];
    if (!files.length) return;
    const task = checked("task");
    if (task === "person") usePersonPhotos(files);
    else if (task === "transfer" && photo) useExpressionPhoto(files[0]); // the face first, then its expression
    else usePhoto(files[0]);
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
  $("#all-faces").addEventListener("change", refresh);
  $("#expression-pose").addEventListener("change", refresh);
  for (const input of document.querySelectorAll('input[name="task"]')) input.addEventListener("change", chooseTask);
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
