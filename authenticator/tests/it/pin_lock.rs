//! The PIN lock, the salted PIN verifier, a reset that wipes, the move of a key from before the
//! vault, provisioning that needs a touch, and the refusal of a key whose vault will not read.
//!
//! A key's state is its littlefs partition and its vault (`RamStorage::image` and `::vault`):
//! what a thief copies. These tests look into both, as an attacker would, and drive the key as
//! platforms do (every signature verified).

use authenticator::ctaphid::{App, Outcome, Transaction};
use authenticator::platform::PresenceAnswer;
use ciborium::Value;
use sha2::{Digest, Sha256};
use test_support::pin_client::{retries, PinClient};
use test_support::*;

const PIN: &str = "correct horse";
const NEW_PIN: &str = "battery staple";
const RP: &str = "signin.aws.amazon.com";
const MARKER: &str = "REMANENCE-MARKER-USER-7f3a";
/// authenticatorConfig vendorPrototype and its vendorCommandIds.
const VENDOR_PROTOTYPE: u8 = 0xFF;
const LOCK_ON: i64 = 0x4C4F_434B;
const LOCK_OFF: i64 = 0x4F50_454E;
/// Permissions: makeCredential, getAssertion, credential management, acfg, pcmr.
const MC_GA: u8 = 0x03;
const CM: u8 = 0x04;
const ACFG: u8 = 0x20;
const PCMR: u8 = 0x40;
const PUAT_REQUIRED: u8 = 0x36;
const PIN_INVALID: u8 = 0x31;
const PIN_AUTH_INVALID: u8 = 0x33;

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// authenticatorConfig vendorPrototype with `id`, authorized by `token` if given.
fn vendor(key: &mut impl App, token: Option<&[u8]>, id: i64) -> u8 {
    let params = map(vec![(int(1), int(id))]);
    let mut entries = vec![(int(1), int(VENDOR_PROTOTYPE.into()))];
    let mut message = vec![0xff; 32];
    message.extend_from_slice(&[0x0d, VENDOR_PROTOTYPE]);
    ciborium::into_writer(&params, &mut message).unwrap();
    entries.push((int(2), params));
    if let Some(token) = token {
        entries.push((int(3), int(2)));
        entries.push((int(4), bytes(&PinClient::mac(2, token, &message))));
    }
    ctap2(key, 0x0D, Some(map(entries))).0
}

/// `request` with pinUvAuthParam and protocol 2 at `param_key` and the key after it (8 in
/// makeCredential, 6 in getAssertion).
fn with_token(request: Value, param_key: i64, token: &[u8], cdh: &[u8; 32]) -> Value {
    let Value::Map(mut entries) = request else {
        unreachable!()
    };
    entries.push((int(param_key), bytes(&PinClient::mac(2, token, cdh))));
    entries.push((int(param_key + 1), int(2)));
    entries.sort_by_key(|(k, _)| as_int(k));
    Value::Map(entries)
}

/// A discoverable credential for `user` named `name`, made with a token; (ID, COSE key).
fn register(key: &mut impl App, token: &[u8], user: &[u8], name: &str) -> (Vec<u8>, Value) {
    let Value::Map(mut entries) = make_credential_request(RP, user, &[-7], true) else {
        unreachable!()
    };
    entries[2].1 = map(vec![(text("id"), bytes(user)), (text("name"), text(name))]);
    let (status, body) = ctap2(
        key,
        0x01,
        Some(with_token(Value::Map(entries), 8, token, &[7; 32])),
    );
    assert_eq!(status, 0, "makeCredential");
    let data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    (data.credential_id, data.public_key.unwrap())
}

/// getAssertion with `id` in the allow list (and a token if given): the status, and the
/// signature checked against `public_key` when it answers.
fn sign(key: &mut impl App, token: Option<&[u8]>, id: &[u8], public_key: &Value) -> u8 {
    let cdh = [9u8; 32];
    let mut request = get_assertion_request(RP, &cdh, &[id]);
    if let Some(token) = token {
        request = with_token(request, 6, token, &cdh);
    }
    let (status, body) = ctap2(key, 0x02, Some(request));
    if status == 0 {
        let body = body.unwrap();
        let mut signed = get(&body, 2).unwrap().as_bytes().unwrap().clone();
        signed.extend_from_slice(&cdh);
        verify(
            public_key,
            &signed,
            get(&body, 3).unwrap().as_bytes().unwrap(),
        );
    }
    status
}

fn info(key: &mut impl App) -> Value {
    ctap2(key, 0x04, None).1.unwrap()
}

fn always_uv(key: &mut impl App) -> bool {
    let info = info(key);
    get_text(get(&info, 4).unwrap(), "alwaysUv") == Some(&Value::Bool(true))
}

fn versions(key: &mut impl App) -> Vec<String> {
    get(&info(key), 1)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_text().unwrap().to_string())
        .collect()
}

/// U2F VERSION's status word.
fn u2f_status(key: &mut impl App) -> u16 {
    let mut response = Vec::new();
    key.call(Transaction::Msg, &[0, 3, 0, 0], &mut response);
    u16::from_be_bytes(response[response.len() - 2..].try_into().unwrap())
}

