//! Power cuts at every storage write: a scripted session (registrations, assertions, U2F, PIN
//! set and checks, deletions, large-blob writes) is replayed with the power cut after the Nth
//! program or erase, for every N, both clean and tearing the write in half. After each cut the
//! filesystem must mount, and the invariants hold: the signature counter never goes back, a PIN
//! retry once spent stays spent, every credential acknowledged before the cut still signs, and
//! a discoverable credential is either wholly there or absent.

use std::cell::Cell;
use std::rc::Rc;

use authenticator::ctaphid::{App, Transaction};
use ciborium::Value;
use littlefs2::fs::{Allocation, Filesystem};
use test_support::pin_client::{retries, PinClient};
use test_support::*;

const PIN: &str = "4321";

/// A RAM block device that loses power after `budget` program/erase operations.
struct CuttableStorage {
    inner: RamStorage,
    budget: Rc<Cell<Option<usize>>>,
    /// Count of operations so far (to size the sweep).
    ops: Rc<Cell<usize>>,
    tear: bool,
}

impl CuttableStorage {
    fn spend(&mut self) -> Result<Option<bool>, littlefs2::io::Error> {
        self.ops.set(self.ops.get() + 1);
        match self.budget.get() {
            Some(0) => Err(littlefs2::io::Error::IO),
            Some(1) => {
                self.budget.set(Some(0));
                Ok(Some(self.tear))
            }
            Some(n) => {
                self.budget.set(Some(n - 1));
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

impl littlefs2::driver::Storage for CuttableStorage {
    const READ_SIZE: usize = RamStorage::READ_SIZE;
    const WRITE_SIZE: usize = RamStorage::WRITE_SIZE;
    const BLOCK_SIZE: usize = RamStorage::BLOCK_SIZE;
    const BLOCK_COUNT: usize = RamStorage::BLOCK_COUNT;
    const BLOCK_CYCLES: isize = RamStorage::BLOCK_CYCLES;
    type CACHE_SIZE = <RamStorage as littlefs2::driver::Storage>::CACHE_SIZE;
    type LOOKAHEAD_SIZE = <RamStorage as littlefs2::driver::Storage>::LOOKAHEAD_SIZE;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        self.inner.read(off, buf)
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        match self.spend()? {
            // The last write before the cut: all of it, or (torn) only its first half.
            Some(true) => {
                let half = (data.len() / 2).max(1);
                self.inner.write(off, &data[..half])?;
                Err(littlefs2::io::Error::IO)
            }
            _ => self.inner.write(off, data),
        }
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        match self.spend()? {
            Some(true) => {
                // A torn erase leaves the block partly erased.
                self.inner.erase(off, Self::BLOCK_SIZE.min(len) / 2)?;
                Err(littlefs2::io::Error::IO)
            }
            _ => self.inner.erase(off, len),
        }
    }
}

/// The vault loses power like the partition: the same budget counts its programs and erases.
impl authenticator::platform::Vault for CuttableStorage {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.inner.vault_read(offset, buf)
    }

    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        match self.spend()? {
            Some(true) => {
                // Torn: the first half of the program units reached the flash.
                let half = data.len() / 2 / 256 * 256;
                if half > 0 {
                    self.inner.vault_program(offset, &data[..half])?;
                }
                Err(littlefs2::io::Error::IO)
            }
            _ => self.inner.vault_program(offset, data),
        }
    }

    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        match self.spend()? {
            Some(true) => {
                let half = authenticator::platform::VAULT_SLOT_SIZE / 2;
                self.inner.vault_mut().erase_part(offset, half)?;
                Err(littlefs2::io::Error::IO)
            }
            _ => self.inner.vault_erase(offset),
        }
    }
}

/// What the session acknowledged before the cut.
#[derive(Default, Clone)]
struct Acknowledged {
    max_counter: u32,
    /// (credential id, COSE key, discoverable, user id)
    credentials: Vec<(Vec<u8>, Value, bool, Vec<u8>)>,
    /// Credentials whose makeCredential was sent but not answered: either state is fine.
    in_doubt: Vec<Vec<u8>>,
    /// Deleted (acknowledged): must stay gone.
    deleted_users: Vec<Vec<u8>>,
    /// PIN retries as last acknowledged, and the most a cut may have spent since.
    pin_set: bool,
    retries_at_most: i64,
    /// The large-blob array was written (acknowledged).
    blob_written: bool,
}

