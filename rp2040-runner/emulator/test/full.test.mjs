// The Pico with its store nearly full: booted from a state partition the core's own code filled
// on the host (authenticator's example `pico_state_image`, maximal credentials), it takes
// credentials through USB until CTAP2_ERR_KEY_STORE_FULL, the remaining count exact at each
// step, and then still signs in discoverably with what it holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { bootKey, firmwarePath } from '../lib/harness.mjs';
import { elfSymbol } from '../lib/image.mjs';
import { decodeCbor, encodeCbor } from '../lib/cbor.mjs';
import * as ctap2 from '../lib/ctap2.mjs';

/** pico_state_image writes the flash from the vault (0x7B000) to the end: vault, seed sector, state. */
const IMAGE_OFFSET = 0x7B000;
const CAPACITY = 1740; // store::capacity(384): 348 one-block slot files of five slots
const PREFILLED = CAPACITY - 4;
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The pre-filled partition: PICO_NEARLY_FULL_IMAGE (rp2040-runner/ci.sh makes it) or made now. */
function nearlyFullImage() {
  if (process.env.PICO_NEARLY_FULL_IMAGE) return fs.readFileSync(process.env.PICO_NEARLY_FULL_IMAGE);
  const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pico-state-')), 'state.img');
  execFileSync('cargo', ['run', '--quiet', '--release', '-p', 'authenticator', '--example',
    'pico_state_image', '--', out, String(PREFILLED), '300'], { cwd: root, stdio: 'inherit' });
  return fs.readFileSync(out);
}

const padded = (prefix, len, fill) => prefix + fill.repeat(Math.max(0, len - prefix.length));
const SHARED = `${padded('rp-shared.', 248, 'r')}.example`;

test('a nearly full Pico fills to KEY_STORE_FULL with an exact count, then signs in', async () => {
  const first = await bootKey();
  const flash = first.machine.snapshotFlash();
  flash.set(nearlyFullImage(), IMAGE_OFFSET);
  const { machine, hid } = await bootKey({ flash });
  machine.bootselPressed = true;
  await hid.init();
  const remaining = async () => decodeCbor((await hid.cbor(0x04)).body).get(0x14);
  assert.equal(await remaining(), CAPACITY - PREFILLED);

  const make = (i) => {
    const name = padded(`usb-${i}-`, 64, 'n');
    return encodeCbor(new Map([
      [1, ctap2.sha256(`make ${i}`)],
      [2, new Map([['id', SHARED]])],
      [3, new Map([['id', new TextEncoder().encode(padded(`usb-user-${i}-`, 64, 'u'))],
        ['name', name], ['displayName', name]])],
      [4, [new Map([['alg', -7], ['type', 'public-key']])]],
      [7, new Map([['rk', true]])],
    ]));
  };
  let newest;
  for (let i = 0; ; i++) {
    const before = await remaining();
    const r = await hid.cbor(0x01, make(i));
    if (before === 0) {
      assert.equal(r.status, 0x28, 'no room reported: CTAP2_ERR_KEY_STORE_FULL');
      break;
    }
    assert.equal(r.status, 0, `room reported (${before}) but creation ${i} failed`);
    assert.equal(await remaining(), before - 1, 'each credential takes exactly one place');
    newest = ctap2.parseAuthData(decodeCbor(r.body).get(2));
  }

  // Discovery on the RP of 300 + 4: the newest first, its signature verified.
  const cdh = ctap2.sha256('sign in');
  const r = await hid.cbor(0x02, encodeCbor(new Map([[1, SHARED], [2, cdh]])));
  assert.equal(r.status, 0);
  const body = decodeCbor(r.body);
  assert.equal(body.get(5), 300 + CAPACITY - PREFILLED, 'numberOfCredentials');
  assert.deepEqual(Buffer.from(body.get(1).get('id')), Buffer.from(newest.credentialId));
  const authData = body.get(2);
  assert.ok(ctap2.verifyEs256(ctap2.coseToKey(newest.coseKey),
    Buffer.concat([authData, cdh]), body.get(3)));
  // And the next one, a credential the host made before the Pico ever booted.
  assert.equal((await hid.cbor(0x08)).status, 0);

  // The heap's high-water mark over all of it, the store full: the RAM index (16 bytes a
  // slot, 27,840) and what requests need, well inside the 96 KiB heap.
  const peak = machine.mcu.readUint32(elfSymbol(fs.readFileSync(firmwarePath()), 'HEAP_PEAK'));
  console.log(`heap peak with the store full: ${peak} of 98,304 bytes`);
  assert.ok(peak >= 27840, `the index is on the heap (peak ${peak})`);
  assert.ok(peak <= 64 * 1024, `heap peak ${peak} leaves a third of the heap free`);
});
