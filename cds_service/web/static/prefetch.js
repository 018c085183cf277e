// Turn pasted FHIR data into the prefetch of a CDS Hooks request, as an EHR would fill it.

/** Return the resources of a Bundle (any type), a single resource, or a list of either. */
export function resourcesOf(data) {
  if (Array.isArray(data)) {
    return data.flatMap(resourcesOf);
  }
  if (data === null || typeof data !== "object" || typeof data.resourceType !== "string") {
    throw new Error("Expected a FHIR Bundle, a FHIR resource or a list of resources.");
  }
  if (data.resourceType === "Bundle") {
    return (data.entry || []).map((entry) => entry && entry.resource).filter(Boolean).flatMap(resourcesOf);
  }
  return [data];
}

/** Return the id of the bundle's one Patient; an error names what is wrong. */
export function patientIdOf(resources) {
  const ids = [...new Set(resources.filter((r) => r.resourceType === "Patient").map((r) => r.id))];
  if (ids.length !== 1 || !ids[0]) {
    throw new Error(`Expected exactly one Patient with an id, found ${ids.length}.`);
  }
  return ids[0];
}

function searchset(resources, included) {
  const entry = resources.map((resource) => ({
    fullUrl: `${resource.resourceType}/${resource.id}`,
    resource,
    search: { mode: "match" },
  }));
  for (const resource of included) {
    entry.push({ fullUrl: `${resource.resourceType}/${resource.id}`, resource, search: { mode: "include" } });
  }
  return { resourceType: "Bundle", type: "searchset", total: resources.length, entry };
}

/** Resource types an `_include=Type:param` brings along (only the medication references are followed). */
function includedTypes(query) {
  const params = new URLSearchParams(query);
  return params.getAll("_include").some((value) => value.endsWith(":medication")) ? ["Medication"] : [];
}

/**
 * Fill each prefetch template from the resources, by resource type: `Type/{{...}}` is a read (the resource
 * or null), `Type?...` a search (a searchset Bundle of every resource of that type). Search parameters other
 * than `_include` are not applied: the service filters what it reads.
 */
export function buildPrefetch(templates, resources, patientId) {
  const prefetch = {};
  for (const [key, template] of Object.entries(templates || {})) {
    const [path, query = ""] = template.split("?");
    const type = path.split("/")[0];
    if (path.includes("/")) {
      prefetch[key] = resources.find((r) => r.resourceType === type && (type !== "Patient" || r.id === patientId)) || null;
    } else {
      const matches = resources.filter((r) => r.resourceType === type);
      const included = resources.filter((r) => includedTypes(query).includes(r.resourceType));
      prefetch[key] = searchset(matches, included);
    }
  }
  return prefetch;
}

/** Return a random (version 4) UUID, also outside secure contexts. */
export function uuid4() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") {
    return crypto.randomUUID();
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** Build a patient-view request for a service of the discovery document. */
export function patientViewRequest(service, resources) {
  const patientId = patientIdOf(resources);
  return {
    hook: "patient-view",
    hookInstance: uuid4(),
    context: { userId: "Practitioner/sandbox-user", patientId },
    prefetch: buildPrefetch(service.prefetch, resources, patientId),
  };
}

/**
 * Build an order-select or order-sign request for a service of the discovery document: the chart as prefetch,
 * the draft order (made the patient's) in `context.draftOrders`, and for order-select in `selections` too.
 */
export function orderRequest(service, resources, order) {
  const patientId = patientIdOf(resources);
  const draft = { ...order, subject: { reference: `Patient/${patientId}` } };
  const context = {
    userId: "Practitioner/sandbox-user",
    patientId,
    draftOrders: { resourceType: "Bundle", type: "collection", entry: [{ resource: draft }] },
  };
  if (service.hook === "order-select") {
    context.selections = [`${draft.resourceType}/${draft.id}`];
  }
  return {
    hook: service.hook,
    hookInstance: uuid4(),
    context,
    prefetch: buildPrefetch(service.prefetch, resources, patientId),
  };
}
