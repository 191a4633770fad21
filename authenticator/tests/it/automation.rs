//! Test automation's core: imported credentials (discoverable, and non-discoverable with an
//! ID of their own) sign through getAssertion and U2F with their own counters, are listed with
//! their private keys, removed, and survive a power cycle.

use authenticator::automation::{CounterError, Import, ImportError};
use authenticator::credential::Algorithm;
use authenticator::ctaphid::{App, Transaction};
use authenticator::Authenticator;
use ciborium::Value;
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};
use test_support::*;

const RP: &str = "signin.aws.amazon.com";
/// A credential ID as another authenticator (Chromium's virtual one) makes them: 16 bytes.
const FOREIGN_ID: [u8; 16] = *b"foreign-cred-id!";

fn p256_secret(seed: u8) -> [u8; 32] {
    let mut secret = [seed; 32];
    secret[0] = 0x11; // below the group order
    secret
}

fn import<'a>(id: &'a [u8], secret: &'a [u8; 32], discoverable: bool) -> Import<'a> {
    Import {
        credential_id: id,
        rp_id: RP,
        discoverable,
        alg: Algorithm::Es256,
        secret,
        user: discoverable.then(|| {
            let mut user = ctap_types::webauthn::PublicKeyCredentialUserEntity::from(
                heapless_bytes::Bytes::try_from(&b"imported-user"[..]).unwrap(),
            );
            user.name = Some(heapless::String::try_from("alice").unwrap());
            user
        }),
        sign_count: 41,
    }
}

fn verifying_key(secret: &[u8; 32]) -> p256::ecdsa::VerifyingKey {
    *p256::ecdsa::SigningKey::from_slice(secret)
        .unwrap()
        .verifying_key()
}

/// getAssertion with this allow list (none: discovery); the signature is checked against
/// `key`. Returns (credential ID, counter, user).
fn sign_in(
    auth: &mut impl App,
    allow: &[&[u8]],
    key: &p256::ecdsa::VerifyingKey,
) -> (Vec<u8>, u32, Option<Value>) {
    let cdh = [5u8; 32];
    let (status, body) = ctap2(auth, 0x02, Some(get_assertion_request(RP, &cdh, allow)));
    assert_eq!(status, 0, "getAssertion succeeds");
    let body = body.unwrap();
    let auth_data = get(&body, 2).unwrap().as_bytes().unwrap().clone();
    let signature = get(&body, 3).unwrap().as_bytes().unwrap();
    let parsed = parse_auth_data(&auth_data);
    assert_eq!(parsed.rp_id_hash, <[u8; 32]>::from(Sha256::digest(RP)));
    let signature = p256::ecdsa::Signature::from_der(signature).unwrap();
    key.verify(&[&auth_data[..], &cdh].concat(), &signature)
        .expect("signed with the imported key");
    let id = get(get(&body, 1).unwrap(), 0)
        .or_else(|| get_text(get(&body, 1).unwrap(), "id"))
        .unwrap()
        .as_bytes()
        .unwrap()
        .clone();
    (id, parsed.counter, get(&body, 4).cloned())
}

