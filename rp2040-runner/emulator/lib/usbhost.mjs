// A USB host for rp2040js's device-mode controller: control transfers on EP0 (with STALL
// detection, which rp2040js reports by no callback), enumeration, and interrupt IN/OUT reports.

const DPRAM = 0x50100000;
const EP0_IN_BUF_CTRL = DPRAM + 0x80;
const BUF_CTRL_STALL = 1 << 11;
const USBCTRL_REGS = 0x50110000;
const EP_STALL_ARM = USBCTRL_REGS + 0x68;
/** USB 2.0 §7.1.7.3: a host waits at least this long after a device connects before it resets
 * it (TATTDB), and this long after the reset before the first request (TRSTRCY). */
const ATTACH_DEBOUNCE_MS = 100;
const RESET_RECOVERY_MS = 10;

export const setup = (bmRequestType, bRequest, wValue, wIndex, wLength) => {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  b[0] = bmRequestType; b[1] = bRequest;
  dv.setUint16(2, wValue, true); dv.setUint16(4, wIndex, true); dv.setUint16(6, wLength, true);
  return b;
};

export class UsbHost {
  constructor(machine) {
    this.m = machine;
    this.usb = machine.mcu.usbCtrl;
    this.enabled = false;
    this.resetDone = false;
    this.control = null; // the control transfer in progress
    this.armedOut = new Map(); // endpoint -> max length the device armed for OUT
    this.outQueue = new Map(); // endpoint -> [Uint8Array]
    this.inReports = []; // IN reports from interrupt endpoints, in order
    this.onReport = null;
    this.enabledAt = null; // { ms, cycles } when the firmware enabled the controller
    this.usb.onUSBEnabled = () => {
      this.enabled = true;
      this.enabledAt ??= { ms: this.m.nowMs, cycles: this.m.cycles };
    };
    this.usb.onResetReceived = () => { this.resetDone = true; };
    this.usb.onEndpointWrite = (ep, data) => this.onIn(ep, new Uint8Array(data));
    this.usb.onEndpointRead = (ep, max) => { this.armedOut.set(ep, max); this.pump(ep); };
  }

  pump(ep) {
    const queue = this.outQueue.get(ep);
    if (queue?.length && this.armedOut.has(ep)) {
      this.armedOut.delete(ep);
      this.usb.endpointReadDone(ep, queue.shift());
    }
  }

  sendOut(ep, data) {
    if (!this.outQueue.has(ep)) this.outQueue.set(ep, []);
    this.outQueue.get(ep).push(data);
    this.pump(ep);
  }

  onIn(ep, data) {
    if (ep !== 0) {
      // When the device queued it: the run loop may go on for a while (sleeps are jumped
      // over) before the host looks, so reading the clock then would be late.
      data.ms = this.m.nowMs;
      this.inReports.push(data);
      this.onReport?.(data);
      return;
    }
    const c = this.control;
    if (!c) return;
    if (c.stage === 'data-in') {
      c.data.push(...data);
      if (data.length < 64 || c.data.length >= c.wLength) {
        c.stage = 'status-out';
        this.sendOut(0, new Uint8Array(0));
        c.done = true;
      }
    } else if (c.stage === 'status-in' && data.length === 0) {
      c.done = true;
    }
  }

  stalled() {
    const m = this.m.mcu;
    return (m.readUint32(EP0_IN_BUF_CTRL) & BUF_CTRL_STALL) !== 0 && (m.readUint32(EP_STALL_ARM) & 1) !== 0;
  }

  /** One control transfer; resolves to the IN data (Uint8Array), null for no data stage, or
   * throws on STALL or timeout. */
  async controlTransfer(packet, { maxCycles = 25_000_000 } = {}) {
    const wLength = packet[6] | (packet[7] << 8);
    const dirIn = (packet[0] & 0x80) !== 0;
    const c = { stage: dirIn && wLength ? 'data-in' : 'status-in', wLength, data: [], done: false };
    this.control = c;
    // The RP2040 clears EP0's EP_STALL_ARM bits when a SETUP arrives; rp2040js does not, so
    // a STALL would outlive its transfer and the next transfer would look stalled at once.
    this.usb.epStallArm &= ~0b11;
    this.usb.sendSetupPacket(packet);
    let stall = false;
    const ok = await this.m.run({ until: () => c.done || (stall = this.stalled()), maxCycles });
    this.control = null;
    if (stall) throw new Error(`STALL on ${Buffer.from(packet).toString('hex')}`);
    if (!ok) throw new Error(`control transfer timed out: ${Buffer.from(packet).toString('hex')}`);
    // Let the status stage reach the device.
    await this.m.run({ maxCycles: 20_000 });
    return dirIn && wLength ? new Uint8Array(c.data) : null;
  }

