// The credential index's copy (docs/storage.md): a quiet key stores it, a power-up reads it,
// and credentials made before and after power-ups from it are all found, every signature
// verified. Each P-256 operation costs a few seconds of emulation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import { decodeCbor, encodeCbor } from '../lib/cbor.mjs';
import * as ctap2 from '../lib/ctap2.mjs';

/** A discoverable credential for user `i` of ctap2.RP_ID; its ID and public key. */
async function register(hid, i) {
  const clientDataHash = ctap2.sha256(`make ${i}`);
  const r = await hid.cbor(0x01, encodeCbor(new Map([
    [1, clientDataHash],
    [2, new Map([['id', ctap2.RP_ID]])],
    [3, new Map([['id', new Uint8Array([0x75, i])], ['name', `user ${i}`]])],
    [4, [new Map([['alg', -7], ['type', 'public-key']])]],
    [7, new Map([['rk', true]])],
  ])));
  assert.equal(r.status, 0, `makeCredential ${i}: status 0x${r.status.toString(16)}`);
  const parsed = ctap2.parseAuthData(decodeCbor(r.body).get(2));
  return { id: Buffer.from(parsed.credentialId).toString('hex'), key: ctap2.coseToKey(parsed.coseKey) };
}

/** Every credential discovery finds for the RP (getAssertion, then getNextAssertion), each
 * signature checked with the key it was made with. */
async function discover(hid, made) {
  const found = [];
  const ga = ctap2.getAssertionRequest(null);
  let r = await hid.cbor(0x02, ga.payload);
  assert.equal(r.status, 0, `getAssertion: status 0x${r.status.toString(16)}`);
  const count = decodeCbor(r.body).get(5) ?? 1;
  for (let n = 0; n < count; n++) {
    if (n > 0) r = await hid.cbor(0x08);
    assert.equal(r.status, 0);
    const a = decodeCbor(r.body);
    const id = Buffer.from(a.get(1).get('id')).toString('hex');
    const m = made.find((c) => c.id === id);
    assert.ok(m, `discovery found a credential it was not given: ${id}`);
    assert.ok(ctap2.verifyEs256(m.key, Buffer.concat([a.get(2), ga.clientDataHash]), a.get(3)));
    found.push(id);
  }
  return found.sort();
}

const ids = (made) => made.map((c) => c.id).sort();

/** Power-cycle: boot again from the flash as it is now. */
async function powerCycle(machine) {
  const key = await bootKey({ flash: machine.snapshotFlash() });
  key.machine.bootselPressed = true;
  await key.hid.init();
  return key;
}

/** Let the key sit quiet for `ms`; whether it programmed the flash meanwhile. */
async function quiet({ machine, host }, ms) {
  const from = machine.flashOps.length;
  await host.wait(ms);
  return machine.flashOps.slice(from).some((o) => o.op === 'program');
}

test('a quiet key stores its index copy, and every credential survives power-ups from it', async () => {
  let key = await bootKey();
  key.machine.bootselPressed = true;
  await key.hid.init();
  const made = [];
  for (let i = 0; i < 3; i++) made.push(await register(key.hid, i));
  assert.ok(await quiet(key, 3000), 'the quiet key wrote its index copy');
  assert.ok(!(await quiet(key, 3000)), 'once: nothing more to write');

  key = await powerCycle(key.machine);
  assert.deepEqual(await discover(key.hid, made), ids(made));
  // A registration at once after power-up (the copy not yet checked): it removes the copy,
  // and the key, not having written one since power-up, writes it again once quiet.
  made.push(await register(key.hid, 3));
  assert.deepEqual(await discover(key.hid, made), ids(made));
  assert.ok(await quiet(key, 3000), 'the quiet key wrote its index copy again');

  key = await powerCycle(key.machine);
  assert.deepEqual(await discover(key.hid, made), ids(made));
});