#[test]
fn an_imported_non_discoverable_credential_signs_with_its_own_id_and_counter() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    let secret = p256_secret(3);
    let key = verifying_key(&secret);
    with_key(&mut storage, &knobs, 1, |auth| {
        let remaining = auth_remaining(auth);
        auth.import_credential(&import(&FOREIGN_ID, &secret, false))
            .unwrap();
        assert_eq!(
            auth_remaining(auth),
            remaining - 1,
            "counted against capacity"
        );
        // Found by its ID in an allow list, after an ID that is nobody's.
        let (id, counter, user) = sign_in(auth, &[&[9u8; 40], &FOREIGN_ID], &key);
        assert_eq!(id, FOREIGN_ID);
        assert_eq!(counter, 42, "the imported signCount, plus one");
        assert_eq!(user, None, "a non-discoverable credential has no user");
        assert_eq!(sign_in(auth, &[&FOREIGN_ID], &key).1, 43);
        // Never found by discovery.
        let (status, _) = ctap2(auth, 0x02, Some(get_assertion_request(RP, &[5; 32], &[])));
        assert_eq!(status, 0x2E, "CTAP2_ERR_NO_CREDENTIALS");
        // Nor by a verified discovery, which sees every discoverable credential.
        let client = test_support::pin_client::PinClient::new(auth, 2, 8);
        client.set_pin(auth, "4321");
        let token = client.token(auth, "4321", Some(0x02), Some(RP)).unwrap();
        let mut request = get_assertion_request(RP, &[5; 32], &[]);
        if let Value::Map(entries) = &mut request {
            let param = test_support::pin_client::PinClient::mac(2, &token, &[5; 32]);
            entries.push((int(6), bytes(&param)));
            entries.push((int(7), int(2)));
        }
        assert_eq!(
            ctap2(auth, 0x02, Some(request)).0,
            0x2E,
            "verified discovery"
        );
    });
    // A power cycle: the record and its counter are on storage.
    with_key(&mut storage, &knobs, 2, |auth| {
        assert_eq!(sign_in(auth, &[&FOREIGN_ID], &key).1, 44);
    });
}

fn auth_remaining(auth: &mut impl App) -> i64 {
    let (status, info) = ctap2(auth, 0x04, None);
    assert_eq!(status, 0);
    as_int(get(&info.unwrap(), 0x14).unwrap())
}

#[test]
fn an_imported_discoverable_credential_is_discovered_and_listed_with_its_key() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    let secret = p256_secret(4);
    let key = verifying_key(&secret);
    with_key(&mut storage, &knobs, 1, |auth| {
        auth.import_credential(&import(&FOREIGN_ID, &secret, true))
            .unwrap();
        let (id, counter, user) = sign_in(auth, &[], &key);
        assert_eq!((id.as_slice(), counter), (&FOREIGN_ID[..], 42));
        let user = user.expect("discovery answers with the user");
        assert_eq!(
            get_text(&user, "id").unwrap().as_bytes().unwrap(),
            b"imported-user"
        );
        // Listed with its private key, the counter it reached, the user.
        let (_, exported) = auth.next_stored_credential(None).unwrap().unwrap();
        assert_eq!(exported.credential_id.as_slice(), FOREIGN_ID);
        assert_eq!(*exported.secret, secret);
        assert_eq!(exported.sign_count, 42);
        assert!(exported.discoverable && exported.stored);
        assert_eq!(exported.user.unwrap().name.unwrap().as_str(), "alice");
    });
}

#[test]
fn u2f_authenticate_finds_an_imported_credential_by_key_handle() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    let secret = p256_secret(5);
    let key = verifying_key(&secret);
    with_key(&mut storage, &knobs, 1, |auth| {
        auth.import_credential(&import(&FOREIGN_ID, &secret, false))
            .unwrap();
        let app: [u8; 32] = Sha256::digest(RP).into();
        let challenge = [8u8; 32];
        let data = [&challenge[..], &app, &[16], &FOREIGN_ID].concat();
        let mut apdu = vec![0, 0x02, 0x03, 0, 0, 0, data.len() as u8];
        apdu.extend_from_slice(&data);
        apdu.extend_from_slice(&[0, 0]);
        let mut response = Vec::new();
        auth.call(Transaction::Msg, &apdu, &mut response);
        assert_eq!(&response[response.len() - 2..], &[0x90, 0x00]);
        assert_eq!(response[0], 1, "user present");
        assert_eq!(&response[1..5], &42u32.to_be_bytes());
        let signature = p256::ecdsa::Signature::from_der(&response[5..response.len() - 2]).unwrap();
        key.verify(&[&app[..], &response[..5], &challenge].concat(), &signature)
            .expect("U2F signature by the imported key");
        // Another application does not see it.
        let mut other = apdu.clone();
        other[7 + 32] ^= 1;
        let mut response = Vec::new();
        auth.call(Transaction::Msg, &other, &mut response);
        assert_eq!(&response[response.len() - 2..], &[0x6A, 0x80]);
    });
}

