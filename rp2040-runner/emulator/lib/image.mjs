// Firmware images: ELF (PT_LOAD segments placed in XIP flash) and UF2 (reader and writer).
import fs from 'node:fs';

export const FLASH_BASE = 0x10000000;
const FLASH_END = 0x11000000;
export const UF2_MAGIC = [0x0a324655, 0x9e5d5157, 0x0ab16f30];
export const RP2040_FAMILY = 0xe48bff56;
const UF2_FLAG_FAMILY = 0x00002000;
const UF2_PAYLOAD = 256;

/** The flash contents of an ELF: [{ addr, data }] for each loadable segment in flash. */
export function elfSegments(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dv.getUint32(0, false) !== 0x7f454c46 || bytes[4] !== 1 || bytes[5] !== 1) {
    throw new Error('not a 32-bit little-endian ELF');
  }
  const phoff = dv.getUint32(28, true);
  const phentsize = dv.getUint16(42, true);
  const phnum = dv.getUint16(44, true);
  const segments = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    const [type, offset, , paddr, filesz] = [0, 4, 8, 12, 16].map((o) => dv.getUint32(ph + o, true));
    if (type === 1 && filesz > 0 && paddr >= FLASH_BASE && paddr < FLASH_END) {
      segments.push({ addr: paddr, data: bytes.subarray(offset, offset + filesz) });
    }
  }
  return segments;
}

/** Encode flash segments as UF2 blocks of 256 bytes, as the RP2040 boot ROM accepts them. */
export function toUf2(segments) {
  const pages = new Map(); // page address -> 256 bytes
  for (const { addr, data } of segments) {
    for (let i = 0; i < data.length; i++) {
      const a = addr + i;
      const page = a - (a % UF2_PAYLOAD);
      if (!pages.has(page)) pages.set(page, new Uint8Array(UF2_PAYLOAD));
      pages.get(page)[a - page] = data[i];
    }
  }
  const sorted = [...pages.keys()].sort((a, b) => a - b);
  const out = new Uint8Array(512 * sorted.length);
  const dv = new DataView(out.buffer);
  sorted.forEach((page, n) => {
    const b = 512 * n;
    dv.setUint32(b, UF2_MAGIC[0], true);
    dv.setUint32(b + 4, UF2_MAGIC[1], true);
    dv.setUint32(b + 8, UF2_FLAG_FAMILY, true);
    dv.setUint32(b + 12, page, true);
    dv.setUint32(b + 16, UF2_PAYLOAD, true);
    dv.setUint32(b + 20, n, true);
    dv.setUint32(b + 24, sorted.length, true);
    dv.setUint32(b + 28, RP2040_FAMILY, true);
    out.set(pages.get(page), b + 32);
    dv.setUint32(b + 508, UF2_MAGIC[2], true);
  });
  return out;
}

/** Decode a UF2 file into flash segments, checking every block's magic numbers. */
export function uf2Segments(bytes) {
  if (bytes.length % 512) throw new Error('UF2 size is not a multiple of 512');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const segments = [];
  for (let b = 0; b < bytes.length; b += 512) {
    if (dv.getUint32(b, true) !== UF2_MAGIC[0] || dv.getUint32(b + 4, true) !== UF2_MAGIC[1]
      || dv.getUint32(b + 508, true) !== UF2_MAGIC[2]) {
      throw new Error(`bad UF2 block at ${b}`);
    }
    const addr = dv.getUint32(b + 12, true);
    const size = dv.getUint32(b + 16, true);
    if (size > 476) throw new Error(`bad UF2 payload size ${size}`);
    segments.push({ addr, data: bytes.subarray(b + 32, b + 32 + size) });
  }
  return segments;
}

/** Read an .elf or .uf2 file into flash segments. */
export function readImage(path) {
  const bytes = new Uint8Array(fs.readFileSync(path));
  return path.endsWith('.uf2') ? uf2Segments(bytes) : elfSegments(bytes);
}

/** The address of a symbol in an ELF's symbol table (e.g. the firmware's HEAP_PEAK). */
export function elfSymbol(bytes, name) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const shoff = dv.getUint32(32, true);
  const shentsize = dv.getUint16(46, true);
  const shnum = dv.getUint16(48, true);
  const section = (i) => {
    const at = shoff + i * shentsize;
    return { type: dv.getUint32(at + 4, true), offset: dv.getUint32(at + 16, true),
      size: dv.getUint32(at + 20, true), link: dv.getUint32(at + 24, true) };
  };
  for (let i = 0; i < shnum; i++) {
    const symtab = section(i);
    if (symtab.type !== 2) continue; // SHT_SYMTAB
    const strtab = section(symtab.link);
    for (let at = symtab.offset; at < symtab.offset + symtab.size; at += 16) {
      let s = strtab.offset + dv.getUint32(at, true);
      let symbol = '';
      while (bytes[s] !== 0) symbol += String.fromCharCode(bytes[s++]);
      if (symbol === name) return dv.getUint32(at + 4, true);
    }
  }
  throw new Error(`no symbol ${name} in the ELF`);
}
