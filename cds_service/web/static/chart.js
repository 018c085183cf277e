// The chart the page sends: the date it was written for, its dates moved to another day, and short labels of
// its resources (the evidence a card cites).

const FULL_DATE = /^(\d{4})-(\d{2})-(\d{2})(T.*)?$/;
// Elements whose string values are identifiers or codes, never dates, even when they look like one.
const NOT_DATES = new Set(["id", "reference", "fullUrl", "url", "system", "code", "version", "versionId", "div"]);
const DAY_MS = 24 * 60 * 60 * 1000;

/** Return the ISO date (YYYY-MM-DD) a chart was written for: its Bundle's timestamp, else meta.lastUpdated. */
export function chartDate(data) {
  if (data === null || typeof data !== "object" || data.resourceType !== "Bundle") {
    return null;
  }
  const stamp = data.timestamp || (data.meta && data.meta.lastUpdated) || "";
  return FULL_DATE.test(stamp) ? stamp.slice(0, 10) : null;
}

/** Days from ISO date `from` to ISO date `to` (negative when `to` is earlier). */
export function daysBetween(from, to) {
  return Math.round((Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / DAY_MS);
}

function shiftDate(text, days) {
  const match = FULL_DATE.exec(text);
  const moved = new Date(Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) + days * DAY_MS);
  return moved.toISOString().slice(0, 10) + (match[4] || "");
}

/**
 * Return a copy of FHIR data with every full date and dateTime moved by `days` (time and zone kept): a chart
 * written for day D, moved by (T - D) days, reads on day T as it read on day D. Partial dates (YYYY, YYYY-MM)
 * stay as they are.
 */
export function shiftDates(data, days) {
  if (Array.isArray(data)) {
    return data.map((item) => shiftDates(item, days));
  }
  if (data === null || typeof data !== "object") {
    return data;
  }
  const copy = {};
  for (const [key, value] of Object.entries(data)) {
    if (typeof value === "string" && !NOT_DATES.has(key) && FULL_DATE.test(value)) {
      copy[key] = shiftDate(value, days);
    } else {
      copy[key] = shiftDates(value, days);
    }
  }
  return copy;
}

/** Map "Type/id" to each resource of the chart (the references evidence uses). */
export function resourceIndex(resources) {
  return new Map(resources.filter((r) => r.id).map((r) => [`${r.resourceType}/${r.id}`, r]));
}

function conceptText(concept) {
  if (!concept) {
    return "";
  }
  const coding = (concept.coding || []).find((c) => c.display) || {};
  return concept.text || coding.display || "";
}

/** A quantity's unit as written, else its UCUM code unless that is only an annotation such as "{INR}". */
function unitText(quantity) {
  const code = quantity.code || "";
  return quantity.unit || (/^\{.*\}$/.test(code) ? "" : code);
}

function quantityText(quantity) {
  if (!quantity || quantity.value === undefined) {
    return "";
  }
  return `${quantity.comparator || ""}${quantity.value} ${unitText(quantity)}`.trim();
}

function valueText(resource) {
  if (resource.valueQuantity) {
    return quantityText(resource.valueQuantity);
  }
  if (resource.valueCodeableConcept) {
    return conceptText(resource.valueCodeableConcept);
  }
  for (const key of ["valueString", "valueInteger", "valueBoolean", "valueDateTime"]) {
    if (resource[key] !== undefined) {
      return String(resource[key]);
    }
  }
  const parts = (resource.component || []).map((c) => c.valueQuantity).filter((q) => q && q.value !== undefined);
  if (parts.length) {
    return `${parts.map((q) => q.value).join("/")} ${unitText(parts[0])}`.trim();
  }
  return "";
}

function medicationText(resource, index) {
  if (resource.medicationCodeableConcept) {
    return conceptText(resource.medicationCodeableConcept);
  }
  const reference = resource.medicationReference && resource.medicationReference.reference;
  if (!reference) {
    return "";
  }
  const medication = reference.startsWith("#")
    ? (resource.contained || []).find((c) => `#${c.id}` === reference)
    : index.get(reference);
  return medication ? conceptText(medication.code) : "";
}

function dateText(resource) {
  const period = resource.effectivePeriod || resource.performedPeriod || resource.onsetPeriod || {};
  const date =
    resource.effectiveDateTime ||
    period.start ||
    resource.performedDateTime ||
    resource.onsetDateTime ||
    resource.recordedDate ||
    resource.authoredOn ||
    resource.dateAsserted ||
    resource.occurrenceDateTime ||
    resource.issued ||
    "";
  return date.slice(0, 10);
}

/** A short label of a resource for a clinician: type, what it is, its value, its date. */
export function evidenceLabel(resource, index) {
  if (resource.resourceType === "Patient") {
    return ["Patient", resource.gender, resource.birthDate && `born ${resource.birthDate}`].filter(Boolean).join(" · ");
  }
  const what = resource.resourceType.startsWith("Medication")
    ? medicationText(resource, index)
    : conceptText(resource.code);
  return [resource.resourceType, what, valueText(resource), dateText(resource)].filter(Boolean).join(" · ");
}
