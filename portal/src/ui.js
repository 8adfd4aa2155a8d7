// Small DOM and formatting helpers: no framework, just elements.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ------------------------------------------------------------------ numbers and dates

const exponents = new Map();
export function exponent(currency) {
  if (!exponents.has(currency)) {
    let digits = 2;
    try {
      digits = new Intl.NumberFormat("en-US", { style: "currency", currency }).resolvedOptions().maximumFractionDigits;
    } catch { /* unknown code: two decimals */ }
    exponents.set(currency, digits);
  }
  return exponents.get(currency);
}

// Minor units (integer) -> "CNY 1,850,600.00": exact, with BigInt, never through a float.
export function money(minor, currency) {
  if (minor === null || minor === undefined) return "—";
  const exp = exponent(currency);
  let n = BigInt(minor);
  const negative = n < 0n;
  if (negative) n = -n;
  const base = 10n ** BigInt(exp);
  const whole = (n / base).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const frac = exp ? "." + (n % base).toString().padStart(exp, "0") : "";
  return `${currency} ${negative ? "-" : ""}${whole}${frac}`;
}

// Major-unit text ("1,850,600.00") -> minor units, exactly; null when malformed or too fine.
export function toMinor(text, currency) {
  const clean = String(text).trim().replace(/[,\s_]/g, "");
  const m = /^(\d+)(?:\.(\d*))?$/.exec(clean);
  if (!m) return null;
  const exp = exponent(currency);
  const frac = m[2] || "";
  if (frac.replace(/0+$/, "").length > exp) return null;
  return BigInt(m[1]) * 10n ** BigInt(exp) + BigInt((frac + "0".repeat(exp)).slice(0, exp) || "0");
}

export function toMajorText(minor, currency) {
  return money(minor, currency).split(" ")[1];
}

export function date(seconds) {
  if (!seconds && seconds !== 0) return "—";
  return new Date(seconds * 1000).toISOString().slice(0, 10);
}

export function ago(seconds) {
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

// ------------------------------------------------------------------ participants' names

// Entity id -> display name, from the operator's directory (GET /directory); empty until it loads.
const names = new Map();

export function setNames(entries) {
  names.clear();
  for (const [id, name] of Object.entries(entries || {})) names.set(Number(id), name);
  // One datalist for every "entity id" input: type a number, or pick a name.
  let list = document.getElementById("entity-names");
  if (!list) {
    list = h("datalist", { id: "entity-names" });
    document.body.append(list);
  }
  list.replaceChildren(...[...names].sort((a, b) => a[0] - b[0]).map(([id, name]) => h("option", { value: String(id), label: name })));
}

export function entityName(id) {
  return names.get(Number(id)) || null;
}

// "Huaxin Manufacturing Group (4)", or "Entity 4" when the directory does not name it.
export function entity(id) {
  if (id === null || id === undefined) return "—";
  const name = names.get(Number(id));
  return name ? `${name} (${id})` : `Entity ${id}`;
}

export function short(hex, keep = 10) {
  if (!hex) return "—";
  return hex.length > keep + 6 ? `${hex.slice(0, keep)}…${hex.slice(-4)}` : hex;
}

export function label(status) {
  return String(status).replace(/_/g, " ");
}

export function chip(status, extra = "") {
  return h("span", { class: `chip ${status} ${extra}`.trim(), "data-status": status }, label(status));
}

// ------------------------------------------------------------------ tables and panels

export function panel(title, ...children) {
  return h("section", { class: "panel" }, title ? h("h2", {}, title) : null, ...children);
}

// columns: [{title, cell: row => node|string, class}], rows: [...]
export function table(columns, rows, { empty = "Nothing here.", rowClass, testid } = {}) {
  if (!rows.length) return h("div", { class: "empty", "data-testid": testid }, empty);
  return h(
    "table",
    { "data-testid": testid },
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.title)))),
    h(
      "tbody",
      {},
      rows.map((r) =>
        h("tr", { class: rowClass ? rowClass(r) : null, "data-id": r.id ?? null },
          columns.map((c) => h("td", { class: c.class }, c.cell(r)))),
      ),
    ),
  );
}

