// Benchmark rows: cycles at the firmware's clock, as ms at that clock, and the flash work done
// meanwhile (sector erases and page programs, whose time the emulator adds as the chip takes it).

/** Collects one row per request. `measure(name, run)` runs `run()` (a request) and records the
 * cycles from its start to its answer. */
export class Rows {
  constructor(machine) {
    this.machine = machine;
    this.rows = [];
  }

  async measure(name, run) {
    const m = this.machine;
    const ops = m.flashOps.length;
    const flashBusy = m.flashBusyCycles;
    const [cycles, active] = [m.cycles, m.activeCycles];
    const r = await run();
    const done = m.flashOps.slice(ops);
    this.rows.push({
      name,
      busy: m.activeCycles - active,
      total: m.cycles - cycles,
      flash: m.flashBusyCycles - flashBusy,
      erases: done.filter((o) => o.op === 'erase').reduce((n, o) => n + o.len / 4096, 0),
      pages: done.filter((o) => o.op === 'program').reduce((n, o) => n + o.len / 256, 0),
    });
    return r;
  }

  /** A row of emulated time alone (e.g. from power-up to an event). */
  note(name, ms) {
    this.rows.push({ name, ms });
  }

  print(title) {
    const m = this.machine;
    const mhz = m.clockHz / 1e6;
    const fmt = (n) => n.toLocaleString('en-US').padStart(12);
    const ms = (c) => m.ms(c).toFixed(1).padStart(8);
    const timing = Object.entries(m.flashTiming).map(([k, v]) => `${k} ${v}`).join(', ');
    console.log(`${title}: clk_sys ${mhz} MHz; flash timing ${process.env.PICO_FLASH_TIMING ?? 'typical'} (${timing})`);
    const width = Math.max(28, ...this.rows.map((r) => r.name.length + 2));
    console.log(`${'request'.padEnd(width)} busy cycles  ms@${mhz}  total cycles  ms@${mhz}  erases pages  flash ms`);
    for (const r of this.rows) {
      if (r.ms !== undefined) {
        console.log(`${r.name.padEnd(width)}${' '.repeat(20)}  ${fmt(Math.round(r.ms * mhz * 1e3))}${r.ms.toFixed(1).padStart(8)}`);
        continue;
      }
      console.log(`${r.name.padEnd(width)}${fmt(r.busy)}${ms(r.busy)}  ${fmt(r.total)}${ms(r.total)}  ${String(r.erases).padStart(6)} ${String(r.pages).padStart(5)}  ${ms(r.flash)}`);
    }
  }
}
