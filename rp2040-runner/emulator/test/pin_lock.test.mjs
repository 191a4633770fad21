// The PIN lock on the emulated Pico: turned on with authenticatorConfig vendorPrototype, it makes
// the key say alwaysUv and refuse U2F after a power cycle until the PIN is given; and a dump of
// the whole flash, attacked by the workspace's flash-copy program (tests/src/flash_copy.rs),
// gives no key-wrapping key without the PIN, while with the PIN (or without the lock) the same
// program forges a signature that verifies; a Pico whose vault was spoiled refuses until reset
// (docs/pin-lock.md). Needs `cargo build -p e2e-tests --bin flash-copy-attack` (ci.sh does it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { bootKey } from '../lib/harness.mjs';
import { decodeCbor, encodeCbor } from '../lib/cbor.mjs';
import * as ctap2 from '../lib/ctap2.mjs';
import * as u2f from '../lib/u2f.mjs';
import { ClientPin, PinProtocol2 } from '../lib/clientpin.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const ATTACK = path.join(root, 'target/debug/flash-copy-attack');
const PIN = '582031';
const LOCK_ON = 0x4c4f434b;
const ACFG = 0x20;
const DICTIONARY = ['123456', '000000', '111111', '123123', '654321'];

async function token(hid, permissions) {
  const pin = new ClientPin(hid);
  const p = await pin.session();
  const pinHashEnc = p.encrypt(ctap2.sha256(PIN).subarray(0, 16));
  const r = await hid.cbor(0x06, encodeCbor(new Map([[1, 2], [2, 9], [3, p.platformKey], [6, pinHashEnc], [9, permissions]])));
  return { status: r.status, token: r.status ? null : p.decrypt(decodeCbor(r.body).get(2)) };
}

async function lockOn(hid) {
  const { token: t } = await token(hid, ACFG);
  const params = new Map([[1, LOCK_ON]]);
  const message = Buffer.concat([Buffer.alloc(32, 0xff), Buffer.from([0x0d, 0xff]), encodeCbor(params)]);
  const r = await hid.cbor(0x0d, encodeCbor(new Map([[1, 0xff], [2, params], [3, 2],
    [4, PinProtocol2.authenticate(t, message)]])));
  assert.equal(r.status, 0, `lock on: 0x${r.status.toString(16)}`);
}

/** A key with a PIN and a credential registered with a touch; (machine, credential ID, key). */
async function registered(lock) {
  const { machine, hid } = await bootKey();
  machine.bootselPressed = true;
  await hid.init();
  const mc = await hid.cbor(0x01, ctap2.makeCredentialRequest().payload);
  assert.equal(mc.status, 0);
  const auth = ctap2.parseAuthData(decodeCbor(mc.body).get(2));
  const pin = new ClientPin(hid);
  await pin.session();
  assert.equal((await pin.setPin(PIN)).status, 0);
  if (lock) await lockOn(hid);
  return { machine, id: auth.credentialId, key: ctap2.coseToKey(auth.coseKey) };
}

/** Run the attack on a dump of the whole 2 MiB flash. */
function attackDump(flash, id, dictionary) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pico-dump-'));
  const dump = path.join(dir, 'flash.bin');
  fs.writeFileSync(dump, flash.subarray(0, 0x200000));
  const message = Buffer.concat([ctap2.rpIdHash(), Buffer.from([1, 0, 0, 7, 7]), ctap2.sha256('thief')]);
  const out = execFileSync(ATTACK, [dump, 'pico', ctap2.RP_ID, Buffer.from(id).toString('hex'),
    message.toString('hex'), ...dictionary], { encoding: 'utf8' });
  fs.rmSync(dir, { recursive: true });
  return { ...JSON.parse(out), message };
}

test('a locked Pico asks for its PIN after power-up, then works', async () => {
  const { machine, id, key } = await registered(true);
  const { machine: m, hid } = await bootKey({ flash: machine.snapshotFlash() });
  m.bootselPressed = true;
  await hid.init();
  const info = decodeCbor((await hid.cbor(0x04)).body);
  assert.equal(info.get(4).get('alwaysUv'), true, 'alwaysUv while locked');
  assert.ok(!info.get(1).includes('U2F_V2'), 'no U2F while locked');
  assert.equal((await hid.cbor(0x02, ctap2.getAssertionRequest(id).payload)).status, 0x36,
    'PUAT_REQUIRED without a token');
  const app = ctap2.sha256('https://example.com');
  assert.equal((await u2f.register(hid, ctap2.sha256('c'), app)).sw, 0x6986, 'U2F refused');

  const t = await token(hid, 0x02);
  assert.equal(t.status, 0, 'the PIN opens it');
  const cdh = ctap2.sha256('after the PIN');
  const ga = await hid.cbor(0x02, ctap2.getAssertionRequest(id, { clientDataHash: cdh }).payload);
  assert.equal(ga.status, 0);
  const body = decodeCbor(ga.body);
  assert.ok(ctap2.verifyEs256(key, Buffer.concat([body.get(2), cdh]), body.get(3)));
  assert.equal(decodeCbor((await hid.cbor(0x04)).body).get(4).get('alwaysUv'), false);
});

