//! Built-in user verification (CTAP 2.1 §6.5.3) against the core, on a body with a simulated
//! fingerprint sensor: getInfo's members, getPinUvAuthTokenUsingUvWithPermissions and
//! getUVRetries, UV inside makeCredential and getAssertion, uvRetries counted on storage and
//! restored by a match or a correct PIN, the fallback to the PIN when blocked, and a power cut
//! at every write of an attempt.

use std::cell::Cell;
use std::rc::Rc;

use authenticator::ctaphid::{App, KeepaliveStatus, Outcome, Transaction};
use authenticator::platform::{BuiltinUv, Verification, USER_VERIFY_FINGERPRINT_INTERNAL};
use ciborium::Value;
use test_support::pin_client::{uv_retries, PinClient};
use test_support::*;

const MC: u8 = 0x01;
const GA: u8 = 0x02;
const PIN: &str = "4242";

const UV_BLOCKED: u8 = 0x3C;
const UV_INVALID: u8 = 0x3F;
const PIN_BLOCKED: u8 = 0x32;
const PUAT_REQUIRED: u8 = 0x36;
const OPERATION_DENIED: u8 = 0x27;
const INVALID_OPTION: u8 = 0x2C;
const NOT_ALLOWED: u8 = 0x30;
const UNAUTHORIZED_PERMISSION: u8 = 0x40;
const USER_ACTION_TIMEOUT: u8 = 0x2F;
const KEEPALIVE_CANCEL: u8 = 0x2D;
const INVALID_SUBCOMMAND: u8 = 0x3E;

/// Permissions: makeCredential, getAssertion, authenticatorConfig, bioEnrollment.
const PERM_MC: u8 = 0x01;
const PERM_GA: u8 = 0x02;
const PERM_BE: u8 = 0x08;
const PERM_ACFG: u8 = 0x20;

/// A body with a fingerprint sensor, a finger enrolled unless `enrolled` is false.
fn fingerprint_knobs(enrolled: bool) -> Knobs {
    let knobs = Knobs::default();
    knobs.builtin_uv.set(Some(BuiltinUv {
        modality: USER_VERIFY_FINGERPRINT_INTERNAL,
        enrolled,
    }));
    knobs
}

fn info(key: &mut impl App) -> Value {
    ctap2(key, 0x04, None).1.unwrap()
}

fn option(info: &Value, name: &str) -> Option<bool> {
    get_text(get(info, 4).unwrap(), name).map(|v| v.as_bool().unwrap())
}

/// `request` with these options set (map key `at`: 7 for makeCredential, 5 for getAssertion).
fn with_options(mut request: Value, at: i64, options: &[(&str, bool)]) -> Value {
    let Value::Map(entries) = &mut request else {
        unreachable!()
    };
    let position = entries.iter().position(|(k, _)| k == &int(at));
    let mut map = match position {
        Some(i) => entries.remove(i).1.into_map().unwrap(),
        None => Vec::new(),
    };
    for (name, value) in options {
        map.push((text(name), Value::Bool(*value)));
    }
    entries.push((int(at), Value::Map(map)));
    request
}

/// `request` with a pinUvAuthParam made from `token` (at map key `at`; the protocol after it).
fn with_token(mut request: Value, at: i64, protocol: u8, token: &[u8], cdh: &[u8]) -> Value {
    if let Value::Map(entries) = &mut request {
        entries.push((int(at), bytes(&PinClient::mac(protocol, token, cdh))));
        entries.push((int(at + 1), int(protocol.into())));
    }
    request
}

fn auth_data(body: &Value, key: i64) -> AuthData {
    parse_auth_data(get(body, key).unwrap().as_bytes().unwrap())
}

const UP: u8 = 0x01;
const UV: u8 = 0x04;

