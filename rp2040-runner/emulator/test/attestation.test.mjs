// Provisioning a batch attestation through the vendor CTAPHID command, as on the USB/IP key:
// nothing secret is in the UF2; the batch (made by the `attestation` tool, directory in
// ATTESTATION_BATCH, which ci.sh sets) is installed once, then used for packed attestation with
// x5c, and kept across a power cycle, where a second provisioning is refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { bootKey } from '../lib/harness.mjs';
import * as ctap2 from '../lib/ctap2.mjs';
import { encodeCbor, decodeCbor } from '../lib/cbor.mjs';

const PROVISION_ATTESTATION = 0xf0;
// id-fido-gen-ce-aaguid (1.3.6.1.4.1.45724.1.1.4), DER-encoded.
const AAGUID_OID = Buffer.from('060b2b0601040182e51c010104', 'hex');

function loadBatch() {
  const dir = process.env.ATTESTATION_BATCH;
  assert.ok(dir, 'ATTESTATION_BATCH must name a batch directory (ci.sh makes one)');
  const key = crypto.createPrivateKey(fs.readFileSync(path.join(dir, 'batch.key.pem')));
  const d = Buffer.from(key.export({ format: 'jwk' }).d, 'base64url');
  const cert = new crypto.X509Certificate(fs.readFileSync(path.join(dir, 'batch.pem')));
  // The AAGUID extension's value: OCTET STRING { OCTET STRING (16 bytes) }.
  const at = cert.raw.indexOf(AAGUID_OID);
  assert.ok(at > 0, 'the batch certificate has the AAGUID extension');
  const value = cert.raw.subarray(at + AAGUID_OID.length);
  assert.deepEqual([...value.subarray(0, 4)], [0x04, 0x12, 0x04, 0x10]);
  return { d, cert, aaguid: value.subarray(4, 20) };
}

/** Provision `batch`; like CTAP2 commands it waits for BOOTSEL (pressed here at the third
 * keepalive, as a user would once the LED blinks) unless the request is refused first. */
async function provision(hid, batch, machine) {
  const request = encodeCbor(new Map([[1, new Uint8Array(batch.d)], [2, new Uint8Array(batch.cert.raw)]]));
  let waited = 0;
  const r = await hid.transact(PROVISION_ATTESTATION, request, {
    onKeepalive: (status) => {
      if (status === 2 && ++waited === 3) machine.bootselPressed = true;
    },
  });
  machine.bootselPressed = false;
  provision.waited = waited;
  assert.equal(r.cmd, PROVISION_ATTESTATION);
  assert.equal(r.data.length, 1);
  return r.data[0];
}

async function aaguid(hid) {
  const info = await hid.cbor(0x04);
  assert.equal(info.status, 0);
  return Buffer.from(decodeCbor(info.body).get(3));
}

test('a provisioned Pico attests with the batch and keeps it across a power cycle', async () => {
  const batch = loadBatch();
  const { machine, hid } = await bootKey();
  await hid.init();
  const model = await aaguid(hid);
  assert.notDeepEqual(model, Buffer.from(batch.aaguid));

  // A certificate for another key is refused; the batch itself is accepted.
  const wrong = { ...batch, d: crypto.randomBytes(32) };
  assert.equal(await provision(hid, wrong, machine), 0x02, 'a certificate for another key is refused');
  assert.equal(provision.waited, 0, 'a refused request asks for no touch');
  assert.equal(await provision(hid, batch, machine), 0x00, 'the batch is installed');
  assert.ok(provision.waited >= 3, 'it waited for BOOTSEL (keepalives UPNEEDED)');
  assert.deepEqual(await aaguid(hid), Buffer.from(batch.aaguid), 'getInfo reports the batch AAGUID');

  machine.bootselPressed = true;
  const req = ctap2.makeCredentialRequest();
  const r = await hid.cbor(0x01, req.payload);
  machine.bootselPressed = false;
  assert.equal(r.status, 0x00, `makeCredential status 0x${r.status.toString(16)}`);
  const att = decodeCbor(r.body);
  assert.equal(att.get(1), 'packed');
  const authData = att.get(2);
  assert.deepEqual(Buffer.from(ctap2.parseAuthData(authData).aaguid), Buffer.from(batch.aaguid));
  const stmt = att.get(3);
  assert.equal(stmt.get('alg'), -7);
  const x5c = stmt.get('x5c');
  assert.equal(x5c.length, 1);
  assert.deepEqual(Buffer.from(x5c[0]), batch.cert.raw, 'x5c carries the batch certificate');
  const signed = Buffer.concat([authData, req.clientDataHash]);
  assert.ok(ctap2.verifyEs256(batch.cert.publicKey, signed, stmt.get('sig')),
    'the attestation signature verifies with the batch certificate');

  // Power cycle: still provisioned, and for life.
  const { machine: m2, hid: hid2 } = await bootKey({ flash: machine.snapshotFlash() });
  await hid2.init();
  assert.deepEqual(await aaguid(hid2), Buffer.from(batch.aaguid));
  assert.equal(await provision(hid2, batch, m2), 0x30, 'a second provisioning is refused');
});
