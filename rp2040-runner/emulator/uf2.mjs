#!/usr/bin/env node
// Usage: node uf2.mjs firmware.elf firmware.uf2 — writes the ELF's flash image as UF2.
import fs from 'node:fs';
import { elfSegments, toUf2 } from './lib/image.mjs';

const [input, output] = process.argv.slice(2);
if (!input || !output) {
  console.error('usage: node uf2.mjs <firmware.elf> <firmware.uf2>');
  process.exit(2);
}
const uf2 = toUf2(elfSegments(new Uint8Array(fs.readFileSync(input))));
fs.writeFileSync(output, uf2);
console.log(`${output}: ${uf2.length / 512} blocks, ${uf2.length} bytes`);