/// Register a non-discoverable credential without verification; returns its ID.
fn register(key: &mut impl App) -> Vec<u8> {
    let (status, body) = ctap2(
        key,
        MC,
        Some(make_credential_request("example.com", b"u", &[-7], false)),
    );
    assert_eq!(status, 0, "makeCredential");
    auth_data(&body.unwrap(), 2).credential_id
}

#[test]
fn get_info_describes_the_sensor_and_whether_a_finger_is_enrolled() {
    for enrolled in [true, false] {
        let mut storage = RamStorage::default();
        with_key(&mut storage, &fingerprint_knobs(enrolled), 1, |key| {
            let info = info(key);
            assert_eq!(option(&info, "uv"), Some(enrolled), "uv: enrolled or not");
            assert_eq!(option(&info, "pinUvAuthToken"), Some(true));
            assert_eq!(option(&info, "bioEnroll"), None, "no bioEnroll");
            assert_eq!(option(&info, "uvBioEnroll"), None);
            assert_eq!(option(&info, "uvAcfg"), None);
            assert_eq!(
                get(&info, 0x11),
                Some(&int(3)),
                "preferredPlatformUvAttempts"
            );
            assert_eq!(get(&info, 0x12), Some(&int(2)), "uvModality: fingerprint");
            assert_eq!(get(&info, 0x17), Some(&int(0)), "uvCountSinceLastPinEntry");
        });
    }
    // A body without the method: no uv option and none of its members.
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        let info = info(key);
        assert_eq!(option(&info, "uv"), None);
        for member in [0x11, 0x12, 0x17] {
            assert_eq!(get(&info, member), None, "0x{member:02X}");
        }
        let client = PinClient::new(key, 2, 3);
        assert_eq!(client.uv_token(key, PERM_MC, None), Err(INVALID_SUBCOMMAND));
        assert_eq!(uv_retries(key), Err(INVALID_SUBCOMMAND));
    });
}

#[test]
fn a_uv_token_verifies_the_user_and_brings_the_touch_with_it() {
    for protocol in [1u8, 2] {
        let mut storage = RamStorage::default();
        let knobs = fingerprint_knobs(true);
        with_key(&mut storage, &knobs, 1, |key| {
            let client = PinClient::new(key, protocol, 5);
            let token = client
                .uv_token(key, PERM_MC | PERM_GA, Some("example.com"))
                .expect("getPinUvAuthTokenUsingUvWithPermissions");
            assert_eq!(knobs.uv_prompts.get(), 1, "one finger asked for");
            let request = make_credential_request("example.com", b"u", &[-7], true);
            let request = with_token(request, 8, protocol, &token, &[7u8; 32]);
            let (status, body) = ctap2(key, MC, Some(request));
            assert_eq!(status, 0, "makeCredential with the UV token");
            let registered = auth_data(&body.unwrap(), 2);
            assert_eq!(registered.flags & (UP | UV), UP | UV, "UP and UV");
            assert_eq!(
                knobs.prompts.get(),
                0,
                "the finger was the touch: no second one asked for"
            );

            // A second token: its first use is touch-free too, and the assertion is verified.
            let token = client.uv_token(key, PERM_GA, None).unwrap();
            let cdh = [9u8; 32];
            let request = get_assertion_request("example.com", &cdh, &[]);
            let request = with_token(request, 6, protocol, &token, &cdh);
            let (status, body) = ctap2(key, GA, Some(request));
            assert_eq!(status, 0, "getAssertion with the UV token");
            let body = body.unwrap();
            let asserted = auth_data(&body, 2);
            assert_eq!(asserted.flags & (UP | UV), UP | UV);
            verify(
                registered.public_key.as_ref().unwrap(),
                &[&asserted.raw[..], &cdh].concat(),
                get(&body, 3).unwrap().as_bytes().unwrap(),
            );
            assert_eq!(knobs.prompts.get(), 0);
            assert_eq!(get(&info(key), 0x17), Some(&int(2)), "two attempts so far");
        });
    }
}

