//! The platform's side of PIN/UV auth protocols 1 and 2, written from the spec independently of
//! the core's implementation, so the two check each other. Shared by the core's tests
//! (through `test-support`) and the end-to-end tests.

use aes::cipher::block_padding::NoPadding;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use ciborium::Value;
use hmac::{Hmac, KeyInit, Mac};
use p256::elliptic_curve::sec1::ToSec1Point;
use sha2::{Digest, Sha256};

use super::ctap::*;

pub struct PinClient {
    pub protocol: u8,
    platform_key: Value,
    shared: Vec<u8>,
}

impl PinClient {
    /// getKeyAgreement, then ECDH and the protocol's KDF, with a platform key made from `seed`
    /// (deterministic: for tests).
    pub fn new(key: &mut impl Transport, protocol: u8, seed: u8) -> Self {
        Self::with_secret(key, protocol, [seed.max(1); 32])
    }

    /// As [`PinClient::new`], with the platform's ephemeral ECDH key `secret` (a platform draws
    /// it at random for each session).
    pub fn with_secret(key: &mut impl Transport, protocol: u8, secret: [u8; 32]) -> Self {
        let request = map(vec![(int(1), int(protocol.into())), (int(2), int(2))]);
        let (status, body) = call(key, 0x06, Some(request));
        assert_eq!(status, 0, "getKeyAgreement");
        let cose = get(&body.unwrap(), 1).unwrap().clone();
        assert_eq!(get(&cose, 1), Some(&int(2)), "kty EC2");
        assert_eq!(get(&cose, 3), Some(&int(-25)), "alg ECDH-ES+HKDF-256");
        let x = get(&cose, -2).unwrap().as_bytes().unwrap().clone();
        let y = get(&cose, -3).unwrap().as_bytes().unwrap().clone();
        let peer = p256::PublicKey::from_sec1_bytes(&[&[4u8][..], &x, &y].concat()).unwrap();
        let secret = p256::SecretKey::from_slice(&secret).expect("a P-256 scalar");
        let z = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), peer.as_affine());
        let z = z.raw_secret_bytes();
        let shared = if protocol == 1 {
            Sha256::digest(z).to_vec()
        } else {
            let hkdf = hkdf::Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
            let mut out = vec![0u8; 64];
            hkdf.expand(b"CTAP2 HMAC key", &mut out[..32]).unwrap();
            hkdf.expand(b"CTAP2 AES key", &mut out[32..]).unwrap();
            out
        };
        let point = secret.public_key().to_sec1_point(false);
        let platform_key = map(vec![
            (int(1), int(2)),
            (int(3), int(-25)),
            (int(-1), int(1)),
            (int(-2), bytes(point.x().unwrap())),
            (int(-3), bytes(point.y().unwrap())),
        ]);
        Self {
            protocol,
            platform_key,
            shared,
        }
    }

    /// The platform's key agreement key, as a COSE key.
    pub fn platform_key(&self) -> Value {
        self.platform_key.clone()
    }

    /// hmac-secret's extension input for these salts.
    pub fn hmac_secret_input(&self, salts: &[u8]) -> Value {
        let salt_enc = self.encrypt(salts);
        let salt_auth = Self::mac(self.protocol, &self.shared, &salt_enc);
        map(vec![
            (int(1), self.platform_key.clone()),
            (int(2), bytes(&salt_enc)),
            (int(3), bytes(&salt_auth)),
            (int(4), int(self.protocol.into())),
        ])
    }

    fn aes_key(&self) -> &[u8; 32] {
        let key = if self.protocol == 1 {
            &self.shared[..32]
        } else {
            &self.shared[32..]
        };
        key.try_into().unwrap()
    }

    pub fn encrypt(&self, data: &[u8]) -> Vec<u8> {
        let iv = if self.protocol == 1 {
            [0u8; 16]
        } else {
            [0x5a; 16]
        };
        let mut buffer = data.to_vec();
        let len = buffer.len();
        cbc::Encryptor::<aes::Aes256>::new(self.aes_key().into(), &iv.into())
            .encrypt_padded::<NoPadding>(&mut buffer, len)
            .unwrap();
        if self.protocol == 1 {
            buffer
        } else {
            [&iv[..], &buffer].concat()
        }
    }

    pub fn decrypt(&self, data: &[u8]) -> Vec<u8> {
        let (iv, body) = if self.protocol == 1 {
            ([0u8; 16], data)
        } else {
            (data[..16].try_into().unwrap(), &data[16..])
        };
        let mut buffer = body.to_vec();
        cbc::Decryptor::<aes::Aes256>::new(self.aes_key().into(), &iv.into())
            .decrypt_padded::<NoPadding>(&mut buffer)
            .unwrap();
        buffer
    }

    /// authenticate(key, message), truncated as the protocol says.
    pub fn mac(protocol: u8, key: &[u8], message: &[u8]) -> Vec<u8> {
        let key = if protocol == 2 { &key[..32] } else { key };
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(message);
        let out = mac.finalize().into_bytes().to_vec();
        if protocol == 1 {
            out[..16].to_vec()
        } else {
            out
        }
    }

    fn padded(pin: &str) -> Vec<u8> {
        let mut padded = pin.as_bytes().to_vec();
        padded.resize(64, 0);
        padded
    }

    pub fn pin_hash_enc(&self, pin: &str) -> Vec<u8> {
        self.encrypt(&Sha256::digest(pin.as_bytes())[..16])
    }

    /// setPIN: the key's status.
    pub fn set_pin(&self, key: &mut impl Transport, pin: &str) -> u8 {
        call(key, 0x06, Some(self.set_pin_request(pin))).0
    }

    /// The clientPin setPIN request for `pin`, not sent.
    pub fn set_pin_request(&self, pin: &str) -> Value {
        self.new_pin_request(pin, None)
    }

    /// changePIN from `old` to `new`: the key's status.
    pub fn change_pin(&self, key: &mut impl Transport, old: &str, new: &str) -> u8 {
        call(key, 0x06, Some(self.new_pin_request(new, Some(old)))).0
    }

    /// setPIN (0x03), or changePIN (0x04) given the `current` PIN: newPinEnc, then
    /// pinUvAuthParam = authenticate(shared secret, newPinEnc || pinHashEnc), pinHashEnc only
    /// for a change (CTAP 2.1, authenticatorClientPIN: "Setting a New PIN", "Changing existing
    /// PIN").
    fn new_pin_request(&self, new: &str, current: Option<&str>) -> Value {
        let new_pin_enc = self.encrypt(&Self::padded(new));
        let pin_hash_enc = current.map(|pin| self.pin_hash_enc(pin));
        let message = [
            &new_pin_enc[..],
            pin_hash_enc.as_deref().unwrap_or_default(),
        ]
        .concat();
        let auth = Self::mac(self.protocol, &self.shared, &message);
        let subcommand = if current.is_some() { 4 } else { 3 };
        let mut entries = vec![
            (int(1), int(self.protocol.into())),
            (int(2), int(subcommand)),
            (int(3), self.platform_key.clone()),
            (int(4), bytes(&auth)),
            (int(5), bytes(&new_pin_enc)),
        ];
        if let Some(pin_hash_enc) = pin_hash_enc {
            entries.push((int(6), bytes(&pin_hash_enc)));
        }
        map(entries)
    }

    /// getPinToken (permissions None) or getPinUvAuthTokenUsingPinWithPermissions.
    pub fn token(
        &self,
        key: &mut impl Transport,
        pin: &str,
        permissions: Option<u8>,
        rp_id: Option<&str>,
    ) -> Result<Vec<u8>, u8> {
        let mut entries = vec![
            (int(1), int(self.protocol.into())),
            (int(2), int(if permissions.is_some() { 9 } else { 5 })),
            (int(3), self.platform_key.clone()),
            (int(6), bytes(&self.pin_hash_enc(pin))),
        ];
        if let Some(p) = permissions {
            entries.push((int(9), int(p.into())));
        }
        if let Some(rp) = rp_id {
            entries.push((int(0x0A), text(rp)));
        }
        let (status, body) = call(key, 0x06, Some(map(entries)));
        if status != 0 {
            return Err(status);
        }
        let encrypted = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
        Ok(self.decrypt(&encrypted))
    }
}

