#!/usr/bin/env node
// Exact emulated CPU cycles per request, from the first request packet to the last response
// packet ("total"). BOOTSEL is held beforehand, so no presence wait is included. "busy" counts
// the cycles the CPU executed (not asleep in WFI). ms at 125 MHz.
import { bootKey } from './lib/harness.mjs';
import { CMD } from './lib/ctaphid.mjs';
import { decodeCbor } from './lib/cbor.mjs';
import * as ctap2 from './lib/ctap2.mjs';
import * as u2f from './lib/u2f.mjs';

const rows = [];
const record = (name, r) => {
  rows.push({ name, busy: r.activeCycles, total: r.cycles });
  if (r.status !== undefined && r.status !== 0) throw new Error(`${name}: status 0x${r.status.toString(16)}`);
};

const { machine, hid } = await bootKey();
machine.bootselPressed = true;
await hid.init();
record('PING 64 B', await hid.transact(CMD.PING, new Uint8Array(64)));
record('getInfo', await hid.cbor(0x04));
const mc = await hid.cbor(0x01, ctap2.makeCredentialRequest().payload);
record('makeCredential (ES256)', mc);
const credId = ctap2.parseAuthData(decodeCbor(mc.body).get(2)).credentialId;
record('getAssertion (allowList)', await hid.cbor(0x02, ctap2.getAssertionRequest(credId).payload));
// clientPIN getKeyAgreement (pinUvAuthProtocol 2)
const ka = new Map([[1, 2], [2, 2]]);
const { encodeCbor } = await import('./lib/cbor.mjs');
record('clientPIN getKeyAgreement', await hid.cbor(0x06, encodeCbor(ka)));

// U2F (CTAP1 over CTAPHID_MSG): register, then authenticate with the key handle.
const app = ctap2.sha256('https://example.com');
const reg = await u2f.register(hid, ctap2.sha256('c1'), app);
if (reg.sw !== u2f.SW.NO_ERROR) throw new Error(`U2F register: SW ${reg.sw.toString(16)}`);
record('U2F register', reg);
const { keyHandle } = u2f.parseRegistration(reg.data);
const auth = await u2f.authenticate(hid, u2f.P1.ENFORCE, ctap2.sha256('c2'), app, keyHandle);
if (auth.sw !== u2f.SW.NO_ERROR) throw new Error(`U2F authenticate: SW ${auth.sw.toString(16)}`);
record('U2F authenticate', auth);

const fmt = (n) => n.toLocaleString('en-US').padStart(12);
console.log('request                       busy cycles   ms@125MHz   total cycles   ms@125MHz');
for (const r of rows) {
  console.log(`${r.name.padEnd(28)}${fmt(r.busy)}  ${(r.busy / 125e3).toFixed(1).padStart(9)}  ${fmt(r.total)}  ${(r.total / 125e3).toFixed(1).padStart(9)}`);
}
