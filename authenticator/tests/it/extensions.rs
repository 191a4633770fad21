//! Extensions against the core: hmac-secret (both protocols), credProtect.

use authenticator::ctaphid::App;
use ciborium::Value;
use test_support::pin_client::PinClient;
use test_support::*;

fn register_with(
    key: &mut impl App,
    rp: &str,
    user: &[u8],
    rk: bool,
    extensions: Value,
) -> (u8, Vec<u8>, Option<Value>) {
    let mut request = make_credential_request(rp, user, &[-7], rk);
    if let Value::Map(entries) = &mut request {
        entries.push((int(6), extensions));
    }
    let (status, body) = ctap2(key, 0x01, Some(request));
    if status != 0 {
        return (status, Vec::new(), None);
    }
    let raw = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
    let auth_data = parse_auth_data(&raw);
    // Extensions follow the COSE key in authData: decode the key, then the extension map.
    let mut reader = &raw[55 + auth_data.credential_id.len()..];
    let _: Value = ciborium::from_reader(&mut reader).unwrap();
    let extensions = (auth_data.flags & 0x80 != 0).then(|| ciborium::from_reader(reader).unwrap());
    (0, auth_data.credential_id, extensions)
}

/// getAssertion with hmac-secret; returns the decrypted outputs.
fn hmac_outputs(key: &mut impl App, client: &PinClient, id: &[u8], salts: &[u8]) -> Vec<u8> {
    let mut request = get_assertion_request("example.com", &[2; 32], &[id]);
    if let Value::Map(entries) = &mut request {
        entries.push((
            int(4),
            map(vec![(text("hmac-secret"), client.hmac_secret_input(salts))]),
        ));
    }
    let (status, body) = ctap2(key, 0x02, Some(request));
    assert_eq!(status, 0);
    let raw = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
    assert_eq!(raw[32] & 0x80, 0x80, "ED flag");
    let extensions: Value = ciborium::from_reader(&raw[37..]).unwrap();
    let encrypted = get_text(&extensions, "hmac-secret")
        .unwrap()
        .as_bytes()
        .unwrap();
    client.decrypt(encrypted)
}

#[test]
fn hmac_secret_is_stable_per_credential_and_salt() {
    for protocol in [1u8, 2] {
        let mut storage = RamStorage::default();
        with_key(&mut storage, &Knobs::default(), 1, |key| {
            let (status, id, extensions) = register_with(
                key,
                "example.com",
                b"u",
                false,
                map(vec![(text("hmac-secret"), Value::Bool(true))]),
            );
            assert_eq!(status, 0);
            assert_eq!(
                get_text(&extensions.unwrap(), "hmac-secret"),
                Some(&Value::Bool(true))
            );
            let (_, other, _) = register_with(
                key,
                "example.com",
                b"v",
                false,
                map(vec![(text("hmac-secret"), Value::Bool(true))]),
            );

            let salt1 = [0x11u8; 32];
            let salt2 = [0x22u8; 32];
            let client = PinClient::new(key, protocol, 5);
            let one = hmac_outputs(key, &client, &id, &salt1);
            assert_eq!(one.len(), 32);
            let two = hmac_outputs(key, &client, &id, &[salt1, salt2].concat());
            assert_eq!(two.len(), 64);
            assert_eq!(two[..32], one[..], "same salt, same output");
            assert_ne!(two[32..], one[..]);
            let client = PinClient::new(key, protocol, 9);
            assert_eq!(
                hmac_outputs(key, &client, &id, &salt1),
                one,
                "stable across key agreements"
            );
            assert_ne!(
                hmac_outputs(key, &client, &other, &salt1),
                one,
                "per credential"
            );
        });
    }
}

