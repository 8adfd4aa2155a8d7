// Factor: check an invoice for double financing before buying it; the portfolio with due dates and
// overdue; payments to acknowledge; record payments; declare default.
import { runAction } from "../actions.js";
import { ageingPanel, exposurePanels } from "../charts.js";
import { api, eventStream } from "../api.js";
import { entity, errorBox, formValues, h, modal, money, onLeave, panel, table, toMinor, toast } from "../ui.js";
import { decisionsPanel, policyPanel } from "./approval.js";
import { COLUMNS, flagsPanel, grid, invoiceFromForm, invoiceInputs, isOverdue, loadingTable, page, receivables, statCard } from "./common.js";
import { remindersPanel } from "./reminders.js";

export function verdict(result) {
  if (!result.registered) return "not registered";
  return [
    "registered",
    result.status.replace(/_/g, " "),
    result.financed ? "financed" : "not financed",
  ].join(", ");
}

export function factorPage(principal, { refresh }) {
  const me = principal.entity;
  const checkHost = h("div");
  const portfolioHost = h("div");
  const summaryHost = h("div", { class: "stats" });

  const checkForm = h("form", { class: "fields", "data-testid": "check-form" },
    ...invoiceInputs(),
    h("button", { class: "primary", type: "submit", "data-testid": "check-submit" }, "Check"));
  checkForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    checkHost.replaceChildren(h("p", { class: "hint" }, "Checking…"));
    try {
      const result = await api("/checks", { method: "POST", body: { invoice: invoiceFromForm(formValues(checkForm)) } });
      const safe = result.registered && !result.financed && ["confirmed"].includes(result.status) && !result.near_duplicates.length;
      checkHost.replaceChildren(h("div", { class: `result ${safe ? "ok" : result.financed || result.near_duplicates.length ? "bad" : ""}` },
        h("div", { class: "verdict", "data-testid": "check-verdict" }, verdict(result)),
        h("dl", {},
          result.receivable_id ? [h("dt", {}, "receivable"), h("dd", {}, `#${result.receivable_id}`)] : null,
          result.match ? [h("dt", {}, "matched by"), h("dd", {}, result.match)] : null,
          h("dt", {}, "as of block"), h("dd", {}, result.as_of.block),
          h("dt", {}, "similar"), h("dd", { "data-testid": "check-similar" }, result.near_duplicates.length
            ? result.near_duplicates.map((n) => `${n.reason} (${n.risk} risk)${n.receivable_id ? ` #${n.receivable_id}` : ""}`).join("; ")
            : "no suspiciously similar registration")),
        h("p", { class: "hint" }, safe
          ? "Confirmed by the debtor and not financed: safe to take the assignment."
          : result.financed ? "Already financed: do not advance against it." : "Not ready to finance: it must be registered and confirmed by its debtor.")));
    } catch (err) {
      checkHost.replaceChildren(errorBox(err));
    }
  });

  function paymentForm(r) {
    const amount = h("input", { name: "amount", required: true, "data-testid": "payment-amount" });
    const form = h("form", { class: "fields" }, h("label", {}, `Amount received (${r.currency})`, amount),
      h("button", { class: "primary", type: "submit" }, "Prepare"));
    const m = modal(h("h2", {}, `Record a payment on #${r.id}`), form,
      h("div", { class: "actions", style: "margin-top:10px" }, h("button", { type: "button", onclick: () => m.close() }, "Cancel")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const minor = toMinor(amount.value, r.currency);
      if (minor === null) { form.append(errorBox({ title: `Not an amount in ${r.currency}.`, code: "" })); return; }
      if (await runAction("record-payment", { id: r.id, amount: Number(minor) }, { title: `Record a payment on #${r.id}` })) refresh();
    });
  }

  // Payments debtors reported to this factor and not yet acknowledged or rejected, kept live from the
  // event stream (the factor sees the events of the receivables it may read).
  const claims = new Map();
  let streamOpen = false;
  const currencies = new Map();
  const claimsHost = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  function renderClaims() {
    claimsHost.replaceChildren(table([
      { title: "Claim", cell: (c) => `#${c.claimId}` },
      { title: "Receivable", cell: (c) => h("a", { href: `#/receivable/${c.id}` }, `#${c.id}`) },
      { title: "Amount", class: "num", cell: (c) => (currencies.has(c.id) ? money(c.amount, currencies.get(c.id)) : String(c.amount)) },
      { title: "Reported in block", class: "num", cell: (c) => String(c.block) },
      { title: "", cell: (c) => h("div", { class: "actions" },
        h("button", { class: "small primary", "data-testid": `ack-${c.claimId}`, onclick: async () => {
          if (await runAction("acknowledge-payment", { claim_id: c.claimId }, { title: `Acknowledge payment claim #${c.claimId}` })) refresh();
        } }, "Acknowledge"),
        h("button", { class: "small danger", onclick: async () => {
          if (await runAction("reject-payment", { claim_id: c.claimId }, { title: `Reject payment claim #${c.claimId}` })) refresh();
        } }, "Reject")) },
    ], [...claims.values()], { empty: "No reported payments await you.", testid: "claims" }));
  }
  const stop = eventStream({
    after: "0",
    onState: (s) => { if (s === "open") { streamOpen = true; renderClaims(); } },
    onEvent: (e) => {
      const a = e.args;
      if (e.name === "PaymentReported" && Number(a.payee) === me) {
        claims.set(Number(a.claimId), { claimId: Number(a.claimId), id: Number(a.id), amount: a.amount, block: e.block });
      } else if ((e.name === "PaymentRecorded" || e.name === "PaymentRejected") && Number(a.claimId)) {
        claims.delete(Number(a.claimId));
      } else return;
      renderClaims();
    },
  });
  onLeave(stop);

  // Offers made to this factor: take the assignment (the holder's signed request is relayed) or decline.
  const offersHost = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  function loadOffers() {
    api("/offers", { query: { state: "queued", limit: 100 } }).then((data) => {
      const mine = data.items.filter((o) => o.factor === me);
      offersHost.replaceChildren(table([
        { title: "Offer", cell: (o) => `#${o.id}` },
        { title: "Receivable", cell: (o) => h("a", { href: `#/receivable/${o.receivable_id}` }, `#${o.receivable_id}`) },
        { title: "From", cell: (o) => entity(o.holder) },
        { title: "Debtor", cell: (o) => entity(o.debtor) },
        { title: "Unpaid", class: "num", cell: (o) => money(o.amount, o.currency) },
        { title: "Advance", class: "num", cell: (o) => money(o.advance, o.currency) },
        { title: "Recourse", cell: (o) => (o.recourse ? "yes" : "no") },
        { title: "Valid until", cell: (o) => new Date(o.deadline * 1000).toLocaleString() },
        { title: "Why queued", class: "wrap", cell: (o) => o.reasons.join("; ") || "no policy set: decided by hand" },
        { title: "", cell: (o) => h("div", { class: "actions" },
          h("button", { class: "small primary", "data-testid": `accept-offer-${o.receivable_id}`, onclick: (e) => decide(o, "accept", e.target) }, "Take assignment"),
          h("button", { class: "small danger", onclick: (e) => decide(o, "decline", e.target) }, "Decline")) },
      ], mine, { empty: "No offers await your decision.", testid: "offers" }));
    }).catch((err) => offersHost.replaceChildren(errorBox(err)));
  }
  async function decide(o, how, button) {
    button.disabled = true;
    try {
      const offer = await api(`/offers/${o.id}/${how}`, { method: "POST", body: how === "decline" ? { note: "" } : undefined });
      toast(`Offer #${offer.id}: ${offer.state}${offer.tx_hash ? ` in block ${offer.block} (transaction ${offer.tx_hash.slice(0, 12)}…)` : ""}`);
      // Show the portfolio once the mirror has the assignment's block.
      for (let i = 0; offer.block && i < 50; i++) {
        const health = await api("/health");
        if ((health.indexed_block || 0) >= offer.block) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      refresh();
    } catch (err) {
      button.disabled = false;
      offersHost.prepend(errorBox(err));
    }
  }
  loadOffers();

  const claimForm = h("form", { class: "fields", "data-testid": "claim-form" },
    h("label", {}, "Payment claim id", h("input", { name: "claim_id", type: "number", min: 1, required: true })),
    h("button", { class: "primary", type: "submit", value: "acknowledge" }, "Acknowledge"),
    h("button", { class: "danger", type: "submit", value: "reject" }, "Reject"));
  claimForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const action = e.submitter && e.submitter.value === "reject" ? "reject-payment" : "acknowledge-payment";
    if (await runAction(action, { claim_id: Number(formValues(claimForm).claim_id) }, { title: `${action.replace("-", " ")}` })) refresh();
  });

  loadingTable(portfolioHost, async () => {
    const data = await receivables({ holder: me });
    for (const r of data.items) currencies.set(r.id, r.currency);
    if (streamOpen) renderClaims(); // amounts in their currency once the portfolio is known
    const now = data.as_of.block_timestamp;
    const open = data.items.filter((r) => ["assigned", "partially_paid", "defaulted"].includes(r.status));
    const overdue = open.filter((r) => isOverdue(r, now));
    const soon = open.filter((r) => !isOverdue(r, now) && r.due_date < now + 30 * 86400);
    summaryHost.replaceChildren(
      statCard("Receivables held", String(open.length), "stat-held"),
      statCard("Due within 30 days", String(soon.length), "stat-soon"),
      statCard("Overdue", String(overdue.length), "stat-overdue"),
    );
    data.items = open.sort((a, b) => a.due_date - b.due_date);
    return data;
  }, [
    COLUMNS.id, COLUMNS.status, COLUMNS.debtor, COLUMNS.creditor, COLUMNS.face, COLUMNS.unpaid, COLUMNS.due,
    { title: "", cell: (r) => h("div", { class: "actions" },
      h("button", { class: "small", onclick: () => paymentForm(r) }, "Record payment"),
      h("button", { class: "small danger", onclick: async () => {
        if (await runAction("declare-default", { id: r.id }, { title: `Declare default on #${r.id}` })) refresh();
      } }, "Declare default")) },
  ], { empty: "No receivables are assigned to you yet.", testid: "portfolio" });

  return page("Factor",
    remindersPanel(principal),
    panel("Check an invoice before buying it",
      h("p", { class: "hint" }, "Enter the invoice as the creditor presents it. Formatting does not matter (INV-001 = inv 001, 1,850,600.00 = 1850600). You learn whether it is registered, confirmed and financed, never who financed it."),
      checkForm, checkHost),
    summaryHost,
    panel("Offers to you", h("p", { class: "hint" }, "Creditors offer receivables with their signed assignment. Check the invoice above, then take the assignment: the registry relays the holder's request as signed."), offersHost),
    decisionsPanel(principal),
    policyPanel(),
    flagsPanel(principal),
    panel("Portfolio", h("p", { class: "hint" }, "Receivables you hold, by due date; overdue in red. The debtor is told to pay you."), portfolioHost),
    panel("Payments to acknowledge", h("p", { class: "hint" }, "Payments debtors report to you, live. Acknowledge when the money has arrived (it is then counted against the receivable); reject when it has not."),
      claimsHost, h("p", { class: "hint", style: "margin-top:12px" }, "Or by claim id:"), claimForm),
    grid(
      ageingPanel(),
      ...exposurePanels({ factor: false }),
    ));
}