export function field(labelText, input) {
  return h("label", {}, labelText, input);
}

export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    out[el.name] = el.type === "checkbox" ? el.checked : el.value.trim();
  }
  return out;
}

// ------------------------------------------------------------------ messages

export function toast(text, kind = "") {
  const el = h("div", { class: `toast ${kind}` }, text);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), 6000);
}

const PLAIN = {
  InvoiceKeyTaken: (f) => `This invoice number is already registered for this debtor (receivable #${f.existingId}).`,
  FingerprintTaken: (f) => `This invoice is already registered (receivable #${f.existingId}).`,
  FingerprintMismatch: () => "The invoice details you entered do not match what the creditor registered.",
  NotDebtorOfRecord: (f) => `Only the debtor of record may do this to receivable #${f.id}.`,
  NotCreditorOfRecord: (f) => `Only the creditor of record may do this to receivable #${f.id}.`,
  NotHolder: (f) => `Only the holder (${entity(f.holder)}) may do this to receivable #${f.id}.`,
  InvalidStatus: (f) => `Receivable #${f.id} is not in a state that allows this.`,
  DueDateInPast: () => "The due date is already in the past.",
  DueDateNotAfterIssueDate: () => "The due date must be after the issue date.",
  AdvanceExceedsBalance: () => "The advance is larger than the unpaid balance.",
  PaymentExceedsBalance: () => "The payment is larger than the unpaid balance.",
  SplitDoesNotConserve: () => "The parts must add up exactly to the unpaid balance.",
  InvalidAssignee: () => "That entity cannot take this assignment (it must be a factor other than the holder).",
  EntityIsSuspended: (f) => `Participant ${entity(f.entityId)} is suspended.`,
  EntityMissingRole: (f) => `${entity(f.entityId)} does not have the role this needs.`,
  DebtorIsCreditor: () => "A creditor cannot issue an invoice to itself.",
  NotYetDue: () => "The receivable is not yet due.",
  UnknownReceivable: (f) => `There is no receivable #${f.id}.`,
  EntityStatusUnchanged: (f) => `Participant ${entity(f.entityId)} is already ${f.status === 2 ? "suspended" : "active"}.`,
};

// An error in plain words: the contract error explained where we know it, else the API's detail.
export function explain(err) {
  if (err && err.code && err.code.startsWith("contract.")) {
    const name = err.code.slice(9);
    const plain = PLAIN[name];
    const fields = err.fields || {};
    const said = plain ? plain(fields) : err.detail;
    return { title: said, detail: `${name}(${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(", ")})` };
  }
  if (err && err.title) {
    const where = err.errors && err.errors.length ? err.errors.map((e) => e.field || e.loc).filter(Boolean).join(", ") : "";
    return { title: err.detail || err.title, detail: [err.title, where && `field: ${where}`, err.code].filter(Boolean).join(" · ") };
  }
  return { title: String(err && err.message ? err.message : err), detail: "" };
}

export function errorBox(err) {
  const e = explain(err);
  return h("div", { class: "result bad", role: "alert", "data-testid": "error" },
    h("strong", {}, e.title), e.detail ? h("div", { class: "hint" }, e.detail) : null);
}

// ------------------------------------------------------------------ modal

export function modal(...content) {
  const dialog = document.getElementById("modal");
  const body = document.getElementById("modal-body");
  body.replaceChildren(...content);
  if (!dialog.open) dialog.showModal();
  return { close: () => dialog.close(), body };
}

// ------------------------------------------------------------------ page lifetime

const leaving = [];
// Runs `fn` when the page is left or re-rendered (closing streams, timers).
export function onLeave(fn) { leaving.push(fn); }
export function leavePage() { while (leaving.length) leaving.pop()(); }
