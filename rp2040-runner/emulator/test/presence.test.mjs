// makeCredential / getAssertion with BOOTSEL as the presence button, keepalives, and state that
// survives a power cycle. Each P-256 operation costs a few seconds of emulation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import { decodeCbor } from '../lib/cbor.mjs';
import * as ctap2 from '../lib/ctap2.mjs';

const UP = 0x01;
const UV_REQUIRED_AT = 0x04;

test('makeCredential waits for BOOTSEL, then getAssertion signs after a power cycle', async () => {
  const { machine, hid } = await bootKey();
  await hid.init();
  const req = ctap2.makeCredentialRequest({ rk: true });
  const statuses = [];
  const r = await hid.cbor(0x01, req.payload, {
    onKeepalive: (status) => {
      statuses.push(status);
      // Press once the key asks for presence (STATUS_UPNEEDED).
      if (status === 2 && statuses.filter((s) => s === 2).length === 3) machine.bootselPressed = true;
    },
  });
  machine.bootselPressed = false;
  assert.equal(r.status, 0x00, `makeCredential status 0x${r.status.toString(16)}`);
  assert.ok(statuses.filter((s) => s === 2).length >= 3, 'UPNEEDED keepalives before the press');
  assert.ok(machine.ledChanges >= 2, 'the LED blinked while waiting');
  const att = decodeCbor(r.body);
  const authData = att.get(2);
  const parsed = ctap2.parseAuthData(authData);
  assert.deepEqual(Buffer.from(parsed.rpIdHash), Buffer.from(ctap2.rpIdHash()));
  assert.ok(parsed.flags & UP);
  const key = ctap2.coseToKey(parsed.coseKey);
  const stmt = att.get(3);
  if (att.get(1) === 'packed' && !stmt.get('x5c')) {
    const signed = Buffer.concat([authData, req.clientDataHash]);
    assert.ok(ctap2.verifyEs256(key, signed, stmt.get('sig')), 'self attestation verifies');
  }

  // Power cycle: boot again from the flash as it is now; the discoverable credential remains.
  const { machine: m2, hid: hid2 } = await bootKey({ flash: machine.snapshotFlash() });
  await hid2.init();
  m2.bootselPressed = true; // already held: presence is granted at the first look
  const ga = ctap2.getAssertionRequest(null);
  const a = await hid2.cbor(0x02, ga.payload);
  assert.equal(a.status, 0x00, `getAssertion status 0x${a.status.toString(16)}`);
  const resp = decodeCbor(a.body);
  assert.deepEqual(Buffer.from(resp.get(1).get('id')), Buffer.from(parsed.credentialId));
  const aAuth = resp.get(2);
  const aParsed = ctap2.parseAuthData(aAuth);
  assert.ok(aParsed.flags & UP);
  assert.ok(aParsed.counter > parsed.counter, 'signature counter went up across the power cycle');
  assert.ok(ctap2.verifyEs256(key, Buffer.concat([aAuth, ga.clientDataHash]), resp.get(3)));
  assert.equal(aParsed.flags & UV_REQUIRED_AT, 0);
});