/// A key with a PIN, one discoverable credential, and the lock on.
fn locked_key(storage: &mut RamStorage) -> (Vec<u8>, Value) {
    with_key(storage, &Knobs::default(), 1, |key| {
        let client = PinClient::new(key, 2, 1);
        assert_eq!(client.set_pin(key, PIN), 0);
        let token = client.token(key, PIN, Some(MC_GA | ACFG), None).unwrap();
        let credential = register(key, &token, b"alice", MARKER);
        let token = client.token(key, PIN, Some(ACFG), None).unwrap();
        assert!(
            !always_uv(key),
            "the lock takes effect at the next power-up"
        );
        assert_eq!(vendor(key, None, LOCK_ON), PUAT_REQUIRED, "needs acfg");
        assert_eq!(vendor(key, Some(&token), LOCK_ON), 0);
        assert_eq!(
            vendor(key, Some(&token), 0x1234),
            0x02,
            "an unknown vendor command"
        );
        credential
    })
}

/// Every place the key's state can hold a copy of `needle`.
fn occurrences(storage: &RamStorage, needle: &[u8]) -> usize {
    [storage.image(), storage.vault().image()]
        .iter()
        .map(|hay| hay.windows(needle.len()).filter(|w| *w == needle).count())
        .sum()
}

/// The vault's current record (the newest whole one), decoded: what a copy of the state shows.
fn vault_record(storage: &RamStorage) -> Value {
    let mut vault = authenticator::store::vault::RamVault::from_image(storage.vault().image());
    let (_, body) = authenticator::store::vault::recover(&mut vault)
        .unwrap()
        .expect("a record");
    ciborium::from_reader(&body[..]).unwrap()
}

/// The secrets in the clear in the vault record, if they are: (key-wrapping key, persistent
/// token).
fn clear_secrets(storage: &RamStorage) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let record = vault_record(storage);
    let clear = get_text(&record, "c")?.as_bytes()?.clone();
    let secrets: Value = ciborium::from_reader(&clear[..]).unwrap();
    let kwk = get_text(&secrets, "k").unwrap().as_bytes().unwrap().clone();
    let token = get_text(&secrets, "t").map(|t| t.as_bytes().unwrap().clone());
    Some((kwk, token))
}

#[test]
fn a_locked_key_refuses_what_needs_its_secrets_until_the_pin_opens_it() {
    let mut storage = RamStorage::default();
    let (id, public_key) = locked_key(&mut storage);
    assert!(
        clear_secrets(&storage).is_none(),
        "sealed: nothing in the clear"
    );
    assert!(get_text(&vault_record(&storage), "s").is_some());

    with_key(&mut storage, &Knobs::default(), 2, |key| {
        // getInfo says alwaysUv and drops U2F_V2: platforms ask for the PIN.
        assert!(always_uv(key));
        assert!(!versions(key).contains(&"U2F_V2".to_string()));
        let info = info(key);
        assert!(get(&info, 0x19).is_none() && get(&info, 0x1E).is_none());
        // Touch-only requests get what alwaysUv answers.
        let request = make_credential_request(RP, b"bob", &[-7], false);
        assert_eq!(ctap2(key, 0x01, Some(request)).0, PUAT_REQUIRED);
        assert_eq!(sign(key, None, &id, &public_key), PUAT_REQUIRED);
        assert_eq!(u2f_status(key), 0x6986, "U2F refused");
        // The provisioning vendor command too.
        let mut response = Vec::new();
        let request = map(vec![(int(1), bytes(&[1; 32])), (int(2), bytes(&[0x30]))]);
        let mut cbor = Vec::new();
        ciborium::into_writer(&request, &mut cbor).unwrap();
        key.call(Transaction::Provision, &cbor, &mut response);
        assert_eq!(response, [PUAT_REQUIRED]);

        // A wrong PIN opens nothing and costs a retry.
        let client = PinClient::new(key, 2, 3);
        assert_eq!(
            client.token(key, "wrong guess", Some(MC_GA), None),
            Err(PIN_INVALID)
        );
        assert_eq!(retries(key).0, 7);
        assert!(always_uv(key));

        // The right PIN opens it until power-off: U2F is back, and the credential signs. (A
        // wrong PIN changes the key agreement: the platform asks for the new one.)
        let client = PinClient::new(key, 2, 4);
        let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
        assert_eq!(retries(key).0, 8);
        assert!(!always_uv(key));
        assert!(versions(key).contains(&"U2F_V2".to_string()));
        assert_eq!(u2f_status(key), 0x9000);
        assert_eq!(sign(key, Some(&token), &id, &public_key), 0);
        // Later PIN entries are checked in RAM (and still pay their retry first).
        assert_eq!(
            client.token(key, "wrong again", Some(CM), None),
            Err(PIN_INVALID)
        );
        let client = PinClient::new(key, 2, 5);
        assert!(client.token(key, PIN, Some(CM), None).is_ok());
    });
}

#[test]
fn the_persistent_token_is_sealed_with_the_rest() {
    let mut storage = RamStorage::default();
    locked_key(&mut storage);
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        let client = PinClient::new(key, 2, 3);
        let persistent = client.token(key, PIN, Some(PCMR), None).unwrap();
        // Next power-up: locked, the persistent token (which platforms keep) is refused.
        assert_eq!(persistent.len(), 32);
        let _ = persistent;
    });
    with_key(&mut storage, &Knobs::default(), 3, |key| {
        let client = PinClient::new(key, 2, 3);
        let persistent = client.token(key, PIN, Some(PCMR), None).unwrap();
        // Unlocked by that request: now it works; a new power-up locks it again.
        let metadata = |key: &mut _, token: &[u8]| {
            let request = map(vec![
                (int(1), int(1)),
                (int(3), int(2)),
                (int(4), bytes(&PinClient::mac(2, token, &[1]))),
            ]);
            ctap2(key, 0x0A, Some(request)).0
        };
        assert_eq!(metadata(key, &persistent), 0);
        drop(client);
        let _ = persistent;
    });
    let persistent = with_key(&mut storage, &Knobs::default(), 4, |key| {
        let client = PinClient::new(key, 2, 3);
        client.token(key, PIN, Some(PCMR), None).unwrap()
    });
    with_key(&mut storage, &Knobs::default(), 5, |key| {
        let request = map(vec![
            (int(1), int(1)),
            (int(3), int(2)),
            (int(4), bytes(&PinClient::mac(2, &persistent, &[1]))),
        ]);
        assert_eq!(
            ctap2(key, 0x0A, Some(request)).0,
            PIN_AUTH_INVALID,
            "sealed until the PIN is given"
        );
    });
}