#[test]
fn imports_are_refused_with_a_reason() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    let secret = p256_secret(6);
    with_key(&mut storage, &knobs, 1, |auth| {
        let zero = [0u8; 32];
        assert_eq!(
            auth.import_credential(&import(&FOREIGN_ID, &zero, false)),
            Err(ImportError::BadKey)
        );
        assert_eq!(
            auth.import_credential(&import(&[1; 129], &secret, false)),
            Err(ImportError::BadId)
        );
        let mut no_user = import(&FOREIGN_ID, &secret, true);
        no_user.user = None;
        assert_eq!(
            auth.import_credential(&no_user),
            Err(ImportError::NeedsUserHandle)
        );
        auth.import_credential(&import(&FOREIGN_ID, &secret, true))
            .unwrap();
        assert_eq!(
            auth.import_credential(&import(&FOREIGN_ID, &secret, false)),
            Err(ImportError::DuplicateId)
        );
        assert_eq!(
            auth.import_credential(&import(b"another-id", &secret, true)),
            Err(ImportError::DuplicateUser)
        );
        // One of the key's own IDs is not imported twice either.
        let own = make_credential(auth, false);
        assert_eq!(
            auth.import_credential(&import(&own, &secret, false)),
            Err(ImportError::DuplicateId)
        );
        auth.set_credential_limit(1);
        assert_eq!(
            auth.import_credential(&import(b"third", &secret, false)),
            Err(ImportError::Full)
        );
    });
}

fn make_credential(auth: &mut Authenticator<'_, TestPlatform>, rk: bool) -> Vec<u8> {
    let (status, body) = ctap2(
        auth,
        0x01,
        Some(make_credential_request(RP, b"own-user", &[-7], rk)),
    );
    assert_eq!(status, 0);
    let auth_data = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
    parse_auth_data(&auth_data).credential_id
}

#[test]
fn the_exclude_list_sees_imported_credentials() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    with_key(&mut storage, &knobs, 1, |auth| {
        auth.import_credential(&import(&FOREIGN_ID, &p256_secret(7), false))
            .unwrap();
        let mut request = make_credential_request(RP, b"u", &[-7], false);
        if let Value::Map(entries) = &mut request {
            entries.push((
                int(5),
                Value::Array(vec![map(vec![
                    (text("id"), bytes(&FOREIGN_ID)),
                    (text("type"), text("public-key")),
                ])]),
            ));
        }
        let (status, _) = ctap2(auth, 0x01, Some(request));
        assert_eq!(status, 0x19, "CTAP2_ERR_CREDENTIAL_EXCLUDED");
    });
}

#[test]
fn counters_never_go_back() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    let secret = p256_secret(8);
    let key = verifying_key(&secret);
    with_key(&mut storage, &knobs, 1, |auth| {
        auth.import_credential(&import(&FOREIGN_ID, &secret, false))
            .unwrap();
        assert_eq!(
            auth.set_sign_count(&FOREIGN_ID, None, 40),
            Err(CounterError::Backwards(41))
        );
        auth.set_sign_count(&FOREIGN_ID, None, 1000).unwrap();
        assert_eq!(sign_in(auth, &[&FOREIGN_ID], &key).1, 1001);

        // A sealed credential shares the global counter, which only moves forward.
        let own = make_credential(auth, false);
        let before = auth.open_credential(RP, &own).unwrap().unwrap().sign_count;
        assert!(matches!(
            auth.set_sign_count(&own, Some(RP), 0),
            Err(CounterError::Backwards(at)) if at == before
        ));
        auth.set_sign_count(&own, Some(RP), 5000).unwrap();
        let own_key = auth.open_credential(RP, &own).unwrap().unwrap();
        assert_eq!(own_key.sign_count, 5000);
        let own_verifying = verifying_key(&own_key.secret);
        assert_eq!(sign_in(auth, &[&own], &own_verifying).1, 5001);
        assert_eq!(
            auth.set_sign_count(b"nobody", Some(RP), 1),
            Err(CounterError::Unknown)
        );

        // A stored credential of the key's own gets a counter of its own at the value set.
        let rk = make_credential(auth, true);
        auth.set_sign_count(&rk, None, 7000).unwrap();
        let rk_key = verifying_key(&stored_secret(auth, &rk));
        assert_eq!(sign_in(auth, &[&rk], &rk_key).1, 7001);
    });
}

