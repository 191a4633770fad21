// Shared test/bench setup: the firmware path, and a booted, enumerated key.
import path from 'node:path';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Machine } from './machine.mjs';
import { UsbHost } from './usbhost.mjs';
import { CtaphidClient } from './ctaphid.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
export const FIRMWARE = process.env.RP2040_FIRMWARE
  ?? path.join(here, '../../target/thumbv6m-none-eabi/release/rp2040-runner');

export function firmwarePath() {
  if (!fs.existsSync(FIRMWARE)) {
    throw new Error(`${FIRMWARE} missing: run \`cargo build --release\` in rp2040-runner first`);
  }
  return FIRMWARE;
}

/** Boot the firmware (optionally from saved flash) and enumerate it. Other options go to the
 * Machine (roscSeed, flashUid). */
export async function bootKey({ flash, image = firmwarePath(), ...options } = {}) {
  const machine = new Machine(image, { flash, ...options });
  const host = new UsbHost(machine);
  const info = await host.enumerate();
  return { machine, host, info, hid: new CtaphidClient(host) };
}
