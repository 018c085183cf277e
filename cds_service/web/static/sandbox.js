// The sandbox page: discovery, the example gallery, firing patient-view, firing order-select and order-sign with a
// draft order of the order list, and feedback on cards.
//
// The evaluation date: the service evaluates on its own "today" (CDS_TODAY, else the real date), never on a
// date a request names. A chart is evaluated as of the date it was written for (its Bundle's timestamp or
// meta.lastUpdated, e.g. the gallery's 2026-11-21), or as of the date set on the page: the page moves every
// date of the chart by (service's today - evaluation date) before sending it, so the gallery gives its golden
// verdicts on any day.
import { markAnswered, renderCards } from "./cards.js";
import { chartDate, daysBetween, resourceIndex, shiftDates } from "./chart.js";
import { orderRequest, patientViewRequest, resourcesOf } from "./prefetch.js";

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
  date: byId("evaluation-date"),
  dateNote: byId("date-note"),
  fire: byId("fire"),
  order: byId("order"),
  orderDescription: byId("order-description"),
  fireOrderSelect: byId("fire-order-select"),
  fireOrderSign: byId("fire-order-sign"),
  status: byId("status"),
  cards: byId("cards"),
  requestJson: byId("request-json"),
  responseJson: byId("response-json"),
  feedbackJson: byId("feedback-json"),
};
let services = [];
let orderServices = {}; // hook -> its service of the discovery document
let answering = null; // the service whose cards are shown: feedback goes to it
let gallery = [];
let orders = [];
let settings = { today: null, outcomeLabels: {}, verdictLabels: {} };

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
  for (const service of discovery.services || []) {
    if (["order-select", "order-sign"].includes(service.hook) && !orderServices[service.hook]) {
      orderServices[service.hook] = service;
    }
  }
  ui.service.replaceChildren(...services.map((service) => new Option(`${service.title || service.id} (${service.id})`, service.id)));
  if (!services.length) {
    say("Discovery lists no patient-view service.", true);
  }
}

async function loadSettings() {
  settings = await getJson("sandbox/settings");
  ui.date.value = settings.today;
  describeDate();
}

/** Days the chart's dates move so that the service, on its today, evaluates it as of the date set. */
function shiftDays() {
  return ui.date.value ? daysBetween(ui.date.value, settings.today) : 0;
}

function describeDate() {
  const days = shiftDays();
  if (!days) {
    ui.dateNote.textContent = `The service evaluates on its own date, ${settings.today}.`;
    return;
  }
  const direction = days > 0 ? "later" : "earlier";
  const n = Math.abs(days);
  ui.dateNote.textContent = `The service evaluates on ${settings.today}: the page moves every date of the chart ` +
    `${n} day${n === 1 ? "" : "s"} ${direction}, so the chart reads as on ${ui.date.value}. Dates on the cards are moved too.`;
}

/** Set the evaluation date to the date the chart was written for, if it says. */
function dateFromChart(text) {
  let date = null;
  try {
    date = chartDate(JSON.parse(text));
  } catch {
    return;
  }
  ui.date.value = date || settings.today;
  describeDate();
}

async function loadGallery() {
  gallery = await getJson("sandbox/patients");
  for (const entry of gallery) {
    ui.gallery.append(new Option(entry.title || entry.file, entry.file));
  }
}

async function loadOrders() {
  orders = await getJson("sandbox/orders");
  for (const entry of orders) {
    ui.order.append(new Option(entry.title || entry.file, entry.file));
  }
}

function chooseOrder() {
  const entry = orders.find((item) => item.file === ui.order.value);
  ui.orderDescription.textContent = entry ? entry.description || "" : "";
}

async function choosePatient() {
  const entry = gallery.find((item) => item.file === ui.gallery.value);
  ui.galleryDescription.textContent = entry ? entry.description || "" : "";
  if (!entry) {
    return;
  }
  const bundle = await getJson(`sandbox/patients/${encodeURIComponent(entry.file)}`);
  ui.bundle.value = JSON.stringify(bundle, null, 2);
  dateFromChart(ui.bundle.value);
  say(`Loaded ${entry.title || entry.file}. Fire patient-view to see its cards.`);
}

