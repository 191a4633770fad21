//! authenticatorCredentialManagement against the core.

use authenticator::ctaphid::App;
use ciborium::Value;
use sha2::{Digest, Sha256};
use test_support::pin_client::PinClient;
use test_support::*;

const CM: u8 = 0x04;
const PIN: &str = "4321";

fn cm(
    key: &mut impl App,
    command: u8,
    token: Option<&[u8]>,
    sub: u8,
    params: Option<Value>,
) -> (u8, Option<Value>) {
    let mut entries = vec![(int(1), int(sub.into()))];
    let mut message = vec![sub];
    if let Some(params) = params {
        ciborium::into_writer(&params, &mut message).unwrap();
        entries.push((int(2), params));
    }
    if let Some(token) = token {
        entries.push((int(3), int(2)));
        entries.push((int(4), bytes(&PinClient::mac(2, token, &message))));
    }
    ctap2(key, command, Some(map(entries)))
}

fn register(key: &mut impl App, token: &[u8], rp: &str, user: &str) -> Vec<u8> {
    let mut request = make_credential_request(rp, user.as_bytes(), &[-7], true);
    if let Value::Map(entries) = &mut request {
        entries.push((int(8), bytes(&PinClient::mac(2, token, &[7u8; 32]))));
        entries.push((int(9), int(2)));
    }
    let (status, body) = ctap2(key, 0x01, Some(request));
    assert_eq!(status, 0);
    parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap()).credential_id
}

fn as_int(value: &Value) -> i64 {
    i64::try_from(value.as_integer().unwrap()).unwrap()
}

#[test]
fn enumerate_update_and_delete() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 1, |key| {
        let client = PinClient::new(key, 2, 3);
        client.set_pin(key, PIN);
        let mut ids = Vec::new();
        for (rp, user) in [
            ("a.example", "alice"),
            ("a.example", "bob"),
            ("b.example", "carol"),
        ] {
            let token = client.token(key, PIN, Some(0x01), None).unwrap();
            ids.push(register(key, &token, rp, user));
        }
        let token = client.token(key, PIN, Some(CM), None).unwrap();

        let (status, body) = cm(key, 0x0A, Some(&token), 1, None);
        assert_eq!(status, 0);
        let metadata = body.unwrap();
        assert_eq!(as_int(get(&metadata, 1).unwrap()), 3);
        assert!(as_int(get(&metadata, 2).unwrap()) > 0);

        let (status, body) = cm(key, 0x0A, Some(&token), 2, None);
        assert_eq!(status, 0);
        let first = body.unwrap();
        assert_eq!(as_int(get(&first, 5).unwrap()), 2, "totalRPs");
        assert_eq!(
            get_text(get(&first, 3).unwrap(), "id"),
            Some(&text("a.example"))
        );
        let (status, body) = cm(key, 0x0A, None, 3, None);
        assert_eq!(status, 0);
        assert_eq!(
            get_text(get(&body.unwrap(), 3).unwrap(), "id"),
            Some(&text("b.example"))
        );
        assert_eq!(cm(key, 0x0A, None, 3, None).0, 0x30, "no more RPs");

        let rp_hash: [u8; 32] = Sha256::digest(b"a.example").into();
        let params = map(vec![(int(1), bytes(&rp_hash))]);
        let (status, body) = cm(key, 0x41, Some(&token), 4, Some(params.clone()));
        assert_eq!(status, 0, "the 0x41 preview command works too");
        let body = body.unwrap();
        assert_eq!(as_int(get(&body, 9).unwrap()), 2, "totalCredentials");
        assert!(get(&body, 8).is_some(), "public key");
        let (status, _) = cm(key, 0x41, None, 5, None);
        assert_eq!(status, 0);

        let descriptor = |id: &[u8]| {
            map(vec![
                (text("id"), bytes(id)),
                (text("type"), text("public-key")),
            ])
        };
        let user = map(vec![
            (text("id"), bytes(b"bob")),
            (text("name"), text("robert")),
        ]);
        let update = map(vec![(int(2), descriptor(&ids[1])), (int(3), user)]);
        assert_eq!(cm(key, 0x0A, Some(&token), 7, Some(update)).0, 0);
        let wrong_user = map(vec![
            (int(2), descriptor(&ids[1])),
            (int(3), map(vec![(text("id"), bytes(b"eve"))])),
        ]);
        assert_eq!(cm(key, 0x0A, Some(&token), 7, Some(wrong_user)).0, 0x02);

        let delete = map(vec![(int(2), descriptor(&ids[0]))]);
        assert_eq!(cm(key, 0x0A, Some(&token), 6, Some(delete.clone())).0, 0);
        assert_eq!(
            cm(key, 0x0A, Some(&token), 6, Some(delete)).0,
            0x2E,
            "already gone"
        );
        let (_, body) = cm(key, 0x0A, Some(&token), 1, None);
        assert_eq!(as_int(get(&body.unwrap(), 1).unwrap()), 2);
        let (status, _) = ctap2(
            key,
            0x02,
            Some(get_assertion_request("a.example", &[0; 32], &[&ids[0]])),
        );
        assert_eq!(status, 0x2E, "a deleted credential no longer signs");

        assert_eq!(
            cm(key, 0x0A, None, 1, None).0,
            0x36,
            "no token: PUAT_REQUIRED"
        );
        let bound = client.token(key, PIN, Some(CM), Some("a.example")).unwrap();
        assert_eq!(
            cm(key, 0x0A, Some(&bound), 1, None).0,
            0x33,
            "an RP-bound token cannot list all RPs"
        );
        let b_hash: [u8; 32] = Sha256::digest(b"b.example").into();
        assert_eq!(
            cm(
                key,
                0x0A,
                Some(&bound),
                4,
                Some(map(vec![(int(1), bytes(&b_hash))]))
            )
            .0,
            0x33,
            "nor another RP's credentials"
        );
        assert_eq!(cm(key, 0x0A, Some(&bound), 4, Some(params)).0, 0);
    });
}

