// Randomness across boots. The RNG is seeded from ring-oscillator bits, the seed kept in flash
// (replaced at every boot) and the flash chip's unique ID. Observed over USB through the
// clientPIN key agreement key, which each boot makes fresh from the RNG's first output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { bootKey } from '../lib/harness.mjs';
import { ClientPin } from '../lib/clientpin.mjs';

const SEED_SECTOR = 0x7f000;
const PAGE = 256;
const PAGES = 16;
const MAGIC = 'PICOSLOG';
/** A page of the seed log: magic, seed, SHA-256(magic ‖ seed)[..8]. */
const logPage = (seed) => {
  const page = Buffer.alloc(PAGE, 0xff);
  page.write(MAGIC, 0, 'latin1');
  seed.copy(page, 8);
  crypto.createHash('sha256').update(MAGIC).update(seed).digest().copy(page, 40, 0, 8);
  return page;
};
const page = (flash, n) => Buffer.from(flash.subarray(SEED_SECTOR + n * PAGE, SEED_SECTOR + (n + 1) * PAGE));
const good = (flash, n) => {
  const p = page(flash, n);
  return p.subarray(0, 8).toString('latin1') === MAGIC && logPage(p.subarray(8, 40)).equals(p);
};
const blank = (flash, n) => page(flash, n).every((b) => b === 0xff);
/** The seed in force: the newest good page of the log (magic and seed). */
const seedSector = (flash) => {
  for (let n = PAGES - 1; n >= 0; n--) if (good(flash, n)) return page(flash, n).subarray(0, 40);
  return Buffer.alloc(40);
};

/** Boot, read the key agreement key; returns it and the flash as the boot left it. */
async function boot(options) {
  const { machine, hid } = await bootKey(options);
  await hid.init();
  const r = await new ClientPin(hid).call(new Uint8Array([0xa2, 0x01, 0x02, 0x02, 0x02]));
  assert.equal(r.status, 0);
  return { key: Buffer.from(r.body.get(1).get(-2)).toString('hex'), flash: machine.snapshotFlash() };
}

test('no two boots run the same random stream, even from the same flash image', async () => {
  const first = await boot({ roscSeed: 1 });
  const image = first.flash; // a saved flash image, booted again below
  assert.equal(seedSector(image).subarray(0, 8).toString(), MAGIC);

  // Same flash image, different oscillator bits (as on real hardware): a different stream.
  const a = await boot({ flash: image, roscSeed: 2 });
  const b = await boot({ flash: image, roscSeed: 3 });
  assert.notEqual(a.key, b.key);
  // The seed sector is rewritten at every boot, each time differently.
  assert.notDeepEqual(seedSector(a.flash), seedSector(image));
  assert.notDeepEqual(seedSector(a.flash), seedSector(b.flash));

  // Identical oscillator bits: a boot from the next image (another persisted seed) still
  // differs. The control, the very same image and bits, shows the emulation itself is
  // deterministic, so the differences above come from the seed inputs.
  const same = await boot({ flash: image, roscSeed: 2 });
  assert.equal(same.key, a.key, 'control: same image, same bits, same stream');
  const next = await boot({ flash: a.flash, roscSeed: 2 });
  assert.notEqual(next.key, a.key);

  // And a key with another flash chip (unique ID) but the same image and bits differs too.
  const other = await boot({ flash: image, roscSeed: 2, flashUid: [1, 2, 3, 4, 5, 6, 7, 8] });
  assert.notEqual(other.key, a.key);
});

test('the seed sector is a log: a boot programs the next page and erases only a full sector', async () => {
  const seedErases = (machine) => machine.flashOps.filter((o) => o.op === 'erase' && o.off === SEED_SECTOR).length;
  const run = async (options) => {
    const { machine, hid } = await bootKey(options);
    await hid.init();
    const r = await new ClientPin(hid).call(new Uint8Array([0xa2, 0x01, 0x02, 0x02, 0x02]));
    assert.equal(r.status, 0);
    return { key: Buffer.from(r.body.get(1).get(-2)).toString('hex'), flash: machine.snapshotFlash(), erases: seedErases(machine) };
  };
  const first = await run({ roscSeed: 4 });
  assert.ok(good(first.flash, 0) && blank(first.flash, 1));
  const second = await run({ flash: first.flash, roscSeed: 4 });
  assert.equal(second.erases, 0, 'no erase while the log has room');
  assert.ok(good(second.flash, 0) && good(second.flash, 1) && blank(second.flash, 2));
  assert.ok(page(second.flash, 0).equals(page(first.flash, 0)), 'earlier pages stay');
  assert.notDeepEqual(seedSector(second.flash), seedSector(first.flash));

  // A page torn by a power cut (magic and part of a seed, no check) is no seed: the boot reads
  // the good page before it and writes after it. Two boots whose torn pages hold different
  // seed bytes run the same stream (were either taken for a seed, they would differ).
  const tornWith = (from) => {
    const image = new Uint8Array(second.flash);
    image.set(page(second.flash, from).subarray(0, 20), SEED_SECTOR + 2 * PAGE);
    return run({ flash: image, roscSeed: 5 });
  };
  const [tornA, tornB] = [await tornWith(0), await tornWith(1)];
  assert.equal(tornA.key, tornB.key, 'a torn page is not read as a seed');
  assert.ok(good(tornA.flash, 3) && !good(tornA.flash, 2));

  // A full log: the boot erases the sector and starts again at page 0.
  const full = new Uint8Array(second.flash);
  for (let n = 0; n < PAGES; n++) full.set(logPage(crypto.randomBytes(32)), SEED_SECTOR + n * PAGE);
  const wrapped = await run({ flash: full, roscSeed: 4 });
  assert.equal(wrapped.erases, 1);
  assert.ok(good(wrapped.flash, 0) && blank(wrapped.flash, 1));
});
