#!/usr/bin/env node
// Where the credential index's load at power-up goes (the first call of Store::slots, which
// reads the index): its start and end, littlefs calls counted (metadata fetches, opens, reads,
// bytes CRC'd), reads per flash block, and the PC sampled every 97 instructions. Prints figures.
//
//   node profile-index.mjs IMAGE               booted from a pico_state_image state
//   WITH_COPY=1 node profile-index.mjs IMAGE   after a quiet while (the index copy stored)
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { bootKey, firmwarePath } from './lib/harness.mjs';
import { Machine } from './lib/machine.mjs';
import { UsbHost } from './lib/usbhost.mjs';
import { CtaphidClient } from './lib/ctaphid.mjs';
const syms = execFileSync('arm-none-eabi-nm', ['-C', '-n', firmwarePath()], { encoding: 'utf8' })
  .split('\n').map((l) => /^([0-9a-f]{8}) [tTW] (.*)$/.exec(l)).filter(Boolean)
  .map((m) => ({ start: parseInt(m[1], 16) & ~1, name: m[2] }));
const lookup = (pc) => { let lo = 0, hi = syms.length - 1, best = null;
  while (lo <= hi) { const mid = (lo + hi) >> 1; if (syms[mid].start <= pc) { best = syms[mid]; lo = mid + 1; } else hi = mid - 1; }
  return best ? best.name : `?${pc.toString(16)}`; };
const addr = (name) => syms.find((s) => s.name === name)?.start;
const SLOTS = addr('authenticator::store::Store<S>::slots');
const counted = { lfs_dir_fetchmatch: 0, lfs_file_opencfg: 0, lfs_file_read: 0, lfs_bd_read: 0, 'lfs_bd_read.constprop.0': 0, lfs_crc: 0, 'littlefs2::fs::Filesystem<Storage>::lfs_config_read': 0 };
const at = new Map(Object.keys(counted).map((k) => [addr(k), k]));
let crcBytes = 0; const blocks = new Map();
const first = await bootKey();
const flash = first.machine.snapshotFlash();
flash.set(fs.readFileSync(process.argv[2]), 0x7B000);
let flash2 = flash;
if (process.env.WITH_COPY) {
  const pre = new Machine(firmwarePath(), { flash });
  const h = new UsbHost(pre); await h.enumerate(); await h.wait(6000);
  flash2 = pre.snapshotFlash();
}
const machine = new Machine(firmwarePath(), { flash: flash2 });
const core = machine.core; const exec = core.executeInstruction.bind(core);
const counts = new Map(); let n = 0; let state = 0, ret = 0, t0 = 0, t1 = 0;
core.executeInstruction = () => {
  const pc = core.PC;
  if (state === 0 && pc === SLOTS) { state = 1; ret = core.LR & ~1; t0 = machine.cycles; console.log(`index load starts at ${machine.nowMs.toFixed(2)} ms`); }
  else if (state === 1 && pc === ret) { state = 2; t1 = machine.cycles; console.log(`index load ends at ${machine.nowMs.toFixed(2)} ms: ${t1 - t0} cycles`); }
  if (state === 1) {
    const f = at.get(pc);
    if (f) { counted[f]++; if (f === 'lfs_crc') crcBytes += core.registers[2]; if (f.endsWith('lfs_config_read')) { const b = core.registers[1]; blocks.set(b, (blocks.get(b) ?? 0) + 1); } }
    if (++n % 97 === 0) { const g = lookup(pc); counts.set(g, (counts.get(g) ?? 0) + 1); }
  }
  return exec();
};
const host = new UsbHost(machine);
await host.enumerate();
console.log(`USB enabled at ${host.enabledAt.ms.toFixed(2)} ms; enumerated at ${machine.nowMs.toFixed(2)} ms`);
const hid = new CtaphidClient(host);
await hid.init();
await hid.cbor(0x04);
console.log(`getInfo answered at ${machine.nowMs.toFixed(2)} ms`);
console.log(counted, `crc bytes ${crcBytes}`);
console.log('reads per block (top):', [...blocks].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([b, c]) => `${b}:${c}`).join(' '), `blocks ${blocks.size}`);
const total = [...counts.values()].reduce((a, b) => a + b, 0);
for (const [f, c] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 16)) console.log(`${(100 * c / total).toFixed(1).padStart(5)} %  ${f.slice(0, 120)}`);
