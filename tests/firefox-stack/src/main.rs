//! `firefox-stack PIN RP`: register a discoverable, user-verified ES256 credential for RP and
//! sign in with it, through Mozilla's `authenticator` crate (the FIDO stack Firefox ships) on
//! whatever hidraw security key it finds, answering its PIN prompts with PIN. Both responses
//! are checked here: the assertion's signature against the registered public key, the RP ID
//! hash, the UP and UV flags, and the counter. Prints one line per step; exits non-zero on any
//! failure.
//!
//! This is a stand-in for the browser, clearly not the browser: it exercises Firefox's device
//! handling (libudev enumeration, hidraw, CTAPHID, CTAP2 with the PIN protocol), not Firefox.

use std::sync::mpsc::{channel, Sender};
use std::thread;

use authenticator::authenticatorservice::{AuthenticatorService, RegisterArgs, SignArgs};
use authenticator::crypto::{COSEAlgorithm, COSEKeyType};
use authenticator::ctap2::attestation::AttestationStatement;
use authenticator::ctap2::server::{
    AuthenticationExtensionsClientInputs, PublicKeyCredentialDescriptor,
    PublicKeyCredentialParameters, PublicKeyCredentialUserEntity, RelyingParty,
    ResidentKeyRequirement, Transport, UserVerificationRequirement,
};
use authenticator::statecallback::StateCallback;
use authenticator::{Pin, StatusPinUv, StatusUpdate};
use p256::ecdsa::signature::Verifier;
use sha2::{Digest, Sha256};

const TIMEOUT_MS: u64 = 15_000;

fn fail(message: String) -> ! {
    eprintln!("firefox-stack: FAIL: {message}");
    std::process::exit(1);
}

/// Answer the stack's status updates as a user would: the PIN when asked, once.
fn user(pin: String) -> Sender<StatusUpdate> {
    let (status_tx, status_rx) = channel::<StatusUpdate>();
    thread::spawn(move || {
        while let Ok(update) = status_rx.recv() {
            match update {
                StatusUpdate::PinUvError(StatusPinUv::PinRequired(sender)) => {
                    println!("firefox-stack: PIN asked for");
                    let _ = sender.send(Pin::new(&pin));
                }
                StatusUpdate::PinUvError(StatusPinUv::InvalidPin(_, attempts)) => {
                    fail(format!("the key refused the PIN ({attempts:?} attempts left)"))
                }
                StatusUpdate::PinUvError(other) => fail(format!("PIN/UV error {other:?}")),
                StatusUpdate::PresenceRequired => println!("firefox-stack: touch asked for"),
                _ => {}
            }
        }
    });
    status_tx
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(pin), Some(rp_id)) = (args.next(), args.next()) else {
        fail("usage: firefox-stack PIN RP".into());
    };
    let mut manager = AuthenticatorService::new()
        .unwrap_or_else(|e| fail(format!("cannot start the service: {e:?}")));
    manager.add_u2f_usb_hid_platform_transports();
    let status = user(pin);
    let rp_hash: [u8; 32] = Sha256::digest(rp_id.as_bytes()).into();

    let register = RegisterArgs {
        client_data_hash: Sha256::digest(b"registration challenge").into(),
        relying_party: RelyingParty {
            id: rp_id.clone(),
            name: None,
        },
        origin: format!("https://{rp_id}"),
        user: PublicKeyCredentialUserEntity {
            id: b"firefox user".to_vec(),
            name: Some("firefox".into()),
            display_name: Some("Firefox User".into()),
        },
        pub_cred_params: vec![PublicKeyCredentialParameters {
            alg: COSEAlgorithm::ES256,
        }],
        exclude_list: vec![],
        user_verification_req: UserVerificationRequirement::Required,
        resident_key_req: ResidentKeyRequirement::Required,
        extensions: AuthenticationExtensionsClientInputs {
            cred_props: Some(true),
            ..Default::default()
        },
        pin: None,
        use_ctap1_fallback: false,
    };
    let (tx, rx) = channel();
    let callback = StateCallback::new(Box::new(move |rv| {
        let _ = tx.send(rv);
    }));
    if let Err(e) = manager.register(TIMEOUT_MS, register, status.clone(), callback) {
        fail(format!("register: {e:?}"));
    }
    let registered = rx
        .recv()
        .unwrap_or_else(|e| fail(format!("register: {e}")))
        .unwrap_or_else(|e| fail(format!("register: {e:?}")));
    let auth_data = &registered.att_obj.auth_data;
    if auth_data.rp_id_hash.0 != rp_hash {
        fail("registration: wrong rpIdHash".into());
    }
    if auth_data.flags.bits() & 0x05 != 0x05 {
        fail(format!("registration: flags {:#04x}, want UP and UV", auth_data.flags.bits()));
    }
    let credential = auth_data
        .credential_data
        .as_ref()
        .unwrap_or_else(|| fail("registration without credential data".into()));
    let COSEKeyType::EC2(ec2) = &credential.credential_public_key.key else {
        fail("registration: not an EC2 key".into());
    };
    let point = [&[4u8][..], &ec2.x, &ec2.y].concat();
    let public_key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&point)
        .unwrap_or_else(|e| fail(format!("registration: bad public key: {e}")));
    let format = match &registered.att_obj.att_stmt {
        AttestationStatement::Packed(_) => "packed",
        AttestationStatement::None => "none",
        _ => "another",
    };
    println!(
        "firefox-stack: registered {rp_id} ({format} attestation, credProps rk {:?})",
        registered.extensions.cred_props.map(|p| p.rk)
    );

    let challenge: [u8; 32] = Sha256::digest(b"sign-in challenge").into();
    let sign = SignArgs {
        client_data_hash: challenge,
        origin: format!("https://{rp_id}"),
        relying_party_id: rp_id.clone(),
        allow_list: vec![PublicKeyCredentialDescriptor {
            id: credential.credential_id.clone(),
            transports: vec![Transport::USB],
        }],
        user_verification_req: UserVerificationRequirement::Required,
        user_presence_req: true,
        extensions: AuthenticationExtensionsClientInputs::default(),
        pin: None,
        use_ctap1_fallback: false,
    };
    let (tx, rx) = channel();
    let callback = StateCallback::new(Box::new(move |rv| {
        let _ = tx.send(rv);
    }));
    if let Err(e) = manager.sign(TIMEOUT_MS, sign, status, callback) {
        fail(format!("sign: {e:?}"));
    }
    let signed = rx
        .recv()
        .unwrap_or_else(|e| fail(format!("sign: {e}")))
        .unwrap_or_else(|e| fail(format!("sign: {e:?}")));
    let assertion = &signed.assertion;
    let raw = assertion.auth_data.to_vec();
    if raw[..32] != rp_hash || raw[32] & 0x05 != 0x05 {
        fail(format!("sign-in: rpIdHash or flags {:#04x}", raw[32]));
    }
    let message = [&raw[..], &challenge].concat();
    let signature = p256::ecdsa::Signature::from_der(&assertion.signature)
        .unwrap_or_else(|e| fail(format!("sign-in: signature not DER: {e}")));
    public_key
        .verify(&message, &signature)
        .unwrap_or_else(|e| fail(format!("sign-in: the signature does not verify: {e}")));
    println!(
        "firefox-stack: signed in to {rp_id}, counter {}, signature verified",
        assertion.auth_data.counter
    );
}
