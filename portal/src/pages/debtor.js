// Debtor: an inbox of invoices awaiting confirmation (confirm with one's own records, or dispute);
// what it owes, to whom, when.
import { runAction } from "../actions.js";
import { ageingPanel } from "../charts.js";
import { entity, errorBox, formValues, h, modal, panel, toMajorText, toMinor } from "../ui.js";
import { COLUMNS, grid, invoiceFromForm, invoiceInputs, loadingTable, page, receivables } from "./common.js";
import { remindersPanel } from "./reminders.js";

const REASONS = ["GOODS_NOT_RECEIVED", "QUALITY_DEFECT", "AMOUNT_INCORRECT", "ALREADY_PAID", "NOT_OUR_INVOICE", "OTHER"];

export function debtorPage(principal, { refresh }) {
  const me = principal.entity;
  const inboxHost = h("div");
  const owesHost = h("div");

  function confirmForm(r) {
    const form = h("form", { class: "fields", "data-testid": "confirm-form" },
      ...invoiceInputs({ debtor: false, currency: "" }),
      h("button", { class: "primary", type: "submit", "data-testid": "confirm-submit" }, "Prepare confirmation"));
    const m = modal(
      h("h2", {}, `Confirm receivable #${r.id}`),
      h("p", { class: "hint" }, "Type the invoice as your own records show it. The registry compares its fingerprint with the one the creditor registered: confirmation succeeds only if they match."),
      form,
      h("div", { class: "actions", style: "margin-top:10px" }, h("button", { type: "button", onclick: () => m.close() }, "Cancel")),
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const invoice = invoiceFromForm(formValues(form), me);
      const result = await runAction("confirm", { id: r.id, invoice }, { title: `Confirm receivable #${r.id}` });
      if (result) refresh();
    });
  }

  function disputeForm(r) {
    const reason = h("select", { name: "reason", "data-testid": "dispute-reason" },
      REASONS.map((x) => h("option", { value: x }, x.replace(/_/g, " ").toLowerCase())));
    const form = h("form", { class: "fields" }, h("label", {}, "Reason", reason),
      h("button", { class: "danger", type: "submit", "data-testid": "dispute-submit" }, "Prepare dispute"));
    const m = modal(h("h2", {}, `Dispute receivable #${r.id}`), form,
      h("div", { class: "actions", style: "margin-top:10px" }, h("button", { type: "button", onclick: () => m.close() }, "Cancel")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const result = await runAction("dispute", { id: r.id, reason: reason.value }, { title: `Dispute receivable #${r.id}` });
      if (result) refresh();
    });
  }

  function reportForm(r) {
    const form = h("form", { class: "fields", "data-testid": "report-form" },
      h("label", {}, "Paid to (entity id)", h("input", { name: "paid_to", type: "number", min: 1, required: true, list: "entity-names", value: String(r.holder), "data-testid": "report-paid-to" })),
      h("label", {}, `Amount (${r.currency})`, h("input", { name: "amount", required: true, value: toMajorText(r.unpaid, r.currency), "data-testid": "report-amount" })),
      h("label", {}, "Payment reference", h("input", { name: "payment_ref", placeholder: "bank reference (hashed)", "data-testid": "report-ref" })),
      h("button", { class: "primary", type: "submit", "data-testid": "report-submit" }, "Prepare report"));
    const m = modal(h("h2", {}, `Report a payment on #${r.id}`),
      h("p", { class: "hint" }, `Only a payment to the payee of record (now ${entity(r.holder)}) discharges you. The payee acknowledges it when the money arrives.`),
      form, h("div", { class: "actions", style: "margin-top:10px" }, h("button", { type: "button", onclick: () => m.close() }, "Cancel")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const v = formValues(form);
      const amount = toMinor(v.amount, r.currency);
      if (amount === null) { form.append(errorBox({ title: `Amount: not an amount in ${r.currency}.`, code: "" })); return; }
      const args = { id: r.id, paid_to: Number(v.paid_to), amount: Number(amount), ...(v.payment_ref ? { payment_ref: v.payment_ref } : {}) };
      if (await runAction("report-payment", args, { title: `Report a payment on #${r.id}`, currency: r.currency })) refresh();
    });
  }

  loadingTable(inboxHost, () => receivables({ debtor: me, status: "registered" }), [
    COLUMNS.id, COLUMNS.creditor, COLUMNS.face, COLUMNS.issued, COLUMNS.due,
    { title: "", cell: (r) => h("div", { class: "actions" },
      h("button", { class: "small primary", onclick: () => confirmForm(r), "data-testid": `confirm-${r.id}` }, "Confirm"),
      h("button", { class: "small danger", onclick: () => disputeForm(r), "data-testid": `dispute-${r.id}` }, "Dispute")) },
  ], { empty: "No invoices await your confirmation.", testid: "inbox" });

  loadingTable(owesHost, async () => {
    const data = await receivables({ debtor: me });
    data.items = data.items.filter((r) => ["confirmed", "assigned", "partially_paid", "defaulted"].includes(r.status))
      .sort((a, b) => a.due_date - b.due_date);
    return data;
  }, [COLUMNS.id, COLUMNS.status, COLUMNS.payee, COLUMNS.unpaid, COLUMNS.due,
    { title: "", cell: (r) => h("button", { class: "small", onclick: () => reportForm(r), "data-testid": `report-${r.id}` }, "Report payment") }],
  { empty: "You owe nothing on the registry.", testid: "owes" });

  return page("Debtor",
    remindersPanel(principal),
    panel("Awaiting your confirmation", h("p", { class: "hint" }, "Invoices registered against you by your suppliers. Confirm what you owe; dispute what you do not."), inboxHost),
    panel("What you owe", h("p", { class: "hint" }, "Confirmed receivables, by due date. Pay the entity shown: it is the payee of record (after an assignment, the factor). Overdue in red."), owesHost),
    grid(ageingPanel()));
}
