// First-boot entropy that is checked: ring oscillators gone bad (stuck at 0 or 1; biased, yet
// without a run long enough for the repetition count test) must be refused, the way a user and
// a platform see it: the LED pattern on GPIO25, the USB product name, every CTAP request
// answered with an error, and nothing written to flash. A sound oscillator boots as usual (the
// rest of the suite), also after a refused boot.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import { CMD } from '../lib/ctaphid.mjs';
import { u2f } from '../lib/u2f.mjs';

// The firmware's health tests (entropy-health): SP 800-90B cutoffs at H = 0.5, α = 2^-20.
const RCT_CUTOFF = 41;
const APT_WINDOW = 1024;
const APT_CUTOFF = 793;
const SEED_SAMPLES = 2048;
const SEED_SECTOR = 0x7f000;
const CTAP1_ERR_OTHER = 0x7f;
const SW_NO_PRECISE_DIAGNOSIS = 0x6f00;
const PRODUCT = 'Open FIDO Key (Pico)';
// The refusal pattern (src/refusal.rs): three 200 ms flashes, then 1.4 s dark.
const PATTERN = [[true, 200], [false, 200], [true, 200], [false, 200], [true, 200], [false, 1400]];

/** The longest run of equal bits, and the most samples of any APT window equal to its first. */
function verdicts(bits) {
  let longest = 0;
  for (let i = 0, run = 0; i < bits.length; i++) {
    run = i > 0 && bits[i] === bits[i - 1] ? run + 1 : 1;
    longest = Math.max(longest, run);
  }
  let proportion = 0;
  for (let w = 0; w + APT_WINDOW <= bits.length; w += APT_WINDOW) {
    const window = bits.slice(w, w + APT_WINDOW);
    proportion = Math.max(proportion, window.filter((b) => b === window[0]).length);
  }
  return { longest, proportion };
}

/** Boot with `rosc`, check everything a refusal must show; returns the machine. */
async function expectRefusal({ rosc, flash, test: failed }) {
  const { machine, info, hid } = await bootKey({ rosc, flash });
  const before = flash ? Buffer.from(flash) : null;
  assert.equal(info.product, `${PRODUCT}: RNG failed (${failed} test)`);
  assert.equal(info.vid, 0x1209);

  // CTAPHID works; every CTAP request gets the protocol's error, at once.
  await hid.init();
  const getInfo = await hid.cbor(0x04);
  assert.deepEqual([getInfo.status, getInfo.body.length], [CTAP1_ERR_OTHER, 0]);
  const makeCredential = await hid.cbor(0x01, new Uint8Array([0xa0]));
  assert.equal(makeCredential.status, CTAP1_ERR_OTHER);
  const version = await u2f(hid, 0x03, 0x00);
  assert.equal(version.sw, SW_NO_PRECISE_DIAGNOSIS);
  const ping = await hid.transact(CMD.PING, new Uint8Array([1, 2, 3]));
  assert.deepEqual([ping.cmd, [...ping.data]], [CMD.PING, [1, 2, 3]]);

  // The LED: run 2 periods, then compare the last whole period of changes with the pattern.
  const until = machine.nowMs + 5_000;
  assert.ok(await machine.run({ until: () => machine.nowMs >= until, maxCycles: 2_000_000_000 }));
  const changes = machine.ledLog.filter((c, i, all) => i === 0 || c.on !== all[i - 1].on);
  assert.ok(changes.length >= 2 * PATTERN.length, `${changes.length} LED changes`);
  const lastPeriod = changes.slice(-PATTERN.length - 1);
  const seen = lastPeriod.slice(0, -1).map((c, i) => [c.on, Math.round(lastPeriod[i + 1].ms - c.ms)]);
  const close = (a, b) => a.every(([on, ms], i) => on === b[i][0] && Math.abs(ms - b[i][1]) <= 2);
  const rotations = PATTERN.map((_, k) => [...PATTERN.slice(k), ...PATTERN.slice(0, k)]);
  assert.ok(rotations.some((r) => close(seen, r)), `LED ${JSON.stringify(seen)}`);

  // Nothing written to flash: no seed rolled forward, no state formatted or changed.
  assert.deepEqual(machine.flashOps, []);
  if (before) assert.ok(before.equals(Buffer.from(machine.snapshotFlash())), 'flash unchanged');
  return machine;
}

test('an oscillator stuck at 0 or at 1 is refused at the repetition count test\'s cutoff', async () => {
  for (const value of [0, 1]) {
    const machine = await expectRefusal({ rosc: () => value, test: 'repetition count' });
    const bits = machine.roscReads.map((r) => r.bit);
    assert.equal(bits.length, RCT_CUTOFF, `stuck at ${value}`);
    assert.ok(bits.every((b) => b === value));
  }
});

test('a biased oscillator that passes the repetition count test fails the adaptive proportion test', async () => {
  // 7 in 8 samples are 1 (H ≈ 0.19 bit), never more than 20 in a row.
  let run = 0;
  const rosc = (random) => {
    const bit = run < 20 && random < 0.875 ? 1 : 0;
    run = bit ? run + 1 : 0;
    return bit;
  };
  const machine = await expectRefusal({ rosc, test: 'adaptive proportion' });
  // The test's premise, checked on the bits the firmware read: no run reached the RCT cutoff,
  // and the window of the last sample read reached the APT cutoff with it.
  const bits = machine.roscReads.map((r) => r.bit);
  assert.ok(verdicts(bits).longest < RCT_CUTOFF, `longest run ${verdicts(bits).longest}`);
  const window = bits.slice(Math.floor((bits.length - 1) / APT_WINDOW) * APT_WINDOW);
  assert.equal(window.filter((b) => b === window[0]).length, APT_CUTOFF);
  assert.equal(bits.at(-1), window[0]);
});

test('a seed from an earlier boot does not stand in for a failed oscillator; the next boot retries', async () => {
  // A key that has booted before: its seed sector and state are in flash.
  const first = await bootKey();
  await first.hid.init();
  assert.equal((await first.hid.cbor(0x04)).status, 0);
  const flash = first.machine.snapshotFlash();
  assert.equal(Buffer.from(flash.subarray(SEED_SECTOR, SEED_SECTOR + 8)).toString(), 'PICOSLOG');

  // The oscillator fails: refused all the same, and the flash is left as it was.
  await expectRefusal({ rosc: () => 1, flash, test: 'repetition count' });

  // Power-up with the oscillator sound again: the key works, from the same flash.
  const again = await bootKey({ flash });
  assert.equal(again.info.product, PRODUCT);
  assert.equal(again.machine.roscReads.length, SEED_SAMPLES);
  const { longest, proportion } = verdicts(again.machine.roscReads.map((r) => r.bit));
  assert.ok(longest < RCT_CUTOFF && proportion < APT_CUTOFF);
  await again.hid.init();
  assert.equal((await again.hid.cbor(0x04)).status, 0);
});
