// Consortium operator: participants (roles, keys, status), admission, keys, suspension, pausing.
import { runAction } from "../actions.js";
import { api } from "../api.js";
import { chip, entity, errorBox, formValues, h, modal, panel, table } from "../ui.js";
import { page } from "./common.js";

const ROLES = ["creditor", "debtor", "factor", "auditor"];

export function adminPage(principal, { refresh }) {
  const listHost = h("div");

  async function act(action, args, title) {
    if (await runAction(action, args, { title })) refresh();
  }

  function addKeyForm(p) {
    const key = h("input", { name: "key", placeholder: "0x…", size: 46, required: true, "data-testid": "add-key-address" });
    const form = h("form", { class: "fields" }, h("label", {}, "New key (address)", key),
      h("button", { class: "primary", type: "submit" }, "Prepare"));
    const m = modal(h("h2", {}, `Add a key to ${entity(p.entity)}`), form,
      h("div", { class: "actions", style: "margin-top:10px" }, h("button", { type: "button", onclick: () => m.close() }, "Cancel")));
    form.addEventListener("submit", (e) => { e.preventDefault(); act("add-key", { entity: p.entity, key: key.value.trim() }, `Add a key to ${entity(p.entity)}`); });
  }

  api("/participants").then((data) => {
    listHost.replaceChildren(table([
      { title: "Entity", cell: (p) => entity(p.entity) },
      { title: "Roles", cell: (p) => h("div", { class: "actions" }, p.roles.map((r) => h("span", { class: "chip role" }, r))) },
      { title: "Status", cell: (p) => chip(p.status) },
      { title: "Keys", cell: (p) => h("div", {}, p.keys.map((k) => h("div", { class: "mono" },
        `${k.address} `, chip(k.status),
        k.status === "active" && p.keys.filter((x) => x.status === "active").length > 1
          ? h("button", { class: "small danger", onclick: () => act("revoke-key", { key: k.address }, `Revoke key ${k.address}`) }, "Revoke")
          : null))) },
      { title: "Registration hash", cell: (p) => h("span", { class: "mono", title: p.registration_hash }, `${p.registration_hash.slice(0, 12)}…`) },
      { title: "", cell: (p) => h("div", { class: "actions" },
        p.status === "active"
          ? h("button", { class: "small danger", "data-testid": `suspend-${p.entity}`, onclick: () => act("suspend-participant", { entity: p.entity }, `Suspend ${entity(p.entity)}`) }, "Suspend")
          : h("button", { class: "small", "data-testid": `reinstate-${p.entity}`, onclick: () => act("reinstate-participant", { entity: p.entity }, `Reinstate ${entity(p.entity)}`) }, "Reinstate"),
        h("button", { class: "small", onclick: () => addKeyForm(p) }, "Add key")) },
    ], data.participants, { empty: "No participants admitted yet.", testid: "participants", rowClass: (p) => `entity-${p.entity}` }));
  }).catch((err) => listHost.replaceChildren(errorBox(err)));

  const admit = h("form", { class: "fields", "data-testid": "admit-form" },
    h("label", {}, "Registration number (USCC / LEI)", h("input", { name: "registration_number", required: true })),
    h("label", {}, "First key (address)", h("input", { name: "first_key", required: true, placeholder: "0x…" })),
    ...ROLES.map((r) => h("label", { class: "check" }, h("input", { type: "checkbox", name: `role_${r}` }), r)),
    h("button", { class: "primary", type: "submit" }, "Prepare admission"));
  admit.addEventListener("submit", (e) => {
    e.preventDefault();
    const v = formValues(admit);
    const roles = ROLES.filter((r) => v[`role_${r}`]);
    act("admit-participant", { registration_number: v.registration_number, roles, first_key: v.first_key }, "Admit a participant");
  });

  return page("Consortium operator",
    panel("Participants", h("p", { class: "hint" }, "Suspension takes effect at once: a suspended participant's keys are refused at sign-in and on every request. The operator never moves anyone's receivables."), listHost),
    panel("Admit a participant", h("p", { class: "hint" }, "Only the hash of the registration number goes on the ledger. Names are off-chain: add the new entity's name to the participant directory (directory.json in the data directory) and every member's pages show it."), admit),
    panel("Emergency", h("p", { class: "hint" }, "Pausing stops every lifecycle change until unpaused; reads continue."),
      h("div", { class: "actions" },
        h("button", { class: "danger", onclick: () => act("pause", {}, "Pause the registry") }, "Pause"),
        h("button", { onclick: () => act("unpause", {}, "Unpause the registry") }, "Unpause"))),
  );
}