fn status(key: &mut impl App, command: u8, body: &Value) -> Option<(u8, Option<Value>)> {
    let mut request = vec![command];
    ciborium::into_writer(body, &mut request).unwrap();
    let mut response = Vec::new();
    key.call(Transaction::Cbor, &request, &mut response);
    // A failed write surfaces as an error status (CTAP2_ERR_OTHER or KEY_STORE_FULL).
    if response.is_empty() {
        return None;
    }
    Some(decode(&response))
}

/// The scripted session; stops at the first storage failure (the power is gone).
fn session(key: &mut (impl App + Transport), ack: &mut Acknowledged) -> bool {
    let rp = "example.com";
    for (i, rk) in [(0u8, false), (1, true), (2, true), (3, false)] {
        let user = vec![b'u', i];
        let Some((0, Some(body))) =
            status(key, 0x01, &make_credential_request(rp, &user, &[-7], rk))
        else {
            return false;
        };
        let auth_data = parse_auth_data(get(&body, 2).unwrap().as_bytes().unwrap());
        ack.max_counter = ack.max_counter.max(auth_data.counter);
        ack.credentials.push((
            auth_data.credential_id,
            auth_data.public_key.unwrap(),
            rk,
            user,
        ));
        for (id, _, _, _) in ack.credentials.clone() {
            let Some((0, Some(body))) =
                status(key, 0x02, &get_assertion_request(rp, &[i; 32], &[&id]))
            else {
                return false;
            };
            ack.max_counter = ack
                .max_counter
                .max(parse_auth_data(get(&body, 2).unwrap().as_bytes().unwrap()).counter);
        }
    }
    // U2F: register and authenticate.
    let mut response = Vec::new();
    key.call(
        Transaction::Msg,
        &[&[0u8, 1, 0, 0, 0, 0, 64][..], &[7u8; 64], &[0, 0]].concat(),
        &mut response,
    );
    if response.ends_with(&[0x90, 0]) {
        let kh_len = usize::from(response[66]);
        let kh = response[67..67 + kh_len].to_vec();
        let mut auth = vec![0u8, 2, 3, 0, 0, 0, (65 + kh_len) as u8];
        auth.extend_from_slice(&[1u8; 32]);
        auth.extend_from_slice(&[7u8; 32]);
        auth.push(kh_len as u8);
        auth.extend_from_slice(&kh);
        let mut response = Vec::new();
        key.call(Transaction::Msg, &auth, &mut response);
        if !response.ends_with(&[0x90, 0]) {
            return false;
        }
        ack.max_counter = ack
            .max_counter
            .max(u32::from_be_bytes(response[1..5].try_into().unwrap()));
    } else {
        return false;
    }
    // A PIN, a wrong guess, a right one.
    let client = PinClient::new(key, 2, 3);
    if client.set_pin(key, PIN) != 0 {
        return false;
    }
    ack.pin_set = true;
    ack.retries_at_most = 8;
    let client = PinClient::new(key, 2, 3);
    match client.token(key, "0000", None, None) {
        // The wrong guess was answered: its retry must be spent on storage, whatever happens.
        Err(0x31) => ack.retries_at_most = 7,
        _ => return false,
    }
    let client = PinClient::new(key, 2, 3);
    let Ok(token) = client.token(key, PIN, Some(0x04 | 0x10), None) else {
        return false;
    };
    ack.retries_at_most = 8;
    // Delete the second discoverable credential.
    let Some((id, _, _, user)) = ack.credentials.iter().find(|c| c.2).cloned() else {
        return false;
    };
    let params = map(vec![(
        int(2),
        map(vec![
            (text("id"), bytes(&id)),
            (text("type"), text("public-key")),
        ]),
    )]);
    let mut message = vec![6u8];
    ciborium::into_writer(&params, &mut message).unwrap();
    let request = map(vec![
        (int(1), int(6)),
        (int(2), params),
        (int(3), int(2)),
        (int(4), bytes(&PinClient::mac(2, &token, &message))),
    ]);
    ack.in_doubt.push(id.clone());
    let Some((0, _)) = status(key, 0x0A, &request) else {
        return false;
    };
    ack.credentials.retain(|c| c.0 != id);
    ack.deleted_users.push(user);
    // A large-blob write of two fragments.
    use sha2::{Digest, Sha256};
    let mut array = vec![0x81u8];
    array.extend_from_slice(&[0x42; 1000]);
    array.extend_from_slice(&Sha256::digest(&array)[..16]);
    let blob_auth = |offset: u32, fragment: &[u8]| {
        let message = [
            &[0xffu8; 32][..],
            &[0x0c, 0x00],
            &offset.to_le_bytes(),
            &Sha256::digest(fragment),
        ]
        .concat();
        bytes(&PinClient::mac(2, &token, &message))
    };
    let first = map(vec![
        (int(2), bytes(&array[..600])),
        (int(3), int(0)),
        (int(4), int(array.len() as i64)),
        (int(5), blob_auth(0, &array[..600])),
        (int(6), int(2)),
    ]);
    let Some((0, _)) = status(key, 0x0C, &first) else {
        return false;
    };
    let second = map(vec![
        (int(2), bytes(&array[600..])),
        (int(3), int(600)),
        (int(5), blob_auth(600, &array[600..])),
        (int(6), int(2)),
    ]);
    let Some((0, _)) = status(key, 0x0C, &second) else {
        return false;
    };
    ack.blob_written = true;
    // Enough assertions to cross a counter reservation, then a PIN change.
    let Some((id, _, _, _)) = ack.credentials.first().cloned() else {
        return false;
    };
    for i in 0..70u8 {
        let Some((0, Some(body))) = status(
            key,
            0x02,
            &get_assertion_request("example.com", &[i; 32], &[&id]),
        ) else {
            return false;
        };
        ack.max_counter = ack
            .max_counter
            .max(parse_auth_data(get(&body, 2).unwrap().as_bytes().unwrap()).counter);
    }
    let client = PinClient::new(key, 1, 5);
    if client.change_pin(key, PIN, "87654321") != 0 {
        return false;
    }
    // Another discoverable credential, replacing the first one's user.
    let Some((_, _, _, user)) = ack.credentials.iter().find(|c| c.2).cloned() else {
        return false;
    };
    let client = PinClient::new(key, 2, 3);
    let Ok(token) = client.token(key, "87654321", Some(0x01), None) else {
        return false;
    };
    let mut request = make_credential_request(rp, &user, &[-8], true);
    if let Value::Map(entries) = &mut request {
        entries.push((int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))));
        entries.push((int(9), int(2)));
    }
    let old = ack
        .credentials
        .iter()
        .find(|c| c.3 == user)
        .map(|c| c.0.clone());
    if let Some(old) = &old {
        ack.in_doubt.push(old.clone());
    }
    let Some((0, Some(body))) = status(key, 0x01, &request) else {
        return false;
    };
    let auth_data = parse_auth_data(get(&body, 2).unwrap().as_bytes().unwrap());
    ack.credentials.retain(|c| c.3 != user);
    ack.credentials.push((
        auth_data.credential_id,
        auth_data.public_key.unwrap(),
        true,
        user,
    ));
    true
}

