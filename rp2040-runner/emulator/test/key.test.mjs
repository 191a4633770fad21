// End-to-end tests of the Pico firmware in rp2040js: USB enumeration, CTAPHID, CTAP2 getInfo.
// Each boot and enumeration take about 150 ms of emulated time (30 M cycles at 200 MHz), so the
// tests after the first share one booted key; each opens its own CTAPHID channel.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { bootKey } from '../lib/harness.mjs';
import { CMD, BROADCAST, frame, CtaphidClient } from '../lib/ctaphid.mjs';
import { decodeCbor } from '../lib/cbor.mjs';

const FIDO_REPORT_DESCRIPTOR_HEAD = [0x06, 0xd0, 0xf1, 0x09, 0x01];

let shared;
/** The shared key, with a fresh CTAPHID client (no channel yet). */
async function sharedKey() {
  shared ??= bootKey();
  const key = await shared;
  return { ...key, hid: new CtaphidClient(key.host) };
}

test('enumerates as a FIDO HID device; the serial number is the flash chip\'s unique ID', async () => {
  const uid = crypto.randomBytes(8);
  const { machine, info } = await bootKey({ flashUid: uid });
  assert.equal(info.vid, 0x1209);
  assert.equal(info.pid, 0x0001);
  assert.equal(info.manufacturer, 'Open FIDO Key');
  assert.equal(info.product, 'Open FIDO Key (Pico)');
  // Read with the W25Q "Read Unique ID" command (0x4B), as the Pico SDK does.
  assert.equal(info.serial, uid.toString('hex').toUpperCase());
  assert.ok(machine.flashCommands.includes(0x4b));
  // After the flash writes of boot (seed sector), the firmware ran boot2 from RAM to put XIP
  // back in quad continuous-read mode (SPI_CTRLR0.XIP_CMD = 0xa0): the stub ROM skips boot2 at
  // reset, so only that run sets it.
  const ssi = machine.mcu.peripherals[0x18000];
  assert.equal(ssi.readUint32(0xf4) >>> 24, 0xa0);
  assert.equal(info.interfaces.length, 1);
  assert.equal(info.interfaces[0].cls, 3);
  assert.deepEqual([...info.reportDescriptor.subarray(0, 5)], FIDO_REPORT_DESCRIPTOR_HEAD);
  const eps = info.endpoints.map((e) => [e.address & 0x80, e.attributes & 3, e.maxPacket]);
  assert.deepEqual(eps.sort(), [[0, 3, 64], [0x80, 3, 64]].sort());
});

test('power-up: USB is enabled within 100 ms, the core voltage is at 1.15 V before the clock passes 133 MHz, clk_sys ends at 200 MHz and the flash is read within its rating', async () => {
  const { machine, host } = await sharedKey();
  assert.ok(host.enabledAt.ms <= 100, `USB enabled ${host.enabledAt.ms.toFixed(1)} ms after power-up`);
  assert.equal(machine.clockHz, 200e6);
  assert.ok(machine.clockChanges.some((c) => c.hz === 200e6), 'the PLL took clk_sys to 200 MHz');
  // The RP2040 is certified at 200 MHz with at least 1.15 V (Pico SDK 2.1.1); 133 MHz is the
  // highest clock certified at the reset voltage of 1.10 V.
  for (const { hz, volts } of machine.clockChanges) {
    if (hz > 133e6) assert.ok(volts >= 1.15 - 1e-9, `clk_sys ${hz / 1e6} MHz at ${volts} V`);
  }
  // boot2 (run again after every flash write) reads the flash at clk_sys / BAUDR: the W25Q16JV
  // takes at most 133 MHz for Fast Read Quad I/O.
  const baudr = machine.mcu.peripherals[0x18000].readUint32(0x14);
  assert.ok(baudr >= 2 && machine.clockHz / baudr <= 133e6, `flash clock ${machine.clockHz / baudr / 1e6} MHz`);
});

