// Signed writes: prepare -> show what will be signed -> sign in the page -> relay -> show the outcome.
import { api } from "./api.js";
import { currentSigner, signTypedData } from "./wallet.js";
import { chip, date, entity, errorBox, explain, h, modal, money, short, table } from "./ui.js";

const AMOUNTS = new Set(["advance", "amount", "amounts", "face_value"]);

// The server's normalised echo of the arguments, readable: amounts in their currency, dates as dates.
function summaryRows(summary, prefix = "", currency = null) {
  const rows = [];
  const cur = (summary && typeof summary.currency === "string" && summary.currency) || currency;
  for (const [k, v] of Object.entries(summary || {})) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (cur && AMOUNTS.has(k) && (typeof v === "number" || Array.isArray(v))) {
      rows.push([key, Array.isArray(v) ? v.map((x) => money(x, cur)).join(" + ") : money(v, cur)]);
    } else if (k.endsWith("_date") && typeof v === "number") rows.push([key, date(v)]);
    else if (v && typeof v === "object" && !Array.isArray(v)) rows.push(...summaryRows(v, key, cur));
    else if (Array.isArray(v) && v.length > 6) rows.push([key, `${v.length} items`]);
    else rows.push([key, Array.isArray(v) ? v.map((x) => (typeof x === "object" ? JSON.stringify(x) : x)).join(", ") : String(v)]);
  }
  return rows;
}

function receivablesTable(items) {
  return table(
    [
      { title: "Receivable", cell: (r) => h("a", { href: `#/receivable/${r.id}` }, `#${r.id}`) },
      { title: "Status", cell: (r) => chip(r.status) },
      { title: "Holder", cell: (r) => entity(r.holder) },
      { title: "Unpaid", class: "num", cell: (r) => money(r.unpaid, r.currency) },
      { title: "Due", cell: (r) => date(r.due_date) },
    ],
    items,
    { testid: "action-receivables" },
  );
}

function linesTable(lines) {
  const refused = lines.filter((l) => l.error).length;
  return h("div", {},
    h("p", { "data-testid": "batch-summary" }, `${lines.length - refused} registered, ${refused} refused`),
    table(
      [
        { title: "Line", class: "num", cell: (l) => String(l.line + 1) },
        { title: "Outcome", cell: (l) => (l.error ? chip("refused", "bad") : chip("registered")) },
        { title: "Receivable / reason", class: "wrap", cell: (l) => (l.error
          ? explain({ code: `contract.${l.error}`, fields: l.fields }).title
          : h("a", { href: `#/receivable/${l.id}` }, `#${l.id}`)) },
      ],
      lines,
      { testid: "batch-lines" },
    ));
}

export function outcome(result) {
  return h("div", { class: "result ok", "data-testid": "action-result" },
    h("strong", {}, `${result.function} ${result.duplicate ? "was already relayed" : "done"}`),
    h("dl", {},
      h("dt", {}, "transaction"), h("dd", { class: "mono", "data-testid": "tx-hash" }, result.tx_hash),
      h("dt", {}, "block"), h("dd", { "data-testid": "tx-block" }, result.block ?? "pending"),
      h("dt", {}, "events"), h("dd", {}, result.events.map((e) => e.name).join(", ") || "none"),
      h("dt", {}, "indexed"), h("dd", {}, result.indexed ? "yes" : "not yet (refresh in a moment)"),
    ),
    result.line_outcomes ? linesTable(result.line_outcomes) : null,
    result.receivables?.length ? receivablesTable(result.receivables) : null,
  );
}