test('a flash dump of a locked Pico gives nothing without the PIN', { skip: !fs.existsSync(ATTACK) && 'flash-copy-attack not built' }, async () => {
  const { machine, id, key } = await registered(true);
  const flash = machine.snapshotFlash();
  const guessed = attackDump(flash, id, DICTIONARY);
  console.log(`locked dump: ${guessed.how}, ${guessed.guesses} guesses, ${guessed.ms_per_guess} ms per guess on this CPU`);
  assert.equal(guessed.kwk, false, guessed.how);
  assert.equal(guessed.signature, null);
  assert.equal(guessed.guesses, DICTIONARY.length);

  const told = attackDump(flash, id, [...DICTIONARY, PIN]);
  assert.equal(told.pin, PIN, told.how);
  assert.ok(ctap2.verifyEs256(key, told.message, Buffer.from(told.signature, 'hex')),
    'with the PIN, the dump forges a signature that verifies');

  const { machine: open, id: openId, key: openKey } = await registered(false);
  const unlocked = attackDump(open.snapshotFlash(), openId, []);
  assert.equal(unlocked.kwk, true, 'without the lock the dump needs no PIN');
  assert.ok(ctap2.verifyEs256(openKey, unlocked.message, Buffer.from(unlocked.signature, 'hex')));
});

test('after a reset the Pico\'s flash holds no byte of the old key or a user name', { skip: !fs.existsSync(ATTACK) && 'flash-copy-attack not built' }, async () => {
  const MARKER = 'REMANENCE-MARKER-USER-7f3a';
  const { machine, hid } = await bootKey();
  machine.bootselPressed = true;
  await hid.init();
  const req = ctap2.makeCredentialRequest({ rk: true });
  const m = decodeCbor(req.payload);
  m.set(3, new Map([['id', Buffer.from('alice')], ['name', MARKER]]));
  const mc = await hid.cbor(0x01, encodeCbor(m));
  assert.equal(mc.status, 0);
  const id = ctap2.parseAuthData(decodeCbor(mc.body).get(2)).credentialId;
  const before = machine.snapshotFlash();
  const opened = attackDump(before, id, []);
  assert.equal(opened.kwk, true, 'no lock: the key-wrapping key is in the clear');
  const kwk = Buffer.from(opened.kwk_hex, 'hex');
  const count = (flash, needle) => {
    let n = 0;
    for (let at = flash.indexOf(needle); at >= 0; at = flash.indexOf(needle, at + 1)) n++;
    return n;
  };
  assert.ok(count(Buffer.from(before), Buffer.from(MARKER)) > 0, 'the name is stored');
  assert.ok(count(Buffer.from(before), kwk) > 0, 'and the key');

  // Power cycle, then authenticatorReset within 10 s, with a touch.
  const { machine: m2, hid: h2 } = await bootKey({ flash: before });
  m2.bootselPressed = true;
  await h2.init();
  const { erased, ms } = await timedReset(m2, h2);
  const after = Buffer.from(m2.snapshotFlash());
  assert.equal(count(after, Buffer.from(MARKER)), 0, 'the user name survived the reset');
  assert.equal(count(after, kwk), 0, 'the old key-wrapping key survived the reset');
  // The wipe erased every sector of the partition that held anything, and only those: the
  // ones that read erased are skipped (flash.rs).
  const used = stateSectors(before).filter((s) => !s.blank).map((s) => s.offset);
  assert.deepEqual(used.filter((o) => !erased.has(o)), [], 'a sector that held data was not erased');
  assert.ok(erased.size < STATE_SECTORS, `the wipe erased all ${erased.size} sectors, blank ones too`);
  console.log(`reset of a key with one credential: ${used.length} of ${STATE_SECTORS} sectors held data; ${erased.size} erased (the wipe, then littlefs's format); ${ms.toFixed(0)} ms from request to answer (flash timing: ${m2.flashTimingName})`);
});