#[test]
fn the_uv_option_verifies_inside_make_credential_and_get_assertion() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    with_key(&mut storage, &knobs, 1, |key| {
        let request = make_credential_request("example.com", b"u", &[-7], true);
        let (status, body) = ctap2(key, MC, Some(with_options(request, 7, &[("uv", true)])));
        assert_eq!(status, 0);
        let registered = auth_data(&body.unwrap(), 2);
        assert_eq!(registered.flags & (UP | UV), UP | UV);
        assert_eq!((knobs.uv_prompts.get(), knobs.prompts.get()), (1, 0));

        let cdh = [3u8; 32];
        let request = get_assertion_request("example.com", &cdh, &[]);
        let (status, body) = ctap2(key, GA, Some(with_options(request, 5, &[("uv", true)])));
        assert_eq!(status, 0);
        let body = body.unwrap();
        let asserted = auth_data(&body, 2);
        assert_eq!(asserted.flags & (UP | UV), UP | UV);
        // Verified: the user's name comes back with the discoverable credential.
        let user = get(&body, 4).unwrap();
        assert_eq!(get_text(user, "name"), Some(&text("user")));
        assert_eq!((knobs.uv_prompts.get(), knobs.prompts.get()), (2, 0));

        // Without the option (and without a token) nothing is verified; a touch is asked.
        let id = register(key);
        assert_eq!((knobs.uv_prompts.get(), knobs.prompts.get()), (2, 1));
        let (status, body) = ctap2(
            key,
            GA,
            Some(get_assertion_request("example.com", &cdh, &[&id])),
        );
        assert_eq!(status, 0);
        assert_eq!(auth_data(&body.unwrap(), 2).flags & (UP | UV), UP);
    });
}

#[test]
fn failed_attempts_count_down_to_blocked_and_a_correct_pin_restores_them() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    with_key(&mut storage, &knobs, 1, |key| {
        let client = PinClient::new(key, 2, 5);
        assert_eq!(uv_retries(key), Ok(5), "maxUvRetries");
        knobs.uv.set(Verification::Failed);
        for left in (1..5).rev() {
            assert_eq!(client.uv_token(key, PERM_MC, None), Err(UV_INVALID));
            assert_eq!(uv_retries(key), Ok(left), "each failed attempt costs one");
        }
        assert_eq!(
            client.uv_token(key, PERM_MC, None),
            Err(UV_BLOCKED),
            "the attempt that spends the last retry"
        );
        assert_eq!(uv_retries(key), Ok(0));
        let asked = knobs.uv_prompts.get();
        knobs.uv.set(Verification::Verified);
        assert_eq!(client.uv_token(key, PERM_MC, None), Err(UV_BLOCKED));
        assert_eq!(
            knobs.uv_prompts.get(),
            asked,
            "blocked: no finger asked for"
        );
        assert_eq!(get(&info(key), 0x17), Some(&int(5)));

        // Inside makeCredential, without a PIN: CTAP2_ERR_PIN_BLOCKED, as §6.1.2 step 11.2 names
        // it; once a PIN is set the platform is sent to it (PUAT_REQUIRED).
        let request = make_credential_request("example.com", b"u", &[-7], false);
        let uv_request = with_options(request, 7, &[("uv", true)]);
        assert_eq!(ctap2(key, MC, Some(uv_request.clone())).0, PIN_BLOCKED);
        assert_eq!(client.set_pin(key, PIN), 0);
        assert_eq!(ctap2(key, MC, Some(uv_request.clone())).0, PUAT_REQUIRED);
        assert_eq!(uv_retries(key), Ok(0), "setting a PIN is not entering one");

        // A correct PIN unblocks built-in UV and starts the count since the PIN again.
        client
            .token(key, PIN, Some(PERM_MC), None)
            .expect("a token from the PIN");
        assert_eq!(uv_retries(key), Ok(5));
        assert_eq!(get(&info(key), 0x17), Some(&int(0)));
        let (status, body) = ctap2(key, MC, Some(uv_request));
        assert_eq!(status, 0, "built-in UV works again");
        assert_eq!(auth_data(&body.unwrap(), 2).flags & UV, UV);
    });
}

