// CTAP2 requests the tests and the benchmark send, and checks of what comes back (signatures
// are verified with Node's crypto).
import crypto from 'node:crypto';
import { encodeCbor, decodeCbor } from './cbor.mjs';

export const RP_ID = 'example.com';
const sha256 = (b) => new Uint8Array(crypto.createHash('sha256').update(b).digest());

export function makeCredentialRequest({ rk = false, clientDataHash = sha256('client data'),
  pinUvAuthParam, pinUvAuthProtocol } = {}) {
  const m = new Map([
    [1, clientDataHash],
    [2, new Map([['id', RP_ID]])],
    [3, new Map([['id', new Uint8Array([1, 2, 3, 4])], ['name', 'pico-user']])],
    [4, [new Map([['alg', -7], ['type', 'public-key']])]],
  ]);
  if (rk) m.set(7, new Map([['rk', true]]));
  if (pinUvAuthParam) m.set(8, pinUvAuthParam).set(9, pinUvAuthProtocol);
  return { clientDataHash, payload: encodeCbor(m) };
}

export function getAssertionRequest(credentialId, { clientDataHash = sha256('assert') } = {}) {
  const m = new Map([[1, RP_ID], [2, clientDataHash]]);
  if (credentialId) m.set(3, [new Map([['id', credentialId], ['type', 'public-key']])]);
  return { clientDataHash, payload: encodeCbor(m) };
}

/** Split authenticator data (WebAuthn §6.1). */
export function parseAuthData(a) {
  const r = { rpIdHash: a.subarray(0, 32), flags: a[32], counter: new DataView(a.buffer, a.byteOffset).getUint32(33, false) };
  if (r.flags & 0x40) {
    r.aaguid = a.subarray(37, 53);
    const len = (a[53] << 8) | a[54];
    r.credentialId = a.slice(55, 55 + len);
    // The COSE key is the CBOR item that follows; extensions (flag ED) are not requested here.
    r.coseKey = decodeCbor(a.subarray(55 + len));
  }
  return r;
}

/** A Node public key from a COSE EC2 P-256 key. */
export function coseToKey(cose) {
  if (cose.get(1) !== 2 || cose.get(3) !== -7 || cose.get(-1) !== 1) throw new Error('not an ES256 key');
  const b64 = (b) => Buffer.from(b).toString('base64url');
  return crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b64(cose.get(-2)), y: b64(cose.get(-3)) }, format: 'jwk' });
}

export function verifyEs256(key, message, derSignature) {
  return crypto.verify('sha256', Buffer.from(message), key, Buffer.from(derSignature));
}

export function rpIdHash() { return sha256(RP_ID); }
export { sha256 };
