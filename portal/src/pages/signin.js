// Sign-in: unlock a keystore file in this page (the key never leaves it) or use a browser wallet.
import { errorBox, h } from "../ui.js";
import { browserWallet, hasBrowserWallet, signIn, unlockKeystore } from "../wallet.js";

export function signInPage({ onSignedIn }) {
  const file = h("input", { type: "file", accept: ".json,application/json", name: "keystore", "data-testid": "keystore-file", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", "data-testid": "keystore-password" });
  const bar = h("div");
  const progress = h("div", { class: "progress", hidden: true }, bar);
  const status = h("div", { class: "hint", "data-testid": "signin-status" });
  const errors = h("div");
  const submit = h("button", { class: "primary", type: "submit", "data-testid": "signin-submit" }, "Unlock and sign in");
  const reason = sessionStorage.getItem("registry.signout_reason");
  sessionStorage.removeItem("registry.signout_reason");
  if (reason) errors.replaceChildren(errorBox({ title: "Signed out", detail: reason, code: "" }));

  async function finish(wallet) {
    status.textContent = "Signing the sign-in message…";
    const principal = await signIn(wallet);
    status.textContent = "Signed in.";
    onSignedIn(principal);
  }

  const form = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      errors.replaceChildren();
      if (!file.files.length) { errors.replaceChildren(errorBox({ title: "Choose your keystore file first.", code: "" })); return; }
      submit.disabled = true;
      progress.hidden = false;
      status.textContent = "Unlocking your key (scrypt takes a moment)…";
      try {
        const wallet = await unlockKeystore(file.files[0], password.value, (p) => { bar.style.width = `${Math.round(p * 100)}%`; });
        password.value = "";
        await finish(wallet);
      } catch (err) {
        status.textContent = "";
        errors.replaceChildren(errorBox(err.code ? err : { title: err.message, code: "" }));
      } finally {
        submit.disabled = false;
        progress.hidden = true;
        bar.style.width = "0";
      }
    },
  },
  h("label", {}, "Keystore file (Web3 Secret Storage JSON)", file),
  h("label", {}, "Password", password),
  h("div", { class: "actions", style: "margin-top:12px" }, submit),
  progress,
  );
  form.style.display = "grid";
  form.style.gap = "10px";

  const walletButton = hasBrowserWallet()
    ? h("button", {
        type: "button",
        "data-testid": "signin-wallet",
        onclick: async () => {
          errors.replaceChildren();
          try { await finish(await browserWallet()); } catch (err) { errors.replaceChildren(errorBox(err.code ? err : { title: err.message, code: "" })); }
        },
      }, "Use browser wallet")
    : null;

  return h("div", { class: "signin" },
    h("section", { class: "panel" },
      h("h1", {}, "Sign in"),
      h("p", { class: "hint" }, "Your key is unlocked in this page and never sent anywhere: the registry only receives signatures."),
      form,
      walletButton ? [h("div", { class: "or" }, "or"), walletButton] : null,
      status,
      errors,
    ));
}
