#!/usr/bin/env node
// What the PIN verifier costs on the emulated Pico: exact cycles of getPinUvAuthToken as the
// first correct PIN after power-up (one PBKDF2 evaluation, and for a locked key the unsealing),
// and as a later one (a fast check in RAM), with the lock off and on. The difference, divided by
// the firmware's PIN_PBKDF2_ITERATIONS, is the cycles per iteration to recalibrate the count at
// another clock. Prints figures; asserts nothing. ms at the firmware's own clock.
//   node bench-pin.mjs [ITERATIONS]   (default 3800, rp2040-runner/src/main.rs's constant)
import { bootKey } from './lib/harness.mjs';
import { encodeCbor } from './lib/cbor.mjs';
import { ClientPin, PinProtocol2 } from './lib/clientpin.mjs';
import * as ctap2 from './lib/ctap2.mjs';

const ITERATIONS = Number(process.argv[2] ?? 3800);
const PIN = '4711 pico';
const ACFG = 0x20;
const GET_ASSERTION = 0x02;
const LOCK_ON = 0x4c4f434b;

/** getPinUvAuthTokenUsingPinWithPermissions on a fresh session; its answer and cycles. */
async function token(hid, permissions) {
  const pin = new ClientPin(hid);
  const p = await pin.session();
  const pinHashEnc = p.encrypt(ctap2.sha256(PIN).subarray(0, 16));
  const request = encodeCbor(new Map([[1, 2], [2, 9], [3, p.platformKey], [6, pinHashEnc], [9, permissions]]));
  const r = await hid.cbor(0x06, request);
  if (r.status) throw new Error(`token: status 0x${r.status.toString(16)}`);
  const { decodeCbor } = await import('./lib/cbor.mjs');
  return { cycles: r.cycles, token: p.decrypt(decodeCbor(r.body).get(2)) };
}

async function lockOn(hid) {
  const { token: t } = await token(hid, ACFG);
  const params = encodeCbor(new Map([[1, LOCK_ON]]));
  const message = Buffer.concat([Buffer.alloc(32, 0xff), Buffer.from([0x0d, 0xff]), params]);
  const request = encodeCbor(new Map([[1, 0xff], [2, new Map([[1, LOCK_ON]])], [3, 2],
    [4, PinProtocol2.authenticate(t, message)]]));
  const r = await hid.cbor(0x0d, request);
  if (r.status) throw new Error(`lock on: status 0x${r.status.toString(16)}`);
}

const { machine, hid } = await bootKey();
const ms = (cycles) => ((cycles / machine.clockHz) * 1000).toFixed(1);
machine.bootselPressed = true;
await hid.init();
const pin = new ClientPin(hid);
await pin.session();
const set = await pin.setPin(PIN);
if (set.status) throw new Error(`setPIN: 0x${set.status.toString(16)}`);

const rows = [];
for (const locked of [false, true]) {
  if (locked) await lockOn(hid);
  const { machine: m, hid: h } = await bootKey({ flash: machine.snapshotFlash() });
  m.bootselPressed = true;
  await h.init();
  const first = await token(h, GET_ASSERTION);
  const later = await token(h, GET_ASSERTION);
  rows.push({ locked, first: first.cycles, later: later.cycles });
}
console.log(`getPinUvAuthToken (PIN/UV protocol 2), PBKDF2-HMAC-SHA-256 x ${ITERATIONS}, ms at ${machine.clockHz / 1e6} MHz`);
console.log('lock  first PIN after power-up        a later PIN                 difference');
for (const { locked, first, later } of rows) {
  const diff = first - later;
  console.log(`${locked ? 'on ' : 'off'}   ${first.toLocaleString().padStart(12)} = ${ms(first).padStart(6)} ms   `
    + `${later.toLocaleString().padStart(12)} = ${ms(later).padStart(6)} ms   `
    + `${diff.toLocaleString().padStart(12)} = ${ms(diff).padStart(6)} ms`
    + ` (${Math.round(diff / ITERATIONS).toLocaleString()} cycles per iteration)`);
}