#[test]
fn three_hundred_users_of_one_rp() {
    let mut storage = RamStorageOf::<512>::default();
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        const USERS: usize = 300;
        let rp = "aws.amazon.com";
        let mut keys = std::collections::HashMap::new();
        for i in 0..USERS {
            let user = format!("iam-user-{i:03}");
            let (status, body) = ctap2(
                key,
                0x01,
                Some(make_credential_request(rp, user.as_bytes(), &[-7], true)),
            );
            assert_eq!(status, 0, "user {i}");
            let auth_data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
            keys.insert(
                user.into_bytes(),
                (auth_data.credential_id, auth_data.public_key.unwrap()),
            );
        }

        // Every user signs, newest first, through getAssertion and getNextAssertion.
        let cdh = [3u8; 32];
        let (status, body) = ctap2(key, 0x02, Some(get_assertion_request(rp, &cdh, &[])));
        assert_eq!(status, 0);
        let mut body = body.unwrap();
        assert_eq!(as_int(get(&body, 5).unwrap()), USERS as i64);
        let mut seen = Vec::new();
        for step in 0..USERS {
            if step > 0 {
                let (status, next) = ctap2(key, 0x08, None);
                assert_eq!(status, 0, "getNextAssertion {step}");
                body = next.unwrap();
            }
            let user_id = get_text(get(&body, 4).unwrap(), "id")
                .unwrap()
                .as_bytes()
                .unwrap()
                .clone();
            let (id, public_key) = &keys[&user_id];
            assert_eq!(
                get_text(get(&body, 1).unwrap(), "id")
                    .unwrap()
                    .as_bytes()
                    .unwrap(),
                id
            );
            let raw = get(&body, 2).unwrap().as_bytes().unwrap();
            verify(
                public_key,
                &[&raw[..], &cdh].concat(),
                get(&body, 3).unwrap().as_bytes().unwrap(),
            );
            seen.push(user_id);
        }
        assert_eq!(
            seen[0],
            format!("iam-user-{:03}", USERS - 1).into_bytes(),
            "newest first"
        );
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), USERS, "each user exactly once");

        // Enumerate all, then delete every other one.
        let client = PinClient::new(key, 2, 3);
        client.set_pin(key, PIN);
        let token = client.token(key, PIN, Some(CM), None).unwrap();
        let rp_hash: [u8; 32] = Sha256::digest(rp.as_bytes()).into();
        let (status, body) = cm(
            key,
            0x0A,
            Some(&token),
            4,
            Some(map(vec![(int(1), bytes(&rp_hash))])),
        );
        assert_eq!(status, 0);
        assert_eq!(as_int(get(&body.unwrap(), 9).unwrap()), USERS as i64);
        let mut enumerated = 1;
        while cm(key, 0x0A, None, 5, None).0 == 0 {
            enumerated += 1;
        }
        assert_eq!(enumerated, USERS);
        for i in (0..USERS).step_by(2) {
            let (id, _) = &keys[format!("iam-user-{i:03}").as_bytes()];
            let params = map(vec![(
                int(2),
                map(vec![
                    (text("id"), bytes(id)),
                    (text("type"), text("public-key")),
                ]),
            )]);
            assert_eq!(
                cm(key, 0x0A, Some(&token), 6, Some(params)).0,
                0,
                "delete {i}"
            );
        }
        let (_, body) = cm(key, 0x0A, Some(&token), 1, None);
        assert_eq!(as_int(get(&body.unwrap(), 1).unwrap()), (USERS / 2) as i64);
        let token = client.token(key, PIN, Some(0x02), None).unwrap();
        let mut request = get_assertion_request(rp, &cdh, &[]);
        if let Value::Map(entries) = &mut request {
            entries.push((int(6), bytes(&PinClient::mac(2, &token, &cdh))));
            entries.push((int(7), int(2)));
        }
        let (status, body) = ctap2(key, 0x02, Some(request));
        assert_eq!(status, 0);
        assert_eq!(as_int(get(&body.unwrap(), 5).unwrap()), (USERS / 2) as i64);
    });
}

