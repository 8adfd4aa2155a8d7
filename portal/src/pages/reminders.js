// Reminders (issue 6): the notices the reminder worker made for the caller's entity (an auditor: for
// everyone), newest first, and where they are delivered (webhook or e-mail subscriptions).
import { api } from "../api.js";
import { date, entity, errorBox, h, panel, table, toast } from "../ui.js";
import { allPages, statCard } from "./common.js";

export const KINDS = [
  ["due_soon", "due soon"],
  ["due_today", "due today"],
  ["overdue", "overdue"],
  ["unconfirmed", "unconfirmed"],
  ["payment_unacknowledged", "unacknowledged payment"],
];
const KIND_LABEL = Object.fromEntries(KINDS);
const KIND_CLASS = { overdue: "bad", payment_unacknowledged: "bad", unconfirmed: "warn", due_today: "warn", due_soon: "" };
const SHOWN = 12;

// Newest first: by the moment the notice fell due, then by the order the worker made them.
export function newestFirst(notices) {
  return [...notices].sort((a, b) => b.due_at - a.due_at || b.seq - a.seq);
}

// One reminder per receivable (per payment claim, for unacknowledged payments) and recipient: the newest,
// which says the most (7 days overdue supersedes 1 day overdue, and due soon once it is overdue).
export function latestPerReceivable(notices) {
  const seen = new Set();
  return newestFirst(notices).filter((n) => {
    const key = `${n.recipient}/${n.receivable_id}/${n.kind === "payment_unacknowledged" ? n.claim_id : ""}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

function noticesTable(notices, { everyone }) {
  return table([
    { title: "Kind", cell: (n) => h("span", { class: `chip notice ${KIND_CLASS[n.kind] || ""}`.trim(), "data-kind": n.kind }, KIND_LABEL[n.kind] || n.kind) },
    { title: "Receivable", cell: (n) => h("a", { href: `#/receivable/${n.receivable_id}` }, `#${n.receivable_id}`) },
    everyone ? { title: "For", cell: (n) => entity(n.recipient) } : null,
    { title: "Reminder", class: "wrap", cell: (n) => n.message },
    { title: "Since", cell: (n) => date(n.due_at) },
  ].filter(Boolean), notices, { empty: "No reminders: nothing is due soon, overdue or waiting on you.", testid: "notices" });
}

export function remindersPanel(principal) {
  const everyone = principal.roles.includes("auditor");
  const stats = h("div", { class: "stats" });
  const listHost = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  const kindFilter = h("select", { "data-testid": "notice-kind" },
    h("option", { value: "" }, "every kind"), KINDS.map(([k, label]) => h("option", { value: k }, label)));
  let notices = [];
  let showAll = false;

  function render() {
    const chosen = kindFilter.value;
    const rows = newestFirst(chosen ? notices.filter((n) => n.kind === chosen) : notices);
    const shown = showAll ? rows : rows.slice(0, SHOWN);
    listHost.replaceChildren(noticesTable(shown, { everyone }),
      ...(rows.length > shown.length
        ? [h("button", { class: "link", "data-testid": "notices-all", onclick: () => { showAll = true; render(); } }, `Show all ${rows.length}`)]
        : []));
  }

  async function load() {
    try {
      const { items, complete } = await allPages("/notices", { state: "active" }, { cursor: "after", next: "next_after", limit: 200 });
      notices = latestPerReceivable(items);
      const count = (...kinds) => String(notices.filter((n) => kinds.includes(n.kind)).length);
      stats.replaceChildren(
        statCard("Due soon", count("due_soon", "due_today"), "notices-due-soon"),
        statCard("Overdue", count("overdue"), "notices-overdue"),
        statCard("Unconfirmed", count("unconfirmed"), "notices-unconfirmed"),
        statCard("Unacknowledged payments", count("payment_unacknowledged"), "notices-unacknowledged"),
      );
      if (!complete) stats.append(h("div", { class: "hint" }, `Showing the first ${items.length} reminders only.`));
      render();
    } catch (err) {
      listHost.replaceChildren(errorBox(err));
    }
  }
  kindFilter.addEventListener("change", render);
  load();

  return panel("Reminders",
    h("p", { class: "hint" }, everyone
      ? "Every participant's reminders (you audit them all): invoices due soon or overdue, confirmations and payment acknowledgements that are late. Newest first."
      : "What needs you: invoices due soon or overdue, confirmations and payment acknowledgements that are late. Newest first; made from the ledger by the reminder worker."),
    stats,
    h("div", { class: "actions", style: "margin:8px 0" }, h("label", { class: "inline" }, "Show ", kindFilter)),
    listHost,
    subscriptionsSection());
}