#[test]
fn a_failed_attempt_in_make_credential_is_denied_or_sends_the_platform_to_the_pin() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    with_key(&mut storage, &knobs, 1, |key| {
        knobs.uv.set(Verification::Failed);
        let request = make_credential_request("example.com", b"u", &[-7], false);
        let uv_request = with_options(request, 7, &[("uv", true)]);
        assert_eq!(ctap2(key, MC, Some(uv_request.clone())).0, OPERATION_DENIED);
        let client = PinClient::new(key, 1, 5);
        assert_eq!(client.set_pin(key, PIN), 0);
        assert_eq!(ctap2(key, MC, Some(uv_request)).0, PUAT_REQUIRED);
        assert_eq!(uv_retries(key), Ok(3), "both attempts cost a retry");
        assert_eq!(
            knobs.prompts.get(),
            0,
            "no touch asked after a failed finger"
        );
    });
}

#[test]
fn uv_retries_survive_a_power_cycle() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    knobs.uv.set(Verification::Failed);
    with_key(&mut storage, &knobs, 1, |key| {
        let client = PinClient::new(key, 2, 5);
        for _ in 0..2 {
            assert_eq!(client.uv_token(key, PERM_MC, None), Err(UV_INVALID));
        }
    });
    with_key(&mut storage, &knobs, 2, |key| {
        assert_eq!(uv_retries(key), Ok(3));
        assert_eq!(get(&info(key), 0x17), Some(&int(2)));
    });
}

#[test]
fn an_unenrolled_sensor_verifies_nobody() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(false);
    with_key(&mut storage, &knobs, 1, |key| {
        let request = make_credential_request("example.com", b"u", &[-7], false);
        let (status, _) = ctap2(key, MC, Some(with_options(request, 7, &[("uv", true)])));
        assert_eq!(status, INVALID_OPTION, "§6.1.2 step 5.3.2");
        let client = PinClient::new(key, 2, 5);
        assert_eq!(client.uv_token(key, PERM_MC, None), Err(NOT_ALLOWED));
        assert_eq!(knobs.uv_prompts.get(), 0);
        // Not protected by UV: a discoverable credential needs nothing more than the touch.
        let request = make_credential_request("example.com", b"u", &[-7], true);
        assert_eq!(ctap2(key, MC, Some(request)).0, 0);
    });
}

#[test]
fn uv_tokens_have_no_acfg_or_be_permission() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &fingerprint_knobs(true), 1, |key| {
        let client = PinClient::new(key, 2, 5);
        for permissions in [PERM_ACFG, PERM_BE, PERM_MC | PERM_ACFG] {
            assert_eq!(
                client.uv_token(key, permissions, None),
                Err(UNAUTHORIZED_PERMISSION),
                "{permissions:#x}: no uvAcfg, no uvBioEnroll"
            );
        }
        assert_eq!(uv_retries(key), Ok(5), "refused before any attempt");
    });
}

#[test]
fn an_enrolled_sensor_protects_discoverable_credentials_and_configuration() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    with_key(&mut storage, &knobs, 1, |key| {
        // makeCredUvNotRqd: a non-discoverable credential needs no verification...
        let id = register(key);
        assert!(!id.is_empty());
        // ...but a discoverable one does (§6.1.2 step 7.1; no PIN: OPERATION_DENIED).
        let request = make_credential_request("example.com", b"u", &[-7], true);
        assert_eq!(ctap2(key, MC, Some(request)).0, OPERATION_DENIED);
        // authenticatorConfig needs a token now (toggleAlwaysUv, no token: PUAT_REQUIRED).
        let config = map(vec![(int(1), int(2))]);
        assert_eq!(ctap2(key, 0x0D, Some(config)).0, PUAT_REQUIRED);
    });
}

