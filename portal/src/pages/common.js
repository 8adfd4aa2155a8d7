// What several role pages share: receivable tables, the overdue rule, small forms.
import { api } from "../api.js";
import { chip, date, entity, errorBox, h, modal, money, panel, short, table, toast } from "../ui.js";

export const OPEN = new Set(["registered", "confirmed", "disputed", "assigned", "partially_paid", "defaulted"]);

export function isOverdue(r, now) {
  return ["confirmed", "assigned", "partially_paid", "defaulted"].includes(r.status) && r.due_date < now;
}

export async function receivables(query) {
  return api("/receivables", { query: { limit: 200, ...query } });
}

// Every page of a list endpoint (up to `pages` pages): `cursor` is the query parameter that continues
// after a page, `next` the answer's field that gives its value (null at the end); `last` is the last
// answer (its as-of stamp).
export async function allPages(path, query, { cursor = "cursor", next = "next_cursor", limit = 200, pages = 25 } = {}) {
  const items = [];
  let after = null;
  let data = null;
  for (let i = 0; i < pages; i++) {
    data = await api(path, { query: { ...query, limit, ...(after !== null ? { [cursor]: after } : {}) } });
    items.push(...data.items);
    after = data[next];
    if (after === null || after === undefined) return { items, complete: true, last: data };
  }
  return { items, complete: false, last: data };
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
  creditor: { title: "Creditor", cell: (r) => entity(r.creditor) },
  debtor: { title: "Debtor", cell: (r) => entity(r.debtor) },
  holder: { title: "Holder", cell: (r) => entity(r.holder) },
  payee: { title: "Pay to", cell: (r) => entity(r.holder) },
  face: { title: "Face value", class: "num", cell: (r) => money(r.face_value, r.currency) },
  unpaid: { title: "Unpaid", class: "num", cell: (r) => money(r.unpaid, r.currency) },
  issued: { title: "Issued", cell: (r) => date(r.issue_date) },
  due: { title: "Due", class: "due", cell: (r) => date(r.due_date) },
};

// A panel whose table is (re)loaded from the API; `columns` may end with an actions column. Long lists
// show their first `rows` rows and a button for the rest.
export function loadingTable(host, load, columns, { empty, testid, rows = 25, now = (data) => data.as_of.block_timestamp } = {}) {
  host.replaceChildren(h("div", { class: "empty" }, "Loading…"));
  load().then((data) => {
    const at = now(data);
    const items = data.items;
    const show = (all) => {
      const shown = all ? items : items.slice(0, rows);
      host.replaceChildren(table(columns, shown, {
        empty, testid,
        rowClass: (r) => (isOverdue(r, at) ? "overdue" : null),
      }), ...(shown.length < items.length
        ? [h("button", { class: "link", "data-testid": testid ? `${testid}-all` : null, onclick: () => show(true) },
          `Show all ${items.length}`)]
        : []));
    };
    show(false);
  }).catch((err) => host.replaceChildren(errorBox(err)));
}

export function invoiceInputs({ debtor = true, currency = "CNY" } = {}) {
  const input = (name, attrs = {}) => h("input", { name, "data-testid": `invoice-${name}`, ...attrs });
  return [
    debtor ? h("label", {}, "Debtor (entity id)", input("debtor", { type: "number", min: 1, required: true, list: "entity-names" })) : null,
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

// Anomaly flags on the receivables the caller may read. Clearing one takes a note and is for the
// receivable's current holder or an auditor (the server decides; the button shows only to them).
export function flagsPanel(principal) {
  const auditor = principal.roles.includes("auditor");
  const me = principal.entity;
  const host = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  const stateFilter = h("select", { "data-testid": "flag-state" },
    h("option", { value: "open" }, "open"), h("option", { value: "cleared" }, "cleared"));
  // Ids of the receivables this entity holds now: it may clear their flags.
  const held = auditor || me === null || me === undefined
    ? Promise.resolve(new Set())
    : allPages("/receivables", { holder: me }).then(({ items }) => new Set(items.map((r) => r.id)));
  const entitled = (f, mine) => auditor || mine.has(f.receivable_id);

  function load() {
    const state = stateFilter.value;
    Promise.all([api("/flags", { query: { state, limit: 100 } }), held]).then(([data, mine]) => {
      host.replaceChildren(table([
        { title: "Flag", cell: (f) => `#${f.id}` },
        { title: "Receivable", cell: (f) => h("a", { href: `#/receivable/${f.receivable_id}` }, `#${f.receivable_id}`) },
        { title: "Kind", cell: (f) => f.kind.replace(/_/g, " ") },
        { title: "Severity", cell: (f) => chip(f.severity, f.severity === "high" ? "bad" : "") },
        { title: "Why", class: "wrap", cell: (f) => f.reason + (f.related_id ? ` (see #${f.related_id})` : "") },
        { title: "Raised in block", class: "num", cell: (f) => String(f.raised_block) },
        state === "open"
          ? { title: "", cell: (f) => (entitled(f, mine)
            ? h("button", { class: "small", "data-testid": `clear-flag-${f.id}`, onclick: () => clear(f) }, "Clear with a note…")
            : h("span", { class: "hint", title: "only the receivable's current holder or an auditor may clear it" }, "holder or auditor clears")) }
          : { title: "Cleared", class: "wrap", cell: (f) => `${f.clear_note} (${short(f.cleared_by, 8)}, ${f.cleared_at ? new Date(f.cleared_at * 1000).toISOString().slice(0, 10) : "?"})` },
      ], data.items, { empty: state === "open" ? "No open anomaly flags." : "No cleared flags.", testid: "flags" }));
    }).catch((err) => host.replaceChildren(errorBox(err)));
  }
  function clear(f) {
    const note = h("textarea", { rows: 3, required: true, maxlength: 2000, placeholder: "why this is not a problem (kept with the flag)", "data-testid": "flag-note" });
    const status = h("div");
    const form = h("form", {}, h("label", {}, "Note", note),
      h("div", { class: "actions", style: "margin-top:10px" }, h("button", { class: "primary", type: "submit", "data-testid": "flag-clear-submit" }, "Clear the flag"),
        h("button", { type: "button", onclick: () => m.close() }, "Cancel")), status);
    const m = modal(h("h2", {}, `Clear flag #${f.id} on receivable #${f.receivable_id}`), h("p", { class: "hint" }, f.reason), form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!note.value.trim()) { status.replaceChildren(errorBox({ title: "Say why the flag is cleared: the note is kept with it.", code: "" })); return; }
      try {
        await api(`/flags/${f.id}/clear`, { method: "POST", body: { note: note.value.trim() } });
        m.close();
        toast(`Flag #${f.id} cleared.`);
        load();
      } catch (err) { status.replaceChildren(errorBox(err)); }
    });
  }
  stateFilter.addEventListener("change", load);
  load();
  return panel("Anomaly flags",
    h("p", { class: "hint" }, "Unusual patterns found in the ledger (near-duplicates, bursts, late registrations…): look before you finance or pay. The current holder or an auditor clears a flag with a note."),
    h("div", { class: "actions", style: "margin-bottom:8px" }, h("label", { class: "inline" }, "Show ", stateFilter)),
    host);
}
