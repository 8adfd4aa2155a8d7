// The user's key stays in this page: a keystore unlocked here (ethers, scrypt in the browser) or an
// injected browser wallet. Only signatures leave the page.
import { ethers } from "/portal/vendor/ethers.min.js";
import { api, session } from "./api.js";

let signer = null; // in memory only: a reload forgets it (the session token survives, reads keep working)

export function currentSigner() { return signer; }
export function forgetSigner() { signer = null; }

export async function unlockKeystore(file, password, onProgress) {
  const text = await file.text();
  let json;
  try { json = JSON.parse(text); } catch { throw new Error("This file is not a keystore (not JSON)."); }
  if (!json || (!json.crypto && !json.Crypto)) throw new Error("This file is not a Web3 Secret Storage keystore.");
  try {
    return await ethers.Wallet.fromEncryptedJson(text, password, (p) => onProgress?.(p));
  } catch (err) {
    if (/password/i.test(String(err.message))) throw new Error("Wrong password for this keystore.");
    throw new Error(`The keystore could not be unlocked: ${err.shortMessage || err.message}`);
  }
}

export function hasBrowserWallet() { return typeof window.ethereum !== "undefined"; }

export async function browserWallet() {
  const provider = new ethers.BrowserProvider(window.ethereum);
  await provider.send("eth_requestAccounts", []);
  return provider.getSigner();
}

// EIP-4361 sign-in: challenge -> personal_sign -> session token.
export async function signIn(wallet) {
  const address = ethers.getAddress(await wallet.getAddress());
  const challenge = await api("/auth/challenge", { method: "POST", body: { address } });
  const signature = await wallet.signMessage(challenge.message);
  const answer = await api("/auth/session", { method: "POST", body: { message: challenge.message, signature } });
  session.save(answer.token, answer.principal);
  signer = wallet;
  return answer.principal;
}

export async function signTypedData(typed) {
  if (!signer) throw new Error("Your key is locked: sign in again to sign requests.");
  const types = { ...typed.types };
  delete types.EIP712Domain; // ethers derives the domain type itself
  return signer.signTypedData(typed.domain, types, typed.message);
}

export function signOut() {
  signer = null;
  session.clear();
}

export { ethers };
