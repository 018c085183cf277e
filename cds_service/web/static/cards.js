// Render CDS Hooks cards the way an EHR shows them: indicator, summary, Markdown detail, source, links,
// suggestions, Dismiss with override reasons, and the trial's criteria from the eligibility extension (an order
// warning: the criteria the order would end, from its order-impact extension).
// `view` holds what the page knows beyond the cards: the service's wording of outcomes and verdicts
// (card.yaml, from /sandbox/settings) and the chart it sent, to label the evidence.
import { evidenceLabel } from "./chart.js";
import { marked } from "./vendor/marked.esm.js";

export const ELIGIBILITY_EXTENSION = "org.trialmatch.eligibility";
export const ORDER_IMPACT_EXTENSION = "org.trialmatch.order-impact";
const INDICATOR_ORDER = { critical: 0, warning: 1, info: 2 };
const VERDICT_CLASSES = { "likely-eligible": "likely", "possibly-eligible": "possibly" };
// Sorted by outcome: what needs the clinician first (to check, not met or excluded, left to them), then met.
const OUTCOME_RANK = { unknown: 0, "not-met": 1, clinician: 2, met: 3 };

const purifier = window.DOMPurify;
purifier.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Create an element with attributes and children (strings become text nodes: never parsed as HTML). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

/** Return Markdown as sanitized HTML: no scripts, no event handlers, no `javascript:` URLs. */
export function safeMarkdown(markdown) {
  const html = marked.parse(String(markdown), { gfm: true, async: false });
  return purifier.sanitize(html, { USE_PROFILES: { html: true }, FORBID_TAGS: ["style", "form"], FORBID_ATTR: ["style"] });
}

function isWebUrl(url) {
  try {
    return ["http:", "https:"].includes(new URL(url).protocol);
  } catch {
    return false;
  }
}

function renderLinks(links) {
  const list = el("ul", { class: "links" });
  for (const link of links) {
    if (link.type === "absolute" && isWebUrl(link.url)) {
      list.append(el("li", {}, el("a", { href: link.url, target: "_blank", rel: "noopener noreferrer" }, link.label)));
    } else {
      list.append(el("li", {}, el("span", { class: "disabled-link", title: "SMART links need an EHR launch" }, link.label)));
    }
  }
  return list;
}

function outcomeLabel(view, criterion) {
  const labels = view.labels.outcome[criterion.type] || view.labels.outcome.inclusion;
  return labels[criterion.outcome] || criterion.outcome;
}

function renderEvidence(view, reference) {
  const resource = view.index.get(reference);
  return el("span", { class: "evidence", title: reference }, resource ? evidenceLabel(resource, view.index) : reference);
}

/** A header button that sorts the rows by outcome, and back to the registry's order. */
function sortButton(tbody) {
  const button = el("button", { type: "button", class: "sort", "aria-pressed": "false" }, "Outcome");
  button.addEventListener("click", () => {
    const byOutcome = button.getAttribute("aria-pressed") !== "true";
    const rows = [...tbody.rows].sort((a, b) =>
      byOutcome ? a.dataset.rank - b.dataset.rank || a.dataset.index - b.dataset.index : a.dataset.index - b.dataset.index);
    tbody.replaceChildren(...rows);
    button.setAttribute("aria-pressed", String(byOutcome));
    button.closest("th").setAttribute("aria-sort", byOutcome ? "ascending" : "none");
  });
  return button;
}

function renderCriteria(extension, cardIndex, view) {
  const criteria = extension.criteria || [];
  const rows = criteria.map((criterion, index) =>
    el(
      "tr",
      { class: `outcome-${criterion.outcome}`, "data-index": index, "data-rank": OUTCOME_RANK[criterion.outcome] ?? 9 },
      el("td", {}, criterion.type),
      el("td", {}, criterion.heading ? el("span", { class: "heading" }, `${criterion.heading} `) : null, criterion.text),
      el("td", {}, el("span", { class: `badge badge-${criterion.outcome}` }, outcomeLabel(view, criterion))),
      el("td", {}, criterion.reason || ""),
      el("td", {}, ...(criterion.evidence || []).map((reference) => renderEvidence(view, reference))),
    ),
  );
  const captionId = `criteria-caption-${cardIndex}`;
  const counts = new Map();
  for (const criterion of criteria) {
    const label = outcomeLabel(view, criterion);
    counts.set(label, (counts.get(label) || 0) + 1);
  }
  const countText = [...counts].map(([label, n]) => `${n} ${label.toLowerCase()}`).join(", ");
  const tbody = el("tbody", {}, ...rows);
  const headers = ["Type", "Criterion", sortButton(tbody), "Reason", "Evidence"].map((h) =>
    el("th", { scope: "col", ...(typeof h === "string" ? {} : { "aria-sort": "none" }) }, h));
  return el(
    "details",
    { class: "criteria" },
    el("summary", {}, `Eligibility criteria (${criteria.length}: ${countText})`),
    el("p", { class: "meta" },
      `${view.labels.verdict[extension.verdict] || extension.verdict} · ${extension.recruitmentStatus} · Catalog ${String(extension.catalogVersion || "").slice(0, 12)}`,
      extension.arm ? ` · Suggested cohort: ${extension.arm}` : null),
    el(
      "table",
      { "aria-describedby": captionId },
      el("caption", { id: captionId }, `Criteria of ${extension.nctId || "the trial"}`),
      el("thead", {}, el("tr", {}, ...headers)),
      tbody,
    ),
  );
}