#[test]
fn change_pin_seals_again_under_the_new_pin() {
    let mut storage = RamStorage::default();
    let (id, public_key) = locked_key(&mut storage);
    let sealed_before = get_text(&vault_record(&storage), "s").unwrap().clone();
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        let client = PinClient::new(key, 2, 3);
        assert_eq!(
            client.change_pin(key, PIN, NEW_PIN),
            0,
            "changePIN unlocks too"
        );
        assert!(!always_uv(key));
    });
    let record = vault_record(&storage);
    assert_ne!(get_text(&record, "s").unwrap(), &sealed_before);
    assert!(clear_secrets(&storage).is_none());
    with_key(&mut storage, &Knobs::default(), 3, |key| {
        assert!(always_uv(key));
        let client = PinClient::new(key, 2, 4);
        assert_eq!(client.token(key, PIN, Some(MC_GA), None), Err(PIN_INVALID));
        let client = PinClient::new(key, 2, 5);
        let token = client.token(key, NEW_PIN, Some(MC_GA), None).unwrap();
        assert_eq!(sign(key, Some(&token), &id, &public_key), 0);
    });
}

#[test]
fn the_lock_turned_off_keeps_the_secrets_in_the_clear_and_without_a_pin_waits_for_one() {
    let mut storage = RamStorage::default();
    let (id, public_key) = locked_key(&mut storage);
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        let client = PinClient::new(key, 2, 3);
        let token = client.token(key, PIN, Some(ACFG), None).unwrap();
        assert_eq!(vendor(key, Some(&token), LOCK_OFF), 0);
    });
    assert!(clear_secrets(&storage).is_some());
    with_key(&mut storage, &Knobs::default(), 3, |key| {
        assert!(!always_uv(key), "not locked");
        // Discoverable credentials still need the PIN (makeCredUvNotRqd), but the key answers.
        let client = PinClient::new(key, 2, 3);
        let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
        assert_eq!(sign(key, Some(&token), &id, &public_key), 0);
    });

    // Without a PIN the switch needs no token and seals nothing until a PIN is set.
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        assert_eq!(vendor(key, None, LOCK_ON), 0);
    });
    assert!(clear_secrets(&storage).is_some());
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        assert!(!always_uv(key), "no PIN: nothing to lock");
        assert_eq!(PinClient::new(key, 2, 1).set_pin(key, PIN), 0);
    });
    assert!(clear_secrets(&storage).is_none(), "setPIN sealed them");
    with_key(&mut storage, &Knobs::default(), 3, |key| {
        assert!(always_uv(key))
    });
}

#[test]
fn reset_leaves_no_byte_of_the_old_key_its_pin_or_its_users() {
    for locked in [false, true] {
        let mut storage = RamStorage::default();
        with_key(&mut storage, &Knobs::default(), 1, |key| {
            let client = PinClient::new(key, 2, 1);
            assert_eq!(client.set_pin(key, PIN), 0);
            let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
            register(key, &token, b"alice", MARKER);
        });
        let (kwk, token) = clear_secrets(&storage).unwrap();
        let token = token.expect("a PIN makes a persistent token");
        let verifier = get_text(get_text(&vault_record(&storage), "p").unwrap(), "v")
            .unwrap()
            .as_bytes()
            .unwrap()
            .clone();
        let pin_hash = &sha256(PIN.as_bytes())[..16];
        if locked {
            with_key(&mut storage, &Knobs::default(), 2, |key| {
                let client = PinClient::new(key, 2, 3);
                let token = client.token(key, PIN, Some(ACFG), None).unwrap();
                assert_eq!(vendor(key, Some(&token), LOCK_ON), 0);
            });
        }
        assert!(
            occurrences(&storage, MARKER.as_bytes()) > 0,
            "the name is stored"
        );
        assert!(occurrences(&storage, &kwk) > 0 || locked);
        // The reset (within 10 s of power-up, with a touch): a locked key is reset without
        // its PIN, as every key is.
        with_key(&mut storage, &Knobs::default(), 4, |key| {
            assert_eq!(ctap2(key, 0x07, None).0, 0);
            assert!(!always_uv(key));
            assert_eq!(retries(key).0, 8);
        });
        for (what, needle) in [
            ("the user name", MARKER.as_bytes()),
            ("the old key-wrapping key", &kwk[..]),
            ("the old persistent token", &token[..]),
            ("the old PIN verifier", &verifier[..]),
            ("the PIN's hash", pin_hash),
        ] {
            assert_eq!(
                occurrences(&storage, needle),
                0,
                "{what} remains after reset (locked: {locked})"
            );
        }
        with_key(&mut storage, &Knobs::default(), 5, |key| {
            let info = info(key);
            assert_eq!(
                get_text(get(&info, 4).unwrap(), "clientPin"),
                Some(&Value::Bool(false))
            );
            let request = make_credential_request(RP, b"carol", &[-7], false);
            assert_eq!(ctap2(key, 0x01, Some(request)).0, 0, "the wiped key works");
        });
    }
}

