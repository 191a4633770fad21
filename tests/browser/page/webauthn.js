// The page's WebAuthn code, as a site would write it: ask the server for options, hand them to
// navigator.credentials, send the browser's answer back for verification. JSON both ways, in
// the WebAuthn Level 3 form (parseCreationOptionsFromJSON / toJSON).
"use strict";

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = await response.json();
  if (!response.ok) throw new Error("server: " + json.error);
  return json;
}

async function register(user) {
  const timeout = document.getElementById("timeout").value;
  const passkey = document.getElementById("passkey").checked;
  const verify = document.getElementById("verify").checked;
  const anyAuthenticator = document.getElementById("any-authenticator").checked;
  const options = await post("/api/register/begin", { user, timeout, passkey, verify, anyAuthenticator });
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options.publicKey);
  // The site's own deadline: not every browser ends a request at publicKey.timeout.
  const signal = timeout ? AbortSignal.timeout(Number(timeout)) : undefined;
  const credential = await navigator.credentials.create({ publicKey, signal });
  return post("/api/register/complete", { user, credential: credential.toJSON() });
}

async function signIn(user, legacy) {
  const passkey = !legacy && document.getElementById("passkey").checked;
  const verify = !legacy && document.getElementById("verify").checked;
  const timeout = document.getElementById("timeout").value;
  const options = await post("/api/authenticate/begin", { user, legacy, passkey, verify });
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
  const signal = timeout ? AbortSignal.timeout(Number(timeout)) : undefined;
  const credential = await navigator.credentials.get({ publicKey, signal });
  return post("/api/authenticate/complete", { user, passkey, credential: credential.toJSON() });
}

// Each button writes one line to #result: "ok <verdict>" or "error <DOMException name>: ...".
function wire(id, action) {
  document.getElementById(id).addEventListener("click", async () => {
    const result = document.getElementById("result");
    result.textContent = "waiting for the security key";
    result.dataset.state = "waiting";
    const user = document.getElementById("user").value;
    try {
      result.textContent = "ok " + JSON.stringify(await action(user));
      result.dataset.state = "ok";
    } catch (error) {
      result.textContent = "error " + error.name + ": " + error.message;
      result.dataset.state = "error";
    }
  });
}

window.addEventListener("DOMContentLoaded", () => {
  wire("register", register);
  wire("signin", (user) => signIn(user, false));
  wire("signin-legacy", (user) => signIn(user, true));
});