/** The criteria an order would end (an order warning's extension), verbatim with why, and the orders. */
function renderImpact(extension) {
  const criteria = extension.criteria || [];
  return el(
    "details",
    { class: "criteria" },
    el("summary", {}, `Criteria the order would end (${criteria.length})`),
    el("ul", { class: "impact" },
      ...criteria.map((criterion) => el("li", {}, `${criterion.text} `, el("span", { class: "reason" }, `(${criterion.reason})`)))),
    el("p", { class: "meta" }, `${extension.nctId} · orders: ${(extension.orders || []).join(", ")}`),
  );
}

function renderDismiss(card, cardIndex, onFeedback) {
  const reasons = card.overrideReasons || [];
  const selectId = `override-${cardIndex}`;
  const commentId = `comment-${cardIndex}`;
  const select = el("select", { id: selectId }, el("option", { value: "" }, "— no reason given —"),
    ...reasons.map((reason, i) => el("option", { value: String(i) }, reason.display || reason.code)));
  const comment = el("input", { id: commentId, type: "text", maxlength: "500" });
  const button = el("button", { type: "button", class: "dismiss" }, "Dismiss");
  button.addEventListener("click", () => {
    const overrideReason = {};
    if (select.value !== "") {
      const { system, code, display } = reasons[Number(select.value)];
      overrideReason.reason = { system, code, display };
    }
    if (comment.value.trim()) {
      overrideReason.userComment = comment.value.trim();
    }
    onFeedback(card, { outcome: "overridden", ...(Object.keys(overrideReason).length ? { overrideReason } : {}) });
  });
  return el("div", { class: "dismiss-row" },
    el("label", { for: selectId }, "Reason"), select,
    el("label", { for: commentId }, "Comment (optional)"), comment,
    button);
}

/** The verdict as a badge: likely and possibly cards look different at a glance. */
function verdictBadge(extension, view) {
  const kind = VERDICT_CLASSES[extension.verdict];
  if (!kind) {
    return null;
  }
  return el("span", { class: `verdict verdict-${kind}` }, view.labels.verdict[extension.verdict] || extension.verdict);
}

function renderCard(card, cardIndex, onFeedback, view) {
  const indicator = ["info", "warning", "critical"].includes(card.indicator) ? card.indicator : "info";
  const extension = card.extension && card.extension[ELIGIBILITY_EXTENSION];
  const kind = extension && VERDICT_CLASSES[extension.verdict];
  const article = el("article", {
    class: `card card-${indicator}${kind ? ` card-${kind}` : ""}`, "data-uuid": card.uuid, "aria-label": card.summary,
  },
  el("p", { class: "card-head" },
    extension ? verdictBadge(extension, view) : null,
    el("span", { class: `indicator indicator-${indicator}` }, indicator),
    el("span", { class: "summary" }, card.summary)));
  if (card.detail) {
    const detail = el("div", { class: "detail" });
    detail.innerHTML = safeMarkdown(card.detail);
    article.append(detail);
  }
  if (card.source && card.source.label) {
    article.append(el("p", { class: "source" }, `Source: ${card.source.label}`));
  }
  if (card.links && card.links.length) {
    article.append(renderLinks(card.links));
  }
  if (card.suggestions && card.suggestions.length) {
    const row = el("div", { class: "suggestions" });
    for (const suggestion of card.suggestions) {
      const button = el("button", { type: "button", class: "suggestion" }, suggestion.label);
      button.disabled = !(card.uuid && suggestion.uuid);
      button.addEventListener("click", () =>
        onFeedback(card, { outcome: "accepted", acceptedSuggestions: [{ id: suggestion.uuid }] }));
      row.append(button);
    }
    article.append(row);
  }
  if (extension) {
    article.append(renderCriteria(extension, cardIndex, view));
  }
  const impact = card.extension && card.extension[ORDER_IMPACT_EXTENSION];
  if (impact) {
    article.append(renderImpact(impact));
  }
  if (card.uuid) {
    article.append(renderDismiss(card, cardIndex, onFeedback));
  }
  return article;
}

/** Replace the contents of `container` with the cards, most urgent first. */
export function renderCards(container, cards, onFeedback, view) {
  container.replaceChildren();
  if (!cards.length) {
    container.append(el("p", { class: "hint" }, view.emptyText || "No cards: the service found no trial this patient may fit."));
    return;
  }
  const sorted = [...cards].sort((a, b) => (INDICATOR_ORDER[a.indicator] ?? 3) - (INDICATOR_ORDER[b.indicator] ?? 3));
  sorted.forEach((card, index) => container.append(renderCard(card, index, onFeedback, view)));
}

/** Mark a card as answered (feedback sent) and take its buttons away. */
export function markAnswered(container, uuid, text) {
  const article = [...container.querySelectorAll("article.card")].find((node) => node.dataset.uuid === uuid);
  if (!article) {
    return;
  }
  article.classList.add("answered");
  article.querySelectorAll(".dismiss-row, .suggestions").forEach((node) => node.remove());
  article.append(el("p", { class: "answered-note", role: "status" }, text));
}

export { el };
