// Randomness across boots. The RNG is seeded from ring-oscillator bits, the seed kept in flash
// (replaced at every boot) and the flash chip's unique ID. Observed over USB through the
// clientPIN key agreement key, which each boot makes fresh from the RNG's first output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import { ClientPin } from '../lib/clientpin.mjs';

const SEED_SECTOR = 0x7f000;
const seedSector = (flash) => Buffer.from(flash.subarray(SEED_SECTOR, SEED_SECTOR + 40));

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
  assert.equal(seedSector(image).subarray(0, 8).toString(), 'PICOSEED');

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
