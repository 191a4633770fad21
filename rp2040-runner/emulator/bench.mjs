#!/usr/bin/env node
// Exact emulated CPU cycles per request, from the first request packet to the last response
// packet ("total"). BOOTSEL is held beforehand, so no presence wait is included. "busy" counts
// the cycles the CPU executed (not asleep in WFI), flash waits included. ms at the firmware's
// clock; flash erases and programs take the W25Q16JV's typical times (PICO_FLASH_TIMING=max for
// the datasheet's maximum).
import { bootKey } from './lib/harness.mjs';
import { CMD } from './lib/ctaphid.mjs';
import { decodeCbor } from './lib/cbor.mjs';
import * as ctap2 from './lib/ctap2.mjs';
import * as u2f from './lib/u2f.mjs';
import { Rows } from './lib/report.mjs';

const { machine, hid } = await bootKey();
const rows = new Rows(machine);
const record = async (name, run) => {
  const r = await rows.measure(name, run);
  if (r.status !== undefined && r.status !== 0) throw new Error(`${name}: status 0x${r.status.toString(16)}`);
  return r;
};
machine.bootselPressed = true;
await hid.init();
await record('PING 64 B', () => hid.transact(CMD.PING, new Uint8Array(64)));
await record('getInfo', () => hid.cbor(0x04));
const mc = await record('makeCredential (ES256)', () => hid.cbor(0x01, ctap2.makeCredentialRequest().payload));
const credId = ctap2.parseAuthData(decodeCbor(mc.body).get(2)).credentialId;
await record('getAssertion (allowList)', () => hid.cbor(0x02, ctap2.getAssertionRequest(credId).payload));
// clientPIN getKeyAgreement (pinUvAuthProtocol 2)
const ka = new Map([[1, 2], [2, 2]]);
const { encodeCbor } = await import('./lib/cbor.mjs');
await record('clientPIN getKeyAgreement', () => hid.cbor(0x06, encodeCbor(ka)));

// U2F (CTAP1 over CTAPHID_MSG): register, then authenticate with the key handle.
const app = ctap2.sha256('https://example.com');
const reg = await record('U2F register', () => u2f.register(hid, ctap2.sha256('c1'), app));
if (reg.sw !== u2f.SW.NO_ERROR) throw new Error(`U2F register: SW ${reg.sw.toString(16)}`);
const { keyHandle } = u2f.parseRegistration(reg.data);
const auth = await record('U2F authenticate', () => u2f.authenticate(hid, u2f.P1.ENFORCE, ctap2.sha256('c2'), app, keyHandle));
if (auth.sw !== u2f.SW.NO_ERROR) throw new Error(`U2F authenticate: SW ${auth.sw.toString(16)}`);

rows.print('bench.mjs');
