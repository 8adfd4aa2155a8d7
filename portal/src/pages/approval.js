// Auto-approval (issue 6): the factor's policy as a form (GET/PUT /policies/me), and every offer's
// decision with the rule that made it and each rule's result (GET /offers).
import { api } from "../api.js";
import { chip, entity, errorBox, h, money, panel, table, toast } from "../ui.js";
import { allPages } from "./common.js";

// "CNY 5,000,000.00; USD 800,000" -> {CNY: "5,000,000.00", USD: "800,000"} (amounts stay text in major
// units: the server parses them exactly); "" -> null (no limit). Throws naming the field.
export function parseAmounts(text, field) {
  const clean = String(text || "").trim();
  if (!clean) return null;
  const out = {};
  for (const part of clean.split(/[;\n]+/).map((x) => x.trim()).filter(Boolean)) {
    const m = /^([A-Za-z]{3})\s+([0-9][0-9,._ ]*)$/.exec(part);
    if (!m) throw new Error(`${field}: write each limit as a currency and an amount, e.g. "CNY 5,000,000.00; USD 800,000" (not "${part}")`);
    const code = m[1].toUpperCase();
    if (code in out) throw new Error(`${field}: ${code} is given twice`);
    out[code] = m[2].trim();
  }
  return out;
}

// {CNY: 500000000} (minor units) -> "CNY 5,000,000.00".
export function amountsText(map) {
  if (!map) return "";
  return Object.entries(map).map(([cur, minor]) => money(minor, cur)).join("; ");
}

// Lines "4: CNY 2,000,000.00; USD 100,000" -> {"4": {CNY: ..., USD: ...}}.
export function parseDebtorLimits(text) {
  const out = {};
  for (const line of String(text || "").split("\n").map((x) => x.trim()).filter(Boolean)) {
    const m = /^(\d+)\s*:\s*(.+)$/.exec(line);
    if (!m) throw new Error(`per-debtor limits: write one debtor per line, e.g. "4: CNY 2,000,000.00" (not "${line}")`);
    if (m[1] in out) throw new Error(`per-debtor limits: debtor ${m[1]} is given twice`);
    out[m[1]] = parseAmounts(m[2], `per-debtor limits, debtor ${m[1]}`);
  }
  return out;
}

export function policyPanel() {
  const host = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  const status = h("div");
  const versionNote = h("span", { class: "hint", "data-testid": "policy-version" });

  const input = (name, attrs = {}) => h("input", { name, "data-testid": `policy-${name}`, ...attrs });
  const check = (name, text) => h("label", { class: "check" }, input(name, { type: "checkbox" }), text);
  const form = h("form", { class: "fields policy", "data-testid": "policy-form" },
    h("div", { class: "span" }, check("enabled", "Decide offers automatically (an offer within every limit is assigned at once; any other waits for you)")),
    h("label", {}, "Currencies (empty: any)", input("currencies", { placeholder: "CNY, USD" })),
    h("label", {}, "Largest face value", input("max_amount", { placeholder: "CNY 5,000,000.00; USD 800,000" })),
    h("label", {}, "Longest tenor (days to due date)", input("max_tenor_days", { type: "number", min: 1, max: 36500 })),
    h("label", {}, "Advance rate, at least", input("min_advance_rate", { placeholder: "0.5" })),
    h("label", {}, "Advance rate, at most", input("max_advance_rate", { placeholder: "0.9" })),
    h("label", {}, "Exposure to any one debtor", input("debtor_limit", { placeholder: "CNY 20,000,000.00" })),
    h("label", {}, "Total exposure", input("total_limit", { placeholder: "CNY 100,000,000.00" })),
    h("label", { class: "span" }, "Per-debtor limits (one debtor per line; replaces the one-debtor limit for it)",
      h("textarea", { name: "debtor_limits", rows: 2, placeholder: "4: CNY 8,000,000.00", "data-testid": "policy-debtor_limits" })),
    check("confirmed_only", "Confirmed by the debtor only"),
    check("no_anomaly_flag", "No open anomaly flag"),
    check("no_near_duplicate", "No suspiciously similar registration"),
    h("div", { class: "actions span" }, h("button", { class: "primary", type: "submit", "data-testid": "policy-save" }, "Save the policy"), versionNote));
  const el = (name) => form.elements.namedItem(name);

  function fill(data) {
    const p = data.policy;
    for (const name of ["enabled", "confirmed_only", "no_anomaly_flag", "no_near_duplicate"]) el(name).checked = Boolean(p[name]);
    el("currencies").value = p.currencies.join(", ");
    for (const name of ["max_amount", "debtor_limit", "total_limit"]) el(name).value = amountsText(p[name]);
    el("max_tenor_days").value = p.max_tenor_days ?? "";
    el("min_advance_rate").value = p.min_advance_rate ?? "";
    el("max_advance_rate").value = p.max_advance_rate ?? "";
    el("debtor_limits").value = Object.entries(p.debtor_limits || {}).map(([d, m]) => `${d}: ${amountsText(m)}`).join("\n");
    versionNote.textContent = data.version ? `version ${data.version}${p.enabled ? "" : " (not deciding: every offer waits for you)"}` : "no policy yet: every offer waits for you";
  }

  function body() {
    const text = (name) => el(name).value.trim();
    const currencies = text("currencies").split(/[,\s]+/).filter(Boolean).map((c) => c.toUpperCase());
    return {
      enabled: el("enabled").checked,
      currencies,
      confirmed_only: el("confirmed_only").checked,
      max_amount: parseAmounts(text("max_amount"), "largest face value"),
      max_tenor_days: text("max_tenor_days") ? Number(text("max_tenor_days")) : null,
      min_advance_rate: text("min_advance_rate") || null,
      max_advance_rate: text("max_advance_rate") || null,
      debtor_limit: parseAmounts(text("debtor_limit"), "exposure to any one debtor"),
      debtor_limits: parseDebtorLimits(el("debtor_limits").value),
      total_limit: parseAmounts(text("total_limit"), "total exposure"),
      no_anomaly_flag: el("no_anomaly_flag").checked,
      no_near_duplicate: el("no_near_duplicate").checked,
    };
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.replaceChildren();
    let payload;
    try { payload = body(); } catch (err) { status.replaceChildren(errorBox({ title: err.message, code: "" })); return; }
    const save = form.querySelector("button[type=submit]");
    save.disabled = true;
    try {
      const saved = await api("/policies/me", { method: "PUT", body: payload });
      fill(saved);
      status.replaceChildren(h("div", { class: "result ok", "data-testid": "policy-saved" }, `Saved: policy version ${saved.version}${saved.policy.enabled ? ", deciding offers automatically" : ", not deciding (offers wait for you)"}.`));
      toast(`Policy version ${saved.version} saved.`);
    } catch (err) {
      status.replaceChildren(errorBox(err)); // a 422 names the field; nothing was changed
    } finally { save.disabled = false; }
  });

  api("/policies/me").then((data) => { fill(data); host.replaceChildren(form, status); })
    .catch((err) => host.replaceChildren(errorBox(err)));
  return panel("Auto-approval policy",
    h("p", { class: "hint" }, "Offers that meet every limit are accepted and assigned on-chain without a person, within seconds; the rest wait below with the reasons. Amounts in major units per currency. Exposure counts what you already hold, so two offers at once cannot together pass a limit."),
    host);
}