#[test]
fn hmac_secret_differs_with_user_verification() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 2, |key| {
        let (_, id, _) = register_with(
            key,
            "example.com",
            b"u",
            false,
            map(vec![(text("hmac-secret"), Value::Bool(true))]),
        );
        let client = PinClient::new(key, 2, 5);
        let without_uv = hmac_outputs(key, &client, &id, &[0x33; 32]);
        client.set_pin(key, "2468");
        let client = PinClient::new(key, 2, 5);
        let token = client.token(key, "2468", Some(0x02), None).unwrap();
        let cdh = [2u8; 32];
        let mut request = get_assertion_request("example.com", &cdh, &[&id]);
        if let Value::Map(entries) = &mut request {
            entries.push((
                int(4),
                map(vec![(
                    text("hmac-secret"),
                    client.hmac_secret_input(&[0x33; 32]),
                )]),
            ));
            entries.push((int(6), bytes(&PinClient::mac(2, &token, &cdh))));
            entries.push((int(7), int(2)));
        }
        let (status, body) = ctap2(key, 0x02, Some(request));
        assert_eq!(status, 0);
        let raw = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
        assert_eq!(raw[32] & 0x04, 0x04, "UV");
        let extensions: Value = ciborium::from_reader(&raw[37..]).unwrap();
        let with_uv = client.decrypt(
            get_text(&extensions, "hmac-secret")
                .unwrap()
                .as_bytes()
                .unwrap(),
        );
        assert_ne!(with_uv, without_uv);
    });
}

#[test]
fn hmac_secret_rejects_bad_salt_auth_and_lengths() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 3, |key| {
        let (_, id, _) = register_with(
            key,
            "example.com",
            b"u",
            false,
            map(vec![(text("hmac-secret"), Value::Bool(true))]),
        );
        let client = PinClient::new(key, 2, 5);
        for (salts, tamper, expected) in
            [(&[0u8; 48][..], false, 0x03), (&[0u8; 32][..], true, 0x33)]
        {
            let mut input = client.hmac_secret_input(salts);
            if tamper {
                if let Value::Map(entries) = &mut input {
                    entries[2].1 = bytes(&[0u8; 32]);
                }
            }
            let mut request = get_assertion_request("example.com", &[2; 32], &[&id]);
            if let Value::Map(entries) = &mut request {
                entries.push((int(4), map(vec![(text("hmac-secret"), input)])));
            }
            assert_eq!(ctap2(key, 0x02, Some(request)).0, expected);
        }
    });
}

#[test]
fn cred_protect_levels_are_enforced() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 4, |key| {
        let mut ids = Vec::new();
        for level in 1..=3 {
            let (status, id, extensions) = register_with(
                key,
                "example.com",
                format!("user{level}").as_bytes(),
                true,
                map(vec![(text("credProtect"), int(level))]),
            );
            assert_eq!(status, 0);
            assert_eq!(
                get_text(&extensions.unwrap(), "credProtect"),
                Some(&int(level))
            );
            ids.push(id);
        }
        // Discovery without UV shows only level 1.
        let (status, body) = ctap2(
            key,
            0x02,
            Some(get_assertion_request("example.com", &[0; 32], &[])),
        );
        assert_eq!(status, 0);
        let body = body.unwrap();
        assert!(get(&body, 5).is_none(), "a single credential");
        assert_eq!(
            get_text(get(&body, 1).unwrap(), "id")
                .unwrap()
                .as_bytes()
                .unwrap(),
            &ids[0]
        );
        // With the ID: level 2 works without UV, level 3 does not.
        assert_eq!(
            ctap2(
                key,
                0x02,
                Some(get_assertion_request("example.com", &[0; 32], &[&ids[1]]))
            )
            .0,
            0
        );
        assert_eq!(
            ctap2(
                key,
                0x02,
                Some(get_assertion_request("example.com", &[0; 32], &[&ids[2]]))
            )
            .0,
            0x2E
        );
    });
}

#[test]
fn cred_blob_is_kept_with_the_credential() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 5, |key| {
        let blob = [0xB1u8; 32];
        for rk in [false, true] {
            let (status, id, extensions) = register_with(
                key,
                "example.com",
                b"u",
                rk,
                map(vec![(text("credBlob"), bytes(&blob))]),
            );
            assert_eq!(status, 0);
            assert_eq!(
                get_text(&extensions.unwrap(), "credBlob"),
                Some(&Value::Bool(true))
            );
            assert!(id.len() <= 128);
            let mut request = get_assertion_request("example.com", &[2; 32], &[&id]);
            if let Value::Map(entries) = &mut request {
                entries.push((int(4), map(vec![(text("credBlob"), Value::Bool(true))])));
            }
            let (status, body) = ctap2(key, 0x02, Some(request));
            assert_eq!(status, 0);
            let raw = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
            let extensions: Value = ciborium::from_reader(&raw[37..]).unwrap();
            assert_eq!(get_text(&extensions, "credBlob"), Some(&bytes(&blob)));
        }
        let (status, _, extensions) = register_with(
            key,
            "example.com",
            b"u",
            false,
            map(vec![(text("credBlob"), bytes(&[0; 33]))]),
        );
        assert_eq!(status, 0);
        assert_eq!(
            get_text(&extensions.unwrap(), "credBlob"),
            Some(&Value::Bool(false)),
            "too big: not kept"
        );
    });
}

