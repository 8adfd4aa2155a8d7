// The portal's shell: hash routes, the header (who, as of which block), sign-in and sign-out.
import { ApiError, api, lastAsOf, onAsOf, session } from "./api.js";
import { destroyCharts } from "./charts.js";
import { adminPage } from "./pages/admin.js";
import { auditorPage } from "./pages/auditor.js";
import { creditorPage } from "./pages/creditor.js";
import { debtorPage } from "./pages/debtor.js";
import { factorPage } from "./pages/factor.js";
import { receivablePage } from "./pages/receivable.js";
import { signInPage } from "./pages/signin.js";
import { ago, entity, errorBox, h, leavePage, setNames, short } from "./ui.js";
import { signOut } from "./wallet.js";

const PAGES = { debtor: debtorPage, creditor: creditorPage, factor: factorPage, auditor: auditorPage, admin: adminPage };
const ORDER = ["debtor", "creditor", "factor", "auditor", "admin"];

export function homesOf(principal) {
  if (!principal) return [];
  const homes = ORDER.filter((r) => (r === "admin" ? principal.is_admin : principal.roles.includes(r)));
  return homes;
}

export function go(route) {
  if (location.hash === `#/${route}`) render();
  else location.hash = `#/${route}`;
}

function renderHeader(principal, route) {
  const nav = document.getElementById("nav");
  nav.replaceChildren(...homesOf(principal).map((r) =>
    h("a", {
      href: `#/${r}`, class: route === r ? "active" : null, "data-testid": `nav-${r}`,
      // The current page's link reloads its data (the key stays unlocked: no page reload).
      onclick: (e) => { if (location.hash === `#/${r}`) { e.preventDefault(); render(); } },
    }, r === "admin" ? "operator" : r)));
  document.getElementById("who").textContent = principal
    ? `${principal.entity ? `${entity(principal.entity)} · ` : ""}${short(principal.address, 8)}`
    : "";
  document.getElementById("signout").hidden = !principal;
}

function renderAsOf() {
  const el = document.getElementById("asof");
  if (!lastAsOf || !session.token) { el.textContent = ""; return; }
  const stale = lastAsOf.staleness_seconds + (Date.now() - lastAsOf.seen) / 1000;
  el.textContent = `as of block ${lastAsOf.block}, ${ago(stale)}`;
  el.dataset.block = lastAsOf.block;
}

// Participants' display names (the operator's directory), loaded once per session; without them the
// pages say "Entity 4".
let namesFor = null;
async function loadNames() {
  const token = session.token;
  if (!token || namesFor === token) return;
  try {
    setNames((await api("/directory")).entities);
    namesFor = token;
  } catch (err) {
    setNames({});
    console.warn(`participant names unavailable: ${err.message}`);
  }
}

async function render() {
  destroyCharts();
  leavePage();
  const view = document.getElementById("view");
  const [route, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  if (session.principal && route !== "signin") await loadNames();
  const principal = session.principal;
  renderHeader(principal, route);
  if (!principal || route === "signin") {
    view.replaceChildren(signInPage({ onSignedIn: (p) => go(homesOf(p)[0] || "signin") }));
    return;
  }
  const homes = homesOf(principal);
  if (route === "receivable" && rest[0]) {
    view.replaceChildren(receivablePage(Number(rest[0])));
    return;
  }
  if (!PAGES[route] || !homes.includes(route)) {
    if (homes.length) { go(homes[0]); return; }
    view.replaceChildren(h("section", { class: "panel" }, h("h1", {}, "No role"),
      h("p", {}, "This key belongs to no participant with a role. Ask the consortium operator to admit you.")));
    return;
  }
  try {
    view.replaceChildren(PAGES[route](principal, { refresh: render }));
  } catch (err) {
    view.replaceChildren(errorBox(err));
  }
}

window.addEventListener("hashchange", render);
window.addEventListener("registry:unauthorized", (e) => {
  const code = e.detail && e.detail.code;
  if (session.token && code !== "auth.bad_signature") {
    signOut();
    sessionStorage.setItem("registry.signout_reason", (e.detail && e.detail.detail) || "Your session ended: sign in again.");
    go("signin");
  }
});
document.getElementById("signout").addEventListener("click", () => { signOut(); go("signin"); });
onAsOf(renderAsOf);
setInterval(renderAsOf, 1000);

// Confirm the stored session still holds (a suspended participant or revoked key is refused at once).
if (session.token) {
  api("/auth/me").then((p) => { session.save(session.token, p); render(); }).catch((err) => {
    if (!(err instanceof ApiError) || err.status !== 401) render();
  });
} else {
  render();
}

export { render };