#[test]
fn always_uv_verifies_with_the_sensor_but_leaves_silent_probes_alone() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    let id = with_key(&mut storage, &Knobs::default(), 1, |key| {
        // alwaysUv switched on before the sensor came (config without a token: unprotected).
        let config = map(vec![(int(1), int(2))]);
        assert_eq!(ctap2(key, 0x0D, Some(config)).0, 0);
        assert_eq!(option(&info(key), "makeCredUvNotRqd"), Some(false));
        // Without the sensor and without a PIN, alwaysUv refuses (no token possible yet).
        let request = make_credential_request("example.com", b"u", &[-7], false);
        assert_eq!(ctap2(key, MC, Some(request)).0, 0x35, "PIN_NOT_SET");
        Vec::<u8>::new()
    });
    assert!(id.is_empty());
    with_key(&mut storage, &knobs, 2, |key| {
        let id = register(key);
        assert_eq!(
            knobs.uv_prompts.get(),
            1,
            "alwaysUv: makeCredential verified"
        );
        let cdh = [4u8; 32];
        let probe = with_options(
            get_assertion_request("example.com", &cdh, &[&id]),
            5,
            &[("up", false)],
        );
        let (status, body) = ctap2(key, GA, Some(probe));
        assert_eq!(status, 0, "a silent up=false probe is not held to alwaysUv");
        assert_eq!(auth_data(&body.unwrap(), 2).flags & (UP | UV), 0);
        assert_eq!(knobs.uv_prompts.get(), 1);
        let (status, body) = ctap2(
            key,
            GA,
            Some(get_assertion_request("example.com", &cdh, &[&id])),
        );
        assert_eq!(status, 0);
        assert_eq!(auth_data(&body.unwrap(), 2).flags & (UP | UV), UP | UV);
        assert_eq!((knobs.uv_prompts.get(), knobs.prompts.get()), (2, 0));
    });
}

/// Drive one request through the app until it finishes, advancing the clock by `step_ms` each
/// time it waits; returns the keepalive statuses seen and the response.
fn until_done(
    key: &mut impl App,
    knobs: &Knobs,
    request: &[u8],
    step_ms: u64,
    mut each_wait: impl FnMut(u32, &mut dyn App),
) -> (Vec<KeepaliveStatus>, Vec<u8>) {
    let mut statuses = Vec::new();
    for round in 0.. {
        let mut response = Vec::new();
        match key.call(Transaction::Cbor, request, &mut response) {
            Outcome::Done => return (statuses, response),
            Outcome::Waiting(status) => statuses.push(status),
        }
        each_wait(round, key);
        knobs.now_ms.set(knobs.now_ms.get() + step_ms);
    }
    unreachable!()
}

#[test]
fn waiting_for_a_finger_sends_upneeded_and_ends_with_cancel_or_timeout_for_free() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    with_key(&mut storage, &knobs, 1, |key| {
        let request = with_options(
            make_credential_request("example.com", b"u", &[-7], false),
            7,
            &[("uv", true)],
        );
        let raw = test_support::request(MC, Some(&request));

        // The finger comes after three polls.
        knobs.uv.set(Verification::Pending);
        let finger = knobs.uv.clone();
        let (statuses, response) = until_done(key, &knobs, &raw, 100, |round, _| {
            if round == 2 {
                finger.set(Verification::Verified);
            }
        });
        assert_eq!(statuses, vec![KeepaliveStatus::UpNeeded; 3]);
        assert_eq!(response[0], 0);
        assert_eq!(knobs.uv_prompts.get(), 1, "one attempt across the polls");

        // The host cancels: KEEPALIVE_CANCEL, and the attempt never happened.
        knobs.uv.set(Verification::Pending);
        let (_, response) = until_done(key, &knobs, &raw, 100, |round, key| {
            if round == 1 {
                key.cancel();
            }
        });
        assert_eq!(response, vec![KEEPALIVE_CANCEL]);

        // Nobody comes: USER_ACTION_TIMEOUT after 30 s.
        let (statuses, response) = until_done(key, &knobs, &raw, 1_000, |_, _| {});
        assert_eq!(response, vec![USER_ACTION_TIMEOUT]);
        assert!(statuses.len() >= 29);
        assert_eq!(uv_retries(key), Ok(5), "no finger, no attempt spent");
        assert_eq!(get(&info(key), 0x17), Some(&int(1)));
    });
}

