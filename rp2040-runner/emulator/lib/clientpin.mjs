// The platform side of CTAP 2.1 clientPIN (§6.5) with PIN/UV auth protocol 2 (§6.5.7), in Node's
// crypto: ECDH on P-256, HKDF-SHA-256 into an HMAC key and an AES-256-CBC key.
import crypto from 'node:crypto';
import { encodeCbor, decodeCbor } from './cbor.mjs';

export const SUB = { getPINRetries: 1, getKeyAgreement: 2, setPIN: 3, changePIN: 4, getPinToken: 5,
  getPinUvAuthTokenUsingPinWithPermissions: 9 };
export const PERMISSION = { makeCredential: 0x01, getAssertion: 0x02, persistentCredMgmt: 0x40 };
export const ERR = { PIN_INVALID: 0x31, PIN_BLOCKED: 0x32, PIN_AUTH_INVALID: 0x33 };

const b64u = (b) => Buffer.from(b).toString('base64url');
const sha256 = (b) => crypto.createHash('sha256').update(b).digest();

/** One shared secret with the authenticator, from its keyAgreement COSE key. */
export class PinProtocol2 {
  constructor(authenticatorKey) {
    if (authenticatorKey.get(1) !== 2 || authenticatorKey.get(3) !== -25 || authenticatorKey.get(-1) !== 1) {
      throw new Error('keyAgreement is not an ECDH-ES+HKDF-256 P-256 key');
    }
    const peer = crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-256',
      x: b64u(authenticatorKey.get(-2)), y: b64u(authenticatorKey.get(-3)) }, format: 'jwk' });
    const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const z = crypto.diffieHellman({ privateKey, publicKey: peer }); // the x-coordinate
    const kdf = (info) => Buffer.from(crypto.hkdfSync('sha256', z, Buffer.alloc(32), info, 32));
    this.hmacKey = kdf('CTAP2 HMAC key');
    this.aesKey = kdf('CTAP2 AES key');
    const jwk = publicKey.export({ format: 'jwk' });
    this.platformKey = new Map([[1, 2], [3, -25], [-1, 1],
      [-2, new Uint8Array(Buffer.from(jwk.x, 'base64url'))], [-3, new Uint8Array(Buffer.from(jwk.y, 'base64url'))]]);
  }

  encrypt(plain) {
    const iv = crypto.randomBytes(16);
    const c = crypto.createCipheriv('aes-256-cbc', this.aesKey, iv).setAutoPadding(false);
    return new Uint8Array(Buffer.concat([iv, c.update(plain), c.final()]));
  }

  decrypt(data) {
    const d = crypto.createDecipheriv('aes-256-cbc', this.aesKey, data.subarray(0, 16)).setAutoPadding(false);
    return new Uint8Array(Buffer.concat([d.update(data.subarray(16)), d.final()]));
  }

  /** authenticate(key, message) of protocol 2: the whole HMAC-SHA-256. */
  static authenticate(key, message) {
    return new Uint8Array(crypto.createHmac('sha256', key).update(message).digest());
  }
}

/** CTAP 2.2's encIdentifier / encCredStoreState: IV || AES-128-CBC(HKDF-SHA-256(32 zero bytes,
 * the persistent token, `info`), plaintext). */
export function decryptUnderPersistentToken(token, info, sealed) {
  const key = Buffer.from(crypto.hkdfSync('sha256', token, Buffer.alloc(32), info, 16));
  const d = crypto.createDecipheriv('aes-128-cbc', key, sealed.subarray(0, 16)).setAutoPadding(false);
  return Buffer.concat([d.update(sealed.subarray(16)), d.final()]);
}

/** clientPIN request bodies (CBOR maps, keys in canonical order). */
const request = (sub, fields = []) => encodeCbor(new Map([[1, 2], [2, sub], ...fields]));

/** CTAP2 clientPIN calls over a CtaphidClient. Each returns { status, body (decoded or null) }. */
export class ClientPin {
  constructor(hid) { this.hid = hid; }

  async call(payload) {
    const r = await this.hid.cbor(0x06, payload);
    return { status: r.status, body: r.body.length ? decodeCbor(r.body) : null };
  }

  async retries() {
    const r = await this.call(request(SUB.getPINRetries));
    if (r.status) throw new Error(`getPINRetries: 0x${r.status.toString(16)}`);
    return r.body.get(3);
  }

  /** getKeyAgreement, and a new shared secret with the key it returns. */
  async session() {
    const r = await this.call(request(SUB.getKeyAgreement));
    if (r.status) throw new Error(`getKeyAgreement: 0x${r.status.toString(16)}`);
    this.protocol = new PinProtocol2(r.body.get(1));
    return this.protocol;
  }

  async setPin(pin) {
    const p = this.protocol;
    const padded = new Uint8Array(64);
    padded.set(new TextEncoder().encode(pin));
    const newPinEnc = p.encrypt(padded);
    const auth = PinProtocol2.authenticate(p.hmacKey, newPinEnc);
    return this.call(request(SUB.setPIN, [[3, p.platformKey], [4, auth], [5, newPinEnc]]));
  }

  /** getPinUvAuthTokenUsingPinWithPermissions; on success `token` is the decrypted token. */
  async token(pin, permissions, rpId) {
    const p = this.protocol;
    const pinHashEnc = p.encrypt(sha256(pin).subarray(0, 16));
    const fields = [[3, p.platformKey], [6, pinHashEnc], [9, permissions]];
    if (rpId) fields.push([10, rpId]);
    const r = await this.call(request(SUB.getPinUvAuthTokenUsingPinWithPermissions, fields));
    if (r.status === 0) r.token = p.decrypt(r.body.get(2));
    return r;
  }
}