  async getDescriptor(type, index, length, { langId = 0, recipient = 0x80 } = {}) {
    return this.controlTransfer(setup(recipient, 6, (type << 8) | index, langId, length));
  }

  async getString(index) {
    const d = await this.getDescriptor(3, index, 255, { langId: 0x0409 });
    if (d[1] !== 3 || d[0] !== d.length) throw new Error('malformed string descriptor');
    return Buffer.from(d.subarray(2)).toString('utf16le');
  }

  /** Emulated time passes (the device runs meanwhile). */
  async wait(ms) {
    const until = this.m.nowMs + ms;
    await this.m.run({ until: () => this.m.nowMs >= until, untilMs: until, maxCycles: Infinity });
  }

  /** Enumerate as a host OS would, with the waits USB 2.0 prescribes (§7.1.7.3): 100 ms of
   * attach debounce once the device connects, a bus reset, 10 ms of reset recovery before the
   * first request. Returns what it learned. */
  async enumerate() {
    const up = await this.m.run({ until: () => this.enabled, maxCycles: 250_000_000 });
    if (!up) throw new Error('device never enabled USB');
    await this.wait(ATTACH_DEBOUNCE_MS);
    this.usb.resetDevice();
    const reset = await this.m.run({ until: () => this.resetDone, maxCycles: 250_000_000 });
    if (!reset) throw new Error('device never acknowledged the bus reset');
    await this.wait(RESET_RECOVERY_MS);
    const device = await this.getDescriptor(1, 0, 18);
    await this.controlTransfer(setup(0x00, 5, 1, 0, 0)); // SET_ADDRESS(1)
    const head = await this.getDescriptor(2, 0, 9);
    const total = head[2] | (head[3] << 8);
    const config = await this.getDescriptor(2, 0, total);
    const dv = new DataView(device.buffer);
    const info = {
      device, config,
      vid: dv.getUint16(8, true), pid: dv.getUint16(10, true),
      manufacturer: device[14] ? await this.getString(device[14]) : null,
      product: device[15] ? await this.getString(device[15]) : null,
      serial: device[16] ? await this.getString(device[16]) : null,
      interfaces: [], endpoints: [],
    };
    for (let i = 0; i < config.length; i += config[i]) {
      if (config[i] === 0) throw new Error('zero-length descriptor');
      const type = config[i + 1];
      if (type === 4) info.interfaces.push({ number: config[i + 2], cls: config[i + 5] });
      if (type === 5) {
        info.endpoints.push({ address: config[i + 2], attributes: config[i + 3],
          maxPacket: config[i + 4] | (config[i + 5] << 8), interval: config[i + 6] });
      }
    }
    await this.controlTransfer(setup(0x00, 9, config[5], 0, 0)); // SET_CONFIGURATION
    const hid = info.interfaces.find((i) => i.cls === 3);
    if (hid) {
      await this.controlTransfer(setup(0x21, 0x0a, 0, hid.number, 0)); // SET_IDLE
      info.reportDescriptor = await this.getDescriptor(0x22, 0, 255, { langId: hid.number, recipient: 0x81 });
    }
    this.epIn = info.endpoints.find((e) => e.address & 0x80)?.address & 0x7f;
    this.epOut = info.endpoints.find((e) => !(e.address & 0x80))?.address;
    return info;
  }

  /** Queue a 64-byte interrupt OUT report. */
  sendReport(report) { this.sendOut(this.epOut, report); }

  /** Wait for the next IN report (its `ms`: the emulated time the device queued it). */
  async nextReport({ maxCycles = 125_000_000 } = {}) {
    const ok = await this.m.run({ until: () => this.inReports.length > 0, maxCycles });
    if (!ok) throw new Error('no IN report in time');
    return this.inReports.shift();
  }
}
