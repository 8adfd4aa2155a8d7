// What several role pages share: receivable tables, the overdue rule, small forms.
import { api } from "../api.js";
import { chip, date, errorBox, h, money, table } from "../ui.js";

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
