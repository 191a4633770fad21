#!/usr/bin/env node
// The browser tier's test, and the README's CI recipe: a real browser goes through a WebAuthn
// site (tests/browser/rp.py) that registers and signs in AWS-style users with the security key,
// the "user" answering each touch through the key's control socket. Chromium is driven by
// Playwright (DevTools protocol), Firefox by Puppeteer (WebDriver BiDi: Playwright drives only
// its own patched Firefox builds, not Firefox ESR).
//
//   node tests/browser/webauthn.mjs --site https://signin.aws.amazon.com:PORT/ \
//       [--engine chromium] (--cdp http://127.0.0.1:9222 | --browser PATH) \
//       [--engine firefox]  (--bidi ws://127.0.0.1:9222/session [--bidi-host H:P] | --browser PATH) \
//       [--runner target/debug/usbip-runner --control /tmp/key.sock] [--passkeys] [--uv-steps] \
//       [--uv-passkeys] \
//       [--browser-arg=--flag ...]
//
// --cdp / --bidi attach to a browser already running (the tier's QEMU guest runs it beside the
// kernel that attached the key) and close it at the end; --browser launches one on this machine.
// With --control, registration 1 of a user is approved, one denied and one left to time out,
// and the page must see NotAllowedError for the last two; without it (--presence auto) those
// two are skipped. Exit status 0 only if every step passed.
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
  },
});
if (!args.site || !(args.cdp || args.bidi || args.browser)) {
  console.error("usage: webauthn.mjs --site URL [--engine E] (--cdp URL | --bidi URL | --browser PATH) [--control SOCK]");
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const control = (...words) =>
  execFileSync(args.runner, ["control", args.control, ...words], { encoding: "utf8" }).trim();

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
// one before the click.
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
// result.
async function ceremony(page, button, user, answer, timeout, passkey, extra = {}) {
  await fill(page, "#user", user);
  await fill(page, "#timeout", timeout ? String(timeout) : "");
  await page.evaluate((on) => (document.querySelector("#passkey").checked = on), Boolean(passkey));
  await page.evaluate((on) => (document.querySelector("#verify").checked = on), Boolean(extra.verify));
  if (extra.before) control(...extra.before, args.bus);
  if (extra.fault) control("fault", extra.fault, args.bus);
  await page.click(button);
  const deadline = Date.now() + 120_000;
  let asked = 0;
  for (;;) {
    const { state, text } = await result(page);
    if (state !== "waiting") return { text, asked };
    if (Date.now() > deadline) throw new Error("the page had no result after 120 s");
    if (args.control && control("status").split(" ").includes(args.bus)) {
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
          // Firefox refuses (400) a WebSocket whose Host header names another port than its
          // own, as it does through a port forward: --bidi-host gives the one it listens on.
          headers: args["bidi-host"] ? { Host: args["bidi-host"] } : undefined,
          // Firefox in the TCG guest may take minutes to open its first session on a loaded
          // machine (measured: more than Puppeteer's default 180 s at a load average of 11).
          protocolTimeout: 600_000,
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

const { page, close } = await openBrowser();
page.setDefaultTimeout(120_000);
let failed = 0;
try {
  await page.goto(args.site);
  const where = await page.evaluate(() => `${location.href} (${document.title}), secure context: ${isSecureContext}`);
  console.log(`${args.engine}: ${await page.evaluate(() => navigator.userAgent)}\npage: ${where}`);
  let refusals = 0;
  for (const [name, button, user, answer, expected, timeout, passkey, extra = {}] of steps) {
    if ((answer !== "approve" || extra.uv || extra.fault) && !args.control) {
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
