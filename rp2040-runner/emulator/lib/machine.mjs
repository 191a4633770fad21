// An emulated Pico: rp2040js with the stub ROM, the firmware in flash, a BOOTSEL button, a
// ring oscillator, and a run loop that lets the Node event loop (the USB host) interleave.
import { Simulator, ConsoleLogger, LogLevel, GPIOPinState } from 'rp2040js';
import { installStubRom } from './rom.mjs';
import { readImage, FLASH_BASE } from './image.mjs';

const IO_QSPI = 0x40018;
const ROSC = 0x40060;
const SS_CTRL = 0x0c; // GPIO_QSPI_SS_CTRL
const SIO_GPIO_HI_IN = 0x008;
const QSPI_SS_BIT = 1 << 1;
const XIP_SSI = 0x18000;
const SSI_SR = 0x28;
const SSI_DR0 = 0x60;
const SSI_SR_TFNF = 1 << 1;
const SSI_SR_TFE = 1 << 2;
const SSI_SR_RFNE = 1 << 3;
const VREG_AND_CHIP_RESET = 0x40064;
const VREG_RESET = 0xb1; // VSEL 1.10 V (0b1011 in bits 7:4), enabled
const MAX_HARDWARE_IRQ = 25; // rp2040js: IRQs 0..25 come from peripherals, 26..31 are software

/** The longest the emulator lets the sleeping core's clock jump before the host may act. */
const MAX_SLEEP_JUMP_NS = 100_000;
const DEFAULT_FLASH_UID = [0xe6, 0x60, 0x58, 0x38, 0x83, 0x2a, 0x6d, 0x2c];

/** How long the W25Q16JV takes to erase a 4 KiB sector (tSE) and to program a 256-byte page
 * (tPP), in ms: typical and maximum from its datasheet (AC electrical characteristics), or none
 * (the flash answers at once, as rp2040js alone would have it). PICO_FLASH_TIMING picks one. */
export const FLASH_TIMINGS = {
  typical: { eraseMs: 45, programMs: 0.7 },
  max: { eraseMs: 400, programMs: 3 },
  none: { eraseMs: 0, programMs: 0 },
};

export class Machine {
  /** image: path to .elf/.uf2; flash: optional previous flash contents (a "power cycle");
   * roscSeed: seeds the ring oscillator's bits (a fixed default keeps cycle counts repeatable);
   * rosc: an oscillator gone bad, `(random) => bit` given a uniform number in [0, 1) from the
   * seeded generator (e.g. `() => 0`, stuck); flashUid: the flash chip's 64-bit unique ID
   * (8 bytes); flashTiming: a FLASH_TIMINGS key. */
  constructor(image, {
    flash, log = false, roscSeed = 0x2545f491, rosc, flashUid = DEFAULT_FLASH_UID,
    flashTiming = process.env.PICO_FLASH_TIMING ?? 'typical',
  } = {}) {
    this.sim = new Simulator();
    this.mcu = this.sim.rp2040;
    this.clock = this.sim.clock;
    this.core = this.mcu.core;
    this.mcu.logger = new ConsoleLogger(log ? LogLevel.Debug : LogLevel.Error);
    this.flashOps = [];
    this.flashTiming = FLASH_TIMINGS[flashTiming];
    this.flashTimingName = flashTiming;
    if (!this.flashTiming) throw new Error(`PICO_FLASH_TIMING: ${flashTiming} is none of ${Object.keys(FLASH_TIMINGS)}`);
    this.flashBusyCycles = 0; // cycles spent waiting for the flash to erase or program
    // Before loading flash: loadBootrom resets the chip, which erases rp2040js's flash.
    installStubRom(this.mcu, {
      onFlash: (op, off, len) => {
        this.flashOps.push({ op, off, len, atMs: this.nowMs });
        this.flashBusy(op === 'erase' ? (len / 4096) * this.flashTiming.eraseMs : (len / 256) * this.flashTiming.programMs);
      },
    });
    if (flash) this.mcu.flash.set(flash);
    else for (const { addr, data } of readImage(image)) this.mcu.flash.set(data, addr - FLASH_BASE);
    this.bootselPressed = false;
    this.activeCycles = 0; // cycles spent executing (not asleep in WFI)
    this.modelQspiSs();
    this.modelRosc(roscSeed, rosc);
    this.modelFlashCommands(Uint8Array.from(flashUid));
    this.modelNvicPending();
    this.modelVreg();
    this.ledChanges = 0;
    this.ledLog = []; // every change of GPIO25: { ms, on }
    this.mcu.gpio[25].addListener((state) => {
      this.ledChanges++;
      this.ledLog.push({ ms: this.nowMs, on: state === GPIOPinState.High });
    });
    this.core.PC = 0; // reset: the ROM's reset vector enters the application
    this.core.SP = this.mcu.readUint32(0);
    this.core.PC = this.mcu.readUint32(4) & ~1;
  }

