#!/usr/bin/env node
// Where the cycles go: samples the PC every 97 executed instructions during one request and
// prints the top functions (symbols from the ELF via arm-none-eabi-nm).
// Usage: node profile.mjs [makeCredential|getAssertion|wait]
import { execFileSync } from 'node:child_process';
import { bootKey, firmwarePath } from './lib/harness.mjs';
import { frame, CMD } from './lib/ctaphid.mjs';
import { decodeCbor } from './lib/cbor.mjs';
import * as ctap2 from './lib/ctap2.mjs';

const what = process.argv[2] ?? 'makeCredential';
// Text symbols in address order; a PC belongs to the last symbol starting at or below it.
const syms = execFileSync('arm-none-eabi-nm', ['-C', '-n', firmwarePath()], { encoding: 'utf8' })
  .split('\n').map((l) => /^([0-9a-f]{8}) [tTW] (.*)$/.exec(l)).filter(Boolean)
  .map((m) => ({ start: parseInt(m[1], 16) & ~1, name: m[2] }));
const lookup = (pc) => {
  let lo = 0, hi = syms.length - 1, best = null;
  while (lo <= hi) { const mid = (lo + hi) >> 1; if (syms[mid].start <= pc) { best = syms[mid]; lo = mid + 1; } else hi = mid - 1; }
  return best ? best.name : `?${pc.toString(16)}`;
};

const { machine, hid, host } = await bootKey();
await hid.init();
let credId;
if (what === 'getAssertion') {
  machine.bootselPressed = true;
  const mc = await hid.cbor(0x01, ctap2.makeCredentialRequest().payload);
  credId = ctap2.parseAuthData(decodeCbor(mc.body).get(2)).credentialId;
}
machine.bootselPressed = what !== 'wait';
const counts = new Map();
const core = machine.core;
const exec = core.executeInstruction.bind(core);
let n = 0;
core.executeInstruction = () => {
  if (++n % 97 === 0) { const f = process.env.RAW ? core.PC.toString(16) : process.env.CALLER ? lookup(core.PC) + " <- " + lookup(core.LR & ~1) : lookup(core.PC); counts.set(f, (counts.get(f) ?? 0) + 1); }
  return exec();
};
const payload = what === 'getAssertion' ? ctap2.getAssertionRequest(credId).payload : ctap2.makeCredentialRequest().payload;
if (what === 'wait') {
  const p = new Uint8Array(1 + payload.length); p[0] = 1; p.set(payload, 1);
  for (const x of frame(hid.cid, CMD.CBOR, p)) host.sendReport(x);
  await machine.run({ maxCycles: 125_000_000 });
} else {
  await hid.cbor(what === 'getAssertion' ? 0x02 : 0x01, payload);
}
const total = [...counts.values()].reduce((a, b) => a + b, 0);
for (const [f, c] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, process.env.RAW ? 100000 : 15)) {
  console.log(`${(100 * c / total).toFixed(1).padStart(5)} %  ${f.slice(0, 110)}`);
}