const RULE_WORDS = {
  policy_enabled: "policy enabled", currency: "currency", confirmed_only: "confirmed only", max_amount: "largest face value",
  max_tenor: "tenor", advance_rate: "advance rate", debtor_exposure: "exposure to the debtor", total_exposure: "total exposure",
  no_anomaly_flag: "no anomaly flag", no_near_duplicate: "no near-duplicate", all_rules_met: "all rules met", manual: "decided by hand",
};
export const ruleWords = (rule) => RULE_WORDS[rule] || rule.replace(/_/g, " ");

function rulesList(offer) {
  return h("ul", { class: "rules", "data-testid": `offer-rules-${offer.id}` },
    offer.rules.map((r) => h("li", { class: `${r.ok ? "ok" : "no"}${r.rule === offer.rule ? " decisive" : ""}`, "data-rule": r.rule },
      `${ruleWords(r.rule)}: ${r.detail}`)));
}

function decidedBy(offer) {
  const last = offer.decisions[offer.decisions.length - 1];
  if (!last) return "—";
  const who = last.actor === "policy" ? "the policy" : last.actor === "relayer" ? "the relayer" : `${last.actor.slice(0, 10)}…`;
  return `${who}, ${new Date(last.at * 1000).toLocaleString()}`;
}

// Every offer made to this factor (and by it, as a holder), newest first, with its decision.
export function decisionsPanel(principal) {
  const host = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  allPages("/offers", {}, { limit: 500, pages: 4 }).then(({ items }) => {
    const mine = items.filter((o) => o.factor === principal.entity).reverse();
    host.replaceChildren(table([
      { title: "Offer", cell: (o) => `#${o.id}` },
      { title: "Receivable", cell: (o) => h("a", { href: `#/receivable/${o.receivable_id}` }, `#${o.receivable_id}`) },
      { title: "From", cell: (o) => entity(o.holder) },
      { title: "Unpaid / advance", class: "num", cell: (o) => h("div", {}, money(o.amount, o.currency), h("div", { class: "hint" }, money(o.advance, o.currency))) },
      { title: "Outcome", cell: (o) => chip(o.state, o.state === "assigned" ? "ok" : ["declined", "failed", "expired"].includes(o.state) ? "bad" : "") },
      { title: "Decided by rule", cell: (o) => h("span", { "data-testid": `offer-rule-${o.id}` }, ruleWords(o.rule)) },
      { title: "Every rule", class: "wrap", cell: (o) => h("details", { class: "rules" },
        h("summary", {}, `${o.rules.filter((r) => r.ok).length} of ${o.rules.length} met`), rulesList(o)) },
      { title: "By", cell: (o) => decidedBy(o) },
    ], mine, { empty: "No offers yet.", testid: "decisions", rowClass: (o) => `offer-${o.receivable_id}` }));
  }).catch((err) => host.replaceChildren(errorBox(err)));
  return panel("Decisions", h("p", { class: "hint" }, "Every offer made to you, newest first: what was decided, by which rule, and each rule's result (open a row's rules)."), host);
}
