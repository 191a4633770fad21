// End-to-end tests of the Pico firmware in rp2040js: USB enumeration, CTAPHID, CTAP2 getInfo,
// BOOTSEL as presence, and state surviving a power cycle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { bootKey } from '../lib/harness.mjs';
import { CMD, BROADCAST, frame } from '../lib/ctaphid.mjs';
import { decodeCbor } from '../lib/cbor.mjs';

const FIDO_REPORT_DESCRIPTOR_HEAD = [0x06, 0xd0, 0xf1, 0x09, 0x01];

test('enumerates as a FIDO HID device with identity strings', async () => {
  const { info } = await bootKey();
  assert.equal(info.vid, 0x1209);
  assert.equal(info.pid, 0x0001);
  assert.equal(info.manufacturer, 'Open FIDO Key');
  assert.equal(info.product, 'Open FIDO Key (Pico)');
  assert.match(info.serial, /^[0-9A-F]{16}$/);
  assert.equal(info.interfaces.length, 1);
  assert.equal(info.interfaces[0].cls, 3);
  assert.deepEqual([...info.reportDescriptor.subarray(0, 5)], FIDO_REPORT_DESCRIPTOR_HEAD);
  const eps = info.endpoints.map((e) => [e.address & 0x80, e.attributes & 3, e.maxPacket]);
  assert.deepEqual(eps.sort(), [[0, 3, 64], [0x80, 3, 64]].sort());
});

test('an unknown descriptor request is stalled', async () => {
  const { host } = await bootKey();
  // DEVICE_QUALIFIER: a full-speed-only device must STALL it.
  await assert.rejects(host.getDescriptor(6, 0, 10), /STALL/);
});

test('CTAPHID INIT allocates distinct channels and echoes the nonce', async () => {
  const { hid } = await bootKey();
  const a = await hid.init();
  assert.notEqual(a.cid, 0);
  assert.notEqual(a.cid, BROADCAST);
  assert.equal(a.protocol, 2);
  assert.ok(a.capabilities & 0x04, 'CBOR capability');
  const b = await hid.init();
  assert.notEqual(b.cid, a.cid);
});

test('CTAPHID PING echoes a multi-packet message', async () => {
  const { hid } = await bootKey();
  await hid.init();
  const payload = new Uint8Array(crypto.randomBytes(300));
  const r = await hid.transact(CMD.PING, payload);
  assert.equal(r.cmd, CMD.PING);
  assert.deepEqual(Buffer.from(r.data), Buffer.from(payload));
});

test('CTAPHID errors: unknown channel and bad sequence', async () => {
  const { hid, host } = await bootKey();
  await hid.init();
  const r = await hid.transact(CMD.PING, new Uint8Array(4), { cid: 0x12345678 });
  assert.equal(r.cmd, CMD.ERROR);
  assert.equal(r.data[0], 0x0b); // ERR_INVALID_CHANNEL
  // A message whose CONT packet has the wrong sequence number.
  const packets = frame(hid.cid, CMD.PING, new Uint8Array(100));
  packets[1][4] = 5;
  for (const p of packets) host.sendReport(p);
  const err = await host.nextReport();
  assert.equal(err[4], CMD.ERROR);
  assert.equal(err[7], 0x04); // ERR_INVALID_SEQ
});

test('CTAP2 getInfo answers with versions and the Pico AAGUID', async () => {
  const { hid } = await bootKey();
  await hid.init();
  const r = await hid.cbor(0x04);
  assert.equal(r.status, 0x00);
  const info = decodeCbor(r.body);
  assert.ok(info.get(1).includes('FIDO_2_0'));
  assert.ok(info.get(1).includes('U2F_V2'));
  assert.equal(Buffer.from(info.get(3)).toString('hex'), '5d1f830a2c444b6e9b390e51a7663c12');
  assert.ok(info.get(5) >= 1200);
});
