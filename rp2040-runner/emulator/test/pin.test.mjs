// clientPIN with PIN/UV auth protocol 2: set a PIN, get a pinUvAuthToken with permissions, make
// a credential with it (UV set), and a wrong PIN costing a retry.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import { decodeCbor } from '../lib/cbor.mjs';
import * as ctap2 from '../lib/ctap2.mjs';
import { ClientPin, PinProtocol2, PERMISSION, ERR, decryptUnderPersistentToken } from '../lib/clientpin.mjs';

const UP = 0x01;
const UV = 0x04;

test('set a PIN, makeCredential with a pinUvAuthToken is verified, a wrong PIN costs a retry', async () => {
  const { machine, hid } = await bootKey();
  await hid.init();
  machine.bootselPressed = true; // makeCredential still wants a touch
  const pin = new ClientPin(hid);
  assert.equal(await pin.retries(), 8);

  await pin.session();
  const set = await pin.setPin('4711 pico');
  assert.equal(set.status, 0, `setPIN status 0x${set.status.toString(16)}`);
  const info = decodeCbor((await hid.cbor(0x04)).body);
  assert.equal(info.get(4).get('clientPin'), true, 'getInfo reports a PIN set');

  const t = await pin.token('4711 pico', PERMISSION.makeCredential, ctap2.RP_ID);
  assert.equal(t.status, 0, `getPinUvAuthToken status 0x${t.status.toString(16)}`);
  assert.equal(t.token.length, 32);

  // A pinUvAuthParam made with another key is refused before any touch or key generation.
  const forged = ctap2.makeCredentialRequest({
    pinUvAuthParam: PinProtocol2.authenticate(Buffer.alloc(32, 7), ctap2.sha256('client data')),
    pinUvAuthProtocol: 2,
  });
  assert.equal((await hid.cbor(0x01, forged.payload)).status, ERR.PIN_AUTH_INVALID);

  const clientDataHash = ctap2.sha256('client data with uv');
  const req = ctap2.makeCredentialRequest({ clientDataHash,
    pinUvAuthParam: PinProtocol2.authenticate(t.token, clientDataHash), pinUvAuthProtocol: 2 });
  const mc = await hid.cbor(0x01, req.payload);
  assert.equal(mc.status, 0, `makeCredential status 0x${mc.status.toString(16)}`);
  const att = decodeCbor(mc.body);
  const parsed = ctap2.parseAuthData(att.get(2));
  assert.equal(parsed.flags & (UP | UV), UP | UV, 'UP and UV set');
  const key = ctap2.coseToKey(parsed.coseKey);
  assert.ok(ctap2.verifyEs256(key, Buffer.concat([att.get(2), clientDataHash]), att.get(3).get('sig')));

  // A wrong PIN: refused, one retry gone (and the key agreement key is replaced, so the session
  // made before no longer works for the right PIN either).
  const wrong = await pin.token('0000', PERMISSION.makeCredential, ctap2.RP_ID);
  assert.equal(wrong.status, ERR.PIN_INVALID);
  assert.equal(await pin.retries(), 7);
  await pin.session();
  const again = await pin.token('4711 pico', PERMISSION.getAssertion, ctap2.RP_ID);
  assert.equal(again.status, 0);
  assert.equal(await pin.retries(), 8, 'the right PIN restores the retries');

  // CTAP 2.2 on the Pico: the persistent token (pcmr) decrypts getInfo's encIdentifier, the
  // same 16 bytes under a fresh IV each time, and encCredStoreState.
  const persistent = await pin.token('4711 pico', PERMISSION.persistentCredMgmt);
  assert.equal(persistent.status, 0, `pcmr token status 0x${persistent.status.toString(16)}`);
  const i1 = decodeCbor((await hid.cbor(0x04)).body);
  const i2 = decodeCbor((await hid.cbor(0x04)).body);
  assert.notDeepEqual(Buffer.from(i1.get(0x19)), Buffer.from(i2.get(0x19)), 'a fresh IV');
  const id1 = decryptUnderPersistentToken(persistent.token, 'encIdentifier', i1.get(0x19));
  const id2 = decryptUnderPersistentToken(persistent.token, 'encIdentifier', i2.get(0x19));
  assert.equal(id1.length, 16);
  assert.deepEqual(id1, id2, 'one identifier');
  const state = decryptUnderPersistentToken(persistent.token, 'encCredStoreState', i1.get(0x1e));
  assert.equal(state.length, 16);
});