/// A key of the layout before the vault: `/dev/kwk` in the clear, `/dev/pin` with the PIN's
/// hash and the persistent token, as that code wrote them. Made here from a key of this code
/// (whose credentials are sealed under the same key-wrapping key), its vault then erased.
fn key_before_the_vault(retries_left: u8) -> (RamStorage, Vec<u8>, Value, Vec<u8>) {
    key_before_the_vault_with_token(retries_left, 32).0
}

/// [`key_before_the_vault`] with the first `token_len` bytes of the persistent token in
/// `/dev/pin` (32: all of it; fewer: a tampered file); also returns the whole token.
#[allow(clippy::type_complexity)]
fn key_before_the_vault_with_token(
    retries_left: u8,
    token_len: usize,
) -> ((RamStorage, Vec<u8>, Value, Vec<u8>), Vec<u8>) {
    let mut storage = RamStorage::default();
    let (id, public_key) = with_key(&mut storage, &Knobs::default(), 1, |key| {
        let client = PinClient::new(key, 2, 1);
        assert_eq!(client.set_pin(key, PIN), 0);
        let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
        register(key, &token, b"alice", MARKER)
    });
    let (kwk, token) = clear_secrets(&storage).unwrap();
    let pin = Value::Map(vec![
        (text("h"), bytes(&sha256(PIN.as_bytes())[..16])),
        (text("r"), int(retries_left.into())),
        (text("l"), int(PIN.chars().count() as i64)),
        (text("p"), bytes(&token.as_ref().unwrap()[..token_len])),
    ]);
    let mut pin_file = Vec::new();
    ciborium::into_writer(&pin, &mut pin_file).unwrap();
    {
        let mut alloc = littlefs2::fs::Allocation::new();
        let fs = littlefs2::fs::Filesystem::mount(&mut alloc, &mut storage).unwrap();
        fs.write(littlefs2::path!("/dev/kwk"), &kwk).unwrap();
        fs.write(littlefs2::path!("/dev/pin"), &pin_file).unwrap();
    }
    *storage.vault_mut() = Default::default();
    ((storage, id, public_key, kwk), token.unwrap())
}

#[test]
fn a_key_from_before_the_vault_moves_in_keeping_credentials_and_spent_retries() {
    let (mut storage, id, public_key, kwk) = key_before_the_vault(5);
    let pin_hash = sha256(PIN.as_bytes())[..16].to_vec();
    assert!(occurrences(&storage, &kwk) > 0 && occurrences(&storage, &pin_hash) > 0);
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        assert_eq!(retries(key).0, 5, "a spent retry stays spent");
        let client = PinClient::new(key, 2, 3);
        let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
        assert_eq!(sign(key, Some(&token), &id, &public_key), 0);
    });
    // Scrubbed: the key-wrapping key is in the vault only, the PIN's hash nowhere.
    assert_eq!(
        occurrences(&storage, &pin_hash),
        0,
        "the old PIN hash remains"
    );
    assert_eq!(
        storage
            .image()
            .windows(32)
            .filter(|w| *w == &kwk[..])
            .count(),
        0,
        "a copy of the key-wrapping key remains in littlefs"
    );
    assert_eq!(clear_secrets(&storage).unwrap().0, kwk);
}

/// A power cut at every program and erase of the move (clean or torn): the next power-up
/// finishes it, and no credential, PIN or spent retry is lost.
#[test]
fn the_move_into_the_vault_survives_a_power_cut_at_every_write() {
    let (base, id, public_key, _) = key_before_the_vault(6);
    let copy = |s: &RamStorage| RamStorage::from_images(s.image(), s.vault().image());
    let mut tried = 0;
    for cut in 1.. {
        let mut storage = copy(&base);
        let reached = cut_during_boot(&mut storage, cut);
        if !reached {
            break;
        }
        tried += 1;
        with_key(&mut storage, &Knobs::default(), 3, |key| {
            assert_eq!(retries(key).0, 6, "cut {cut}: retries");
            let client = PinClient::new(key, 2, 3);
            let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
            assert_eq!(sign(key, Some(&token), &id, &public_key), 0, "cut {cut}");
        });
    }
    eprintln!("the move into the vault: {tried} program/erase operations, each cut");
    assert!(tried > 5);
}

/// Boot a key on `storage` with the power cut at its `cut`th program or erase (torn when
/// `cut` is even); false if the boot finished before that.
fn cut_during_boot(storage: &mut RamStorage, cut: usize) -> bool {
    cut_during(storage, cut, |_| {})
}

/// [`cut_during_boot`], the power cut in `f` if the boot did not reach it.
fn cut_during<'s>(
    storage: &'s mut RamStorage,
    cut: usize,
    f: impl FnOnce(&mut authenticator::Authenticator<'_, TestPlatform<Cut<'s>>>),
) -> bool {
    let mut device = Cut {
        inner: storage,
        left: cut,
        tear: cut.is_multiple_of(2),
    };
    with_key(&mut device, &Knobs::default(), 2, f);
    device.left == 0
}

/// A change of the PIN from [`PIN`] to [`NEW_PIN`] with the power cut at its `cut`th program or
/// erase (see [`cut_during_boot`]).
fn cut_during_pin_change(storage: &mut RamStorage, cut: usize) -> bool {
    cut_during(storage, cut, |key| {
        let client = PinClient::new(key, 2, 4);
        let _ = client.change_pin(key, PIN, NEW_PIN);
    })
}

