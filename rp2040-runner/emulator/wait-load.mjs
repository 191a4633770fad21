#!/usr/bin/env node
// The CPU load while a request waits for the button: one emulated second of a makeCredential's
// presence wait (after its first second), with the share of cycles executed (not asleep in WFI)
// and how often each exception was entered. Usage: node wait-load.mjs
import { bootKey } from './lib/harness.mjs';
import { frame, CMD } from './lib/ctaphid.mjs';
import * as ctap2 from './lib/ctap2.mjs';

const NAMES = { 15: 'SysTick', 16: 'TIMER_IRQ_0', 17: 'TIMER_IRQ_1', 21: 'USBCTRL_IRQ' };
const { machine, hid, host } = await bootKey();
await hid.init();
const core = machine.core;
const entries = new Map();
const entry = core.exceptionEntry.bind(core);
core.exceptionEntry = (n) => { entries.set(n, (entries.get(n) ?? 0) + 1); return entry(n); };
const payload = ctap2.makeCredentialRequest().payload;
const p = new Uint8Array(1 + payload.length); p[0] = 1; p.set(payload, 1);
for (const x of frame(hid.cid, CMD.CBOR, p)) host.sendReport(x);
await machine.run({ maxCycles: 125_000_000 }); // the request starts waiting
entries.clear();
const active = machine.activeCycles, cycles = machine.cycles;
await machine.run({ maxCycles: 125_000_000 });
const busy = machine.activeCycles - active, total = machine.cycles - cycles;
console.log(`presence wait: ${busy.toLocaleString('en-US')} of ${total.toLocaleString('en-US')} cycles executed (${(100 * busy / total).toFixed(2)} % CPU)`);
for (const [n, c] of [...entries].sort((a, b) => a[0] - b[0])) console.log(`  ${(NAMES[n] ?? `exception ${n}`).padEnd(12)} entered ${c} times`);
