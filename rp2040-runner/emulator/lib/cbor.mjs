// A small CBOR decoder (RFC 8949) for reading CTAP2 responses: ints, byte/text strings,
// arrays, maps, booleans, null. Rejects what CTAP2 canonical CBOR never uses.
export function decodeCbor(bytes) {
  let pos = 0;
  const need = (n) => { if (pos + n > bytes.length) throw new Error('CBOR truncated'); };
  const arg = (info) => {
    if (info < 24) return info;
    const n = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (!n) throw new Error(`CBOR: unsupported length encoding ${info}`);
    need(n);
    let v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(bytes[pos++]);
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const item = () => {
    need(1);
    const b = bytes[pos++];
    const major = b >> 5, info = b & 31;
    switch (major) {
      case 0: return arg(info);
      case 1: return -1 - arg(info);
      case 2: { const n = arg(info); need(n); const v = bytes.slice(pos, pos + n); pos += n; return v; }
      case 3: { const n = arg(info); need(n); const v = new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(pos, pos + n)); pos += n; return v; }
      case 4: { const n = arg(info); const a = []; for (let i = 0; i < n; i++) a.push(item()); return a; }
      case 5: { const n = arg(info); const m = new Map(); for (let i = 0; i < n; i++) { const k = item(); m.set(k, item()); } return m; }
      case 7:
        if (info === 20) return false;
        if (info === 21) return true;
        if (info === 22) return null;
        throw new Error(`CBOR: unsupported simple value ${info}`);
      default: throw new Error(`CBOR: unsupported major type ${major}`);
    }
  };
  const v = item();
  if (pos !== bytes.length) throw new Error('CBOR: trailing bytes');
  return v;
}

/** Encode ints, strings, byte strings (Uint8Array), arrays, booleans and Maps (keys in
 * insertion order: callers give them in CTAP2 canonical order). */
export function encodeCbor(value) {
  const out = [];
  const head = (major, n) => {
    if (n < 24) out.push((major << 5) | n);
    else if (n < 0x100) out.push((major << 5) | 24, n);
    else if (n < 0x10000) out.push((major << 5) | 25, n >> 8, n & 0xff);
    else out.push((major << 5) | 26, (n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  };
  const item = (v) => {
    if (typeof v === 'number') { if (v >= 0) head(0, v); else head(1, -1 - v); }
    else if (typeof v === 'boolean') out.push(v ? 0xf5 : 0xf4);
    else if (typeof v === 'string') { const b = new TextEncoder().encode(v); head(3, b.length); out.push(...b); }
    else if (v instanceof Uint8Array) { head(2, v.length); out.push(...v); }
    else if (Array.isArray(v)) { head(4, v.length); v.forEach(item); }
    else if (v instanceof Map) { head(5, v.size); for (const [k, x] of v) { item(k); item(x); } }
    else throw new Error(`cannot encode ${v}`);
  };
  item(value);
  return new Uint8Array(out);
}