fn large_blobs(key: &mut impl App, entries: Vec<(Value, Value)>) -> (u8, Option<Value>) {
    ctap2(key, 0x0C, Some(map(entries)))
}

#[test]
fn large_blobs_are_written_in_fragments_and_checked() {
    use sha2::{Digest, Sha256};
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 6, |key| {
        // Initially the empty array with its hash.
        let (status, body) = large_blobs(key, vec![(int(1), int(100)), (int(3), int(0))]);
        assert_eq!(status, 0);
        let initial = get(&body.unwrap(), 1).unwrap().as_bytes().unwrap().clone();
        assert_eq!(initial[0], 0x80);
        assert_eq!(initial[1..], Sha256::digest([0x80])[..16]);

        // A discoverable credential with a largeBlobKey.
        let mut request = make_credential_request("example.com", b"u", &[-7], true);
        if let Value::Map(entries) = &mut request {
            entries.push((int(6), map(vec![(text("largeBlobKey"), Value::Bool(true))])));
        }
        let (status, body) = ctap2(key, 0x01, Some(request));
        assert_eq!(status, 0);
        let large_blob_key = get(&body.unwrap(), 5).unwrap().as_bytes().unwrap().clone();
        assert_eq!(large_blob_key.len(), 32);
        let mut request = get_assertion_request("example.com", &[1; 32], &[]);
        if let Value::Map(entries) = &mut request {
            entries.push((int(4), map(vec![(text("largeBlobKey"), Value::Bool(true))])));
        }
        let (_, body) = ctap2(key, 0x02, Some(request));
        assert_eq!(
            get(&body.unwrap(), 7).unwrap().as_bytes().unwrap(),
            &large_blob_key,
            "same key on assertion"
        );

        // Write 5000 bytes (more than 4 KiB) in three fragments.
        let mut array = vec![0x42u8; 5000 - 16];
        array[0] = 0x81;
        let mut serialized = array.clone();
        serialized.extend_from_slice(&Sha256::digest(&array)[..16]);
        let chunks: Vec<&[u8]> = serialized.chunks(2000).collect();
        let mut offset = 0;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut entries = vec![(int(2), bytes(chunk)), (int(3), int(offset as i64))];
            if i == 0 {
                entries.push((int(4), int(serialized.len() as i64)));
            }
            assert_eq!(large_blobs(key, entries).0, 0, "fragment {i}");
            offset += chunk.len();
        }
        let mut read = Vec::new();
        while read.len() < serialized.len() {
            let (status, body) = large_blobs(
                key,
                vec![(int(1), int(3000)), (int(3), int(read.len() as i64))],
            );
            assert_eq!(status, 0);
            read.extend_from_slice(get(&body.unwrap(), 1).unwrap().as_bytes().unwrap());
        }
        assert_eq!(read, serialized);

        // A bad hash is refused and leaves the old array.
        let mut bad = serialized.clone();
        bad[10] ^= 1;
        assert_eq!(
            large_blobs(
                key,
                vec![
                    (int(2), bytes(&bad)),
                    (int(3), int(0)),
                    (int(4), int(bad.len() as i64))
                ]
            )
            .0,
            0x3D
        );
        let (_, body) = large_blobs(key, vec![(int(1), int(20)), (int(3), int(0))]);
        assert_eq!(
            get(&body.unwrap(), 1).unwrap().as_bytes().unwrap(),
            &serialized[..20]
        );
        // Out of order, too long, both get and set.
        assert_eq!(
            large_blobs(key, vec![(int(2), bytes(&[0; 10])), (int(3), int(5))]).0,
            0x04
        );
        assert_eq!(
            large_blobs(
                key,
                vec![
                    (int(2), bytes(&[0; 10])),
                    (int(3), int(0)),
                    (int(4), int(100_000))
                ]
            )
            .0,
            0x18
        );
        assert_eq!(
            large_blobs(
                key,
                vec![(int(1), int(1)), (int(2), bytes(&[0])), (int(3), int(0))]
            )
            .0,
            0x02
        );
    });
}

