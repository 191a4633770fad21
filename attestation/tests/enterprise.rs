//! Enterprise attestation (CTAP 2.1 §7.1) end to end, over USB/IP: the tool issues a per-key
//! certificate and installs it with its RP ID list; getInfo's `ep`, authenticatorConfig's
//! enableEnterpriseAttestation (acfg token with a PIN), makeCredential's enterpriseAttestation
//! (vendor-facilitated for listed and unlisted RPs, platform-managed, bad values), epAtt,
//! every certificate chain and signature verified, a power cycle and authenticatorReset.

use attestation::certificate::{self, Issued, Subject};
use attestation::provision::{self, Target, PROVISION_ATTESTATION};
use ciborium::Value;
use der::{Decode, Encode};
use e2e_tests::ctap::*;
use e2e_tests::ctaphid::Channel;
use e2e_tests::pin::PinClient;
use e2e_tests::Key;
use p256::ecdsa::signature::Verifier;
use usbip_runner::{PresenceMode, StateLocation};
use x509_cert::Certificate;

const MAKE_CREDENTIAL: u8 = 0x01;
const GET_INFO: u8 = 0x04;
const RESET: u8 = 0x07;
const CONFIG: u8 = 0x0D;
const AAGUID: &str = "6f70656e-6669-646f-2d65-6e7465727001";
const LISTED: &str = "corp.example";
const PIN: &str = "4321";

fn subject(name: &str) -> Subject {
    Subject {
        country: "SE".into(),
        organization: "Enterprise Test Vendor".into(),
        common_name: name.into(),
    }
}

struct Vendor {
    ca: Issued,
    batch: Issued,
    enterprise: Issued,
}

fn vendor() -> Vendor {
    let ca = certificate::root_ca(&subject("Test Root"), 30).unwrap();
    let aaguid = attestation::parse_aaguid(AAGUID).unwrap();
    let batch = certificate::batch(&ca, &subject("Test Batch"), aaguid, 20).unwrap();
    let enterprise =
        certificate::enterprise(&ca, &subject("Test Enterprise"), "SN-000042", aaguid, 20).unwrap();
    Vendor {
        ca,
        batch,
        enterprise,
    }
}

fn target(key: &Key) -> Target {
    Target::UsbIp {
        addr: key.addr(),
        bus_id: "1-1".into(),
    }
}

fn info(channel: &mut Channel) -> Value {
    let (status, info) = call(channel, GET_INFO, None);
    assert_eq!(status, 0);
    info.unwrap()
}

fn ep_option(channel: &mut Channel) -> Option<bool> {
    get_text(get(&info(channel), 4).unwrap(), "ep").map(|v| v.as_bool().unwrap())
}

fn config_commands(channel: &mut Channel) -> Vec<i64> {
    get(&info(channel), 0x1F)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(as_int)
        .collect()
}

/// enableEnterpriseAttestation, with a pinUvAuthParam from `token` if given.
fn enable(channel: &mut Channel, token: Option<&[u8]>) -> u8 {
    let mut entries = vec![(int(1), int(1))];
    if let Some(token) = token {
        let message = [&[0xFF; 32][..], &[CONFIG, 0x01]].concat();
        entries.push((int(3), int(2)));
        entries.push((int(4), bytes(&PinClient::mac(2, token, &message))));
    }
    call(channel, CONFIG, Some(map(entries))).0
}

/// makeCredential for `rp` with enterpriseAttestation `ep` (None: absent); the status, and
/// (fmt, attStmt, authData, epAtt) on success.
fn register(
    channel: &mut Channel,
    rp: &str,
    ep: Option<i64>,
    extra: Vec<(Value, Value)>,
) -> Result<(String, Value, AuthData, Option<Value>), u8> {
    let mut request = make_credential_request(rp, b"employee", &[-7], false);
    if let Value::Map(entries) = &mut request {
        if let Some(ep) = ep {
            entries.push((int(0x0A), int(ep)));
        }
        entries.extend(extra);
    }
    let (status, response) = call(channel, MAKE_CREDENTIAL, Some(request));
    if status != 0 {
        return Err(status);
    }
    let response = response.unwrap();
    Ok((
        get(&response, 1).unwrap().as_text().unwrap().to_owned(),
        get(&response, 3).unwrap().clone(),
        parse_auth_data(get(&response, 2).unwrap().as_bytes().unwrap()),
        get(&response, 4).cloned(),
    ))
}

