/* Égide passkeys: the browser side of the WebAuthn ceremonies (W3C WebAuthn Level 3).
 *
 * The pages' Content-Security-Policy allows no inline script, so this file is the only code:
 * a button carries data-* attributes naming its two endpoints, the page's CSRF token and the
 * element to report into (and, for a step-up, data-next: the page to return to). Clicking it
 * asks the server for options, hands them to navigator.credentials.create() or .get(), and
 * posts the credential back as JSON with the CSRF token in the X-CSRF-Token header. Binary
 * fields travel as base64url (RFC 4648 section 5, no padding), as in the Level 3 JSON forms
 * of PublicKeyCredential (section 5.1).
 */
"use strict";

(() => {
  const toBuffer = (text) => {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  };

  const toText = (buffer) => {
    let binary = "";
    for (const byte of new Uint8Array(buffer)) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  const descriptors = (list) => (list || []).map((item) => ({ ...item, id: toBuffer(item.id) }));

  const creationOptions = (options) => ({
    ...options,
    challenge: toBuffer(options.challenge),
    user: { ...options.user, id: toBuffer(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  });

  const requestOptions = (options) => ({
    ...options,
    challenge: toBuffer(options.challenge),
    allowCredentials: descriptors(options.allowCredentials),
  });

  const credentialJSON = (credential) => {
    const answer = credential.response;
    const response = { clientDataJSON: toText(answer.clientDataJSON) };
    if (answer.attestationObject) {
      response.attestationObject = toText(answer.attestationObject);
      response.transports =
        typeof answer.getTransports === "function" ? answer.getTransports() : [];
    }
    if (answer.authenticatorData) {
      response.authenticatorData = toText(answer.authenticatorData);
      response.signature = toText(answer.signature);
      if (answer.userHandle) {
        response.userHandle = toText(answer.userHandle);
      }
    }
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response,
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
    };
  };

  const post = async (url, csrf, body) => {
    const answer = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body),
    });
    let data = {};
    try {
      data = await answer.json();
    } catch (_) {
      data = {};
    }
    return { ok: answer.ok, data };
  };

  // Only a path of this site: never follow an answer to another origin.
  const go = (target) => {
    const path = typeof target === "string" ? target : "/account";
    window.location.assign(path.startsWith("/") && !path.startsWith("//") ? path : "/account");
  };

  const showCodes = (codes) => {
    const section = document.getElementById("passkey-codes");
    if (!section) {
      go("/account");
      return;
    }
    const list = section.querySelector("ol");
    for (const code of codes) {
      const item = document.createElement("li");
      const text = document.createElement("code");
      text.textContent = String(code);
      item.appendChild(text);
      list.appendChild(item);
    }
    for (const element of document.querySelectorAll("[data-passkey-hide]")) {
      element.hidden = true;
    }
    section.hidden = false;
    section.querySelector("a")?.focus();
  };

  const run = async (button) => {
    const status = document.getElementById(button.dataset.status || "");
    const say = (text) => {
      if (status) {
        status.textContent = text;
      }
    };
    const refused = (data) => {
      if (data && typeof data.redirect === "string") {
        go(data.redirect);
      } else {
        say((data && data.error) || "The passkey request failed; please try again.");
      }
    };
    button.disabled = true;
    try {
      say("Waiting for your passkey…");
      const first = await post(button.dataset.options, button.dataset.csrf, {});
      if (!first.ok) {
        refused(first.data);
        return;
      }
      const credential =
        button.dataset.passkey === "register"
          ? await navigator.credentials.create({ publicKey: creationOptions(first.data) })
          : await navigator.credentials.get({ publicKey: requestOptions(first.data) });
      const body = { credential: credentialJSON(credential) };
      const nameField = button.dataset.name && document.getElementById(button.dataset.name);
      if (nameField) {
        body.name = nameField.value;
      }
      if (button.dataset.next) {
        body.next = button.dataset.next; // step-up: where to go after (the server checks it)
      }
      const second = await post(button.dataset.finish, button.dataset.csrf, body);
      if (!second.ok) {
        refused(second.data);
        return;
      }
      say("");
      if (Array.isArray(second.data.recovery_codes)) {
        showCodes(second.data.recovery_codes);
      } else {
        go(second.data.redirect);
      }
    } catch (error) {
      say(
        error && error.name === "NotAllowedError"
          ? "The passkey request was cancelled or timed out."
          : error && error.name === "InvalidStateError"
            ? "This passkey is already registered."
            : "This browser could not use a passkey here.",
      );
    } finally {
      button.disabled = false;
    }
  };

  if (!window.PublicKeyCredential || !navigator.credentials) {
    return; // no WebAuthn: the passkey boxes stay hidden, the other forms still work
  }
  for (const box of document.querySelectorAll("[data-passkey-box]")) {
    box.hidden = false;
  }
  for (const button of document.querySelectorAll("button[data-passkey]")) {
    button.addEventListener("click", () => {
      run(button);
    });
  }
})();
