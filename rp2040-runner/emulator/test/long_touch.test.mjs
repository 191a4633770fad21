// longTouchForReset on the Pico: getInfo offers it (0x18 false, 0x04 in
// authenticatorConfigCommands), enableLongTouchForReset turns it on across a power cycle, and
// then authenticatorReset is answered only by BOOTSEL held without a break for 5 s: a 2 s press
// does not count, and letting go starts the count again. Emulated time throughout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bootKey } from '../lib/harness.mjs';
import { decodeCbor, encodeCbor } from '../lib/cbor.mjs';

const GET_INFO = 0x04;
const RESET = 0x07;
const CONFIG = 0x0d;
const ENABLE_LONG_TOUCH_FOR_RESET = 0x04;
const UPNEEDED = 2;

async function info(hid) {
  const r = await hid.cbor(GET_INFO);
  assert.equal(r.status, 0);
  return decodeCbor(r.body);
}

test('with longTouchForReset on, reset waits for BOOTSEL held 5 s', async () => {
  const { machine, hid } = await bootKey();
  await hid.init();
  let i = await info(hid);
  assert.equal(i.get(0x18), false, 'offered, off');
  assert.ok(i.get(0x1f).includes(ENABLE_LONG_TOUCH_FOR_RESET), `${i.get(0x1f)}`);
  const enable = encodeCbor(new Map([[1, ENABLE_LONG_TOUCH_FOR_RESET]]));
  assert.equal((await hid.cbor(CONFIG, enable)).status, 0, 'no PIN: no token needed');
  assert.equal((await info(hid)).get(0x18), true);

  // Power cycle: the switch is in flash. The reset arrives at once (within 10 s of power-up).
  const { machine: m2, hid: hid2 } = await bootKey({ flash: machine.snapshotFlash() });
  await hid2.init();
  assert.equal((await info(hid2)).get(0x18), true, 'kept across a power cycle');
  let asked = null;
  let secondPress = null;
  const flashBusyBefore = m2.flashBusyCycles;
  const r = await hid2.cbor(RESET, undefined, {
    maxCycles: 40 * m2.clockHz,
    onKeepalive: (status) => {
      if (status !== UPNEEDED) return;
      const now = m2.nowMs;
      asked ??= now;
      // 0-2 s: pressed; 2-3 s: released; from 3 s: held until the key answers.
      if (now - asked < 2000) m2.bootselPressed = true;
      else if (now - asked < 3000) m2.bootselPressed = false;
      else {
        m2.bootselPressed = true;
        secondPress ??= now;
      }
    },
  });
  const answered = m2.nowMs;
  m2.bootselPressed = false;
  assert.equal(r.status, 0, `reset status 0x${r.status.toString(16)}`);
  assert.ok(secondPress !== null, 'the 2 s press was not taken for a long touch');
  // The reset then wipes the partition (each sector that holds data, docs/pin-lock.md): the
  // answer comes that much flash time later, the touch itself still exactly 5 s.
  const wipeMs = ((m2.flashBusyCycles - flashBusyBefore) / m2.clockHz) * 1000;
  assert.ok(wipeMs > 0, 'the reset erased the partition');
  const held = answered - secondPress - wipeMs;
  assert.ok(held >= 5000 && held < 5300, `answered after BOOTSEL was held ${held} ms (+ ${wipeMs} ms of erases)`);
  i = await info(hid2);
  assert.equal(i.get(0x18), false, 'reset: factory setting again');
});