#[test]
fn min_pin_length_goes_only_to_allowed_rps() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 7, |key| {
        // setMinPINLength without a PIN needs no token.
        let params = map(vec![
            (int(1), int(6)),
            (int(2), Value::Array(vec![text("corp.example")])),
        ]);
        assert_eq!(
            ctap2(
                key,
                0x0D,
                Some(map(vec![(int(1), int(3)), (int(2), params)]))
            )
            .0,
            0
        );
        let ext = || map(vec![(text("minPinLength"), Value::Bool(true))]);
        let (_, _, extensions) = register_with(key, "corp.example", b"u", false, ext());
        assert_eq!(
            get_text(&extensions.unwrap(), "minPinLength"),
            Some(&int(6))
        );
        let (_, _, extensions) = register_with(key, "other.example", b"u", false, ext());
        assert!(extensions.is_none(), "not for other RPs");
    });
}

/// getAssertion's thirdPartyPayment output for credential `id` (an allow list of one).
fn payment_output(key: &mut impl App, id: &[u8], ask: bool) -> Option<Value> {
    let mut request = get_assertion_request("bank.example", &[3; 32], &[id]);
    if let (Value::Map(entries), true) = (&mut request, ask) {
        entries.push((
            int(4),
            map(vec![(text("thirdPartyPayment"), Value::Bool(true))]),
        ));
    }
    let (status, body) = ctap2(key, 0x02, Some(request));
    assert_eq!(status, 0);
    let auth_data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
    auth_data
        .extensions
        .and_then(|e| get_text(&e, "thirdPartyPayment").cloned())
}

#[test]
fn third_party_payment_is_sealed_into_the_credential_and_reported() {
    let mut storage = RamStorage::default();
    with_key(&mut storage, &Knobs::default(), 6, |key| {
        let info = ctap2(key, 0x04, None).1.unwrap();
        assert!(get(&info, 2)
            .unwrap()
            .as_array()
            .unwrap()
            .contains(&text("thirdPartyPayment")));
        for rk in [false, true] {
            let payment = map(vec![(text("thirdPartyPayment"), Value::Bool(true))]);
            let (status, paying, extensions) =
                register_with(key, "bank.example", b"payer", rk, payment);
            assert_eq!(status, 0);
            assert_eq!(
                get_text(&extensions.unwrap(), "thirdPartyPayment"),
                Some(&Value::Bool(true)),
                "the output says it is set"
            );
            let (status, plain, extensions) =
                register_with(key, "bank.example", b"saver", rk, map(vec![]));
            assert_eq!(status, 0);
            assert!(extensions.is_none(), "not asked: no output");
            assert_eq!(payment_output(key, &paying, true), Some(Value::Bool(true)));
            assert_eq!(payment_output(key, &plain, true), Some(Value::Bool(false)));
            assert_eq!(
                payment_output(key, &paying, false),
                None,
                "not asked: not told"
            );
        }
        // With another extension the outputs stay in canonical CBOR order (shorter keys first).
        let both = map(vec![
            (text("thirdPartyPayment"), Value::Bool(true)),
            (text("credProtect"), int(1)),
        ]);
        let mut request = make_credential_request("bank.example", b"both", &[-7], false);
        if let Value::Map(entries) = &mut request {
            entries.push((int(6), both));
        }
        let (status, body) = ctap2(key, 0x01, Some(request));
        assert_eq!(status, 0);
        let raw = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
        let keys: Vec<_> = match raw.extensions.unwrap() {
            Value::Map(entries) => entries.into_iter().map(|(k, _)| k).collect(),
            _ => unreachable!(),
        };
        assert_eq!(keys, [text("credProtect"), text("thirdPartyPayment")]);
    });
}
