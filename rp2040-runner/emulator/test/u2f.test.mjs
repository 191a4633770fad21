// U2F (CTAP1) through CTAPHID_MSG: registration and authentication with BOOTSEL as the touch,
// every signature checked with Node's crypto over the data the U2F specification defines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { bootKey } from '../lib/harness.mjs';
import * as u2f from '../lib/u2f.mjs';

const sha256 = (s) => new Uint8Array(crypto.createHash('sha256').update(s).digest());
const verify = (key, parts, sig) =>
  crypto.verify('sha256', Buffer.concat(parts.map((p) => Buffer.from(p))), key, Buffer.from(sig));

test('U2F register and authenticate wait for BOOTSEL and sign what U2F defines', async () => {
  const { machine, hid } = await bootKey();
  await hid.init();
  const version = await u2f.u2f(hid, 0x03, 0x00);
  assert.equal(version.sw, u2f.SW.NO_ERROR);
  assert.equal(Buffer.from(version.data).toString(), 'U2F_V2');

  const application = sha256('https://example.com');
  const challenge = sha256('register challenge');
  // No touch yet: U2F has no keepalive, the key answers "conditions not satisfied" and the host
  // repeats the request until the user touches.
  const early = await u2f.register(hid, challenge, application);
  assert.equal(early.sw, u2f.SW.CONDITIONS_NOT_SATISFIED);
  machine.bootselPressed = true;
  const reg = await u2f.register(hid, challenge, application);
  assert.equal(reg.sw, u2f.SW.NO_ERROR, `register SW ${reg.sw.toString(16)}`);
  const { publicKey, keyHandle, certificate, signature } = u2f.parseRegistration(reg.data);
  const key = u2f.rawP256Key(publicKey);
  // Registration signature: 0x00 || application || challenge || key handle || public key.
  assert.ok(verify(key, [[0x00], application, challenge, keyHandle, publicKey], signature),
    'registration signature verifies');
  // The attestation certificate parses, is self-signed, and holds the same key.
  const cert = new crypto.X509Certificate(Buffer.from(certificate));
  assert.ok(cert.verify(cert.publicKey), 'certificate is self-signed');
  assert.deepEqual(cert.publicKey.export({ format: 'jwk' }), key.export({ format: 'jwk' }));

  // Check-only: the handle is ours, reported as "conditions not satisfied"; a handle presented
  // for another application is not ours.
  const check = await u2f.authenticate(hid, u2f.P1.CHECK_ONLY, challenge, application, keyHandle);
  assert.equal(check.sw, u2f.SW.CONDITIONS_NOT_SATISFIED);
  const other = await u2f.authenticate(hid, u2f.P1.CHECK_ONLY, challenge, sha256('https://evil.example'), keyHandle);
  assert.equal(other.sw, u2f.SW.WRONG_DATA);

  // Authentication signature: application || flags || counter || challenge.
  const authChallenge = sha256('authenticate challenge');
  const a = await u2f.authenticate(hid, u2f.P1.ENFORCE, authChallenge, application, keyHandle);
  assert.equal(a.sw, u2f.SW.NO_ERROR, `authenticate SW ${a.sw.toString(16)}`);
  const flags = a.data[0];
  const counter = a.data.subarray(1, 5);
  assert.equal(flags & 0x01, 0x01, 'user present');
  assert.ok(verify(key, [application, [flags], counter, authChallenge], a.data.subarray(5)),
    'authentication signature verifies');

  // Without a touch when the host does not ask for one: flag clear, counter higher.
  machine.bootselPressed = false;
  const b = await u2f.authenticate(hid, u2f.P1.DONT_ENFORCE, authChallenge, application, keyHandle);
  assert.equal(b.sw, u2f.SW.NO_ERROR);
  assert.equal(b.data[0] & 0x01, 0);
  const n = (c) => new DataView(c.buffer, c.byteOffset).getUint32(0, false);
  assert.ok(n(b.data.subarray(1, 5)) > n(counter), 'counter went up');
  assert.ok(verify(key, [application, [b.data[0]], b.data.subarray(1, 5), authChallenge], b.data.subarray(5)));
});