/// The packed statement carries `issued`'s certificate alone, the certificate verifies with
/// the root's key, and the signature over authData ‖ clientDataHash with the certificate's
/// own public key (taken from the DER the key returned, not from our copy of the key).
fn assert_attested_by(statement: &Value, auth_data: &AuthData, issued: &Issued, root: &Issued) {
    let x5c = get_text(statement, "x5c").unwrap().as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let der = x5c[0].as_bytes().unwrap();
    assert_eq!(der, &issued.certificate.to_der().unwrap());
    let certificate = Certificate::from_der(der).unwrap();
    let tbs = certificate.tbs_certificate().to_der().unwrap();
    let signature =
        p256::ecdsa::DerSignature::from_bytes(certificate.signature().raw_bytes()).unwrap();
    root.key
        .verifying_key()
        .verify(&tbs, &signature)
        .expect("the root signed the certificate");
    let spki = certificate.tbs_certificate().subject_public_key_info();
    let public =
        p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).unwrap();
    let sig = get_text(statement, "sig").unwrap().as_bytes().unwrap();
    let signed = [&auth_data.raw[..], &[7u8; 32]].concat();
    public
        .verify(&signed, &p256::ecdsa::Signature::from_der(sig).unwrap())
        .expect("the attestation signature verifies with the certificate's key");
    assert_eq!(
        &auth_data.raw[37..53],
        &attestation::parse_aaguid(AAGUID).unwrap(),
        "the AAGUID both certificates name"
    );
}

#[test]
fn the_enterprise_certificate_names_the_key_and_chains_to_the_root() {
    let v = vendor();
    let tbs = v.enterprise.certificate.tbs_certificate();
    let name = tbs.subject().to_string();
    assert!(name.contains("SN-000042"), "{name}");
    assert!(name.contains("OU=Authenticator Attestation"), "{name}");
    assert_eq!(tbs.issuer(), v.ca.certificate.tbs_certificate().subject());
    assert_ne!(
        tbs.subject_public_key_info(),
        v.batch
            .certificate
            .tbs_certificate()
            .subject_public_key_info(),
        "its own key pair"
    );
    assert_eq!(
        certificate::aaguid_of(&v.enterprise.certificate),
        certificate::aaguid_of(&v.batch.certificate)
    );
}