/// Storage whose power goes at the `left`th program or erase.
struct Cut<'s> {
    inner: &'s mut RamStorage,
    left: usize,
    tear: bool,
}
impl Cut<'_> {
    fn spend(&mut self) -> Option<bool> {
        if self.left == 0 {
            return Some(false);
        }
        self.left -= 1;
        (self.left == 0).then_some(self.tear)
    }
}
impl littlefs2::driver::Storage for Cut<'_> {
    const READ_SIZE: usize = 16;
    const WRITE_SIZE: usize = 16;
    const BLOCK_SIZE: usize = 4096;
    const BLOCK_COUNT: usize = BLOCKS;
    const BLOCK_CYCLES: isize = 500;
    type CACHE_SIZE = littlefs2::consts::U256;
    type LOOKAHEAD_SIZE = littlefs2::consts::U16;
    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        self.inner.read(off, buf)
    }
    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        match self.spend() {
            None => self.inner.write(off, data),
            Some(tear) => {
                if tear {
                    self.inner.write(off, &data[..data.len() / 2 / 16 * 16])?;
                }
                Err(littlefs2::io::Error::IO)
            }
        }
    }
    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        match self.spend() {
            None => self.inner.erase(off, len),
            Some(tear) => {
                if tear {
                    self.inner.erase(off, 2048)?;
                }
                Err(littlefs2::io::Error::IO)
            }
        }
    }
}
impl authenticator::platform::Vault for Cut<'_> {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.inner.vault_read(offset, buf)
    }
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        match self.spend() {
            None => self.inner.vault_program(offset, data),
            Some(tear) => {
                if tear {
                    self.inner
                        .vault_program(offset, &data[..data.len() / 512 * 256])?;
                }
                Err(littlefs2::io::Error::IO)
            }
        }
    }
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        match self.spend() {
            None => self.inner.vault_erase(offset),
            Some(tear) => {
                if tear {
                    self.inner.vault_mut().erase_part(offset, 4096)?;
                }
                Err(littlefs2::io::Error::IO)
            }
        }
    }
}

#[test]
fn provisioning_waits_for_a_touch() {
    let (batch_key, batch_certificate) = batch();
    let mut request = Vec::new();
    ciborium::into_writer(
        &map(vec![
            (int(1), bytes(&batch_key)),
            (int(2), bytes(&batch_certificate)),
        ]),
        &mut request,
    )
    .unwrap();
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        let provision = |key: &mut dyn App| {
            let mut response = Vec::new();
            let outcome = key.call(Transaction::Provision, &request, &mut response);
            (outcome, response)
        };
        knobs.presence.set(PresenceAnswer::Pending);
        let (outcome, _) = provision(key);
        assert!(
            matches!(outcome, Outcome::Waiting(_)),
            "waits for the touch"
        );
        assert!(knobs.prompts.get() > 0, "asked for it");
        knobs.presence.set(PresenceAnswer::Denied);
        assert_eq!(provision(key), (Outcome::Done, vec![0x27]), "denied");
        assert!(key.attestation().is_none(), "nothing installed");
        knobs.presence.set(PresenceAnswer::Granted);
        assert_eq!(provision(key), (Outcome::Done, vec![0]));
        assert!(key.attestation().is_some());
    });
}

/// A batch key and certificate, as the vendor tool makes them.
fn batch() -> (Vec<u8>, Vec<u8>) {
    use attestation::certificate::{self, Subject};
    use der::Encode;
    let subject = Subject {
        country: "SE".into(),
        organization: "Example Keys".into(),
        common_name: "batch".into(),
    };
    let ca = certificate::root_ca(&subject, 30).unwrap();
    let batch = certificate::batch(&ca, &subject, [0x42; 16], 20).unwrap();
    (
        batch.key.to_bytes().to_vec(),
        batch.certificate.to_der().unwrap(),
    )
}

/// The real parameters: the Pico's PBKDF2 and (where the crate has it) the virtual key's
/// Argon2id, timed (printed, not asserted) through setPIN and the first token of a power-up.
#[test]
fn the_bodies_real_kdfs_set_and_check_a_pin() {
    use authenticator::store::PinKdf;
    let mut kdfs = vec![PinKdf::Pbkdf2 { iterations: 3800 }];
    if cfg!(feature = "argon2") {
        kdfs.push(PinKdf::Argon2id {
            memory_kib: 64 * 1024,
            passes: 2,
        });
    }
    for kdf in kdfs {
        let mut config = config();
        config.pin_kdf = kdf;
        let mut storage = RamStorage::default();
        with_key_config(&mut storage, &Knobs::default(), 1, config.clone(), |key| {
            assert_eq!(PinClient::new(key, 2, 1).set_pin(key, PIN), 0);
        });
        with_key_config(&mut storage, &Knobs::default(), 2, config, |key| {
            let client = PinClient::new(key, 2, 2);
            assert_eq!(client.token(key, "nope", None, None), Err(PIN_INVALID));
            let client = PinClient::new(key, 2, 3);
            let start = std::time::Instant::now();
            assert!(client.token(key, PIN, None, None).is_ok());
            eprintln!("{kdf:?}: first PIN of a power-up {:?}", start.elapsed());
        });
    }
}

