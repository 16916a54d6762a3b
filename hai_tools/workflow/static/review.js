// The review page's script: signs logins and decisions with the reviewer's WebCrypto Ed25519 key, which lives
// in this browser's IndexedDB as a non-extractable key (made on /enrol). The private key is never read out of
// WebCrypto nor sent anywhere; the server verifies each signature against the reviewer registry. Without this
// script every page still works, signing with the server-held key unwrapped by the reviewer's passphrase.
"use strict";

const DB_NAME = "hai-tools-review";
const STORE = "keys";

function openDb() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function storeOp(mode, op) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const request = op(db.transaction(STORE, mode).objectStore(STORE));
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

const loadKey = (id) => storeOp("readonly", (s) => s.get(id)).then((v) => v || null);
const saveKey = (id, value) => storeOp("readwrite", (s) => s.put(value, id));

function b64(buffer) {
  return btoa(String.fromCharCode(...new Uint8Array(buffer)));
}

async function keyId(publicRaw) {
  const raw = Uint8Array.from(atob(publicRaw), (c) => c.charCodeAt(0));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
  return "ed25519:" + Array.from(digest.slice(0, 8), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function signText(entry, text) {
  return b64(await crypto.subtle.sign({ name: "Ed25519" }, entry.privateKey, new TextEncoder().encode(text)));
}

function webCrypto() {
  return window.isSecureContext && window.crypto && crypto.subtle && window.indexedDB;
}

// The key this browser holds for the logged-in reviewer, if it is their registered key.
async function browserKey(reviewer, registeredKeyId) {
  if (!webCrypto() || !reviewer) return null;
  const entry = await loadKey(reviewer);
  if (!entry || (registeredKeyId && (await keyId(entry.publicRaw)) !== registeredKeyId)) return null;
  return entry;
}

function showError(text) {
  const box = document.getElementById("decision-error") || document.getElementById("enrol-error");
  if (!box) return;
  box.textContent = text;
  box.hidden = false;
  box.focus && box.focus();
}

function setupLogin(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = form.elements.reviewer_id.value.trim();
    try {
      const entry = webCrypto() ? await loadKey(id) : null;
      if (entry) {
        const challenge = "hai-tools review login\n" + id + "\n" + form.dataset.nonce;
        form.elements.signature.value = await signText(entry, challenge);
        form.elements.passphrase.value = "";
      }
    } catch (err) {
      form.elements.signature.value = "";
    }
    form.submit();
  });
}

function setupDecision(form, entry) {
  const body = document.body.dataset;
  form.addEventListener("submit", async (event) => {
    if (!entry) return; // the server-held key: the form posts as it is, with the passphrase
    event.preventDefault();
    const fields = form.elements; // note: form.action is the input named "action", not the URL
    const decision = { action: fields.action.value };
    if (fields.text) decision.text = fields.text.value;
    if (fields.reason) decision.reason = fields.reason.value;
    try {
      const response = await fetch(form.getAttribute("action").replace(/\/decide$/, "/prepare"), {
        method: "POST",
        headers: { "content-type": "application/json", "x-csrf-token": body.csrf },
        body: JSON.stringify(decision),
        credentials: "same-origin",
      });
      const answer = await response.json();
      if (!response.ok) {
        showError(answer.error || "Refused. Nothing was changed.");
        return;
      }
      fields.statement.value = JSON.stringify(answer.statement);
      fields.signature.value = await signText(entry, answer.payload);
      fields.passphrase.value = "";
      form.submit();
    } catch (err) {
      showError("Could not sign the decision in this browser: " + err);
    }
  });
}

function setupEnrol(form) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const id = form.elements.reviewer_id.value.trim();
    if (!webCrypto()) {
      showError("This browser cannot hold a signing key here (WebCrypto needs HTTPS or localhost).");
      return;
    }
    try {
      const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
      const publicRaw = b64(await crypto.subtle.exportKey("raw", pair.publicKey));
      await saveKey(id, { privateKey: pair.privateKey, publicRaw: publicRaw });
      document.getElementById("enrol-public").value = publicRaw;
      document.getElementById("enrol-key-id").textContent = await keyId(publicRaw);
      document.getElementById("enrol-result").hidden = false;
    } catch (err) {
      showError("Could not create a key in this browser: " + err);
    }
  });
}

document.addEventListener("DOMContentLoaded", async () => {
  const login = document.getElementById("login-form");
  if (login) setupLogin(login);
  const enrol = document.getElementById("enrol-form");
  if (enrol) setupEnrol(enrol);
  const forms = document.querySelectorAll("form.decision");
  if (!forms.length) return;
  const body = document.body.dataset;
  let entry = null;
  try {
    entry = await browserKey(body.reviewer, body.keyId);
  } catch (err) {
    entry = null;
  }
  if (entry) {
    document.querySelectorAll("form.decision .passphrase").forEach((p) => (p.hidden = true));
    document.getElementById("signing-status").textContent =
      "Signed in this browser with your key " + body.keyId + " (it never leaves this browser).";
  }
  forms.forEach((form) => setupDecision(form, entry));
  document.body.dataset.signingReady = entry ? "browser" : "server-key";
});