async function uploadFile() {
  const [file] = ui.upload.files;
  if (file) {
    ui.bundle.value = await file.text();
    dateFromChart(ui.bundle.value);
    ui.gallery.value = "";
    ui.galleryDescription.textContent = "";
    say(`Loaded ${file.name}.`);
  }
}

function selectedService() {
  return services.find((service) => service.id === ui.service.value);
}

async function sendFeedback(card, feedback) {
  const service = answering;
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

/** The chart of the page, its dates moved to the evaluation date; an error says what is wrong. */
function chartResources() {
  if (!ui.date.value) {
    throw new Error("Set the evaluation date first.");
  }
  return shiftDates(resourcesOf(JSON.parse(ui.bundle.value)), shiftDays());
}

/** Post a request to a service and show the cards it answers. */
async function call(service, request, resources, emptyText) {
  ui.requestJson.textContent = JSON.stringify(request, null, 2);
  const buttons = [ui.fire, ui.fireOrderSelect, ui.fireOrderSign];
  buttons.forEach((button) => { button.disabled = true; });
  say(`Calling ${service.id} (${service.hook})…`);
  try {
    const response = await postJson(`cds-services/${encodeURIComponent(service.id)}`, request);
    ui.responseJson.textContent = JSON.stringify(response, null, 2);
    const cards = response.cards || [];
    const view = {
      labels: { outcome: settings.outcomeLabels, verdict: settings.verdictLabels },
      index: resourceIndex(resources),
      emptyText,
    };
    answering = service;
    renderCards(ui.cards, cards, sendFeedback, view);
    say(`${service.hook}: ${cards.length} card${cards.length === 1 ? "" : "s"} returned, evaluated as of ${ui.date.value}.`);
  } catch (error) {
    ui.responseJson.textContent = error.message;
    say(error.message, true);
  } finally {
    buttons.forEach((button) => { button.disabled = false; });
  }
}

async function fire() {
  const service = selectedService();
  if (!service) {
    say("Choose a CDS service first.", true);
    return;
  }
  let request;
  let resources;
  try {
    resources = chartResources();
    request = patientViewRequest(service, resources);
  } catch (error) {
    say(`Cannot use this data: ${error.message}`, true);
    return;
  }
  await call(service, request, resources, "No cards: the service found no trial this patient may fit.");
}

async function fireOrder(hook) {
  const service = orderServices[hook];
  const entry = orders.find((item) => item.file === ui.order.value);
  if (!service || !entry) {
    say(service ? "Choose a draft order first." : `Discovery lists no ${hook} service.`, true);
    return;
  }
  let request;
  let resources;
  try {
    resources = chartResources();
    const order = await getJson(`sandbox/orders/${encodeURIComponent(entry.file)}`);
    request = orderRequest(service, resources, order);
  } catch (error) {
    say(`Cannot use this data: ${error.message}`, true);
    return;
  }
  const none = hook === "order-sign"
    ? "No cards: this order ends no trial the patient may fit now, or its warning was shown at order-select today."
    : "No cards: this order ends no trial the patient may fit now.";
  await call(service, request, resources, none);
}

ui.gallery.addEventListener("change", () => choosePatient().catch((error) => say(error.message, true)));
ui.upload.addEventListener("change", () => uploadFile().catch((error) => say(error.message, true)));
ui.bundle.addEventListener("change", () => dateFromChart(ui.bundle.value));
ui.date.addEventListener("change", describeDate);
ui.fire.addEventListener("click", fire);
ui.order.addEventListener("change", chooseOrder);
ui.fireOrderSelect.addEventListener("click", () => fireOrder("order-select"));
ui.fireOrderSign.addEventListener("click", () => fireOrder("order-sign"));

Promise.all([loadSettings(), loadServices(), loadGallery(), loadOrders()])
  .then(() => document.body.classList.add("ready"))
  .catch((error) => say(error.message, true));