const PCMR: u8 = 0x40;

#[test]
fn the_persistent_token_reads_but_never_writes_and_lasts_until_the_pin_changes() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    let (persistent, id) = with_key(&mut storage, &knobs, 11, |key| {
        let client = PinClient::new(key, 2, 5);
        client.set_pin(key, PIN);
        let mc = client
            .token(key, PIN, Some(0x01), Some("a.example"))
            .unwrap();
        let id = register(key, &mc, "a.example", "alice");
        assert_eq!(
            client.token(key, PIN, Some(PCMR | CM), None).unwrap_err(),
            0x40,
            "pcmr comes alone: UNAUTHORIZED_PERMISSION"
        );
        let persistent = client.token(key, PIN, Some(PCMR), None).unwrap();
        let again = PinClient::new(key, 2, 6)
            .token(key, PIN, Some(PCMR), None)
            .unwrap();
        assert_eq!(
            persistent, again,
            "the same token each time it is asked for"
        );
        // An ordinary token issued since does not end it.
        let ordinary = client.token(key, PIN, Some(CM), None).unwrap();
        assert_ne!(ordinary, persistent);
        (persistent, id)
    });
    // A power cycle later (the RAM state is gone), it still reads.
    with_key(&mut storage, &knobs, 12, |key| {
        let (status, body) = cm(key, 0x0A, Some(&persistent), 0x01, None);
        assert_eq!(status, 0, "getCredsMetadata");
        assert_eq!(get(&body.unwrap(), 1).map(as_int), Some(1));
        let (status, body) = cm(key, 0x0A, Some(&persistent), 0x02, None);
        assert_eq!(status, 0, "enumerateRPsBegin");
        assert_eq!(get(&body.unwrap(), 5).map(as_int), Some(1), "totalRPs");
        let rp_hash: [u8; 32] = Sha256::digest(b"a.example").into();
        let params = map(vec![(int(1), bytes(&rp_hash))]);
        let (status, body) = cm(key, 0x0A, Some(&persistent), 0x04, Some(params));
        assert_eq!(status, 0, "enumerateCredentialsBegin");
        let body = body.unwrap();
        let listed = get(&body, 7).and_then(|d| get_text(d, "id")).unwrap();
        assert_eq!(listed, &bytes(&id));
        // Never a write.
        let descriptor = map(vec![
            (text("id"), bytes(&id)),
            (text("type"), text("public-key")),
        ]);
        let params = map(vec![(int(2), descriptor)]);
        assert_eq!(
            cm(key, 0x0A, Some(&persistent), 0x06, Some(params)).0,
            0x33,
            "deleteCredential: PIN_AUTH_INVALID"
        );
        // getInfo says it is there, and carries the identifier under it.
        let info = ctap2(key, 0x04, None).1.unwrap();
        let options = get(&info, 4).unwrap();
        assert_eq!(get_text(options, "perCredMgmtRO"), Some(&Value::Bool(true)));
        assert_eq!(
            get(&info, 0x19).unwrap().as_bytes().unwrap().len(),
            32,
            "encIdentifier"
        );
        // A new PIN ends it.
        let client = PinClient::new(key, 2, 7);
        assert_eq!(client.change_pin(key, PIN, "98765"), 0);
        assert_eq!(cm(key, 0x0A, Some(&persistent), 0x01, None).0, 0x33);
        let renewed = client.token(key, "98765", Some(PCMR), None).unwrap();
        assert_ne!(renewed, persistent);
        assert_eq!(cm(key, 0x0A, Some(&renewed), 0x01, None).0, 0);
        // And reset ends everything.
        assert_eq!(ctap2(key, 0x07, None).0, 0);
        assert_eq!(
            cm(key, 0x0A, Some(&renewed), 0x01, None).0,
            0x33,
            "no PIN, no token"
        );
        assert!(get(&ctap2(key, 0x04, None).1.unwrap(), 0x19).is_none());
    });
}