/// A RAM block device that stops writing (as at a power cut) once `budget` program and erase
/// operations are spent.
struct CutStorage {
    inner: RamStorage,
    budget: Rc<Cell<Option<usize>>>,
}

impl CutStorage {
    fn spend(&mut self) -> littlefs2::io::Result<()> {
        match self.budget.get() {
            Some(0) => Err(littlefs2::io::Error::IO),
            Some(n) => {
                self.budget.set(Some(n - 1));
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl littlefs2::driver::Storage for CutStorage {
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
        self.spend()?;
        self.inner.write(off, data)
    }
    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        self.spend()?;
        self.inner.erase(off, len)
    }
}

/// The vault beside the partition loses power too.
impl authenticator::platform::Vault for CutStorage {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.inner.vault_read(offset, buf)
    }
    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        self.spend()?;
        self.inner.vault_program(offset, data)
    }
    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        self.spend()?;
        self.inner.vault_erase(offset)
    }
}

/// One attempt (a failing finger, then a matching one) with the power cut after each write in
/// turn: an answer the key gave is on storage after the next power-up (a failed attempt is
/// never handed back), and an attempt cut before its answer costs at most that one retry.
#[test]
fn a_power_cut_at_any_write_of_an_attempt_never_hands_a_spent_retry_back() {
    for verification in [Verification::Failed, Verification::Verified] {
        let mut cuts = 0;
        for cut_after in 0.. {
            let budget = Rc::new(Cell::new(None));
            let mut storage = CutStorage {
                inner: RamStorage::default(),
                budget: budget.clone(),
            };
            let knobs = fingerprint_knobs(true);
            // Two failed attempts first, so a match has retries to restore.
            knobs.uv.set(Verification::Failed);
            with_key(&mut storage, &knobs, 1, |key| {
                let client = PinClient::new(key, 2, 5);
                for _ in 0..2 {
                    assert_eq!(client.uv_token(key, PERM_MC, None), Err(UV_INVALID));
                }
            });
            knobs.uv.set(verification);
            budget.set(Some(cut_after));
            let answer = with_key(&mut storage, &knobs, 2, |key| {
                let client = PinClient::new(key, 2, 5);
                client.uv_token(key, PERM_MC, None)
            });
            let cut = budget.get() == Some(0);
            budget.set(None);
            let left = with_key(&mut storage, &knobs, 3, |key| uv_retries(key).unwrap());
            match (verification, &answer) {
                (Verification::Failed, Err(UV_INVALID)) => assert_eq!(left, 2, "cut {cut_after}"),
                (Verification::Verified, Ok(_)) => assert_eq!(left, 5, "cut {cut_after}"),
                // Cut before the key could answer: the attempt costs at most itself.
                (_, Err(_)) => assert!(cut && (left == 3 || left == 2), "cut {cut_after}: {left}"),
                (_, Ok(_)) => panic!("a failed finger was taken for a match"),
            }
            if !cut {
                break;
            }
            cuts += 1;
        }
        // The attempt writes: a sweep that cut nothing would prove nothing.
        assert!(cuts >= 2, "{verification:?}: {cuts} cuts");
    }
}

