// A request nobody confirms: the key keeps the channel alive with UPNEEDED keepalives every
// 50 ms (emulated time; half the spec's 100 ms, as Windows needs, see the core's ctaphid.rs),
// blinks the LED, and gives up after 30 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import * as ctap2 from '../lib/ctap2.mjs';

const CTAP2_ERR_USER_ACTION_TIMEOUT = 0x2f;

test('makeCredential without a BOOTSEL press times out after 30 s with keepalives', async () => {
  const { machine, hid } = await bootKey();
  await hid.init();
  const start = machine.nowMs;
  const r = await hid.cbor(0x01, ctap2.makeCredentialRequest().payload, { maxCycles: 40 * machine.clockHz });
  const elapsed = machine.nowMs - start;
  assert.equal(r.status, CTAP2_ERR_USER_ACTION_TIMEOUT);
  assert.ok(elapsed >= 30_000 && elapsed < 31_000, `timed out after ${elapsed} ms`);
  const ka = hid.keepalives;
  assert.ok(ka.length >= 590, `${ka.length} keepalives`);
  assert.ok(ka.every((k) => k.status === 2 || k.status === 1));
  const gaps = ka.slice(1).map((k, i) => k.ms - ka[i].ms);
  // Each gap from the moments the firmware queued the reports; its alarm is set in whole
  // milliseconds, hence 1 ms of slack.
  assert.ok(Math.max(...gaps) <= 51, `largest keepalive gap ${Math.max(...gaps)} ms`);
  // No flood either, once the status is UPNEEDED (a status change is sent at once).
  const waiting = gaps.filter((_, i) => ka[i].status === 2 && ka[i + 1].status === 2);
  assert.ok(Math.min(...waiting) >= 40, `smallest keepalive gap ${Math.min(...waiting)} ms`);
  assert.ok(machine.ledChanges >= 100, `LED changed ${machine.ledChanges} times`);
  assert.ok(machine.bootselReads >= 250, 'BOOTSEL was polled');
});
