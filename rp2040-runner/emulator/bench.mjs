#!/usr/bin/env node
// Exact emulated CPU cycles per request, from the first request packet to the last response
// packet ("total"). BOOTSEL is held beforehand, so no presence wait is included. "busy" counts
// the cycles the CPU executed (not asleep in WFI), flash waits included. ms at the firmware's
// clock; flash erases and programs take the W25Q16JV's typical times (PICO_FLASH_TIMING=max for
// the datasheet's maximum). The host keeps USB 2.0's attach and reset waits (usbhost.mjs).
import { bootKey } from './lib/harness.mjs';
import { CMD } from './lib/ctaphid.mjs';
import { decodeCbor, encodeCbor } from './lib/cbor.mjs';
import * as ctap2 from './lib/ctap2.mjs';
import * as u2f from './lib/u2f.mjs';
import { ClientPin, PERMISSION } from './lib/clientpin.mjs';
import { Rows } from './lib/report.mjs';

const ok = (name) => (r) => {
  const status = r.status ?? (r.sw === undefined || r.sw === u2f.SW.NO_ERROR ? 0 : r.sw);
  if (status !== 0) throw new Error(`${name}: status 0x${status.toString(16)}`);
  return r;
};

// A fresh key (first power-up: the state is formatted then).
const { machine, host, hid } = await bootKey();
const rows = new Rows(machine);
const record = async (name, run) => ok(name)(await rows.measure(name, run));
// The key left idle for `ms` (no request): the erase-ahead steps run then (a plan, one erase).
const idle = (name, ms) => {
  const end = machine.nowMs + ms;
  return rows.measure(name, () => machine.run({ until: () => machine.nowMs >= end, maxCycles: 2_000_000_000 }));
};
rows.note('power-up to USB enabled (first boot)', host.enabledAt.ms);
machine.bootselPressed = true;
await hid.init();
await record('PING 64 B', () => hid.transact(CMD.PING, new Uint8Array(64)));
await record('getInfo', () => hid.cbor(0x04));
await idle('idle 500 ms after power-up (erasing ahead)', 500);
const mc = await record('makeCredential (ES256)', () => hid.cbor(0x01, ctap2.makeCredentialRequest().payload));
const credId = ctap2.parseAuthData(decodeCbor(mc.body).get(2)).credentialId;
await idle('idle 500 ms (erasing ahead)', 500);
await record('makeCredential (discoverable), after 500 ms idle', () => hid.cbor(0x01, ctap2.makeCredentialRequest({ rk: true }).payload));
// The same user again (its credential is replaced), sent as soon as the previous answer is
// in: the key is planning its erase ahead then, and finishes that step first.
await record('makeCredential (discoverable), sent at once', () => hid.cbor(0x01, ctap2.makeCredentialRequest({ rk: true }).payload));
await record('getAssertion (allowList)', () => hid.cbor(0x02, ctap2.getAssertionRequest(credId).payload));

// clientPIN (pinUvAuthProtocol 2): a PIN is set, then a platform asks for a token as it does
// before each use: getKeyAgreement, then getPinUvAuthTokenUsingPinWithPermissions.
const pin = new ClientPin(hid);
await pin.session();
ok('setPIN')(await pin.setPin('4711 pico'));
await record('clientPIN getKeyAgreement', () => hid.cbor(0x06, encodeCbor(new Map([[1, 2], [2, 2]]))));
await pin.session();
await record('clientPIN getPinUvAuthToken', () => pin.token('4711 pico', PERMISSION.getAssertion, ctap2.RP_ID));

// U2F (CTAP1 over CTAPHID_MSG): register, then authenticate with the key handle.
const app = ctap2.sha256('https://example.com');
const reg = await record('U2F register', () => u2f.register(hid, ctap2.sha256('c1'), app));
const { keyHandle } = u2f.parseRegistration(reg.data);
await record('U2F authenticate', () => u2f.authenticate(hid, u2f.P1.ENFORCE, ctap2.sha256('c2'), app, keyHandle));

// Power cycle: the first getAssertion after power-up, sent as soon as the host has enumerated
// the key, then the same again.
const again = await bootKey({ flash: machine.snapshotFlash() });
again.machine.bootselPressed = true;
const cycled = new Rows(again.machine);
cycled.note('power-up to USB enabled', again.host.enabledAt.ms);
cycled.note('power-up to enumerated', again.machine.nowMs);
await again.hid.init();
const first = () => again.hid.cbor(0x02, ctap2.getAssertionRequest(credId).payload);
ok('first getAssertion')(await cycled.measure('first getAssertion after power-up', first));
ok('getAssertion')(await cycled.measure('getAssertion (allowList), again', first));

rows.print('bench.mjs, a fresh key');
cycled.print('bench.mjs, after a power cycle');