/// The touch that came with a UV token counts for its first use within 30 s only
/// (userPresentTimeLimit): a token first used for credential management, then for a
/// makeCredential a minute later, asks for a touch then.
#[test]
fn a_uv_tokens_touch_expires_with_user_present_time_limit() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    with_key(&mut storage, &knobs, 1, |key| {
        let client = PinClient::new(key, 2, 5);
        let token = client.uv_token(key, PERM_MC | 0x04, None).unwrap();
        // getCredsMetadata with the token: it is now in use, so it does not expire at 30 s.
        let message = [0x01u8];
        let request = map(vec![
            (int(1), int(1)),
            (int(3), int(2)),
            (int(4), bytes(&PinClient::mac(2, &token, &message))),
        ]);
        assert_eq!(ctap2(key, 0x0A, Some(request)).0, 0, "getCredsMetadata");
        knobs.now_ms.set(knobs.now_ms.get() + 60_000);
        let request = make_credential_request("example.com", b"u", &[-7], false);
        let request = with_token(request, 8, 2, &token, &[7u8; 32]);
        let (status, body) = ctap2(key, MC, Some(request));
        assert_eq!(status, 0);
        assert_eq!(auth_data(&body.unwrap(), 2).flags & (UP | UV), UP | UV);
        assert_eq!(
            knobs.prompts.get(),
            1,
            "a touch asked: the finger was a minute ago"
        );
    });
}

/// A PIN-locked key (PIN lock on, no PIN since power-up) keeps its secrets sealed under the
/// PIN, so the sensor verifies nobody until the PIN is given: getInfo's `uv` is false, a UV
/// token is refused without asking for a finger, and a request is sent to the PIN.
#[test]
fn a_locked_key_takes_the_pin_not_the_finger_until_the_pin_is_given() {
    let mut storage = RamStorage::default();
    let knobs = fingerprint_knobs(true);
    with_key(&mut storage, &knobs, 1, |key| {
        let client = PinClient::new(key, 2, 5);
        assert_eq!(client.set_pin(key, PIN), 0);
        // authenticatorConfig vendorPrototype (0xFF), vendorCommandId "LOCK", with an acfg token.
        let token = client.token(key, PIN, Some(PERM_ACFG), None).unwrap();
        let params = map(vec![(int(1), int(0x4C4F_434B))]);
        let mut message = vec![0xff; 32];
        message.extend_from_slice(&[0x0d, 0xFF]);
        ciborium::into_writer(&params, &mut message).unwrap();
        let request = map(vec![
            (int(1), int(0xFF)),
            (int(2), params),
            (int(3), int(2)),
            (int(4), bytes(&PinClient::mac(2, &token, &message))),
        ]);
        assert_eq!(ctap2(key, 0x0D, Some(request)).0, 0, "PIN lock on");
    });
    with_key(&mut storage, &knobs, 2, |key| {
        let locked = info(key);
        assert_eq!(option(&locked, "alwaysUv"), Some(true), "locked");
        assert_eq!(
            option(&locked, "uv"),
            Some(false),
            "the sensor cannot unseal anything"
        );
        let client = PinClient::new(key, 2, 5);
        assert_eq!(client.uv_token(key, PERM_MC, None), Err(NOT_ALLOWED));
        let request = make_credential_request("example.com", b"u", &[-7], false);
        let uv_request = with_options(request.clone(), 7, &[("uv", true)]);
        assert_eq!(ctap2(key, MC, Some(uv_request.clone())).0, INVALID_OPTION);
        assert_eq!(ctap2(key, MC, Some(request)).0, PUAT_REQUIRED, "to the PIN");
        assert_eq!(knobs.uv_prompts.get(), 0, "no finger asked for");

        client
            .token(key, PIN, Some(PERM_MC), None)
            .expect("the PIN unlocks");
        assert_eq!(option(&info(key), "uv"), Some(true));
        let (status, body) = ctap2(key, MC, Some(uv_request));
        assert_eq!(status, 0, "the finger again");
        assert_eq!(auth_data(&body.unwrap(), 2).flags & (UP | UV), UP | UV);
    });
}