#[test]
fn remove_and_clear_forget_stored_credentials() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    let secret = p256_secret(9);
    with_key(&mut storage, &knobs, 1, |auth| {
        let remaining = auth_remaining(auth);
        auth.import_credential(&import(&FOREIGN_ID, &secret, false))
            .unwrap();
        auth.import_credential(&import(b"second", &secret, true))
            .unwrap();
        make_credential(auth, true);
        assert_eq!(auth_remaining(auth), remaining - 3);
        assert!(auth.remove_credential(&FOREIGN_ID).unwrap());
        assert!(!auth.remove_credential(&FOREIGN_ID).unwrap(), "gone");
        let (status, _) = ctap2(
            auth,
            0x02,
            Some(get_assertion_request(RP, &[5; 32], &[&FOREIGN_ID])),
        );
        assert_eq!(status, 0x2E, "a removed credential no longer signs");
        assert_eq!(auth.clear_credentials().unwrap(), 2);
        assert!(auth.next_stored_credential(None).unwrap().is_none());
        assert_eq!(auth_remaining(auth), remaining);
    });
}

/// The private key of the stored credential with this ID, as the listing gives it.
fn stored_secret(auth: &mut Authenticator<'_, TestPlatform>, id: &[u8]) -> [u8; 32] {
    let mut after = None;
    loop {
        let (reference, exported) = auth.next_stored_credential(after).unwrap().expect("listed");
        if exported.credential_id.as_slice() == id {
            return *exported.secret;
        }
        after = Some(reference);
    }
}

/// getInfo's encCredStoreState, decrypted with the persistent token (CTAP 2.2).
fn cred_store_state(key: &mut impl App, persistent: &[u8]) -> [u8; 16] {
    use aes::cipher::{block_padding::NoPadding, BlockModeDecrypt, KeyIvInit};
    let info = ctap2(key, 0x04, None).1.unwrap();
    let encrypted = get(&info, 0x1E).unwrap().as_bytes().unwrap().clone();
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

/// A credential's own counter is written to its record at each signature, which is no change
/// to what a platform lists: encCredStoreState stays, as for any sign-in.
#[test]
fn a_sign_in_with_its_own_counter_leaves_the_credential_store_state() {
    let knobs = Knobs::default();
    let mut storage = RamStorage::default();
    let secret = p256_secret(10);
    let key = verifying_key(&secret);
    with_key(&mut storage, &knobs, 1, |auth| {
        let client = test_support::pin_client::PinClient::new(auth, 2, 8);
        client.set_pin(auth, "4321");
        let persistent = client.token(auth, "4321", Some(0x40), None).unwrap();
        auth.import_credential(&import(&FOREIGN_ID, &secret, true))
            .unwrap();
        let before = cred_store_state(auth, &persistent);
        assert_eq!(sign_in(auth, &[&FOREIGN_ID], &key).1, 42);
        assert_eq!(cred_store_state(auth, &persistent), before);
        assert!(auth.remove_credential(&FOREIGN_ID).unwrap());
        assert_ne!(
            cred_store_state(auth, &persistent),
            before,
            "a removal is a change"
        );
    });
}
