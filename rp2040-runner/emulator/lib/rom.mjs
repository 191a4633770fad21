// A stand-in for the RP2040 boot ROM, built here in JS (no Raspberry Pi binary).
//
// Only what the firmware reaches is laid out, at the addresses the datasheet gives (§2.8.3):
// the magic 'M','u',1 at 0x10, 16-bit pointers to the function table (0x14), the data table
// (0x16) and the lookup routine (0x18). Every routine is the two instructions `bkpt #n; bx lr`;
// the harness catches the BKPT and does the routine's work in JS, with a rough cycle cost.

const ROM_SIZE = 16 * 1024;
const FUNC_TABLE = 0x200;
const DATA_TABLE = 0x300;
const STUBS = 0x400;
const LOOKUP_AT = 0x100;
const RESET_AT = 0x0f0;
const BKPT_LOOKUP = 0xd0;
const BKPT_RESET = 0xf0;
const BKPT_FIRST_FUNC = 0x80;
const APP_VECTORS = 0x10000100;

const tag = (s) => s.charCodeAt(0) | (s.charCodeAt(1) << 8);

/**
 * Routines by two-letter tag: each gets (mcu, r) with r the core's registers and returns the
 * cycles it should cost. Flash routines act on mcu.flash (offsets, NOR semantics).
 */
function routines(hooks) {
  const rd8 = (mcu, a) => mcu.readUint8(a >>> 0);
  const wr8 = (mcu, a, v) => mcu.writeUint8(a >>> 0, v);
  const noop = () => 4;
  return {
    P3: (mcu, r) => { let x = r[0] >>> 0, n = 0; for (; x; x >>>= 1) n += x & 1; r[0] = n; return 20; },
    R3: (mcu, r) => { let x = r[0] >>> 0, y = 0; for (let i = 0; i < 32; i++, x >>>= 1) y = (y << 1) | (x & 1); r[0] = y >>> 0; return 20; },
    L3: (mcu, r) => { r[0] = Math.clz32(r[0]); return 15; },
    T3: (mcu, r) => { const x = r[0] >>> 0; r[0] = x === 0 ? 32 : 31 - Math.clz32(x & -x); return 15; },
    MS: (mcu, r) => { const [p, c, n] = [r[0] >>> 0, r[1] & 0xff, r[2] >>> 0]; for (let i = 0; i < n; i++) wr8(mcu, p + i, c); return 10 + (n >>> 1); },
    MC: (mcu, r) => { const [d, s, n] = [r[0] >>> 0, r[1] >>> 0, r[2] >>> 0]; for (let i = 0; i < n; i++) wr8(mcu, d + i, rd8(mcu, s + i)); return 10 + n; },
    IF: noop, EX: noop, FC: noop, CX: noop,
    RE: (mcu, r) => {
      const [off, n] = [r[0] >>> 0, r[1] >>> 0];
      if (off % 4096 || n % 4096) throw new Error(`stub ROM: unaligned erase ${off.toString(16)}+${n}`);
      mcu.flash.fill(0xff, off, off + n);
      hooks.onFlash?.('erase', off, n);
      return 100;
    },
    RP: (mcu, r) => {
      const [off, src, n] = [r[0] >>> 0, r[1] >>> 0, r[2] >>> 0];
      if (off % 256 || n % 256) throw new Error(`stub ROM: unaligned program ${off.toString(16)}+${n}`);
      for (let i = 0; i < n; i++) mcu.flash[off + i] &= rd8(mcu, src + i); // NOR: only clears bits
      hooks.onFlash?.('program', off, n);
      return 100;
    },
  };
}
// memset4 / memcpy44 behave like their byte versions for the lengths the HAL passes.
const ALIASES = { S4: 'MS', C4: 'MC' };

export function installStubRom(mcu, hooks = {}) {
  const impl = routines(hooks);
  const tags = [...Object.keys(impl), ...Object.keys(ALIASES)];
  const rom = new Uint8Array(ROM_SIZE);
  const dv = new DataView(rom.buffer);
  const thumbStub = (addr, imm) => {
    dv.setUint16(addr, 0xbe00 | imm, true); // bkpt #imm
    dv.setUint16(addr + 2, 0x4770, true); // bx lr
  };
  dv.setUint32(0, 0x20042000, true); // initial SP
  dv.setUint32(4, RESET_AT | 1, true); // reset vector
  rom.set([0x4d, 0x75, 0x01, 0x02], 0x10); // 'M' 'u' 1, ROM version 2
  dv.setUint16(0x14, FUNC_TABLE, true);
  dv.setUint16(0x16, DATA_TABLE, true);
  dv.setUint16(0x18, LOOKUP_AT | 1, true);
  thumbStub(RESET_AT, BKPT_RESET);
  thumbStub(LOOKUP_AT, BKPT_LOOKUP);
  tags.forEach((t, i) => {
    dv.setUint16(FUNC_TABLE + 4 * i, tag(t), true);
    dv.setUint16(FUNC_TABLE + 4 * i + 2, (STUBS + 4 * i) | 1, true);
    thumbStub(STUBS + 4 * i, BKPT_FIRST_FUNC + i);
  });
  // Data table: only the copyright string; no float tables (the firmware uses no floats).
  dv.setUint16(DATA_TABLE, tag('CR'), true);
  dv.setUint16(DATA_TABLE + 2, 0x380, true);
  rom.set(new TextEncoder().encode('rp2040-runner stub ROM\0'), 0x380);
  mcu.loadBootrom(new Uint32Array(rom.buffer));

  const core = mcu.core;
  const r = core.registers;
  const previous = mcu.onBreak;
  mcu.onBreak = (imm) => {
    if (imm === BKPT_RESET) {
      // Skip boot2 (rp2040js runs XIP reads without it) and enter the application.
      core.VTOR = APP_VECTORS;
      core.SP = mcu.readUint32(APP_VECTORS);
      core.PC = mcu.readUint32(APP_VECTORS + 4) & ~1;
      return;
    }
    if (imm === BKPT_LOOKUP) {
      // rom_table_lookup(table, code): entries of (u16 code, u16 pointer), ended by code 0.
      const want = r[1] & 0xffff;
      let result = 0;
      for (let p = r[0] >>> 0; mcu.readUint16(p) !== 0; p += 4) {
        if (mcu.readUint16(p) === want) { result = mcu.readUint16(p + 2); break; }
      }
      r[0] = result;
      return;
    }
    const i = imm - BKPT_FIRST_FUNC;
    if (i >= 0 && i < tags.length) {
      const name = ALIASES[tags[i]] ?? tags[i];
      // The routine first: it may move the clock on itself (a flash wait, see machine.mjs).
      const cost = impl[name](mcu, r);
      core.cycles += cost;
      return;
    }
    previous?.(imm);
  };
}
