// One receivable: its state, history (every version), assignments, payments and payee of record.
import { api } from "../api.js";
import { chip, date, entity, errorBox, h, money, panel, table } from "../ui.js";
import { page } from "./common.js";

export function receivablePage(id) {
  const host = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  Promise.all([api(`/receivables/${id}`), api(`/receivables/${id}/payee`).catch(() => null)]).then(([d, payee]) => {
    const r = d.receivable;
    host.replaceChildren(
      panel(null, h("dl", { class: "result", style: "display:grid;grid-template-columns:max-content 1fr;gap:4px 16px" },
        h("dt", {}, "Status"), h("dd", {}, chip(r.status)),
        h("dt", {}, "Creditor / debtor / holder"), h("dd", {}, `${entity(r.creditor)} / ${entity(r.debtor)} / ${entity(r.holder)}`),
        h("dt", {}, "Face value / unpaid"), h("dd", {}, `${money(r.face_value, r.currency)} / ${money(r.unpaid, r.currency)}`),
        h("dt", {}, "Issued / due"), h("dd", {}, `${date(r.issue_date)} / ${date(r.due_date)}`),
        h("dt", {}, "Recourse"), h("dd", {}, r.recourse ? "yes" : "no"),
        h("dt", {}, "Invoice key"), h("dd", { class: "mono" }, r.invoice_key),
        h("dt", {}, "Fingerprint"), h("dd", { class: "mono" }, r.fingerprint),
        payee ? [h("dt", {}, "Pay to"), h("dd", {}, `${entity(payee.payee_of_record)}: ${payee.because}`)] : null,
        d.parts.length ? [h("dt", {}, "Split into"), h("dd", {}, d.parts.map((p) => h("a", { href: `#/receivable/${p}`, style: "margin-right:8px" }, `#${p}`)))] : null,
        d.parent_id ? [h("dt", {}, "Part of"), h("dd", {}, h("a", { href: `#/receivable/${d.parent_id}` }, `#${d.parent_id}`))] : null)),
      panel("History", table([
        { title: "From block", class: "num", cell: (v) => String(v.valid_from_block) },
        { title: "Status", cell: (v) => chip(v.status) },
        { title: "Holder", cell: (v) => entity(v.holder) },
        { title: "Paid", class: "num", cell: (v) => money(v.paid, v.currency) },
      ], d.versions, { testid: "history" })),
      panel("Assignments", table([
        { title: "Block", class: "num", cell: (a) => String(a.block) },
        { title: "From", cell: (a) => entity(a.from_entity) },
        { title: "To", cell: (a) => entity(a.to_entity) },
        { title: "Advance", class: "num", cell: (a) => (a.advance === null ? "(not a party)" : money(a.advance, r.currency)) },
        { title: "Recourse", cell: (a) => (a.recourse ? "yes" : "no") },
      ], d.assignments, { empty: "Never assigned." })),
      panel("Payments", table([
        { title: "Block", class: "num", cell: (p) => String(p.block) },
        { title: "Payee", cell: (p) => entity(p.payee) },
        { title: "Amount", class: "num", cell: (p) => money(p.amount, r.currency) },
        { title: "Paid in total", class: "num", cell: (p) => money(p.paid_total, r.currency) },
      ], d.payments, { empty: "No payments yet." })),
    );
  }).catch((err) => host.replaceChildren(errorBox(err)));
  return page(`Receivable #${id}`, host);
}