/// Someone with the flash rewrites the vault record (its digest is no MAC) with the persistent
/// token cut to 16 bytes. MACs are made with 32-byte keys: the key must not slice past the
/// end of a short one (a panic, the key dead until unplugged), but refuse the record at
/// power-up, tell the platform why, and answer CTAP errors where its secrets are needed.
#[test]
fn a_tampered_persistent_token_is_refused_at_power_up_not_a_panic() {
    use authenticator::store::{vault, PrepareFailure, PrepareStep, StoreError};
    let mut storage = RamStorage::default();
    let persistent = with_key(&mut storage, &Knobs::default(), 1, |key| {
        let client = PinClient::new(key, 2, 1);
        assert_eq!(client.set_pin(key, PIN), 0);
        client.token(key, PIN, Some(PCMR), None).unwrap()
    });
    assert_eq!(
        clear_secrets(&storage).unwrap().1.as_deref(),
        Some(&persistent[..])
    );

    // The record, its secrets' "t" cut short, written back as the vault's next record.
    let mut record = vault_record(&storage);
    let Value::Map(entries) = &mut record else {
        panic!("a map")
    };
    let clear = entries.iter_mut().find(|(k, _)| k == &text("c")).unwrap();
    let mut secrets: Value = ciborium::from_reader(&clear.1.as_bytes().unwrap()[..]).unwrap();
    let Value::Map(fields) = &mut secrets else {
        panic!("a map")
    };
    fields.iter_mut().find(|(k, _)| k == &text("t")).unwrap().1 = bytes(&persistent[..16]);
    let mut tampered = Vec::new();
    ciborium::into_writer(&secrets, &mut tampered).unwrap();
    clear.1 = bytes(&tampered);
    let mut body = Vec::new();
    ciborium::into_writer(&record, &mut body).unwrap();
    let (position, _) = vault::recover(storage.vault_mut()).unwrap().unwrap();
    vault::write(storage.vault_mut(), Some(position), &body).unwrap();

    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 2, |key| {
        assert_eq!(
            knobs.store_failures.borrow().as_slice(),
            [PrepareFailure {
                step: PrepareStep::Vault,
                error: StoreError::VaultUnreadable
            }],
            "the platform is told why the state did not open"
        );
        // getCredsMetadata with the persistent token: an error, not a panic.
        let request = map(vec![
            (int(1), int(1)),
            (int(3), int(2)),
            (int(4), bytes(&PinClient::mac(2, &persistent, &[1]))),
        ]);
        assert_ne!(ctap2(key, 0x0A, Some(request)).0, 0);
        // getInfo, which seals its state under the persistent token, still answers.
        assert_eq!(ctap2(key, 0x04, None).0, 0);
        // Nothing is made without the secrets: a PIN token is refused, with the error of a
        // key whose vault will not read (it was CTAP1_ERR_OTHER before that had its own; the
        // key now answers no getKeyAgreement either, so the request is made elsewhere).
        let client = client_from_elsewhere();
        assert_eq!(
            client.token(key, PIN, Some(MC_GA), None),
            Err(VAULT_UNREADABLE)
        );
    });
}

/// A vault the device cannot read at power-up (a flash fault): the platform is told littlefs's
/// error code, LFS_ERR_IO, not just "I/O", and the key still answers with CTAP errors.
#[test]
fn an_unreadable_vault_is_reported_with_its_error_code() {
    use authenticator::store::{PrepareFailure, PrepareStep, StoreError};
    struct Unreadable(RamStorage);
    impl littlefs2::driver::Storage for Unreadable {
        const READ_SIZE: usize = 16;
        const WRITE_SIZE: usize = 16;
        const BLOCK_SIZE: usize = 4096;
        const BLOCK_COUNT: usize = BLOCKS;
        const BLOCK_CYCLES: isize = 500;
        type CACHE_SIZE = littlefs2::consts::U256;
        type LOOKAHEAD_SIZE = littlefs2::consts::U16;
        fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
            self.0.read(off, buf)
        }
        fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
            self.0.write(off, data)
        }
        fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
            self.0.erase(off, len)
        }
    }
    impl authenticator::platform::Vault for Unreadable {
        fn vault_read(&mut self, _: usize, _: &mut [u8]) -> littlefs2::io::Result<()> {
            Err(littlefs2::io::Error::IO)
        }
        fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
            self.0.vault_program(offset, data)
        }
        fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
            self.0.vault_erase(offset)
        }
    }
    let mut storage = Unreadable(RamStorage::default());
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 1, |key| {
        assert_eq!(
            knobs.store_failures.borrow().as_slice(),
            [PrepareFailure {
                step: PrepareStep::Vault,
                error: StoreError::Filesystem(-5)
            }]
        );
        let request = make_credential_request(RP, b"bob", &[-7], false);
        assert_ne!(
            ctap2(key, 0x01, Some(request)).0,
            0,
            "no credential without secrets"
        );
    });
}

/// The same tamper on a key from before the vault, where `/dev/pin` held the persistent token:
/// there it panicked the key (`&key[..32]` of 16 bytes, in pin_protocol) at the first
/// getCredsMetadata made with the token. Now the move into the vault refuses the file, the
/// platform is told, and the request gets a CTAP error.
#[test]
fn a_tampered_persistent_token_from_before_the_vault_is_refused_not_a_panic() {
    use authenticator::store::{PrepareFailure, PrepareStep, StoreError};
    let ((mut storage, ..), persistent) = key_before_the_vault_with_token(5, 16);
    let knobs = Knobs::default();
    with_key(&mut storage, &knobs, 2, |key| {
        assert_eq!(
            knobs.store_failures.borrow().as_slice(),
            [PrepareFailure {
                step: PrepareStep::Vault,
                error: StoreError::Io
            }]
        );
        let request = map(vec![
            (int(1), int(1)),
            (int(3), int(2)),
            (int(4), bytes(&PinClient::mac(2, &persistent, &[1]))),
        ]);
        assert_ne!(ctap2(key, 0x0A, Some(request)).0, 0);
    });
}

/// CTAP2_ERR_VENDOR_FIRST: what a key whose vault is unreadable answers (docs/pin-lock.md).
const VAULT_UNREADABLE: u8 = 0xF0;
const NO_CREDENTIALS: u8 = 0x2E;