test('a Pico whose vault was spoiled refuses (0xF0) all but getInfo and reset, and reset recovers it', async () => {
  const VAULT = 0x7b000;
  const SLOT = 8192;
  const VAULT_UNREADABLE = 0xf0;
  const { machine, id } = await registered(false);
  // Both slots hold the key's record, each with a byte changed: no power cut leaves that.
  const flash = machine.snapshotFlash();
  const begun = (at) => Buffer.from(flash.subarray(at, at + 8)).toString() === 'OFKVAULT';
  const record = begun(VAULT) ? VAULT : VAULT + SLOT;
  const other = record === VAULT ? VAULT + SLOT : VAULT;
  flash[record + 40] ^= 1;
  flash.copyWithin(other, record, record + SLOT);
  flash[other + 41] ^= 1;

  const { machine: m2, hid } = await bootKey({ flash });
  m2.bootselPressed = true;
  await hid.init();
  const info = await hid.cbor(0x04);
  assert.equal(info.status, 0, 'getInfo answers');
  assert.equal(decodeCbor(info.body).get(4).get('clientPin'), true, 'a PIN counts as set');
  const ga = await hid.cbor(0x02, ctap2.getAssertionRequest(id).payload);
  assert.equal(ga.status, VAULT_UNREADABLE, 'the owner\'s credential fails with the refusal, not "no credentials"');
  const pin = await hid.cbor(0x06, encodeCbor(new Map([[1, 2], [2, 2]])));
  assert.equal(pin.status, VAULT_UNREADABLE, 'no PIN protocol, so no new PIN');
  assert.equal((await u2f.u2f(hid, 0x03, 0x00)).sw, 0x6f00, 'U2F: no precise diagnosis');

  // authenticatorReset within 10 s of power-up, with a touch: a working blank key.
  assert.equal((await hid.cbor(0x07, undefined, { maxCycles: 200 * m2.clockHz })).status, 0, 'reset');
  assert.equal((await hid.cbor(0x02, ctap2.getAssertionRequest(id).payload)).status, 0x2e, 'forgotten');
  const mc = await hid.cbor(0x01, ctap2.makeCredentialRequest().payload);
  assert.equal(mc.status, 0);
  const auth = ctap2.parseAuthData(decodeCbor(mc.body).get(2));
  const req = ctap2.getAssertionRequest(auth.credentialId);
  const signed = await hid.cbor(0x02, req.payload);
  assert.equal(signed.status, 0);
  const body = decodeCbor(signed.body);
  assert.ok(ctap2.verifyEs256(ctap2.coseToKey(auth.coseKey),
    Buffer.concat([body.get(2), req.clientDataHash]), body.get(3)));
});

/** The littlefs partition's sectors (flash.rs: STATE_OFFSET to the end of the 2 MiB flash). */
const STATE_OFFSET = 0x80000;
const STATE_SECTORS = (0x200000 - STATE_OFFSET) / 4096;
function stateSectors(flash) {
  return Array.from({ length: STATE_SECTORS }, (_, i) => {
    const offset = STATE_OFFSET + i * 4096;
    return { offset, blank: flash.subarray(offset, offset + 4096).every((b) => b === 0xff) };
  });
}

/** authenticatorReset (BOOTSEL held): the state sectors its wipe erased, and the emulated time
 * from the request to the answer. */
async function timedReset(machine, hid) {
  const ops = machine.flashOps.length;
  const start = machine.nowMs;
  // At worst the 384 sectors at the typical 45 ms (PICO_FLASH_TIMING=max: 400 ms each).
  assert.equal((await hid.cbor(0x07, undefined, { maxCycles: 200 * machine.clockHz })).status, 0, 'reset');
  const ms = machine.nowMs - start;
  const erased = new Set(machine.flashOps.slice(ops)
    .filter((o) => o.op === 'erase' && o.off >= STATE_OFFSET)
    .flatMap((o) => Array.from({ length: o.len / 4096 }, (_, i) => o.off + i * 4096)));
  return { erased, ms };
}

test('the figure: a reset of a Pico whose store is nearly full', { skip: !process.env.PICO_NEARLY_FULL_IMAGE && 'PICO_NEARLY_FULL_IMAGE not set (ci.sh makes it)' }, async () => {
  const first = await bootKey();
  const flash = first.machine.snapshotFlash();
  flash.set(fs.readFileSync(process.env.PICO_NEARLY_FULL_IMAGE), 0x7B000);
  const { machine, hid } = await bootKey({ flash });
  machine.bootselPressed = true;
  await hid.init();
  const used = stateSectors(flash).filter((s) => !s.blank).map((s) => s.offset);
  const { erased, ms } = await timedReset(machine, hid);
  assert.deepEqual(used.filter((o) => !erased.has(o)), [], 'a sector that held data was not erased');
  console.log(`reset of a nearly full key: ${used.length} of ${STATE_SECTORS} sectors held data; ${erased.size} erased (the wipe, then littlefs's format); ${ms.toFixed(0)} ms from request to answer (flash timing: ${machine.flashTimingName})`);
});
