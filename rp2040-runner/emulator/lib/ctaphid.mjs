// A CTAPHID client (CTAP 2.1 §11.2.4): channel allocation, message framing into 64-byte
// reports, reassembly, KEEPALIVE handling.
import crypto from 'node:crypto';

export const CMD = { PING: 0x81, MSG: 0x83, LOCK: 0x84, INIT: 0x86, WINK: 0x88, CBOR: 0x90,
  CANCEL: 0x91, KEEPALIVE: 0xbb, ERROR: 0xbf };
export const BROADCAST = 0xffffffff;

/** Split a message into reports. */
export function frame(cid, cmd, data) {
  const packets = [];
  const first = new Uint8Array(64);
  new DataView(first.buffer).setUint32(0, cid >>> 0, false);
  first[4] = cmd | 0x80; first[5] = data.length >> 8; first[6] = data.length & 0xff;
  first.set(data.subarray(0, 57), 7);
  packets.push(first);
  for (let off = 57, seq = 0; off < data.length; off += 59, seq++) {
    const p = new Uint8Array(64);
    new DataView(p.buffer).setUint32(0, cid >>> 0, false);
    p[4] = seq;
    p.set(data.subarray(off, off + 59), 5);
    packets.push(p);
  }
  return packets;
}

export class CtaphidClient {
  constructor(host) {
    this.host = host;
    this.cid = BROADCAST;
    this.keepalives = [];
  }

  /** Send one message and read the reply for this channel, skipping (and recording)
   * KEEPALIVEs. Returns { cmd, data, firstPacketCycles, lastPacketCycles }. */
  async transact(cmd, data, { cid = this.cid, maxCycles = 1_250_000_000, onKeepalive } = {}) {
    const m = this.host.m;
    const start = m.cycles;
    const startActive = m.activeCycles;
    for (const p of frame(cid, cmd, data)) this.host.sendReport(p);
    let reply = null;
    for (;;) {
      const left = maxCycles - (m.cycles - start);
      if (left <= 0) throw new Error('CTAPHID reply timed out');
      const p = await this.host.nextReport({ maxCycles: left });
      const pcid = new DataView(p.buffer, p.byteOffset).getUint32(0, false);
      if (pcid !== cid) continue; // another channel's traffic
      if (!reply) {
        if (!(p[4] & 0x80)) throw new Error('CONT packet before INIT packet');
        const rcmd = p[4] & 0x7f | 0x80;
        if (rcmd === CMD.KEEPALIVE) {
          this.keepalives.push({ status: p[7], ms: p.ms });
          onKeepalive?.(p[7]);
          continue;
        }
        const len = (p[5] << 8) | p[6];
        reply = { cmd: rcmd, len, data: [...p.subarray(7, 7 + Math.min(len, 57))], seq: 0 };
      } else {
        if (p[4] & 0x80) throw new Error('INIT packet inside a message');
        if (p[4] !== reply.seq) throw new Error(`bad sequence ${p[4]}, want ${reply.seq}`);
        reply.seq++;
        reply.data.push(...p.subarray(5, 5 + Math.min(reply.len - reply.data.length, 59)));
      }
      if (reply.data.length >= reply.len) {
        return { cmd: reply.cmd, data: new Uint8Array(reply.data),
          cycles: m.cycles - start, activeCycles: m.activeCycles - startActive };
      }
    }
  }

  /** CTAPHID_INIT on the broadcast channel; adopts the new channel. */
  async init() {
    const nonce = new Uint8Array(crypto.randomBytes(8));
    const r = await this.transact(CMD.INIT, nonce, { cid: BROADCAST });
    if (r.cmd !== CMD.INIT) throw new Error(`INIT answered with command 0x${r.cmd.toString(16)}`);
    if (r.data.length < 17) throw new Error('short INIT response');
    if (Buffer.compare(r.data.subarray(0, 8), nonce) !== 0) throw new Error('INIT nonce mismatch');
    const dv = new DataView(r.data.buffer, r.data.byteOffset);
    this.cid = dv.getUint32(8, false);
    return { cid: this.cid, protocol: r.data[12], version: [...r.data.subarray(13, 16)],
      capabilities: r.data[16] };
  }

  async cbor(command, payload = new Uint8Array(0), opts) {
    const req = new Uint8Array(1 + payload.length);
    req[0] = command; req.set(payload, 1);
    const r = await this.transact(CMD.CBOR, req, opts);
    if (r.cmd !== CMD.CBOR) throw new Error(`CBOR answered with 0x${r.cmd.toString(16)} ${Buffer.from(r.data).toString('hex')}`);
    return { status: r.data[0], body: r.data.subarray(1), cycles: r.cycles, activeCycles: r.activeCycles };
  }
}
