// U2F raw messages (FIDO U2F Raw Message Formats v1.2) over CTAPHID_MSG, and checks of the
// answers with Node's crypto.
import crypto from 'node:crypto';
import { CMD } from './ctaphid.mjs';

export const SW = { NO_ERROR: 0x9000, CONDITIONS_NOT_SATISFIED: 0x6985, WRONG_DATA: 0x6a80 };
export const P1 = { ENFORCE: 0x03, CHECK_ONLY: 0x07, DONT_ENFORCE: 0x08 };

/** An extended-length command APDU (CLA 0, P2 0, Le 65536). */
export function apdu(ins, p1, data = new Uint8Array(0)) {
  const a = new Uint8Array(7 + data.length + 2);
  a.set([0x00, ins, p1, 0x00, 0x00, data.length >> 8, data.length & 0xff]);
  a.set(data, 7);
  return a;
}

/** Send one APDU; returns { sw, data, cycles, activeCycles }. */
export async function u2f(hid, ins, p1, data, opts) {
  const r = await hid.transact(CMD.MSG, apdu(ins, p1, data), opts);
  if (r.cmd !== CMD.MSG) throw new Error(`MSG answered with 0x${r.cmd.toString(16)}`);
  const n = r.data.length;
  return { sw: (r.data[n - 2] << 8) | r.data[n - 1], data: r.data.subarray(0, n - 2),
    cycles: r.cycles, activeCycles: r.activeCycles };
}

export const register = (hid, challenge, application, opts) =>
  u2f(hid, 0x01, 0x00, new Uint8Array([...challenge, ...application]), opts);

export const authenticate = (hid, p1, challenge, application, keyHandle, opts) =>
  u2f(hid, 0x02, p1, new Uint8Array([...challenge, ...application, keyHandle.length, ...keyHandle]), opts);

/** A Node public key from an uncompressed P-256 point (0x04 || X || Y). */
export function rawP256Key(point) {
  if (point.length !== 65 || point[0] !== 0x04) throw new Error('not an uncompressed P-256 point');
  const b64 = (b) => Buffer.from(b).toString('base64url');
  return crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b64(point.subarray(1, 33)),
    y: b64(point.subarray(33)) }, format: 'jwk' });
}

/** The length of the DER item at the start of `b`. */
function derLength(b) {
  if (b[1] < 0x80) return 2 + b[1];
  const n = b[1] & 0x7f;
  let len = 0;
  for (let i = 0; i < n; i++) len = (len << 8) | b[2 + i];
  return 2 + n + len;
}

/** Split a registration response: 0x05, public key, key handle, certificate, signature. */
export function parseRegistration(d) {
  if (d[0] !== 0x05) throw new Error(`reserved byte 0x${d[0].toString(16)}`);
  const publicKey = d.slice(1, 66);
  const khLen = d[66];
  const keyHandle = d.slice(67, 67 + khLen);
  const rest = d.subarray(67 + khLen);
  const certLen = derLength(rest);
  return { publicKey, keyHandle, certificate: rest.slice(0, certLen), signature: rest.slice(certLen) };
}