/// getInfo's encCredStoreState, decrypted with the persistent token as a platform would.
fn cred_store_state(key: &mut impl App, persistent: &[u8]) -> [u8; 16] {
    use aes::cipher::{block_padding::NoPadding, BlockModeDecrypt, KeyIvInit};
    let info = ctap2(key, 0x04, None).1.unwrap();
    let encrypted = get(&info, 0x1E).unwrap().as_bytes().unwrap().clone();
    assert_eq!(encrypted.len(), 32);
    let mut aes_key = [0u8; 16];
    hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), persistent)
        .expand(b"encCredStoreState", &mut aes_key)
        .unwrap();
    let mut state = [0u8; 16];
    state.copy_from_slice(&encrypted[16..]);
    let iv: [u8; 16] = encrypted[..16].try_into().unwrap();
    cbc::Decryptor::<aes::Aes128>::new((&aes_key).into(), (&iv).into())
        .decrypt_padded::<NoPadding>(&mut state)
        .unwrap();
    state
}

#[test]
fn the_credential_store_state_moves_with_every_change_and_nothing_else() {
    let mut storage = RamStorage::default();
    let knobs = Knobs::default();
    let (persistent, states, id) = with_key(&mut storage, &knobs, 21, |key| {
        let client = PinClient::new(key, 2, 8);
        client.set_pin(key, PIN);
        let persistent = client.token(key, PIN, Some(PCMR), None).unwrap();
        let empty = cred_store_state(key, &persistent);
        assert_eq!(
            empty,
            cred_store_state(key, &persistent),
            "stable while nothing changes"
        );
        let mc = client
            .token(key, PIN, Some(0x01), Some("a.example"))
            .unwrap();
        let id = register(key, &mc, "a.example", "alice");
        let one = cred_store_state(key, &persistent);
        assert_ne!(one, empty, "a creation");
        // A sign-in changes nothing stored.
        let request = get_assertion_request("a.example", &[1; 32], &[&id]);
        assert_eq!(ctap2(key, 0x02, Some(request)).0, 0);
        assert_eq!(
            cred_store_state(key, &persistent),
            one,
            "a sign-in is no change"
        );
        // An update of the user's name is one.
        let token = client.token(key, PIN, Some(CM), None).unwrap();
        let descriptor = map(vec![
            (text("id"), bytes(&id)),
            (text("type"), text("public-key")),
        ]);
        let user = map(vec![
            (text("id"), bytes(b"alice")),
            (text("name"), text("Alice B.")),
        ]);
        let params = map(vec![(int(2), descriptor), (int(3), user)]);
        assert_eq!(
            cm(key, 0x0A, Some(&token), 0x07, Some(params)).0,
            0,
            "update"
        );
        let updated = cred_store_state(key, &persistent);
        assert_ne!(updated, one, "an update");
        (persistent, [empty, one, updated], id)
    });
    // Across a power cycle it stays; a deletion moves it; reset starts a state never seen.
    with_key(&mut storage, &knobs, 22, |key| {
        assert_eq!(
            cred_store_state(key, &persistent),
            states[2],
            "kept across power-up"
        );
        let token = PinClient::new(key, 2, 9)
            .token(key, PIN, Some(CM), None)
            .unwrap();
        let descriptor = map(vec![
            (text("id"), bytes(&id)),
            (text("type"), text("public-key")),
        ]);
        let params = map(vec![(int(2), descriptor)]);
        assert_eq!(
            cm(key, 0x0A, Some(&token), 0x06, Some(params)).0,
            0,
            "delete"
        );
        let deleted = cred_store_state(key, &persistent);
        assert!(!states.contains(&deleted), "a deletion");
        assert_eq!(ctap2(key, 0x07, None).0, 0);
        let client = PinClient::new(key, 2, 10);
        client.set_pin(key, PIN);
        let renewed = client.token(key, PIN, Some(PCMR), None).unwrap();
        let after_reset = cred_store_state(key, &renewed);
        assert!(
            !states.contains(&after_reset) && after_reset != deleted,
            "reset"
        );
    });
}
