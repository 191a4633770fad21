#!/usr/bin/env node
// How the firmware samples the ring oscillator at boot (figures, not a test): how many RANDOMBIT
// reads, how far apart in CPU cycles and in time, what that is in oscillator periods across
// the datasheet's frequency range, and what the sampling costs the boot. The emulated ROSC is a
// pseudo-random model, so this tells the sampling schedule, never the quality of the bits: how
// correlated consecutive samples are is a property of the chip (docs/entropy.md).
import { Machine } from './lib/machine.mjs';
import { UsbHost } from './lib/usbhost.mjs';
import { firmwarePath } from './lib/harness.mjs';

const machine = new Machine(firmwarePath());
const host = new UsbHost(machine);
const enabled = machine.mcu.usbCtrl.onUSBEnabled;
let usbAt = null;
machine.mcu.usbCtrl.onUSBEnabled = () => { usbAt ??= { cycles: machine.cycles, ns: machine.clock.nanos }; enabled(); };
await host.enumerate();

const reads = machine.roscReads;
if (reads.length < 2) throw new Error(`${reads.length} RANDOMBIT reads`);
const first = reads[0];
const last = reads.at(-1);
const mhz = (last.cycles - first.cycles) / ((last.ns - first.ns) / 1000);
const intervals = reads.slice(1).map((r, i) => r.cycles - reads[i].cycles).sort((a, b) => a - b);
const at = (q) => intervals[Math.min(intervals.length - 1, Math.floor(q * intervals.length))];
const us = (cycles) => cycles / mhz;
const f = (x, d = 2) => x.toLocaleString('en-US', { maximumFractionDigits: d });

console.log(`CPU clock (cycles per emulated µs while sampling): ${f(mhz, 1)} MHz`);
console.log(`RANDOMBIT reads at boot: ${reads.length}`);
console.log(`interval between reads, cycles: min ${f(intervals[0])}, median ${f(at(0.5))}, max ${f(intervals.at(-1))}`);
console.log(`interval between reads, µs: min ${f(us(intervals[0]))}, median ${f(us(at(0.5)))}, max ${f(us(intervals.at(-1)))}`);
// The datasheet: the ROSC clock is 1.8 to 12 MHz (6.5 typical) after its divider, 16 by
// default, so the ring itself runs 16 times faster; it does not say which RANDOMBIT samples.
for (const [what, mhzs] of [['divided ROSC clock', [1.8, 6.5, 12]], ['ring itself (x16)', [28.8, 104, 192]]]) {
  for (const roscMhz of mhzs) {
    console.log(`  ${what} at ${roscMhz} MHz: ${f(us(intervals[0]) * roscMhz, 1)} to ${f(us(intervals.at(-1)) * roscMhz, 1)} periods between reads`);
  }
}
const span = last.cycles - first.cycles;
console.log(`sampling, first read to last: ${f(span, 0)} cycles = ${f(us(span) / 1000, 2)} ms`);
console.log(`first read at ${f(first.cycles, 0)} cycles (${f(first.ns / 1e6, 2)} ms) after reset`);
if (usbAt) console.log(`USB enabled at ${f(usbAt.cycles, 0)} cycles (${f(usbAt.ns / 1e6, 1)} ms) after reset`);
