// Creditor: register one invoice or a CSV of them (each line's outcome), assign to a factor, split, cancel.
import { offerOutcome, runAction } from "../actions.js";
import { api } from "../api.js";
import { exposurePanels, volumesPanel } from "../charts.js";
import { entity, errorBox, formValues, h, modal, panel, toMajorText, toMinor } from "../ui.js";
import { COLUMNS, allPages, flagsPanel, grid, invoiceFromForm, invoiceInputs, loadingTable, page } from "./common.js";
import { remindersPanel } from "./reminders.js";

export const CSV_COLUMNS = ["debtor", "invoice_number", "face_value", "currency", "issue_date", "due_date"];

// RFC 4180 CSV: quoted fields may hold commas ("1,850,600.00"), doubled quotes and newlines.
export function parseCsv(text) {
  const rows = [];
  let row = [], cell = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; }
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(cell); cell = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(cell); cell = "";
      if (row.some((x) => x.trim() !== "")) rows.push(row);
      row = [];
    } else cell += c;
  }
  row.push(cell);
  if (row.some((x) => x.trim() !== "")) rows.push(row);
  return rows;
}

export function invoicesFromCsv(text) {
  const rows = parseCsv(text.replace(/^\uFEFF/, ""));
  if (!rows.length) throw new Error("The file is empty.");
  const header = rows[0].map((x) => x.trim().toLowerCase());
  const missing = CSV_COLUMNS.filter((c) => !header.includes(c));
  if (missing.length) throw new Error(`The first line must name the columns; missing: ${missing.join(", ")}.`);
  const at = (r, name) => (r[header.indexOf(name)] ?? "").trim();
  return rows.slice(1).map((r, i) => {
    const debtor = Number(at(r, "debtor"));
    if (!Number.isInteger(debtor) || debtor < 1) throw new Error(`Line ${i + 2}: debtor must be an entity id, not "${at(r, "debtor")}".`);
    const inv = {
      debtor, invoice_number: at(r, "invoice_number"), face_value: at(r, "face_value"),
      currency: at(r, "currency").toUpperCase(), issue_date: at(r, "issue_date"), due_date: at(r, "due_date"),
    };
    if (header.includes("document_hash") && at(r, "document_hash")) inv.document_hash = at(r, "document_hash");
    return inv;
  });
}