/// After a cut: the image mounts and the invariants hold.
fn check(storage: &mut CuttableStorage, ack: &Acknowledged, cut: usize) {
    storage.budget.set(None);
    {
        let mut alloc = Allocation::new();
        assert!(
            Filesystem::mount(&mut alloc, &mut storage.inner).is_ok(),
            "cut {cut}: the filesystem mounts"
        );
    }
    with_key(&mut storage.inner, &Knobs::default(), 99, |key| {
        for (id, public_key, discoverable, user) in &ack.credentials {
            if ack.in_doubt.contains(id) {
                continue;
            }
            let cdh = [0xEEu8; 32];
            let (status, body) = ctap2(
                key,
                0x02,
                Some(get_assertion_request("example.com", &cdh, &[id])),
            );
            assert_eq!(
                status, 0,
                "cut {cut}: credential of user {user:?} (rk {discoverable}) still signs"
            );
            let body = body.unwrap();
            let raw = get(&body, 2).unwrap().as_bytes().unwrap();
            verify(
                public_key,
                &[&raw[..], &cdh].concat(),
                get(&body, 3).unwrap().as_bytes().unwrap(),
            );
            let counter = parse_auth_data(raw).counter;
            assert!(
                counter > ack.max_counter,
                "cut {cut}: counter {counter} > {}",
                ack.max_counter
            );
        }
        // Discoverable credentials listed are whole and sign; deleted ones stay deleted.
        let cdh = [0xDDu8; 32];
        let (status, body) = ctap2(
            key,
            0x02,
            Some(get_assertion_request("example.com", &cdh, &[])),
        );
        if status == 0 {
            let mut body = body.unwrap();
            let count = get(&body, 5).map(as_int).unwrap_or(1);
            for step in 0..count {
                if step > 0 {
                    let (status, next) = ctap2(key, 0x08, None);
                    assert_eq!(status, 0, "cut {cut}");
                    body = next.unwrap();
                }
                let user = get_text(get(&body, 4).unwrap(), "id")
                    .unwrap()
                    .as_bytes()
                    .unwrap()
                    .clone();
                assert!(
                    !ack.deleted_users.contains(&user),
                    "cut {cut}: a deleted credential came back"
                );
                let id = get_text(get(&body, 1).unwrap(), "id")
                    .unwrap()
                    .as_bytes()
                    .unwrap()
                    .clone();
                if let Some((_, public_key, _, _)) = ack.credentials.iter().find(|c| c.0 == id) {
                    let raw = get(&body, 2).unwrap().as_bytes().unwrap();
                    verify(
                        public_key,
                        &[&raw[..], &cdh].concat(),
                        get(&body, 3).unwrap().as_bytes().unwrap(),
                    );
                }
            }
        } else {
            assert_eq!(status, 0x2E, "cut {cut}");
            assert!(
                ack.credentials
                    .iter()
                    .all(|c| !c.2 || ack.in_doubt.contains(&c.0)),
                "cut {cut}: discoverable credentials lost"
            );
        }
        // The large-blob array is the old (empty) one or the new one, and always consistent.
        let (status, body) = ctap2(
            key,
            0x0C,
            Some(map(vec![(int(1), int(2000)), (int(3), int(0))])),
        );
        assert_eq!(status, 0, "cut {cut}: large blobs readable");
        let array = get(&body.unwrap(), 1).unwrap().as_bytes().unwrap().clone();
        use sha2::{Digest, Sha256};
        let (content, check) = array.split_at(array.len() - 16);
        assert_eq!(
            &Sha256::digest(content)[..16],
            check,
            "cut {cut}: the array is whole"
        );
        if ack.blob_written {
            assert_eq!(array.len(), 1017, "cut {cut}: an acknowledged write stays");
        }
        if ack.pin_set {
            let (left, _) = retries(key);
            assert!(
                left <= ack.retries_at_most,
                "cut {cut}: retries {left} > {}",
                ack.retries_at_most
            );
        }
    });
}