/// How an attacker with the flash (or bit rot) spoils the vault of a key in use.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// A byte of the record changed; the other slot left blank, as every write leaves it.
    OneSlot,
    /// Both slots hold a record of the key, each with a byte changed.
    BothSlots,
    /// Both slots erased, littlefs kept: the credentials, counter and PIN retries stay.
    Erased,
    /// A whole record (its digest is not keyed) whose body is not the key's CBOR.
    Undecodable,
}

fn damage(storage: &mut RamStorage, how: Damage) {
    use authenticator::platform::VAULT_SLOT_SIZE;
    use authenticator::store::vault::{self, RamVault};
    let mut image = storage.vault().image().to_vec();
    let slot = image
        .chunks(VAULT_SLOT_SIZE)
        .position(|s| s.starts_with(b"OFKVAULT"))
        .expect("a record");
    let record = slot * VAULT_SLOT_SIZE;
    match how {
        Damage::OneSlot => image[record + 40] ^= 1,
        Damage::BothSlots => {
            image[record + 40] ^= 1;
            let other = (1 - slot) * VAULT_SLOT_SIZE;
            image.copy_within(record..record + VAULT_SLOT_SIZE, other);
            image[other + 60] ^= 1;
        }
        Damage::Erased => image.fill(0xff),
        Damage::Undecodable => {
            let (position, _) = vault::recover(storage.vault_mut()).unwrap().unwrap();
            vault::write(storage.vault_mut(), Some(position), b"\xa1\x61c\x43abc").unwrap();
            return;
        }
    }
    *storage.vault_mut() = RamVault::from_image(&image);
}

/// A key in use: a PIN, a discoverable credential of `RP` for a user named [`MARKER`] and a
/// non-discoverable one; returns both (ID, COSE key).
fn key_in_use(storage: &mut RamStorage) -> [(Vec<u8>, Value); 2] {
    with_key(storage, &Knobs::default(), 1, |key| {
        // Made with a touch, as U2F-era sites do, before the PIN.
        let request = make_credential_request(RP, b"bob", &[-7], false);
        let (status, body) = ctap2(key, 0x01, Some(request));
        assert_eq!(status, 0);
        let data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
        let client = PinClient::new(key, 2, 1);
        assert_eq!(client.set_pin(key, PIN), 0);
        let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
        [
            register(key, &token, b"alice", MARKER),
            (data.credential_id, data.public_key.unwrap()),
        ]
    })
}

/// A PIN client made with another key: a refusing key answers no getKeyAgreement, but PIN
/// requests of any shape can still be sent to it.
fn client_from_elsewhere() -> PinClient {
    with_key(&mut RamStorage::default(), &Knobs::default(), 9, |key| {
        PinClient::new(key, 2, 7)
    })
}

/// The attacks on a refusing key, as an attacker holding it would try them: none gives up a
/// record, a user name or an RP ID, none sets a PIN, and the owner's credentials fail with the
/// refusal, not "no credentials".
fn assert_refuses(key: &mut (impl App + Transport), credentials: &[(Vec<u8>, Value)]) {
    // getInfo answers, so a client shows the key and offers to reset it; a PIN counts as set
    // (fail closed) and nothing is said of what is stored.
    let (status, info) = ctap2(key, 0x04, None);
    assert_eq!(status, 0, "getInfo");
    let info = info.unwrap();
    let mut encoded = Vec::new();
    ciborium::into_writer(&info, &mut encoded).unwrap();
    for needle in [MARKER.as_bytes(), RP.as_bytes()] {
        assert!(!encoded.windows(needle.len()).any(|w| w == needle));
    }
    assert_eq!(
        get_text(get(&info, 4).unwrap(), "clientPin"),
        Some(&Value::Bool(true))
    );
    assert_eq!(get(&info, 0x14), Some(&int(0)), "remaining discoverable");
    for (id, public_key) in credentials {
        assert_eq!(sign(key, None, id, public_key), VAULT_UNREADABLE);
    }
    // getAssertion's account list, and makeCredential.
    let request = get_assertion_request(RP, &[9; 32], &[]);
    assert_eq!(ctap2(key, 0x02, Some(request)).0, VAULT_UNREADABLE);
    let request = make_credential_request(RP, b"mallory", &[-7], true);
    assert_eq!(ctap2(key, 0x01, Some(request)).0, VAULT_UNREADABLE);
    // A new PIN, to get a token for credential management: refused, and so are the PIN
    // token and credential management themselves, and every clientPIN request.
    let key_agreement = map(vec![(int(1), int(2)), (int(2), int(2))]);
    assert_eq!(ctap2(key, 0x06, Some(key_agreement)).0, VAULT_UNREADABLE);
    let client = client_from_elsewhere();
    assert_eq!(client.set_pin(key, NEW_PIN), VAULT_UNREADABLE);
    assert_eq!(
        client.token(key, PIN, Some(CM), None),
        Err(VAULT_UNREADABLE)
    );
    let metadata = map(vec![(int(1), int(1))]);
    assert_eq!(ctap2(key, 0x0A, Some(metadata)).0, VAULT_UNREADABLE);
    let enumerate_rps = map(vec![(int(1), int(2))]);
    assert_eq!(ctap2(key, 0x0A, Some(enumerate_rps)).0, VAULT_UNREADABLE);
    // U2F: "no precise diagnosis".
    assert_eq!(u2f_status(key), 0x6F00);
}