test('GET_DESCRIPTOR(HID) answers the 9 bytes of the configuration\'s copy, cut only by wLength', async () => {
  const { host, info } = await sharedKey();
  const config = info.config;
  let at = 0;
  while (at < config.length && config[at + 1] !== 0x21) at += config[at];
  const inConfig = [...config.subarray(at, at + 9)];
  assert.deepEqual(inConfig.slice(0, 2), [9, 0x21]);
  const hid = info.interfaces.find((i) => i.cls === 3).number;
  for (const length of [9, 0xffff]) {
    const d = await host.getDescriptor(0x21, 0, length, { langId: hid, recipient: 0x81 });
    assert.deepEqual([...d], inConfig, `wLength ${length}`);
  }
  // The report descriptor, the length that copy declares, the same way.
  const reportLength = inConfig[7] | (inConfig[8] << 8);
  for (const length of [reportLength, 0xffff]) {
    const d = await host.getDescriptor(0x22, 0, length, { langId: hid, recipient: 0x81 });
    assert.equal(d.length, reportLength, `report descriptor, wLength ${length}`);
    assert.deepEqual([...d], [...info.reportDescriptor]);
  }
});

test('an unknown descriptor request is stalled, and the next request works', async () => {
  const { host } = await sharedKey();
  // DEVICE_QUALIFIER: a full-speed-only device must STALL it.
  await assert.rejects(host.getDescriptor(6, 0, 10), /STALL/);
  assert.equal((await host.getDescriptor(1, 0, 18)).length, 18);
});

test('CTAPHID INIT allocates distinct channels and echoes the nonce', async () => {
  const { hid } = await sharedKey();
  const a = await hid.init();
  assert.notEqual(a.cid, 0);
  assert.notEqual(a.cid, BROADCAST);
  assert.equal(a.protocol, 2);
  assert.ok(a.capabilities & 0x04, 'CBOR capability');
  const b = await hid.init();
  assert.notEqual(b.cid, a.cid);
});

test('CTAPHID PING echoes a multi-packet message', async () => {
  const { hid } = await sharedKey();
  await hid.init();
  const payload = new Uint8Array(crypto.randomBytes(300));
  const r = await hid.transact(CMD.PING, payload);
  assert.equal(r.cmd, CMD.PING);
  assert.deepEqual(Buffer.from(r.data), Buffer.from(payload));
});

test('CTAPHID errors: unknown channel and bad sequence', async () => {
  const { hid, host } = await sharedKey();
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
  const { hid } = await sharedKey();
  await hid.init();
  const r = await hid.cbor(0x04);
  assert.equal(r.status, 0x00);
  const info = decodeCbor(r.body);
  assert.deepEqual(info.get(1), ['U2F_V2', 'FIDO_2_0', 'FIDO_2_1', 'FIDO_2_3']);
  assert.ok(info.get(1).includes('U2F_V2'));
  assert.equal(Buffer.from(info.get(3)).toString('hex'), '5d1f830a2c444b6e9b390e51a7663c12');
  assert.ok(info.get(5) >= 1200);
  // CTAP 2.2's members, as on the virtual key (docs/protocol.md's getInfo table).
  assert.deepEqual(info.get(0x16), ['packed', 'none'], 'attestationFormats');
  assert.equal(info.get(0x18), false, 'longTouchForReset: BOOTSEL can be held, reset does not need it yet');
  assert.deepEqual(info.get(0x1a), ['usb'], 'transportsForReset');
  assert.equal(info.get(0x1b), false, 'pinComplexityPolicy');
  assert.equal(info.get(0x1d), 63, 'maxPINLength');
  assert.deepEqual(info.get(0x1f), [2, 3, 4, 0xff], 'authenticatorConfigCommands (0xff: vendorPrototype)');
  assert.deepEqual(info.get(0x15), [0x4c4f434b, 0x4f50454e], 'vendorPrototypeConfigCommands: the PIN lock');
  assert.equal(info.get(0x17), undefined, 'no uvCountSinceLastPinEntry without built-in UV');
});