impl PinClient {
    /// getPinUvAuthTokenUsingUvWithPermissions: a token after the key's built-in user
    /// verification (its sensor), no PIN.
    pub fn uv_token(
        &self,
        key: &mut impl Transport,
        permissions: u8,
        rp_id: Option<&str>,
    ) -> Result<Vec<u8>, u8> {
        let mut entries = vec![
            (int(1), int(self.protocol.into())),
            (int(2), int(6)),
            (int(3), self.platform_key.clone()),
            (int(9), int(permissions.into())),
        ];
        if let Some(rp) = rp_id {
            entries.push((int(0x0A), text(rp)));
        }
        let (status, body) = call(key, 0x06, Some(map(entries)));
        if status != 0 {
            return Err(status);
        }
        let encrypted = get(&body.unwrap(), 2).unwrap().as_bytes().unwrap().clone();
        Ok(self.decrypt(&encrypted))
    }
}

/// getUVRetries: the built-in UV attempts left.
pub fn uv_retries(key: &mut impl Transport) -> Result<i64, u8> {
    let (status, body) = call(key, 0x06, Some(map(vec![(int(2), int(7))])));
    if status != 0 {
        return Err(status);
    }
    Ok(as_int(get(&body.unwrap(), 5).expect("uvRetries (0x05)")))
}

/// getPINRetries: (retries, powerCycleState).
pub fn retries(key: &mut impl Transport) -> (i64, Option<bool>) {
    let (status, body) = call(
        key,
        0x06,
        Some(map(vec![(int(1), int(1)), (int(2), int(1))])),
    );
    assert_eq!(status, 0);
    let body = body.unwrap();
    let retries = i64::try_from(get(&body, 3).unwrap().as_integer().unwrap()).unwrap();
    (retries, get(&body, 4).and_then(|v| v.as_bool()))
}