#[test]
fn provisioning_needs_the_batch_first_and_happens_once() {
    let v = vendor();
    let key = Key::start(PresenceMode::Auto);
    let rp_ids = vec![LISTED.to_owned()];
    // No batch yet: refused, and nothing installed.
    let error = provision::provision_enterprise(&target(&key), &v.enterprise, &rp_ids).unwrap_err();
    assert!(
        error.to_string().contains("batch installed first"),
        "{error}"
    );
    assert_eq!(ep_option(&mut key.channel()), None);
    provision::provision(&target(&key), &v.batch).unwrap();

    // Another AAGUID than the batch's, too many or too long RP IDs: refused by the key.
    let other_aaguid = attestation::parse_aaguid("00000000-0000-0000-0000-000000000001").unwrap();
    let other = certificate::enterprise(&v.ca, &subject("x"), "SN-1", other_aaguid, 1).unwrap();
    let key_bytes = v.enterprise.key.to_bytes().to_vec();
    let certificate = v.enterprise.certificate.to_der().unwrap();
    let request = |key_bytes: &[u8], certificate: &[u8], rp_ids: Vec<Value>| {
        let mut out = Vec::new();
        let value = map(vec![
            (int(1), bytes(key_bytes)),
            (int(2), bytes(certificate)),
            (int(3), Value::Array(rp_ids)),
        ]);
        ciborium::into_writer(&value, &mut out).unwrap();
        out
    };
    let mut channel = key.channel();
    for (payload, status) in [
        (
            request(
                &other.key.to_bytes(),
                &other.certificate.to_der().unwrap(),
                vec![],
            ),
            0x02,
        ),
        (
            request(&key_bytes, &certificate, vec![text(&"a".repeat(257))]),
            0x02,
        ),
        (request(&key_bytes, &certificate, vec![text("")]), 0x02),
        (
            request(&key_bytes, &certificate, vec![text("a.example"); 9]),
            0x12,
        ),
        (request(&key_bytes, &certificate, vec![int(1)]), 0x12),
        (request(&key_bytes[..31], &certificate, vec![]), 0x02),
    ] {
        let (command, response) = channel.transact(PROVISION_ATTESTATION, &payload).unwrap();
        assert_eq!(
            (command, response.as_slice()),
            (PROVISION_ATTESTATION, &[status][..])
        );
    }
    assert_eq!(ep_option(&mut channel), None, "nothing installed");
    drop(channel);

    // The longest list of the longest RP IDs is accepted; a second one is refused.
    let longest: Vec<String> = (0..8).map(|i| format!("{i}{}", "r".repeat(255))).collect();
    provision::provision_enterprise(&target(&key), &v.enterprise, &longest).unwrap();
    assert!(provision::provision_enterprise(&target(&key), &v.enterprise, &rp_ids).is_err());
    let mut channel = key.channel();
    assert_eq!(
        ep_option(&mut channel),
        Some(false),
        "provisioned, disabled"
    );
    assert_eq!(enable(&mut channel, None), 0);
    let (_, statement, auth_data, ep_att) =
        register(&mut channel, &longest[7], Some(1), vec![]).unwrap();
    assert_eq!(ep_att, Some(Value::Bool(true)));
    assert_attested_by(&statement, &auth_data, &v.enterprise, &v.ca);
}