  /** BOOTSEL: rp2040js leaves IO_QSPI unimplemented, so the chip-select pad is modelled here.
   * While the pin is driven (XIP, idle high) it reads 1 whatever the button does; with its
   * output disabled (OEOVER = 2) it reads 0 while the button is pressed. */
  modelQspiSs() {
    const regs = new Map();
    const machine = this;
    this.mcu.peripherals[IO_QSPI] = {
      readUint32: (off) => regs.get(off & 0xfff) ?? 0,
      writeUint32: (off, v) => { regs.set(off & 0xfff, v >>> 0); },
      writeUint32Atomic(off, v, type) {
        const cur = regs.get(off & 0xfff) ?? 0;
        const next = type === 1 ? cur ^ v : type === 2 ? cur | v : type === 3 ? cur & ~v : v;
        regs.set(off & 0xfff, next >>> 0);
      },
    };
    this.qspiSsCtrl = () => regs.get(SS_CTRL) ?? 0;
    this.ssOutputDisabled = () => (((regs.get(SS_CTRL) ?? 0) >>> 12) & 3) === 2;
    const sio = this.mcu.sio;
    const read = sio.readUint32.bind(sio);
    sio.readUint32 = (off) => {
      let v = read(off);
      if (off === SIO_GPIO_HI_IN) {
        const low = machine.ssOutputDisabled() && machine.bootselPressed;
        v = low ? v & ~QSPI_SS_BIT : v | QSPI_SS_BIT;
        machine.bootselReads = (machine.bootselReads ?? 0) + 1;
      }
      return v;
    };
  }