export function creditorPage(principal, { refresh }) {
  const me = principal.entity;
  const mineHost = h("div");
  const batchHost = h("div");

  const registerForm = h("form", { class: "fields", "data-testid": "register-form" },
    ...invoiceInputs(),
    h("button", { class: "primary", type: "submit", "data-testid": "register-submit" }, "Prepare registration"));
  registerForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const invoice = invoiceFromForm(formValues(registerForm));
    const result = await runAction("register", { invoice }, { title: "Register an invoice" });
    if (result) { registerForm.reset(); refresh(); }
  });

  const csv = h("input", { type: "file", accept: ".csv,text/csv", "data-testid": "csv-file" });
  const upload = h("button", { class: "primary", type: "button", "data-testid": "csv-submit" }, "Prepare batch registration");
  upload.addEventListener("click", async () => {
    batchHost.replaceChildren();
    if (!csv.files.length) { batchHost.replaceChildren(errorBox({ title: "Choose a CSV file first.", code: "" })); return; }
    let invoices;
    try { invoices = invoicesFromCsv(await csv.files[0].text()); } catch (err) {
      batchHost.replaceChildren(errorBox({ title: err.message, code: "" })); return;
    }
    const result = await runAction("register-batch", { invoices }, { title: `Register ${invoices.length} invoices` });
    if (result) {
      const refused = (result.line_outcomes || []).filter((l) => l.error).length;
      batchHost.replaceChildren(h("p", { class: "hint", "data-testid": "batch-last" },
        `Last batch: ${invoices.length - refused} registered, ${refused} refused (block ${result.block}).`));
      loadMine();
    }
  });

  function assignForm(r) {
    const form = h("form", { class: "fields", "data-testid": "assign-form" },
      h("label", {}, "Factor (entity id)", h("input", { name: "factor", type: "number", min: 1, required: true, list: "entity-names", "data-testid": "assign-factor" })),
      h("label", {}, `Advance (${r.currency})`, h("input", { name: "advance", required: true, value: toMajorText(BigInt(r.unpaid) * 9n / 10n, r.currency), "data-testid": "assign-advance" })),
      h("label", { class: "check" }, h("input", { name: "recourse", type: "checkbox" }), "with recourse"),
      h("button", { class: "primary", type: "submit", value: "offer", "data-testid": "offer-submit" }, "Offer to the factor"),
      h("button", { type: "submit", value: "assign", "data-testid": "assign-submit" }, "Assign now"));
    const m = modal(h("h2", {}, `Assign receivable #${r.id}`),
      h("p", { class: "hint" }, "Offer it: the factor checks it for double financing and takes the assignment (at once when its policy allows, else by hand). Or assign now, as agreed outside the registry."),
      form, h("div", { class: "actions", style: "margin-top:10px" }, h("button", { type: "button", onclick: () => m.close() }, "Cancel")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const v = formValues(form);
      const advance = toMinor(v.advance, r.currency);
      if (advance === null) { form.append(errorBox({ title: `Advance: not an amount in ${r.currency}.`, code: "" })); return; }
      const args = { id: r.id, factor: Number(v.factor), advance: Number(advance), recourse: v.recourse };
      const offer = e.submitter && e.submitter.value === "offer";
      const result = await runAction("assign", args, offer
        ? { title: `Offer receivable #${r.id} to ${entity(args.factor)}`, currency: r.currency, show: offerOutcome,
          submit: (request) => api("/offers", { method: "POST", body: { request } }) }
        : { title: `Assign receivable #${r.id}`, currency: r.currency });
      if (result) loadMine();
    });
  }

  function splitForm(r) {
    const amounts = h("textarea", { name: "amounts", rows: 3, placeholder: "one amount per line", "data-testid": "split-amounts" });
    const form = h("form", {}, h("label", {}, `Parts (${r.currency}), one per line; they must add up to ${toMajorText(r.unpaid, r.currency)}`, amounts),
      h("div", { class: "actions", style: "margin-top:10px" },
        h("button", { class: "primary", type: "submit", "data-testid": "split-submit" }, "Prepare split"),
        h("button", { type: "button", onclick: () => m.close() }, "Cancel")));
    const m = modal(h("h2", {}, `Split receivable #${r.id}`), form);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const parts = amounts.value.split(/\n/).map((x) => x.trim()).filter(Boolean).map((x) => toMinor(x, r.currency));
      if (parts.length < 2 || parts.some((p) => p === null)) { form.append(errorBox({ title: "Give at least two valid amounts.", code: "" })); return; }
      const result = await runAction("split", { id: r.id, amounts: parts.map(Number) }, { title: `Split receivable #${r.id}`, currency: r.currency });
      if (result) loadMine();
    });
  }

  async function cancel(r) {
    const result = await runAction("cancel", { id: r.id }, { title: `Cancel receivable #${r.id}` });
    if (result) loadMine();
  }

  function loadMine() {
    // Newest first: what was just registered is on top.
    loadingTable(mineHost, async () => {
      const { items, last } = await allPages("/receivables", { creditor: me }, { pages: 10 });
      return { ...last, items: items.reverse() };
    }, [
      COLUMNS.id, COLUMNS.status, COLUMNS.debtor, COLUMNS.holder, COLUMNS.unpaid, COLUMNS.due,
      { title: "", cell: (r) => h("div", { class: "actions" },
        r.status === "confirmed" && r.holder === me ? [
          h("button", { class: "small primary", onclick: () => assignForm(r), "data-testid": `assign-${r.id}` }, "Assign"),
          h("button", { class: "small", onclick: () => splitForm(r), "data-testid": `split-${r.id}` }, "Split"),
        ] : null,
        r.status === "registered" ? h("button", { class: "small danger", onclick: () => cancel(r), "data-testid": `cancel-${r.id}` }, "Cancel") : null,
        r.status === "assigned" && r.recourse ? h("button", { class: "small", onclick: async () => {
          if (await runAction("buy-back", { id: r.id }, { title: `Buy back receivable #${r.id} (recourse)` })) loadMine();
        } }, "Buy back") : null) },
    ], { empty: "You have registered no invoices yet.", testid: "mine" });
  }
  loadMine();

  return page("Creditor",
    remindersPanel(principal),
    grid(
      panel("Register an invoice", h("p", { class: "hint" }, "Amounts in the currency's major units, e.g. 1,850,600.00. The debtor confirms it from its own records."), registerForm),
      panel("Upload a CSV",
        h("p", { class: "hint" }, `Columns: ${CSV_COLUMNS.join(", ")} (document_hash optional); up to 500 lines. A refused line does not sink the rest: each line's outcome is shown.`),
        h("div", { class: "actions" }, csv, upload), batchHost),
    ),
    panel("Your receivables", mineHost),
    flagsPanel(principal),
    grid(...exposurePanels({ factor: true }), volumesPanel()),
  );
}
