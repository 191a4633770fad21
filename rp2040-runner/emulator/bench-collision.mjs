#!/usr/bin/env node
// The worst case of erasing ahead: the first request after power-up arriving just as the key
// starts an erase ahead (the flash busy, interrupts off). The emulator is deterministic: one
// boot finds when the key erases ahead; then boots from the same flash send makeCredential at moments
// just before that erase, and the slowest answer is printed beside an undisturbed one. Not a
// test (not run by ci.sh): it prints figures.
//
//   node bench-collision.mjs [IMAGE]   IMAGE: a state from pico_state_image (else a fresh key)
import fs from 'node:fs';
import { bootKey } from './lib/harness.mjs';
import * as ctap2 from './lib/ctap2.mjs';

const IMAGE_OFFSET = 0x7B000;
const [image] = process.argv.slice(2);
let flash;
if (image) {
  const first = await bootKey();
  flash = first.machine.snapshotFlash();
  flash.set(fs.readFileSync(image), IMAGE_OFFSET);
} else {
  // A key that has formatted its state, so every boot below starts from the same bytes.
  const first = await bootKey();
  await first.hid.init();
  await first.hid.cbor(0x04);
  flash = first.machine.snapshotFlash();
}

// makeCredential (not discoverable): three packets, so part of it may still be on its way when
// the key looks at its mailbox.
const request = () => ctap2.makeCredentialRequest().payload;

/** Boot from `flash`, wait `untilMs` (emulated, from power-up) or not, then time a request. */
async function trial(untilMs) {
  const { machine, hid } = await bootKey({ flash });
  machine.bootselPressed = true;
  await hid.init();
  if (untilMs !== undefined) {
    await machine.run({ until: () => machine.nowMs >= untilMs, maxCycles: 2_000_000_000 });
  }
  const [start, erases] = [machine.nowMs, machine.flashOps.filter((o) => o.op === 'erase').length];
  const r = await hid.cbor(0x01, request());
  if (r.status !== 0) throw new Error(`makeCredential: status ${r.status}`);
  const during = machine.flashOps.filter((o) => o.op === 'erase').length - erases;
  return { ms: machine.nowMs - start, during, machine };
}

// When does the key erase ahead after power-up, left alone?
const probe = await bootKey({ flash });
await probe.machine.run({
  until: () => probe.machine.flashOps.some((o) => o.op === 'erase') || probe.machine.nowMs > 3000,
  maxCycles: 2_000_000_000,
});
const erase = probe.machine.flashOps.find((o) => o.op === 'erase');
if (!erase) throw new Error('no erase ahead within 3 s of power-up');
const { eraseMs } = probe.machine.flashTiming;
const eraseStart = erase.atMs; // recorded as the ROM call starts

const quiet = await trial(eraseStart + eraseMs + 50);
let worst = { ms: 0 };
// The window: from the key's last look at its mailbox to the ROM call, the step's remount of
// littlefs (well under 1 ms on a fresh key, ~20 ms with 1,000 stored).
const [span, step] = image ? [Number(process.env.SPAN ?? 40), Number(process.env.STEP ?? 1)] : [3, 0.05];
for (let back = 0; back <= span; back += step) {
  const t = await trial(eraseStart - back);
  if (t.ms > worst.ms) worst = { ...t, back };
}
console.log(`bench-collision.mjs${image ? ` ${image}` : ' (a fresh key)'}: clk_sys ${quiet.machine.clockHz / 1e6} MHz; flash timing ${quiet.machine.flashTimingName}`);
console.log(`the key erases ahead ${eraseStart.toFixed(1)} ms after power-up, for ${eraseMs} ms`);
console.log(`makeCredential after the erase ahead:                   ${quiet.ms.toFixed(1)} ms`);
console.log(`makeCredential sent ${worst.back.toFixed(2)} ms before the erase ahead starts: ${worst.ms.toFixed(1)} ms (erases while it waited: ${worst.during})`);
