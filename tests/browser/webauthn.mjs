#!/usr/bin/env node
// The browser tier's test, and the README's CI recipe: Playwright drives a real Chromium
// through a WebAuthn site (tests/browser/rp.py) that registers and signs in AWS-style users with
// the security key, the "user" answering each touch through the key's control socket.
//
//   node tests/browser/webauthn.mjs --site https://signin.aws.amazon.com:PORT/ \
//       (--cdp http://127.0.0.1:9222 | --browser /usr/bin/chromium-headless-shell) \
//       [--runner target/debug/usbip-runner --control /tmp/key.sock] [--browser-arg=--flag ...]
//
// --cdp attaches to a browser already running (the tier's QEMU guest runs it beside the kernel
// that attached the key) and closes it at the end; --browser launches one on this machine.
// With --control, registration 1 of a user is approved, one denied and one left to time out,
// and the page must see NotAllowedError for the last two; without it (--presence auto) those
// two are skipped. Exit status 0 only if every step passed.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    site: { type: "string" },
    cdp: { type: "string" },
    browser: { type: "string" },
    "browser-arg": { type: "string", multiple: true, default: [] },
    runner: { type: "string", default: "usbip-runner" },
    control: { type: "string" },
    bus: { type: "string", default: "1-1" },
  },
});
if (!args.site || !(args.cdp || args.browser)) {
  console.error("usage: webauthn.mjs --site URL (--cdp URL | --browser PATH) [--control SOCK]");
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const control = (...words) =>
  execFileSync(args.runner, ["control", args.control, ...words], { encoding: "utf8" }).trim();

// The steps, in order. `answer` is what the user does when the key asks for a touch.
//
// Timeouts: a key that gives up waiting answers CTAP2_ERR_USER_ACTION_TIMEOUT, and Chromium
// then asks it again, as it would a real key left untouched. Chrome ends such a request with
// NotAllowedError at the request's `timeout`; the headless shell does not (measured: a create()
// with a 20 s timeout was still pending 60 s later, with a key waiting and with no key at all;
// its content-layer delegate has no timeout handling). So the page enforces the deadline the
// way a site can, with AbortSignal.timeout, and there sees TimeoutError; in Chrome it would see
// NotAllowedError first. run.sh checks the key's side in its trace: it did answer
// CTAP2_ERR_USER_ACTION_TIMEOUT and, for the cancelled one, CTAP2_ERR_OPERATION_DENIED.
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

// Click, then answer each touch the key asks for until the page shows a result.
async function ceremony(page, button, user, answer, timeout) {
  await page.fill("#user", user);
  await page.fill("#timeout", timeout ? String(timeout) : "");
  await page.click(button);
  const deadline = Date.now() + 120_000;
  let asked = 0;
  for (;;) {
    const state = await page.getAttribute("#result", "data-state");
    if (state !== "waiting") return { text: await page.textContent("#result"), asked };
    if (Date.now() > deadline) throw new Error("the page had no result after 120 s");
    if (args.control && control("status").split(" ").includes(args.bus)) {
      control(answer, args.bus);
      asked += 1;
    }
    await sleep(100);
  }
}

const browser = args.cdp
  ? await chromium.connectOverCDP(args.cdp, { timeout: 120_000 })
  : await chromium.launch({ executablePath: args.browser, args: args["browser-arg"] });
const context = browser.contexts()[0] ?? (await browser.newContext());
const page = await context.newPage();
page.setDefaultTimeout(120_000);
let failed = 0;
try {
  await page.goto(args.site);
  console.log(`page: ${page.url()} (${await page.title()}), secure context: ${await page.evaluate(() => isSecureContext)}`);
  for (const [name, button, user, answer, expected, timeout] of steps) {
    if (answer !== "approve" && !args.control) {
      console.log(`SKIP ${name}: needs --control`);
      continue;
    }
    const start = Date.now();
    const { text, asked } = await ceremony(page, button, user, answer, timeout);
    const secs = ((Date.now() - start) / 1000).toFixed(1);
    // A deny or timeout the key never asked for would prove nothing.
    const ok = expected.test(text) && (!args.control || asked > 0);
    if (!ok) failed += 1;
    console.log(`${ok ? "PASS" : "FAIL"} ${name} (${secs} s, ${asked} touch request(s)): ${text}`);
  }
  const log = await page.evaluate(async () => (await fetch("/api/log")).json());
  const verified = log.filter((entry) => entry.verified).length;
  console.log(`relying party: ${verified} responses verified, ${log.length - verified} refused`);
  if (log.length !== verified) {
    failed += 1;
    for (const entry of log.filter((e) => !e.verified)) console.log("  refused:", JSON.stringify(entry));
  }
} catch (error) {
  failed += 1;
  console.log(`FAIL ${error.message}`);
} finally {
  if (args.cdp) {
    // Close the browser itself (closing a CDP connection only disconnects).
    const session = await browser.newBrowserCDPSession();
    await session.send("Browser.close").catch(() => {});
  } else {
    await browser.close();
  }
}
console.log(failed ? `browser test: ${failed} failed` : "browser test: every step passed");
process.exit(failed ? 1 : 0);
