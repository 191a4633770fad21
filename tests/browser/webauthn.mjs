#!/usr/bin/env node
// The browser tier's test, and docs/ci.md's CI recipe: a real browser goes through a WebAuthn
// site (tests/browser/rp.py) that registers and signs in AWS-style users with the security key,
// the "user" answering each touch through the key's control socket. Chromium is driven by
// Playwright (DevTools protocol), Firefox by Puppeteer (WebDriver BiDi: Playwright drives only
// its own patched Firefox builds, not Firefox ESR).
//
//   node tests/browser/webauthn.mjs --site https://signin.aws.amazon.com:PORT/ \
//       [--engine chromium] (--cdp http://127.0.0.1:9222 | --browser PATH) \
//       [--engine firefox]  (--bidi ws://127.0.0.1:9222/session [--bidi-host H:P] | --browser PATH) \
//       [--runner target/debug/usbip-runner --control /tmp/key.sock] [--passkeys] [--uv-steps] \
//       [--uv-passkeys] [--virtual-authenticator FILE] [--import-credential FILE] \
//       [--locked pin|unlock=PORT [--locked-only]] \
//       [--browser-arg=--flag ...]
//
// --cdp / --bidi attach to a browser already running (the tier's QEMU guest runs it beside the
// kernel that attached the key) and close it at the end; --browser launches one on this machine.
// With --control, registration 1 of a user is approved, one denied and one left to time out,
// and the page must see NotAllowedError for the last two; without it (--presence auto) those
// two are skipped. Exit status 0 only if every step passed.
//
// A PIN-locked key (docs/pin-lock.md; run.sh power-cycles the key after turning the lock on):
//   --locked pin: the first step is a sign-in that does not ask for UV (user `owner`, whose
//     credential the key made before the lock was turned on); the browser must see alwaysUv,
//     ask for the PIN (Firefox: the autoconfig script types it) and the RP must see the UV flag.
//   --locked unlock=PORT: a browser without a PIN prompt (Chromium's headless shell): the same
//     sign-in must fail (NotAllowedError, or the site's 30 s deadline); then libfido2's tools
//     and OpenSSH in the guest meet the locked key and give the PIN
//     (tests/browser/locked-clients.sh, served on PORT, forwarded by QEMU; each of its checks
//     is a step here), and the owner signs in on the opened key.
//   --locked-only: only those steps (and the RP's log check), none of the others.
//
// Interop with Chromium's own virtual authenticator (the key's test automation verbs, which
// need --control on a key that lets private keys cross, e.g. --ephemeral):
//   --virtual-authenticator FILE (Chromium): root's credential, registered on the key above, is
//     exported (`credentials`) into a DevTools virtual authenticator (WebAuthn.addCredential),
//     which signs root in; then victor registers on the virtual authenticator, and its
//     credential (WebAuthn.getCredentials) is written to FILE.
//   --import-credential FILE: that credential is imported into the key (`add-credential`) and
//     victor signs in with the key, on the same site (whose users rp.py --state kept).
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    site: { type: "string" },
    engine: { type: "string", default: "chromium" },
    cdp: { type: "string" },
    bidi: { type: "string" },
    "bidi-host": { type: "string" },
    browser: { type: "string" },
    "browser-arg": { type: "string", multiple: true, default: [] },
    runner: { type: "string", default: "usbip-runner" },
    control: { type: "string" },
    passkeys: { type: "boolean", default: false },
    "uv-steps": { type: "boolean", default: false },
    "uv-passkeys": { type: "boolean", default: false },
    bus: { type: "string", default: "1-1" },
    "virtual-authenticator": { type: "string" },
    "import-credential": { type: "string" },
    locked: { type: "string" },
    "locked-only": { type: "boolean", default: false },
  },
});
if (!args.site || !(args.cdp || args.bidi || args.browser)) {
  console.error("usage: webauthn.mjs --site URL [--engine E] (--cdp URL | --bidi URL | --browser PATH) [--control SOCK]");
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const control = (...words) => {
  try {
    return execFileSync(args.runner, ["control", args.control, ...words], { encoding: "utf8" }).trim();
  } catch (error) {
    // An "error ..." reply exits 1: hand it back for the step to report.
    if (typeof error.stdout === "string" && error.stdout.startsWith("error")) return error.stdout.trim();
    throw error;
  }
};

// The steps, in order. `answer` is what the user does when the key asks for a touch.
//
// Timeouts: a key left untouched gives up with CTAP2_ERR_USER_ACTION_TIMEOUT. Firefox then
// ends the request with NotAllowedError at once. Chromium asks the key again, as it would a
// real key, and Chrome would end the request with NotAllowedError at publicKey.timeout; the
// headless shell never does (measured: a create() with a 20 s timeout was still pending 60 s
// later, with a key waiting and with no key at all; its content-layer delegate has no timeout
// handling). So the page also enforces the deadline the way a site can, AbortSignal.timeout,
// and the headless shell's page sees TimeoutError there. run.sh checks the key's side in its
// trace: it did answer CTAP2_ERR_USER_ACTION_TIMEOUT and, for the cancelled one,
// CTAP2_ERR_OPERATION_DENIED.
const steps = [
  ["register the root user", "#register", "root", "approve", /^ok .*"verified":"registration"/],
  ["register IAM user alice", "#register", "alice", "approve", /^ok .*"verified":"registration"/],
  ["register IAM user bob", "#register", "bob", "approve", /^ok .*"verified":"registration"/],
  ["root signs in", "#signin", "root", "approve", /^ok .*"verified":"sign-in"/],
  ["alice signs in", "#signin", "alice", "approve", /^ok .*"verified":"sign-in"/],
  ["bob signs in", "#signin", "bob", "approve", /^ok .*"verified":"sign-in"/],
  ["root signs in again (counter grows)", "#signin", "root", "approve", /^ok .*"verified":"sign-in"/],
  ["legacy U2F key signs in via appid", "#signin-legacy", "legacy-root", "approve", /^ok .*"verified":"legacy U2F sign-in via appid"/],
  ["registration cancelled by the user", "#register", "carol", "deny", /^error NotAllowedError/],
  ["registration timed out (20 s)", "#register", "dave", "timeout", /^error (NotAllowedError|TimeoutError)/, 20000],
  ["carol registers after all", "#register", "carol", "approve", /^ok .*"verified":"registration"/],
];
// With --passkeys (a browser that can be given the key's PIN: Firefox, see
// firefox/webauthn-user.cfg): discoverable credentials registered with the PIN, then a sign-in
// without an allow list, the user chosen at the browser's account prompt and named by the user
// handle the key returns.
const passkeySteps = [
  ["dana registers a passkey (PIN typed)", "#register", "dana", "approve", /^ok .*"verified":"registration".*"uv":true/, 0, true],
  ["erin registers a passkey (PIN typed)", "#register", "erin", "approve", /^ok .*"verified":"registration".*"uv":true/, 0, true],
  ["sign in with a passkey, no user name (PIN typed, account chosen)", "#signin", "", "approve", /^ok .*"verified":"passkey sign-in","user":"(dana|erin)"/, 0, true],
];
if (args.passkeys) steps.push(...passkeySteps);
// With --uv-steps (a key started with `--uv builtin --uv-mode control`: a fingerprint sensor
// whose every finger the script gives with `uv ok|fail`): a credential registered and used with
// userVerification "required", verified by the sensor (the RP checks the UV flag); faults armed
// on the control socket that the RP must refuse (a bad signature, a rewound counter: rp.py's
// counter check); last, a finger that never matches: the browser asks again until the sensor is
// blocked (uvRetries 0) and the page sees NotAllowedError. The eighth member says what else the
// step does: `verify` ticks the page's "verify the user", `uv` answers each finger, `fault` arms
// one before the click, `before` sends a control line before it.
const uvSteps = [
  ["grace registers, verified by the key's fingerprint", "#register", "grace", "approve", /^ok .*"verified":"registration".*"uv":true/, 0, false, { verify: true, uv: "ok" }],
  ["grace signs in, verified by the key's fingerprint", "#signin", "grace", "approve", /^ok .*"verified":"sign-in".*"uv":true/, 0, false, { verify: true, uv: "ok" }],
  ["a bad signature (fault armed) is refused by the RP", "#signin", "root", "approve", /^error .*server: ValueError: Invalid signature/, 0, false, { fault: "bad-signature" }],
  ["a rewound counter (fault armed) is seen by the RP", "#signin", "alice", "approve", /^error .*server: ValueError: signature counter went from \d+ to 1/, 0, false, { fault: "counter-rewind" }],
  ["a finger that never matches: NotAllowedError", "#signin", "grace", "approve", /^error NotAllowedError/, 0, false, { verify: true, uv: "fail" }],
];
if (args["uv-steps"]) steps.push(...uvSteps);
// With --uv-passkeys (after --passkeys, on a key whose sensor starts unenrolled, so that the PIN
// steps type the PIN): a finger is enrolled (`uv enroll`), and a passkey is registered and used
// without a user name, each verified by the fingerprint instead of the PIN.
const uvPasskeySteps = [
  ["ida registers a passkey, verified by the key's fingerprint", "#register", "ida", "approve", /^ok .*"verified":"registration".*"uv":true/, 0, true, { uv: "ok", before: ["uv", "enroll"] }],
  ["sign in with a passkey, no user name, verified by the fingerprint", "#signin", "", "approve", /^ok .*"verified":"passkey sign-in","user":"(dana|erin|ida)"/, 0, true, { uv: "ok" }],
];
if (args["uv-passkeys"]) steps.push(...uvPasskeySteps);

// Both libraries' pages have goto, click and evaluate (with one argument); the rest goes
// through evaluate so that one script drives both.
const fill = (page, selector, value) =>
  page.evaluate(([s, v]) => (document.querySelector(s).value = v), [selector, value]);
const result = (page) =>
  page.evaluate(() => {
    const r = document.querySelector("#result");
    return { state: r.dataset.state, text: r.textContent };
  });

// Click, then answer each touch (and each finger) the key asks for until the page shows a
// result (a step on a virtual authenticator, `extra.anyAuthenticator`, never asks the key).
async function ceremony(page, button, user, answer, timeout, passkey, extra = {}) {
  const anyAuthenticator = Boolean(extra.anyAuthenticator);
  await fill(page, "#user", user);
  await fill(page, "#timeout", timeout ? String(timeout) : "");
  await page.evaluate((on) => (document.querySelector("#passkey").checked = on), Boolean(passkey));
  await page.evaluate((on) => (document.querySelector("#verify").checked = on), Boolean(extra.verify));
  await page.evaluate((on) => (document.querySelector("#any-authenticator").checked = on), anyAuthenticator);
  if (extra.before) control(...extra.before, args.bus);
  if (extra.fault) control("fault", extra.fault, args.bus);
  await page.click(button);
  const deadline = Date.now() + 120_000;
  let asked = 0;
  for (;;) {
    const { state, text } = await result(page);
    if (state !== "waiting") return { text, asked };
    if (Date.now() > deadline) throw new Error("the page had no result after 120 s");
    if (args.control && !anyAuthenticator && control("status").split(" ").includes(args.bus)) {
      control(answer, args.bus);
      asked += 1;
    }
    if (extra.uv && control("uv", "status").split(" ").includes(args.bus)) {
      control("uv", extra.uv, args.bus);
      asked += 1;
    }
    await sleep(100);
  }
}

// Attach to the browser, or launch it: { page, close } for either library.
async function openBrowser() {
  if (args.engine === "firefox") {
    const { default: puppeteer } = await import("puppeteer-core");
    const browser = args.bidi
      ? await puppeteer.connect({
          browserWSEndpoint: args.bidi,
          protocol: "webDriverBiDi",
          // A guest under TCG on a loaded machine took longer than Puppeteer's default 180 s
          // to open the session (measured: session.new timed out at load average 14).
          protocolTimeout: 600_000,
          // Firefox refuses (400) a WebSocket whose Host header names another port than its
          // own, as it does through a port forward: --bidi-host gives the one it listens on.
          headers: args["bidi-host"] ? { Host: args["bidi-host"] } : undefined,
        })
      : await puppeteer.launch({
          browser: "firefox",
          executablePath: args.browser,
          args: args["browser-arg"],
          extraPrefsFirefox: {
            "security.webauth.webauthn_enable_usbtoken": true,
            "security.webauthn.always_allow_direct_attestation": true,
            // The site runs on this machine: its name resolves to the loopback.
            "network.dns.localDomains": new URL(args.site).hostname,
          },
        });
    const page = await browser.newPage();
    return { page, close: () => browser.close() };
  }
  const { chromium } = await import("playwright-core");
  const browser = args.cdp
    ? await chromium.connectOverCDP(args.cdp, { timeout: 120_000 })
    : await chromium.launch({ executablePath: args.browser, args: args["browser-arg"] });
  const context = browser.contexts()[0] ?? (await browser.newContext());
  const page = await context.newPage();
  // Closing a CDP connection only disconnects: close the browser itself.
  const close = args.cdp
    ? async () => (await browser.newBrowserCDPSession()).send("Browser.close").catch(() => {})
    : () => browser.close();
  return { page, close };
}

// The credential IDs of the users registered above (base64url), from the RP's verdicts.
const credentialIds = {};
const report = (ok, name, text) => {
  console.log(`${ok ? "PASS" : "FAIL"} ${name}: ${text}`);
  return ok ? 0 : 1;
};
// WebDriver's base64url and the DevTools protocol's base64 (the key reads both).
const toBase64 = (b64url) => Buffer.from(b64url, "base64url").toString("base64");
const toBase64url = (b64) => Buffer.from(b64, "base64").toString("base64url");

// Chromium's DevTools virtual authenticator and the key, both ways. Returns the failures.
async function virtualAuthenticator(page) {
  const cdp = await page.context().newCDPSession(page);
  // From here on the page's WebAuthn calls reach only virtual authenticators.
  await cdp.send("WebAuthn.enable", { enableUI: false });
  const { authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: {
      protocol: "ctap2",
      transport: "usb",
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  let failed = 0;
  // The key to the virtual authenticator: root's credential, with its private key.
  const listed = JSON.parse(control("credentials", args.bus));
  const root = listed.find((c) => c.credentialId === credentialIds.root);
  failed += report(Boolean(root), "root's credential exported from the key (credentials)", root ? `signCount ${root.signCount}` : JSON.stringify(listed));
  if (root) {
    await cdp.send("WebAuthn.addCredential", {
      authenticatorId,
      credential: {
        credentialId: toBase64(root.credentialId),
        isResidentCredential: false,
        rpId: root.rpId,
        privateKey: toBase64(root.privateKey),
        signCount: root.signCount,
      },
    });
    const { text } = await ceremony(page, "#signin", "root", "approve", 0, false, { anyAuthenticator: true });
    failed += report(/^ok .*"verified":"sign-in"/.test(text), "root signs in through Chromium's virtual authenticator, with the key's exported credential", text);
  }
  // The virtual authenticator to the key: victor's credential, written for the next browser.
  const { text } = await ceremony(page, "#register", "victor", "approve", 0, false, { anyAuthenticator: true });
  const registered = /^ok (.*"verified":"registration".*)$/.exec(text);
  failed += report(Boolean(registered), "victor registers on Chromium's virtual authenticator", text);
  if (registered) credentialIds.victor = JSON.parse(registered[1]).credentialId;
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  const victor = credentials.find((c) => toBase64url(c.credentialId) === credentialIds.victor);
  const ids = credentials.map((c) => c.credentialId).join(", ");
  failed += report(Boolean(victor), "victor's credential read from the virtual authenticator (WebAuthn.getCredentials)", victor ? `signCount ${victor.signCount}` : `not among ${ids}`);
  if (victor) {
    const { writeFileSync } = await import("node:fs");
    // As CDP gives it: the key reads its base64 as it reads WebDriver's base64url.
    writeFileSync(args["virtual-authenticator"], JSON.stringify(victor));
  }
  await cdp.send("WebAuthn.disable");
  return failed;
}

// Victor's credential from Chromium's virtual authenticator, imported into the key, signs in.
async function importedSignIn(page) {
  const reply = control("add-credential", args.bus, "@" + args["import-credential"]);
  let failed = report(reply === "ok added", "victor's credential from Chromium's virtual authenticator imported into the key (add-credential)", reply);
  const { text, asked } = await ceremony(page, "#signin", "victor", "approve", 0, false);
  failed += report(/^ok .*"verified":"sign-in"/.test(text) && asked > 0, `victor signs in with the key (${asked} touch request(s))`, text);
  return failed;
}

// The first steps on a PIN-locked key (--locked): the owner, whose credential the key made
// before the lock was turned on (rp.py --lock), signs in; the site does not ask for UV.
// Returns the failures.
async function lockedKey(page) {
  const start = Date.now();
  // A deadline for a browser that would wait for a PIN it cannot ask for.
  const timeout = args.locked === "pin" ? 0 : 30000;
  const { text, asked } = await ceremony(page, "#signin", "owner", "approve", timeout, false);
  const secs = ((Date.now() - start) / 1000).toFixed(1);
  if (args.locked === "pin") {
    // Touched, and verified by the PIN the browser asked for although the site did not ask.
    const ok = /^ok .*"verified":"sign-in","user":"owner","uv":true/.test(text) && asked > 0;
    return report(ok, `a locked key: a sign-in that does not ask for UV gets the PIN asked and typed, UV set (${secs} s, ${asked} touch request(s))`, text);
  }
  const port = /^unlock=(\d+)$/.exec(args.locked)?.[1];
  if (!port) throw new Error(`--locked ${args.locked}: pin or unlock=PORT`);
  const refused = /^error (NotAllowedError|TimeoutError)/.test(text);
  let failed = report(refused, `a locked key: the browser, with no PIN prompt, fails the sign-in (${secs} s, ${asked} touch request(s))`, text);
  // In the guest, libfido2's tools and OpenSSH meet the locked key, then give the PIN
  // (tests/browser/locked-clients.sh); every touch they ask for is approved here.
  const { connect } = await import("node:net");
  let said = "";
  let done = false;
  const socket = connect(Number(port), "127.0.0.1");
  socket.setEncoding("utf8");
  socket.on("data", (chunk) => (said += chunk));
  socket.on("close", () => (done = true));
  socket.on("error", (error) => {
    said += `\nFAIL connection: ${error.message}`;
    done = true;
  });
  const deadline = Date.now() + 180_000;
  let touches = 0;
  while (!done && Date.now() < deadline) {
    if (control("status").split(" ").includes(args.bus)) {
      control("approve", args.bus);
      touches += 1;
    }
    await sleep(100);
  }
  socket.destroy();
  console.log(said.replace(/^/gm, "  guest: "));
  for (const line of said.split("\n").filter((l) => /^(PASS|FAIL) /.test(l))) {
    failed += report(line.startsWith("PASS"), "libfido2/OpenSSH in the guest", line.slice(5));
  }
  failed += report(done && /^unlocked$/m.test(said), "the guest's clients gave the PIN: the key is open", `${touches} touch(es) approved`);
  // The same sign-in, now without a PIN: the key no longer says alwaysUv.
  const again = await ceremony(page, "#signin", "owner", "approve", 0, false);
  failed += report(/^ok .*"verified":"sign-in","user":"owner"/.test(again.text) && again.asked > 0, `the owner signs in on the opened key (${again.asked} touch request(s))`, again.text);
  return failed;
}

const { page, close } = await openBrowser();
page.setDefaultTimeout(120_000);
let failed = 0;
try {
  await page.goto(args.site);
  const where = await page.evaluate(() => `${location.href} (${document.title}), secure context: ${isSecureContext}`);
  console.log(`${args.engine}: ${await page.evaluate(() => navigator.userAgent)}\npage: ${where}`);
  if (args.locked) failed += await lockedKey(page);
  let refusals = 0;
  for (const [name, button, user, answer, expected, timeout, passkey, extra = {}] of args["locked-only"] ? [] : steps) {
    if ((answer !== "approve" || extra.uv || extra.fault || extra.before) && !args.control) {
      console.log(`SKIP ${name}: needs --control`);
      continue;
    }
    // A fault the RP must refuse: one refusal in its log is this step's success.
    if (extra.fault) refusals += 1;
    const start = Date.now();
    const { text, asked } = await ceremony(page, button, user, answer, timeout, passkey, extra);
    const secs = ((Date.now() - start) / 1000).toFixed(1);
    // A deny or timeout the key never asked for would prove nothing.
    const ok = expected.test(text) && (!args.control || asked > 0);
    if (!ok) failed += 1;
    console.log(`${ok ? "PASS" : "FAIL"} ${name} (${secs} s, ${asked} touch request(s)): ${text}`);
    const registered = /^ok (.*)$/.exec(text);
    if (ok && button === "#register" && registered) credentialIds[user] = JSON.parse(registered[1]).credentialId;
  }
  for (const [flag, steps] of [["import-credential", importedSignIn], ["virtual-authenticator", virtualAuthenticator]]) {
    if (!args[flag] || args["locked-only"]) continue;
    const start = Date.now();
    failed += await steps(page);
    console.log(`test automation (--${flag}): ${((Date.now() - start) / 1000).toFixed(1)} s`);
  }
  const log = await page.evaluate(async () => (await fetch("/api/log")).json());
  const verified = log.filter((entry) => entry.verified).length;
  console.log(`relying party: ${verified} responses verified, ${log.length - verified} refused (${refusals} by a fault armed)`);
  if (log.length - verified !== refusals) {
    failed += 1;
    for (const entry of log.filter((e) => !e.verified)) console.log("  refused:", JSON.stringify(entry));
  }
} catch (error) {
  failed += 1;
  console.log(`FAIL ${error.message}`);
} finally {
  await close();
}
console.log(failed ? `browser test: ${failed} failed` : "browser test: every step passed");
process.exit(failed ? 1 : 0);
