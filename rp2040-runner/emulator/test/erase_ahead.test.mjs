// Erasing ahead on the Pico (authenticator/src/store/ahead.rs): while a passkey registration
// waits for the touch, the key erases the block littlefs will take, so the write after the
// touch only programs. Flash times are the W25Q16JV's (typical unless PICO_FLASH_TIMING).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import { decodeCbor } from '../lib/cbor.mjs';
import * as ctap2 from '../lib/ctap2.mjs';

const erases = (ops) => ops.filter((o) => o.op === 'erase').length;

test('a passkey registration erases ahead while it waits for the touch, then only programs', async () => {
  const { machine, hid } = await bootKey();
  machine.bootselPressed = true;
  await hid.init();
  // A first passkey: the key formats its state and makes the slot directory, and must plan
  // again after these writes.
  const first = await hid.cbor(0x01, ctap2.makeCredentialRequest({ rk: true }).payload);
  assert.equal(first.status, 0x00);
  machine.bootselPressed = false;
  // Sent at once (within the 100 ms the idle key waits before erasing ahead): the same user's
  // passkey again, replacing the first, which waits for the touch.
  const req = ctap2.makeCredentialRequest({ rk: true, clientDataHash: ctap2.sha256('second') });
  const sent = machine.flashOps.length;
  let atPress;
  let upNeeded = 0;
  const r = await hid.cbor(0x01, req.payload, {
    onKeepalive: (status) => {
      if (status === 2 && ++upNeeded === 3) {
        atPress = machine.flashOps.length;
        machine.bootselPressed = true;
      }
    },
  });
  machine.bootselPressed = false;
  assert.equal(r.status, 0x00, `makeCredential status 0x${r.status.toString(16)}`);
  assert.ok(atPress !== undefined, 'the key asked for the touch');
  const waiting = machine.flashOps.slice(sent, atPress);
  const writing = machine.flashOps.slice(atPress);
  assert.ok(erases(waiting) >= 1, 'a block was erased ahead during the wait');
  assert.equal(erases(writing), 0, 'the registration after the touch erased nothing');
  assert.ok(writing.some((o) => o.op === 'program'), 'the registration programmed its slot file');
  // The credential is whole: its self attestation verifies.
  const att = decodeCbor(r.body);
  const authData = att.get(2);
  const parsed = ctap2.parseAuthData(authData);
  const stmt = att.get(3);
  assert.equal(att.get(1), 'packed');
  assert.ok(ctap2.verifyEs256(ctap2.coseToKey(parsed.coseKey),
    Buffer.concat([authData, req.clientDataHash]), stmt.get('sig')), 'self attestation verifies');
});