/// A vault that was written but no longer reads (tampering with the flash, bit rot), or that
/// is gone while littlefs keeps the credentials and PIN state: the key refuses, says why to
/// the platform, keeps every record back, and authenticatorReset starts it over. Before, it
/// made new secrets and went on as a blank key without a PIN over the owner's records.
#[test]
fn a_key_whose_vault_will_not_read_refuses_until_reset() {
    use authenticator::store::{PrepareFailure, PrepareStep, StoreError};
    for how in [
        Damage::OneSlot,
        Damage::BothSlots,
        Damage::Erased,
        Damage::Undecodable,
    ] {
        let mut storage = RamStorage::default();
        let credentials = key_in_use(&mut storage);
        damage(&mut storage, how);
        // Twice: the refusal survives a power cycle (nothing was started over).
        for boot in 0..2 {
            let knobs = Knobs::default();
            with_key(&mut storage, &knobs, 2 + boot, |key| {
                assert_eq!(
                    knobs.store_failures.borrow().as_slice(),
                    [PrepareFailure {
                        step: PrepareStep::Vault,
                        error: StoreError::VaultUnreadable
                    }],
                    "{how:?}: the platform is told"
                );
                assert_refuses(key, &credentials);
            });
        }
        assert!(occurrences(&storage, MARKER.as_bytes()) > 0, "{how:?}");

        // Reset, within 10 s of power-up and with a touch, as always: a working blank key.
        let knobs = Knobs::default();
        with_key(&mut storage, &knobs, 4, |key| {
            assert_eq!(ctap2(key, 0x07, None).0, 0, "{how:?}: reset");
            assert!(knobs.prompts.get() > 0, "the reset asked for a touch");
        });
        assert_eq!(occurrences(&storage, MARKER.as_bytes()), 0, "{how:?}");
        let knobs = Knobs::default();
        with_key(&mut storage, &knobs, 5, |key| {
            assert!(knobs.store_failures.borrow().is_empty(), "{how:?}");
            assert_eq!(
                get_text(get(&info(key), 4).unwrap(), "clientPin"),
                Some(&Value::Bool(false))
            );
            for (id, public_key) in &credentials {
                assert_eq!(sign(key, None, id, public_key), NO_CREDENTIALS, "{how:?}");
            }
            let client = PinClient::new(key, 2, 6);
            assert_eq!(client.set_pin(key, NEW_PIN), 0);
            let token = client.token(key, NEW_PIN, Some(MC_GA), None).unwrap();
            let (id, public_key) = register(key, &token, b"carol", "carol");
            // makeCredential took the token's permissions (CTAP 2.1 §6.1.2): a new one.
            let token = client.token(key, NEW_PIN, Some(MC_GA), None).unwrap();
            assert_eq!(sign(key, Some(&token), &id, &public_key), 0, "{how:?}");
        });
    }
}

/// What still starts over: a new key, a reset's, and a first power-up cut at any write (the
/// only time no whole record is left, with nothing in littlefs a vault went with).
#[test]
fn a_new_key_and_one_cut_during_its_first_power_up_start_as_usual() {
    // A new key's littlefs, formatted (a cut while formatting is littlefs's to survive).
    let mut base = RamStorage::default();
    {
        let mut alloc = littlefs2::fs::Allocation::new();
        authenticator::store::mount(&mut alloc, &mut base).unwrap();
    }
    let mut tried = 0;
    for cut in 1.. {
        let mut storage = RamStorage::from_images(base.image(), base.vault().image());
        if !cut_during_boot(&mut storage, cut) {
            break;
        }
        tried += 1;
        let knobs = Knobs::default();
        with_key(&mut storage, &knobs, 3, |key| {
            assert!(knobs.store_failures.borrow().is_empty(), "cut {cut}");
            let client = PinClient::new(key, 2, 3);
            assert_eq!(client.set_pin(key, PIN), 0, "cut {cut}");
            let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
            let (id, public_key) = register(key, &token, b"alice", MARKER);
            let token = client.token(key, PIN, Some(MC_GA), None).unwrap();
            assert_eq!(sign(key, Some(&token), &id, &public_key), 0, "cut {cut}");
        });
    }
    eprintln!("a new key's first power-up: {tried} program/erase operations, each cut");
    assert!(tried >= 2);
}

/// A power cut at every program and erase of a key in use (setting a PIN after a credential,
/// the lock on, a PIN change): never refused, and the credential still signs.
#[test]
fn a_power_cut_during_a_vault_write_is_not_refused() {
    let mut base = RamStorage::default();
    let credentials = key_in_use(&mut base);
    let copy = |s: &RamStorage| RamStorage::from_images(s.image(), s.vault().image());
    let mut tried = 0;
    for cut in 1.. {
        let mut storage = copy(&base);
        if !cut_during_pin_change(&mut storage, cut) {
            break;
        }
        tried += 1;
        let knobs = Knobs::default();
        with_key(&mut storage, &knobs, 3, |key| {
            assert!(knobs.store_failures.borrow().is_empty(), "cut {cut}");
            // One PIN or the other opens it, depending on where the cut fell (a wrong one
            // makes the key change its key agreement key: a new client for each), and a
            // verified assertion spends the token: one for each.
            for (id, public_key) in &credentials {
                let token = [PIN, NEW_PIN]
                    .iter()
                    .find_map(|pin| {
                        let client = PinClient::new(key, 2, 3);
                        client.token(key, pin, Some(MC_GA), None).ok()
                    })
                    .unwrap_or_else(|| panic!("cut {cut}: neither PIN opens the key"));
                assert_eq!(sign(key, Some(&token), id, public_key), 0, "cut {cut}");
            }
        });
    }
    eprintln!("a PIN change: {tried} program/erase operations, each cut");
    assert!(tried > 2);
}
