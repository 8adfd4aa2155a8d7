// Auditor: verification status (ledger heads, indexed block, last audit), run a verification, issue
// and check search certificates, the live event stream, and the registry-wide charts.
import { api, eventStream } from "../api.js";
import { ageingPanel, exposurePanels, volumesPanel } from "../charts.js";
import { chip, errorBox, h, onLeave, panel, short, table } from "../ui.js";
import { ethers } from "../wallet.js";
import { COLUMNS, allPages, flagsPanel, grid, loadingTable, page, statCard } from "./common.js";
import { remindersPanel } from "./reminders.js";

// The bytes the registry hashes and signs: sorted keys, no whitespace, ASCII (as Python's json.dumps).
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${canonicalJson(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value).replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

export async function checkCertificate(doc) {
  const meta = await api("/meta");
  const digest = ethers.keccak256(ethers.toUtf8Bytes(canonicalJson(doc.certificate)));
  if (digest !== doc.digest) return { ok: false, why: "the certificate was altered: its digest does not match its content" };
  const signer = ethers.verifyMessage(ethers.getBytes(digest), doc.signature);
  if (signer !== ethers.getAddress(doc.certificate.issuer)) return { ok: false, why: `signed by ${signer}, not by the issuer it names` };
  if (signer !== ethers.getAddress(meta.certificate_issuer)) return { ok: false, why: `signed by ${signer}, not by this registry's issuer ${meta.certificate_issuer}` };
  return { ok: true, why: `valid: signed by this registry's issuer ${signer}, as of block ${doc.certificate.as_of.block}` };
}

function auditVerdict(run) {
  if (!run) return h("p", { class: "hint", "data-testid": "audit-verdict" }, "No verification has been run on this server yet.");
  if (run.status === "running") return h("p", { class: "hint", "data-testid": "audit-verdict" }, "Verification running…");
  if (run.status === "failed") return h("div", { class: "result bad", "data-testid": "audit-verdict" }, h("strong", {}, "Not completed"), h("div", {}, run.error));
  const r = run.result;
  const mirror = r.mirror;
  const diffs = mirror ? [...mirror.divergent, ...mirror.missing] : [];
  return h("div", { class: `result ${run.agrees ? "ok" : "bad"}`, "data-testid": "audit-verdict" },
    h("div", { class: "verdict" }, run.agrees ? "Agrees: the mirror equals the chain" : "Differences found"),
    h("dl", {},
      h("dt", {}, "block"), h("dd", {}, `${r.block} (${short(r.block_hash)})`),
      h("dt", {}, "ledger events"), h("dd", {}, String(r.ledger.recomputed?.count ?? r.ledger.count ?? "")),
      h("dt", {}, "rows compared"), h("dd", {}, mirror ? String(mirror.checked) : "ledger only"),
      h("dt", {}, "took"), h("dd", {}, `${r.seconds} s`)),
    diffs.length ? h("pre", { class: "json" }, JSON.stringify(diffs.slice(0, 50), null, 1)) : null);
}

export function auditorPage(principal) {
  const statusHost = h("div", { class: "stats" });
  const verdictHost = h("div");
  const runButton = h("button", { class: "primary", "data-testid": "audit-run" }, "Run a verification");

  async function loadStatus() {
    try {
      const s = await api("/audit/status");
      const same = s.chain_ledger && s.mirror_ledger && s.mirror_ledger.count <= s.chain_ledger.count;
      statusHost.replaceChildren(
        statCard("Chain block / ledger head", s.chain_ledger ? `${s.chain_ledger.block} · ${short(s.chain_ledger.head, 8)}` : "node down", "stat-chain"),
        statCard("Indexed block / mirror head", s.mirror_ledger ? `${s.mirror_ledger.block} · ${short(s.mirror_ledger.head, 8)}` : "not indexed", "stat-mirror"),
        statCard("Ledger events (chain / mirror)", `${s.chain_ledger?.count ?? "?"} / ${s.mirror_ledger?.count ?? "?"}`, "stat-count"),
        statCard("Last verification", s.last_run ? (s.last_run.status === "done" ? (s.last_run.agrees ? "agrees" : "differs") : s.last_run.status) : "never", "stat-last"),
      );
      if (!same) statusHost.append(h("div", { class: "hint" }, "The mirror is behind the chain: it catches up within a block or two."));
      verdictHost.replaceChildren(auditVerdict(s.last_run));
    } catch (err) { statusHost.replaceChildren(errorBox(err)); }
  }

  runButton.addEventListener("click", async () => {
    runButton.disabled = true;
    try {
      let run = await api("/audit/runs", { method: "POST" });
      verdictHost.replaceChildren(auditVerdict(run));
      while (run.status === "running") {
        await new Promise((r) => setTimeout(r, 400));
        run = await api("/audit/runs/latest");
      }
      await loadStatus();
    } catch (err) { verdictHost.replaceChildren(errorBox(err)); }
    runButton.disabled = false;
  });
  loadStatus();

  // Certificates: issue for an invoice key (or fingerprint), check one offline in this page.
  const certKey = h("input", { name: "key", placeholder: "0x… invoice key or fingerprint", "data-testid": "cert-key", size: 70 });
  const certKind = h("select", { name: "kind", "data-testid": "cert-kind" }, h("option", { value: "invoice_key" }, "invoice key"), h("option", { value: "fingerprint" }, "fingerprint"));
  const certHost = h("div");
  async function issue() {
    certHost.replaceChildren(h("p", { class: "hint" }, "Issuing…"));
    try {
      const doc = await api("/certificates", { method: "POST", body: { [certKind.value]: certKey.value.trim() } });
      const c = doc.certificate;
      const blob = new Blob([JSON.stringify(doc)], { type: "application/json" });
      certHost.replaceChildren(h("div", { class: `result ${c.financed ? "bad" : "ok"}`, "data-testid": "cert-result" },
        h("div", { class: "verdict", "data-testid": "cert-verdict" }, `${c.registered ? "registered" : "not registered"}, ${c.financed ? "financed" : "not financed"}`),
        h("p", {}, c.statement),
        table([
          { title: "Receivable", cell: (r) => `#${r.id}` },
          { title: "Status", cell: (r) => chip(r.status) },
          { title: "Financed", cell: (r) => (r.financed ? "yes" : "no") },
          { title: "Registered in block", class: "num", cell: (r) => String(r.registered_block) },
        ], c.registrations, { empty: "No registration of this invoice." }),
        h("p", { class: "hint" }, `As of block ${c.as_of.block}, ledger head ${short(c.as_of.ledger_head)}; signed by ${c.issuer}.`),
        h("a", { href: URL.createObjectURL(blob), download: `certificate-${c.as_of.block}.json`, "data-testid": "cert-download" }, "Download the certificate (JSON)")));
    } catch (err) { certHost.replaceChildren(errorBox(err)); }
  }
  const certFile = h("input", { type: "file", accept: ".json,application/json", "data-testid": "cert-file" });
  const checkHost = h("div");
  certFile.addEventListener("change", async () => {
    if (!certFile.files.length) return;
    try {
      const verdict = await checkCertificate(JSON.parse(await certFile.files[0].text()));
      checkHost.replaceChildren(h("div", { class: `result ${verdict.ok ? "ok" : "bad"}`, "data-testid": "cert-check" }, verdict.why));
    } catch (err) { checkHost.replaceChildren(errorBox({ title: `Not a certificate: ${err.message}`, code: "" })); }
  });

  // Registry-wide list: the auditor reads everything; a row's key fills the certificate form.
  const allHost = h("div");
  loadingTable(allHost, async () => {
    const { items, last } = await allPages("/receivables", {}, { pages: 50 });
    return { ...last, items: items.slice(-25).reverse() };
  }, [COLUMNS.id, COLUMNS.status, COLUMNS.creditor, COLUMNS.debtor, COLUMNS.holder, COLUMNS.unpaid, COLUMNS.due,
    { title: "", cell: (r) => h("button", { class: "small", "data-testid": `cert-for-${r.id}`, onclick: () => {
      certKind.value = "invoice_key"; certKey.value = r.invoice_key; issue();
    } }, "Certificate") }],
  { empty: "Nothing registered yet.", testid: "all-receivables" });

  // The live event stream (from the start of the ledger, newest first).
  const rows = h("tbody", { "data-testid": "event-rows" });
  const streamState = h("span", { class: "hint", "data-testid": "stream-state" }, "connecting…");
  let count = 0;
  const stop = eventStream({
    after: "0",
    onState: (s, err) => { streamState.textContent = s === "open" ? "live" : `reconnecting (${err?.message || "error"})`; },
    onEvent: (e) => {
      count += 1;
      const args = Object.entries(e.args).filter(([, v]) => typeof v !== "object").slice(0, 5).map(([k, v]) => `${k}=${typeof v === "string" ? short(v, 12) : v}`).join(", ");
      rows.prepend(h("tr", { "data-event": e.name }, h("td", { class: "num" }, String(e.block)), h("td", {}, e.name), h("td", { class: "mono" }, args)));
      while (rows.children.length > 300) rows.lastChild.remove();
      streamState.textContent = `live · ${count} events`;
    },
  });
  onLeave(stop);

  return page("Auditor",
    statusHost,
    remindersPanel(principal),
    grid(
      panel("Verification", h("p", { class: "hint" }, "Recomputes the ledger hash chain from the chain's own events and compares every mirrored row with the contract's state at the mirror's block (as `registry audit verify`)."),
        runButton, verdictHost),
      panel("Search certificates",
        h("p", { class: "hint" }, "A signed statement of everything registered against an invoice, verifiable offline (`registry audit certificate verify FILE`)."),
        h("div", { class: "actions" }, certKind, certKey, h("button", { class: "primary", onclick: issue, "data-testid": "cert-issue" }, "Issue")), certHost,
        h("h2", { style: "margin-top:16px" }, "Check a certificate"), certFile, checkHost),
    ),
    panel("Latest receivables", allHost),
    flagsPanel(principal),
    grid(
      panel("Event stream", streamState, h("div", { class: "events" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", { class: "num" }, "Block"), h("th", {}, "Event"), h("th", {}, "Arguments"))), rows))),
      volumesPanel(),
      ageingPanel(),
      ...exposurePanels(),
    ));
}