// Where the entity's reminders go: webhooks (signed bodies) or e-mail, per kind.
function subscriptionsSection() {
  const host = h("div", {}, h("div", { class: "empty" }, "Loading…"));
  const status = h("div");
  const channel = h("select", { name: "channel", "data-testid": "sub-channel" },
    h("option", { value: "webhook" }, "webhook"), h("option", { value: "email" }, "e-mail"));
  const target = h("input", { name: "target", required: true, size: 40, placeholder: "https://erp.example.com/hooks/registry", "data-testid": "sub-target" });
  channel.addEventListener("change", () => {
    target.placeholder = channel.value === "email" ? "ap@example.com" : "https://erp.example.com/hooks/registry";
  });
  const boxes = KINDS.map(([k, label]) => h("label", { class: "check" }, h("input", { type: "checkbox", value: k, "data-testid": `sub-kind-${k}` }), label));
  const form = h("form", { class: "fields", "data-testid": "sub-form" },
    h("label", {}, "Send by", channel), h("label", {}, "To", target),
    h("div", {}, h("div", { class: "hint" }, "Kinds (none ticked: every kind)"), h("div", { class: "actions" }, boxes)),
    h("button", { class: "primary", type: "submit", "data-testid": "sub-submit" }, "Subscribe"));

  function load() {
    api("/notices/subscriptions").then((subs) => {
      host.replaceChildren(table([
        { title: "By", cell: (s) => (s.channel === "email" ? "e-mail" : s.channel) },
        { title: "To", class: "wrap mono", cell: (s) => s.target },
        { title: "Kinds", cell: (s) => (s.kinds.length ? s.kinds.map((k) => KIND_LABEL[k] || k).join(", ") : "every kind") },
        { title: "Since", cell: (s) => new Date(s.created_at * 1000).toISOString().slice(0, 10) },
        { title: "", cell: (s) => h("button", { class: "small danger", "data-testid": `sub-delete-${s.id}`, onclick: async (e) => {
          e.target.disabled = true;
          try { await api(`/notices/subscriptions/${s.id}`, { method: "DELETE" }); toast("Subscription stopped."); load(); } catch (err) {
            e.target.disabled = false; status.replaceChildren(errorBox(err));
          }
        } }, "Stop") },
      ], subs, { empty: "Reminders are shown here only: subscribe to have them sent too.", testid: "subscriptions" }));
    }).catch((err) => host.replaceChildren(errorBox(err)));
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    status.replaceChildren();
    const kinds = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    try {
      await api("/notices/subscriptions", { method: "POST", body: { channel: channel.value, target: target.value.trim(), kinds } });
      form.reset();
      toast("Subscribed.");
      load();
    } catch (err) { status.replaceChildren(errorBox(err)); }
  });
  load();

  return h("details", { class: "subs", "data-testid": "subscriptions-section" },
    h("summary", {}, "Deliver reminders by webhook or e-mail"),
    h("p", { class: "hint" }, "Webhook bodies are signed (X-Registry-Signature: HMAC-SHA256) and carry the notice id in X-Registry-Notice-Id; deliveries are retried with backoff, and each notice is delivered once."),
    host, form, status);
}