// Runs one action through the modal; resolves with the relay result, or null when not completed.
// An offer's outcome: the factor's policy decided at once (assigned), or queued it for a person.
export function offerOutcome(offer) {
  const ok = offer.state === "assigned" || offer.state === "accepted";
  return h("div", { class: `result ${ok ? "ok" : offer.state === "queued" ? "" : "bad"}`, "data-testid": "offer-result" },
    h("strong", {}, `Offer #${offer.id} to ${entity(offer.factor)}: ${offer.state}`),
    h("dl", {},
      h("dt", {}, "receivable"), h("dd", {}, `#${offer.receivable_id}`),
      h("dt", {}, "advance"), h("dd", {}, money(offer.advance, offer.currency)),
      offer.tx_hash ? [h("dt", {}, "transaction"), h("dd", { class: "mono" }, offer.tx_hash)] : null,
      offer.reasons.length ? [h("dt", {}, "waiting because"), h("dd", {}, offer.reasons.join("; "))] : null),
    offer.state === "queued" ? h("p", { class: "hint" }, "The factor decides it on its page; your signed request stays valid until its deadline.") : null);
}

// submit: what to do with the signed request (default: relay it); show: how to present the answer.
export function runAction(action, args, { title, currency = null, submit = null, show = outcome } = {}) {
  return new Promise((resolve) => {
    let settled = false;
    const finish = (value) => { if (!settled) { settled = true; resolve(value); } };
    const close = () => { m.close(); finish(null); };
    const m = modal(h("h2", {}, title || action), h("p", { class: "hint" }, "Preparing the request…"));
    document.getElementById("modal").addEventListener("close", () => finish(null), { once: true });
    if (!currentSigner()) {
      m.body.replaceChildren(h("h2", {}, title || action),
        errorBox({ title: "Your key is locked: sign in again to sign requests.", detail: "The key lives only in the page's memory, so reloading the page forgets it; your session still shows your data.", code: "" }),
        h("div", { class: "actions" },
          h("a", { href: "#/signin", onclick: () => m.close() }, h("button", { class: "primary", type: "button" }, "Sign in")),
          h("button", { onclick: close, "data-testid": "modal-close" }, "Close")));
      return;
    }

    (async () => {
      let prepared;
      try {
        prepared = await api(`/actions/${action}/prepare`, { method: "POST", body: { args } });
      } catch (err) {
        m.body.replaceChildren(h("h2", {}, title || action), errorBox(err),
          h("div", { class: "actions" }, h("button", { onclick: close, "data-testid": "modal-close" }, "Close")));
        return;
      }
      const message = prepared.typed_data.message;
      const sign = h("button", { class: "primary", "data-testid": "sign-and-send" }, "Sign and send");
      const status = h("div");
      m.body.replaceChildren(
        h("h2", {}, title || action),
        h("p", { class: "hint" }, "You are about to sign this request with your own key. The registry relays it as signed; it cannot change it."),
        h("table", { class: "summary", "data-testid": "sign-summary" },
          h("tr", {}, h("td", {}, "function"), h("td", { class: "mono" }, prepared.function)),
          summaryRows(prepared.summary, "", currency).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))),
          h("tr", {}, h("td", {}, "signer"), h("td", { class: "mono" }, message.from)),
          h("tr", {}, h("td", {}, "valid until"), h("td", {}, new Date(message.deadline * 1000).toLocaleString())),
          h("tr", {}, h("td", {}, "calldata"), h("td", { class: "mono" }, short(message.data, 24))),
        ),
        h("div", { class: "actions" }, sign, h("button", { onclick: close }, "Cancel")),
        status,
      );
      sign.addEventListener("click", async () => {
        sign.disabled = true;
        status.replaceChildren(h("p", { class: "hint" }, "Signing and waiting for the block…"));
        try {
          const signature = await signTypedData(prepared.typed_data);
          const signed = { ...message, signature };
          const result = submit ? await submit(signed) : await api(`/actions/${action}`, { method: "POST", body: signed });
          m.body.replaceChildren(h("h2", {}, title || action), show(result),
            h("div", { class: "actions" }, h("button", { class: "primary", onclick: () => { m.close(); }, "data-testid": "modal-close" }, "Close")));
          settled = true;
          resolve(result);
        } catch (err) {
          sign.disabled = false;
          status.replaceChildren(errorBox(err));
        }
      });
    })();
  });
}
