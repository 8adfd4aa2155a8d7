// What several role pages share: receivable tables, the overdue rule, small forms.
import { api } from "../api.js";
import { chip, date, errorBox, h, modal, money, panel, table } from "../ui.js";

export const OPEN = new Set(["registered", "confirmed", "disputed", "assigned", "partially_paid", "defaulted"]);

export function isOverdue(r, now) {
  return ["confirmed", "assigned", "partially_paid", "defaulted"].includes(r.status) && r.due_date < now;
}

export async function receivables(query) {
  return api("/receivables", { query: { limit: 200, ...query } });
}

export function page(title, ...children) {
  return h("div", {}, h("h1", {}, title), ...children);
}

export function grid(...children) {
  return h("div", { class: "grid" }, ...children);
}

export const COLUMNS = {
  id: { title: "Receivable", cell: (r) => h("a", { href: `#/receivable/${r.id}` }, `#${r.id}`) },
  status: { title: "Status", cell: (r) => chip(r.status) },
  creditor: { title: "Creditor", cell: (r) => `Entity ${r.creditor}` },
  debtor: { title: "Debtor", cell: (r) => `Entity ${r.debtor}` },
  holder: { title: "Holder", cell: (r) => `Entity ${r.holder}` },
  payee: { title: "Pay to", cell: (r) => `Entity ${r.holder}` },
  face: { title: "Face value", class: "num", cell: (r) => money(r.face_value, r.currency) },
  unpaid: { title: "Unpaid", class: "num", cell: (r) => money(r.unpaid, r.currency) },
  issued: { title: "Issued", cell: (r) => date(r.issue_date) },
  due: { title: "Due", class: "due", cell: (r) => date(r.due_date) },
};

// A panel whose table is (re)loaded from the API; `columns` may end with an actions column.
export function loadingTable(host, load, columns, { empty, testid, now = (data) => data.as_of.block_timestamp } = {}) {
  host.replaceChildren(h("div", { class: "empty" }, "Loading…"));
  load().then((data) => {
    const at = now(data);
    const items = data.items;
    host.replaceChildren(table(columns, items, {
      empty, testid,
      rowClass: (r) => (isOverdue(r, at) ? "overdue" : null),
    }));
  }).catch((err) => host.replaceChildren(errorBox(err)));
}

export function invoiceInputs({ debtor = true, currency = "CNY" } = {}) {
  const input = (name, attrs = {}) => h("input", { name, "data-testid": `invoice-${name}`, ...attrs });
  return [
    debtor ? h("label", {}, "Debtor (entity id)", input("debtor", { type: "number", min: 1, required: true })) : null,
    h("label", {}, "Invoice number", input("invoice_number", { required: true })),
    h("label", {}, "Face value", input("face_value", { placeholder: "1,850,600.00", required: true })),
    h("label", {}, "Currency", input("currency", { value: currency, maxlength: 3, required: true })),
    h("label", {}, "Issue date", input("issue_date", { type: "date", required: true })),
    h("label", {}, "Due date", input("due_date", { type: "date", required: true })),
  ];
}

export function invoiceFromForm(values, debtor) {
  return {
    debtor: debtor ?? Number(values.debtor),
    invoice_number: values.invoice_number,
    face_value: values.face_value,
    currency: values.currency.toUpperCase(),
    issue_date: values.issue_date,
    due_date: values.due_date,
    ...(values.document_hash ? { document_hash: values.document_hash } : {}),
  };
}

export function statCard(k, v, testid) {
  return h("div", { class: "stat", "data-testid": testid }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
}

// Anomaly flags on the receivables the caller may read (open ones), each clearable with a note by the
// current holder or an auditor.
export function flagsPanel() {
  const host = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  function load() {
    api("/flags", { query: { state: "open", limit: 100 } }).then((data) => {
      host.replaceChildren(table([
        { title: "Flag", cell: (f) => `#${f.id}` },
        { title: "Receivable", cell: (f) => h("a", { href: `#/receivable/${f.receivable_id}` }, `#${f.receivable_id}`) },
        { title: "Kind", cell: (f) => f.kind.replace(/_/g, " ") },
        { title: "Severity", cell: (f) => chip(f.severity, f.severity === "high" ? "bad" : "") },
        { title: "Why", class: "wrap", cell: (f) => f.reason + (f.related_id ? ` (see #${f.related_id})` : "") },
        { title: "Raised in block", class: "num", cell: (f) => String(f.raised_block) },
        { title: "", cell: (f) => h("button", { class: "small", onclick: () => clear(f) }, "Clear…") },
      ], data.items, { empty: "No open anomaly flags.", testid: "flags" }));
    }).catch((err) => host.replaceChildren(errorBox(err)));
  }
  function clear(f) {
    const note = h("textarea", { rows: 3, required: true, placeholder: "why this is not a problem (kept with the flag)" });
    const status = h("div");
    const form = h("form", {}, h("label", {}, "Note", note),
      h("div", { class: "actions", style: "margin-top:10px" }, h("button", { class: "primary", type: "submit" }, "Clear the flag"),
        h("button", { type: "button", onclick: () => m.close() }, "Cancel")), status);
    const m = modal(h("h2", {}, `Clear flag #${f.id} on receivable #${f.receivable_id}`), h("p", { class: "hint" }, f.reason), form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      try {
        await api(`/flags/${f.id}/clear`, { method: "POST", body: { note: note.value.trim() } });
        m.close();
        load();
      } catch (err) { status.replaceChildren(errorBox(err)); }
    });
  }
  load();
  return panel("Anomaly flags", h("p", { class: "hint" }, "Unusual patterns found in the ledger (near-duplicates, bursts, early payments…): look before you finance or pay."), host);
}
