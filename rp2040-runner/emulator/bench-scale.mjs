#!/usr/bin/env node
// The Pico with its store full of credentials: exact emulated cycles (and ms at the firmware's
// clock, flash erase and program times included, see bench.mjs) for
// makeCredential, getAssertion with an allow list and a discovery getAssertion, booted from a
// state partition the core's own code filled on the host (authenticator's example
// `pico_state_image`: maximal credentials, RP IDs of 256 bytes), then again after a quiet
// while (the key stores a copy of its credential index) and a power cycle. Prints figures.
//
//   node bench-scale.mjs IMAGE [RP]   RP: `shared` (the RP holding many) or a number
import fs from 'node:fs';
import { bootKey, firmwarePath } from './lib/harness.mjs';
import { elfSymbol } from './lib/image.mjs';
import { decodeCbor, encodeCbor } from './lib/cbor.mjs';
import * as ctap2 from './lib/ctap2.mjs';
import { Rows } from './lib/report.mjs';

/** pico_state_image writes the flash from the vault (0x7B000) to the end: vault, seed sector, state. */
const IMAGE_OFFSET = 0x7B000;
const [image, which = 'shared'] = process.argv.slice(2);
if (!image) throw new Error('usage: bench-scale.mjs IMAGE [shared|N]');

const padded = (prefix, len, fill) => prefix + fill.repeat(Math.max(0, len - prefix.length));
const rpId = (label) => `${padded(`rp-${label}.`, 248, 'r')}.example`;
const rp = rpId(which);

// Boot once for the firmware's flash, put the pre-filled state behind it, and boot from that.
const first = await bootKey();
const flash = first.machine.snapshotFlash();
flash.set(fs.readFileSync(image), IMAGE_OFFSET);
const { machine, hid, host } = await bootKey({ flash });
machine.bootselPressed = true;
await hid.init();

/** The requests of one power-up, as rows: the first request, then the steady ones. */
async function session(machine, hid, rows, when) {
  const record = async (name, run) => {
    const r = await rows.measure(name, run);
    if (r.status !== 0) throw new Error(`${name}: status 0x${r.status.toString(16)}`);
    return decodeCbor(r.body);
  };
  // The first request after power-up also waits for what the firmware does after USB is up
  // (the RNG, the basepoint table, the credential index: with 1,000 stored, the most of it).
  await record(`getInfo, first request after power-up (${when})`, () => hid.cbor(0x04));
  const discovery = await record(`discovery getAssertion (${which})`, () => hid.cbor(0x02, encodeCbor(new Map([
    [1, rp], [2, ctap2.sha256('discover')],
  ]))));
  const count = discovery.get(5) ?? 1;
  const credentialId = discovery.get(1).get('id');
  // Before any other request: a new one ends the series (§6.3).
  if (count > 1) await record('getNextAssertion', () => hid.cbor(0x08));
  await record('getAssertion (allowList)', () => hid.cbor(0x02, encodeCbor(new Map([
    [1, rp], [2, ctap2.sha256('assert')],
    [3, [new Map([['id', credentialId], ['type', 'public-key']])]],
  ]))));
  const name = padded(`name-${when}-`, 64, 'n');
  const makeRk = (label) => hid.cbor(0x01, encodeCbor(new Map([
    [1, ctap2.sha256('make')],
    [2, new Map([['id', rp]])],
    [3, new Map([['id', new TextEncoder().encode(padded(`user-${when}-${label}-`, 64, 'u'))], ['name', name], ['displayName', name]])],
    [4, [new Map([['alg', -7], ['type', 'public-key']])]],
    [6, new Map([['credBlob', new Uint8Array(32).fill(0xab)]])],
    [7, new Map([['rk', true]])],
  ])));
  // Sent as soon as the previous answer is in: the key has not erased ahead yet (it waits for
  // 100 ms without a request), so littlefs erases the block it takes.
  await record('makeCredential (rk, maximal), sent at once', () => makeRk('at-once'));
  // The key left idle (no request) long enough for its erase-ahead steps: a plan, one erase.
  const idleUntil = machine.nowMs + 500;
  await rows.measure('idle 500 ms (erasing ahead)', () => machine.run({ until: () => machine.nowMs >= idleUntil, maxCycles: 2_000_000_000 }));
  await record('makeCredential (rk, maximal), after 500 ms idle', () => makeRk('idle'));
  return count;
}

// The image holds no copy of the index (as after a power-up with a registration): the first
// request waits for every slot file's header. The key then stores a copy once quiet (2 s), so
// the next power-up reads the index from it.
const rows = new Rows(machine);
const count = await session(machine, hid, rows, 'no index copy');
const copyAt = machine.flashOps.length;
const busyBefore = machine.flashBusyCycles;
await host.wait(6000);
const copyOps = machine.flashOps.slice(copyAt);
const erases = copyOps.filter((o) => o.op === 'erase').length;
const pages = copyOps.filter((o) => o.op === 'program').reduce((n, o) => n + o.len / 256, 0);
rows.note(`quiet 6 s: index copy written, erases ahead done (${erases} erases, ${pages} pages), flash ms`, machine.ms(machine.flashBusyCycles - busyBefore));

const again = await bootKey({ flash: machine.snapshotFlash() });
again.machine.bootselPressed = true;
await again.hid.init();
const cycled = new Rows(again.machine);
cycled.note('power-up to USB enabled', again.host.enabledAt.ms);
cycled.note('power-up to enumerated', again.machine.nowMs);
await session(again.machine, again.hid, cycled, 'index copy');
const info = decodeCbor((await again.hid.cbor(0x04)).body);

// The firmware's high-water mark of heap use since this boot (index, littlefs, every request).
const peakAt = elfSymbol(fs.readFileSync(firmwarePath()), 'HEAP_PEAK');
const heapPeak = Math.max(machine.mcu.readUint32(peakAt), again.machine.mcu.readUint32(peakAt));

console.log(`${image}: ${count} credential(s) on the RP asked; remaining after four more: ${info.get(0x14)}; heap peak ${heapPeak} of 98,304 bytes`);
rows.print('bench-scale.mjs, booted from the image');
cycled.print('bench-scale.mjs, after a quiet while and a power cycle');