#[test]
fn enterprise_attestation_is_given_exactly_where_the_spec_says() {
    let v = vendor();
    let dir = tempfile::tempdir().unwrap();
    let state = || StateLocation::Dir(dir.path().to_owned());
    let key = Key::start_with(PresenceMode::Auto, state());
    provision::provision(&target(&key), &v.batch).unwrap();
    let rp_ids = vec![LISTED.to_owned(), "other.example".to_owned()];
    provision::provision_enterprise(&target(&key), &v.enterprise, &rp_ids).unwrap();

    let mut channel = key.channel();
    assert_eq!(ep_option(&mut channel), Some(false));
    assert_eq!(config_commands(&mut channel), [1, 2, 3, 4, 0xFF]);
    // Disabled: any enterpriseAttestation is an invalid parameter (§6.1.2).
    for ep in [1, 2, 3] {
        assert_eq!(
            register(&mut channel, LISTED, Some(ep), vec![])
                .err()
                .unwrap(),
            0x02
        );
    }
    // Without it, the batch, and no epAtt.
    let (fmt, statement, auth_data, ep_att) = register(&mut channel, LISTED, None, vec![]).unwrap();
    assert_eq!((fmt.as_str(), ep_att), ("packed", None));
    assert_attested_by(&statement, &auth_data, &v.batch, &v.ca);

    // With a PIN, enabling needs a token with acfg.
    let client = PinClient::new(&mut channel, 2, 9);
    assert_eq!(client.set_pin(&mut channel, PIN), 0);
    assert_eq!(enable(&mut channel, None), 0x36, "PIN required");
    let mc_token = client
        .token(&mut channel, PIN, Some(0x01), Some(LISTED))
        .unwrap();
    assert_eq!(
        enable(&mut channel, Some(&mc_token)),
        0x33,
        "mc is not acfg"
    );
    assert_eq!(ep_option(&mut channel), Some(false));
    let token = client.token(&mut channel, PIN, Some(0x20), None).unwrap();
    assert_eq!(enable(&mut channel, Some(&token)), 0);
    assert_eq!(
        enable(&mut channel, Some(&token)),
        0,
        "enabling twice is fine"
    );
    assert_eq!(ep_option(&mut channel), Some(true));
    drop(channel);

    // A power cycle keeps the record and the switch.
    assert!(key.terminate());
    let key = Key::start_with(PresenceMode::Auto, state());
    let mut channel = key.channel();
    assert_eq!(
        ep_option(&mut channel),
        Some(true),
        "enabled after a power cycle"
    );
    // The key agreement key is new after a power cycle.
    let client = PinClient::new(&mut channel, 2, 10);

    let with_pin = |channel: &mut Channel, rp: &str, ep: Option<i64>| {
        let token = client.token(channel, PIN, Some(0x01), Some(rp)).unwrap();
        let extra = vec![
            (int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))),
            (int(9), int(2)),
        ];
        register(channel, rp, ep, extra)
    };
    // Vendor-facilitated: the enterprise certificate for a listed RP ID, the batch (and no
    // epAtt) for an unlisted one, however close (case, a subdomain, a trailing dot).
    let (_, statement, auth_data, ep_att) = with_pin(&mut channel, LISTED, Some(1)).unwrap();
    assert_eq!(ep_att, Some(Value::Bool(true)));
    assert_attested_by(&statement, &auth_data, &v.enterprise, &v.ca);
    for unlisted in [
        "unlisted.example",
        "CORP.EXAMPLE",
        "a.corp.example",
        "corp.example.",
    ] {
        let (_, statement, auth_data, ep_att) = with_pin(&mut channel, unlisted, Some(1)).unwrap();
        assert_eq!(ep_att, None, "{unlisted}");
        assert_attested_by(&statement, &auth_data, &v.batch, &v.ca);
    }
    // Platform-managed: the enterprise certificate for any RP.
    let (_, statement, auth_data, ep_att) =
        with_pin(&mut channel, "unlisted.example", Some(2)).unwrap();
    assert_eq!(ep_att, Some(Value::Bool(true)));
    assert_attested_by(&statement, &auth_data, &v.enterprise, &v.ca);
    // Not asked: the batch, even for a listed RP.
    let (_, statement, auth_data, ep_att) = with_pin(&mut channel, LISTED, None).unwrap();
    assert_eq!(ep_att, None);
    assert_attested_by(&statement, &auth_data, &v.batch, &v.ca);
    // Values other than 1 or 2: CTAP2_ERR_INVALID_OPTION.
    for ep in [0, 3, 255] {
        assert_eq!(
            with_pin(&mut channel, LISTED, Some(ep)).err(),
            Some(0x2C),
            "{ep}"
        );
    }
    // A platform that puts "none" first gets none, and no epAtt.
    let token = client
        .token(&mut channel, PIN, Some(0x01), Some(LISTED))
        .unwrap();
    let extra = vec![
        (int(8), bytes(&PinClient::mac(2, &token, &[7u8; 32]))),
        (int(9), int(2)),
        (int(0x0B), Value::Array(vec![text("none")])),
    ];
    let (fmt, statement, _, ep_att) = register(&mut channel, LISTED, Some(2), extra).unwrap();
    assert_eq!(
        (fmt.as_str(), statement, ep_att),
        ("none", Value::Map(vec![]), None)
    );

    // authenticatorReset disables it; the record stays, so it can be enabled again.
    assert_eq!(call(&mut channel, RESET, None).0, 0);
    assert_eq!(ep_option(&mut channel), Some(false), "disabled by reset");
    assert_eq!(
        register(&mut channel, LISTED, Some(1), vec![])
            .err()
            .unwrap(),
        0x02
    );
    assert_eq!(enable(&mut channel, None), 0, "no PIN after reset");
    let (_, statement, auth_data, ep_att) =
        register(&mut channel, LISTED, Some(1), vec![]).unwrap();
    assert_eq!(ep_att, Some(Value::Bool(true)));
    assert_attested_by(&statement, &auth_data, &v.enterprise, &v.ca);
}