fn run(tear: bool) -> usize {
    // Count the operations of an uninterrupted session.
    let ops = Rc::new(Cell::new(0));
    let mut storage = CuttableStorage {
        inner: RamStorage::default(),
        budget: Rc::new(Cell::new(None)),
        ops: ops.clone(),
        tear,
    };
    let completed = with_key(&mut storage, &Knobs::default(), 1, |key| {
        session(key, &mut Acknowledged::default())
    });
    assert!(completed, "the uninterrupted session runs to its end");
    let total = ops.get();
    assert!(total > 20, "the session writes ({total} operations)");
    for cut in 1..=total {
        let budget = Rc::new(Cell::new(Some(cut)));
        let mut storage = CuttableStorage {
            inner: RamStorage::default(),
            budget: budget.clone(),
            ops: Rc::new(Cell::new(0)),
            tear,
        };
        let mut ack = Acknowledged::default();
        // The first mount formats; a cut during it leaves nothing to check but mounting.
        let formatted = {
            let mut alloc = Allocation::new();
            authenticator::store::mount(&mut alloc, &mut storage).is_ok()
        };
        if formatted && budget.get() != Some(0) {
            with_key(&mut storage, &Knobs::default(), 1, |key| {
                session(key, &mut ack);
            });
        }
        if budget.get() == Some(0) || !formatted {
            if !formatted {
                // Power died while formatting a blank device: the next boot formats again.
                storage.budget.set(None);
                let mut alloc = Allocation::new();
                assert!(authenticator::store::mount(&mut alloc, &mut storage.inner).is_ok());
                continue;
            }
            check(&mut storage, &ack, cut);
        }
    }
    total
}

#[test]
fn every_cut_point_clean() {
    let total = run(false);
    eprintln!("clean cuts tried: {total}");
}

#[test]
fn every_cut_point_torn() {
    let total = run(true);
    eprintln!("torn cuts tried: {total}");
}
