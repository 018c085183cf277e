// The sandbox page: discovery, the example gallery, firing patient-view, and feedback on cards.
import { markAnswered, renderCards } from "./cards.js";
import { patientViewRequest, resourcesOf } from "./prefetch.js";

// Paths are resolved from this module's URL, so the page works when the service is mounted under a prefix.
const ROOT = new URL("../", import.meta.url);
const url = (path) => new URL(path, ROOT).toString();

const byId = (id) => document.getElementById(id);
const ui = {
  service: byId("service"),
  gallery: byId("gallery"),
  galleryDescription: byId("gallery-description"),
  bundle: byId("bundle"),
  upload: byId("upload"),
  fire: byId("fire"),
  status: byId("status"),
  cards: byId("cards"),
  requestJson: byId("request-json"),
  responseJson: byId("response-json"),
  feedbackJson: byId("feedback-json"),
};
let services = [];
let gallery = [];

function say(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

async function getJson(path, options = {}) {
  const response = await fetch(url(path), { headers: { Accept: "application/json" }, ...options });
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  if (response.status === 401) {
    throw new Error(`${path}: this service requires a JWT; start it with CDS_SANDBOX=1 to use this page.`);
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `HTTP ${response.status}`;
    throw new Error(`${options.method || "GET"} ${path}: ${message}`);
  }
  return body;
}

function postJson(path, payload) {
  return getJson(path, {
    method: "POST",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

async function loadServices() {
  const discovery = await getJson("cds-services");
  services = (discovery.services || []).filter((service) => service.hook === "patient-view");
  ui.service.replaceChildren(...services.map((service) => new Option(`${service.title || service.id} (${service.id})`, service.id)));
  if (!services.length) {
    say("Discovery lists no patient-view service.", true);
  }
}

async function loadGallery() {
  gallery = await getJson("sandbox/patients");
  for (const entry of gallery) {
    ui.gallery.append(new Option(entry.title || entry.file, entry.file));
  }
}

async function choosePatient() {
  const entry = gallery.find((item) => item.file === ui.gallery.value);
  ui.galleryDescription.textContent = entry ? entry.description || "" : "";
  if (!entry) {
    return;
  }
  const bundle = await getJson(`sandbox/patients/${encodeURIComponent(entry.file)}`);
  ui.bundle.value = JSON.stringify(bundle, null, 2);
  say(`Loaded ${entry.title || entry.file}. Fire patient-view to see its cards.`);
}

async function uploadFile() {
  const [file] = ui.upload.files;
  if (file) {
    ui.bundle.value = await file.text();
    ui.gallery.value = "";
    ui.galleryDescription.textContent = "";
    say(`Loaded ${file.name}.`);
  }
}

function selectedService() {
  return services.find((service) => service.id === ui.service.value);
}

async function sendFeedback(card, feedback) {
  const service = selectedService();
  const payload = { feedback: [{ card: card.uuid, ...feedback, outcomeTimestamp: new Date().toISOString().replace(/\.\d{3}Z$/, "Z") }] };
  ui.feedbackJson.textContent = JSON.stringify(payload, null, 2);
  try {
    await postJson(`cds-services/${encodeURIComponent(service.id)}/feedback`, payload);
    const text = feedback.outcome === "accepted" ? "Suggestion accepted: feedback sent." : "Dismissed: feedback sent.";
    markAnswered(ui.cards, card.uuid, text);
    say(text);
  } catch (error) {
    say(`Feedback was not stored: ${error.message}`, true);
  }
}

async function fire() {
  const service = selectedService();
  if (!service) {
    say("Choose a CDS service first.", true);
    return;
  }
  let request;
  try {
    request = patientViewRequest(service, resourcesOf(JSON.parse(ui.bundle.value)));
  } catch (error) {
    say(`Cannot use this data: ${error.message}`, true);
    return;
  }
  ui.requestJson.textContent = JSON.stringify(request, null, 2);
  ui.fire.disabled = true;
  say("Calling the service…");
  try {
    const response = await postJson(`cds-services/${encodeURIComponent(service.id)}`, request);
    ui.responseJson.textContent = JSON.stringify(response, null, 2);
    const cards = response.cards || [];
    renderCards(ui.cards, cards, sendFeedback);
    say(`${cards.length} card${cards.length === 1 ? "" : "s"} returned.`);
  } catch (error) {
    ui.responseJson.textContent = error.message;
    say(error.message, true);
  } finally {
    ui.fire.disabled = false;
  }
}

ui.gallery.addEventListener("change", () => choosePatient().catch((error) => say(error.message, true)));
ui.upload.addEventListener("change", () => uploadFile().catch((error) => say(error.message, true)));
ui.fire.addEventListener("click", fire);

Promise.all([loadServices(), loadGallery()])
  .then(() => document.body.classList.add("ready"))
  .catch((error) => say(error.message, true));
