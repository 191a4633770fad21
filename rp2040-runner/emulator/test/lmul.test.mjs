// The firmware's __aeabi_lmul (src/lmul.rs, Thumb assembly: the 64-bit multiply p256's field
// arithmetic calls for every limb product) as linked: called directly in the emulated core with
// edge cases and random operands, its result must be the product modulo 2^64, to the bit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Machine } from '../lib/machine.mjs';
import { firmwarePath } from '../lib/harness.mjs';
import { elfSymbol } from '../lib/image.mjs';

const RETURN_TO = 0x20040000; // a BKPT in SRAM the function returns to
const STOP = 0x42;

test('__aeabi_lmul returns a × b mod 2^64 for edge cases and 20,000 random operands', () => {
  const elf = fs.readFileSync(firmwarePath());
  const lmul = elfSymbol(elf, '__aeabi_lmul');
  const machine = new Machine(firmwarePath());
  const { mcu, core } = machine;
  mcu.writeUint16(RETURN_TO, 0xbe00 | STOP); // bkpt #STOP
  let returned = false;
  const onBreak = mcu.onBreak;
  mcu.onBreak = (imm) => { if (imm === STOP) returned = true; else onBreak(imm); };
  const call = (a, b) => {
    const r = core.registers;
    r[0] = Number(a & 0xffffffffn); r[1] = Number(a >> 32n);
    r[2] = Number(b & 0xffffffffn); r[3] = Number(b >> 32n);
    core.SP = 0x20041000;
    core.LR = RETURN_TO | 1;
    core.PC = lmul & ~1;
    returned = false;
    for (let i = 0; i < 200 && !returned; i++) core.executeInstruction();
    assert.ok(returned, 'returned');
    return (BigInt(r[1] >>> 0) << 32n) | BigInt(r[0] >>> 0);
  };
  const M = (1n << 64n) - 1n;
  const edges = [0n, 1n, 2n, 0xffffn, 0x10000n, 0xffffffffn, 0x100000000n, 0xffff0000ffffn,
    0x8000000000000000n, 0x7fffffffffffffffn, M];
  const random64 = () => crypto.randomBytes(8).readBigUInt64LE();
  const random32 = () => BigInt(crypto.randomBytes(4).readUInt32LE());
  const pairs = [];
  for (const a of edges) for (const b of edges) pairs.push([a, b]);
  // Most calls multiply two zero-extended 32-bit limbs: half the random ones are such.
  for (let i = 0; i < 10_000; i++) pairs.push([random32(), random32()], [random64(), random64()]);
  for (const [a, b] of pairs) {
    const got = call(a, b);
    assert.equal(got, (a * b) & M, `${a.toString(16)} × ${b.toString(16)}`);
  }
});