  /** ROSC: RANDOMBIT from a xorshift generator seeded per machine (the same seed gives the same
   * bits, so cycle counts repeat; a real oscillator never repeats), or from `rosc`, a source
   * gone bad. Every read is kept in `roscReads` ({ cycles, ns, bit }): when the firmware
   * sampled (CPU cycles, emulated time), and what it got. */
  modelRosc(seed, rosc) {
    let x = (seed >>> 0) || 1;
    const next = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return x >>> 0; };
    const bit = rosc ? () => (rosc(next() / 2 ** 32) ? 1 : 0) : () => next() & 1;
    this.roscReads = [];
    this.mcu.peripherals[ROSC] = {
      readUint32: (off) => {
        if ((off & 0xfff) !== 0x1c) return 0;
        const b = bit();
        this.roscReads.push({ cycles: this.core.cycles, ns: this.clock.nanos, bit: b });
        return b;
      },
      writeUint32: () => {},
      writeUint32Atomic: () => {},
    };
  }

  /** The flash chip behind the SSI, for commands sent with chip select forced low (IO_QSPI
   * SS_CTRL OUTOVER = 2), as the Pico SDK's `flash_do_cmd` does: each byte written to DR0 clocks
   * one byte back into the receive FIFO. Only 0x4B (Read Unique ID: four dummy bytes, then the
   * 64-bit ID) answers; anything else reads 0xff. rp2040js's own SSI model (which only fakes the
   * status poll of boot2) still handles DR0 while the SSI drives chip select itself (XIP). */
  modelFlashCommands(uid) {
    const ssi = this.mcu.peripherals[XIP_SSI];
    const read = ssi.readUint32.bind(ssi);
    const write = ssi.writeUint32.bind(ssi);
    const rx = [];
    let command = []; // bytes clocked out since chip select went low
    let csWasLow = false;
    const csLow = () => (((this.qspiSsCtrl() >>> 8) & 3) === 2);
    const track = () => {
      const low = csLow();
      if (low !== csWasLow) { command = []; rx.length = 0; csWasLow = low; }
      return low;
    };
    this.flashCommands = []; // first byte of every command sent by hand
    ssi.readUint32 = (off) => {
      if (!track()) return read(off);
      if (off === SSI_SR) return SSI_SR_TFNF | SSI_SR_TFE | (rx.length ? SSI_SR_RFNE : 0);
      if (off === SSI_DR0) return rx.length ? rx.shift() : 0;
      return read(off);
    };
    ssi.writeUint32 = (off, v) => {
      if (!track() || off !== SSI_DR0) return write(off, v);
      command.push(v & 0xff);
      if (command.length === 1) this.flashCommands.push(command[0]);
      const at = command.length - 1;
      rx.push(command[0] === 0x4b && at >= 5 && at < 13 ? uid[at - 5] : 0xff);
    };
  }

  /** NVIC pending bits as the Cortex-M0+ keeps them: taking an interrupt clears its pending
   * bit, which a peripheral whose request line is still high sets again. rp2040js instead leaves
   * a peripheral IRQ pending until the peripheral lowers its line, so a software pend (ISPR, as
   * `NVIC::pend`) of a quiet peripheral's IRQ re-entered the handler forever. */
  modelNvicPending() {
    const core = this.core;
    const level = new Set();
    const setInterrupt = core.setInterrupt.bind(core);
    core.setInterrupt = (irq, value) => {
      if (value) level.add(irq); else level.delete(irq);
      setInterrupt(irq, value);
    };
    const entry = core.exceptionEntry.bind(core);
    core.exceptionEntry = (n) => {
      const irq = n - 16;
      if (irq >= 0 && irq <= MAX_HARDWARE_IRQ && !level.has(irq)) core.pendingInterrupts &= ~(1 << irq);
      return entry(n);
    };
  }

  /** The flash is busy for `ms`: the ROM routine (called with interrupts off, from RAM) polls
   * the chip's status until it is done, so the core spends that time executing and nothing else
   * runs. The cycles and the clock move on together; the timer's alarms fire meanwhile and their
   * interrupts wait until the firmware turns interrupts back on, as on the chip. */
  flashBusy(ms) {
    const cycles = Math.round((ms * 1e6) / this.nsPerCycle);
    if (cycles <= 0) return;
    this.core.cycles += cycles;
    this.activeCycles += cycles;
    this.flashBusyCycles += cycles;
    this.clock.tick(cycles * this.nsPerCycle);
  }

  /** The core voltage regulator (rp2040js leaves it unimplemented): VREG's VSEL, and every
   * change of clk_sys with the core voltage at that moment (`clockChanges`). */
  modelVreg() {
    let vreg = VREG_RESET;
    this.mcu.peripherals[VREG_AND_CHIP_RESET] = {
      readUint32: (off) => ((off & 0xfff) === 0 ? vreg : 0),
      writeUint32: (off, v) => { if ((off & 0xfff) === 0) vreg = v >>> 0; },
      writeUint32Atomic(off, v, type) {
        if ((off & 0xfff) !== 0) return;
        vreg = (type === 1 ? vreg ^ v : type === 2 ? vreg | v : type === 3 ? vreg & ~v : v) >>> 0;
      },
    };
    /** The core voltage VSEL selects (RP2040 datasheet, VREG: 0.80 V at 5 up to 1.30 V at 15). */
    this.coreVolts = () => Math.max(0.8, 0.8 + 0.05 * (((vreg >>> 4) & 0xf) - 5));
    this.clockChanges = [];
    this.mcu.addClockListener((hz) => this.clockChanges.push({ hz, volts: this.coreVolts() }));
  }

  get cycles() { return this.core.cycles; }
  get nowMs() { return this.clock.nanos / 1e6; }
  /** clk_sys as the firmware set it up (rp2040js follows the PLL and CLOCKS registers). */
  get clockHz() { return this.mcu.clkSys; }
  get nsPerCycle() { return 1e9 / this.mcu.clkSys; }
  /** Cycles as milliseconds at the firmware's clock. */
  ms(cycles) { return (cycles * 1e3) / this.mcu.clkSys; }

  /** Run until `until()` holds or `maxCycles` more cycles pass. `until` is checked every
   * `chunk` steps (an instruction, or one jump over a sleep), then Node's event loop runs. */
  /** Run until `until()` holds, or `maxCycles` pass; `untilMs`: a time (ms since power-up) a
   * sleep is never jumped past, for a caller that waits until then. */
  async run({ until = () => false, maxCycles = 125_000_000, chunk = 5_000, untilMs = Infinity } = {}) {
    const limit = this.core.cycles + maxCycles;
    while (!until()) {
      if (this.core.cycles >= limit) return false;
      for (let step = 0; step < chunk && this.core.cycles < limit; step++) {
        if (this.core.waiting) {
          // Asleep, and what the caller waits for has happened (the answer's last packet):
          // return before time jumps, so a request the host sends next finds the clock where
          // it is (on a chip it would wake the core at once, whatever alarm is set).
          if (until()) return true;
          // Asleep: jump to the next timer/USB event, or 10 µs when nothing is scheduled, and
          // never more than 0.1 ms: the host acts between jumps, and a packet it sends wakes the
          // core at once on the chip, not at the firmware's next alarm.
          const nsPerCycle = this.nsPerCycle;
          let ns = this.clock.nanosToNextAlarm;
          if (!(ns > 0 && ns < 1e12)) ns = 10_000;
          ns = Math.min(ns, MAX_SLEEP_JUMP_NS, (limit - this.core.cycles) * nsPerCycle,
            untilMs * 1e6 - this.clock.nanos);
          const cycles = Math.max(1, Math.ceil(ns / nsPerCycle));
          this.clock.tick(cycles * nsPerCycle);
          this.core.cycles += cycles;
          break; // let the host act, check until()
        } else {
          const c = this.core.executeInstruction();
          this.activeCycles += c;
          this.clock.tick(c * this.nsPerCycle);
        }
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    return true;
  }

  /** A copy of the whole flash, to boot again from it later. */
  snapshotFlash() { return new Uint8Array(this.mcu.flash); }
}
