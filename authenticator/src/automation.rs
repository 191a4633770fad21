//! Test automation: what a runner's WebDriver-style interface (W3C WebAuthn "Automation":
//! Add Credential, Get Credentials, Remove Credential, Remove All Credentials, and a signature
//! counter a test sets) needs from the core.
//!
//! Nothing here is reachable over USB: a runner calls it for a test that drives the key, and
//! decides whether private keys may cross (the virtual key only for throwaway keys or with an
//! explicit opt-in; the Pico never calls it). A key's private keys leaving it defeats the point
//! of a security key; for a test key it is exactly what a test wants.
//!
//! The key's own credential IDs stay sealed and stateless. An imported credential keeps the ID
//! it was made with elsewhere, so it needs a record: it takes a slot of the discoverable store
//! (bounded, counted against the capacity, written in one atomic commit), holding the external
//! ID, the imported private key sealed as the key seals its own, and the credential's own
//! signature counter. A non-discoverable one is marked so that only lookups by ID (allow
//! lists, U2F key handles) find it, never discovery or credential management.
//!
//! Signature counters: the key has one global counter. A credential with a record of its own
//! counter (every imported one, and a stored one whose counter a test set) counts on its own:
//! each signature writes the next value to its record before the signature exists, so a
//! relying party sees that credential's counter grow from the imported `signCount` and never
//! go back. Setting a counter below what the credential already reported is refused, for the
//! same reason (a test that wants a rewound counter, to see an RP's clone detection, asks for
//! it as a fault). A credential without a record (sealed, non-discoverable) uses the global
//! counter, which a test may only move forward.

use ctap_types::webauthn::PublicKeyCredentialUserEntity;

use crate::credential::{Algorithm, CredProtect, Credential, MAX_ID_LEN};
use crate::platform::Platform;
use crate::store::{sha256, ResidentCredential, ResidentRef, StoreError};
use crate::Authenticator;

/// A credential to import (W3C Credential Parameters, decoded by the runner).
pub struct Import<'a> {
    pub credential_id: &'a [u8],
    pub rp_id: &'a str,
    /// isResidentCredential.
    pub discoverable: bool,
    pub alg: Algorithm,
    /// The private key: a P-256 scalar or an Ed25519 seed.
    pub secret: &'a [u8; 32],
    /// userHandle, userName, userDisplayName; a discoverable credential needs the handle.
    pub user: Option<PublicKeyCredentialUserEntity>,
    /// signCount: the last counter value the credential signed with.
    pub sign_count: u32,
}

/// Why an import was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// The private key is not a valid key of its algorithm.
    BadKey,
    /// The credential ID is empty or longer than maxCredentialIdLength (128).
    BadId,
    /// The RP ID is empty or longer than 256 bytes.
    BadRpId,
    /// A discoverable credential needs a userHandle (1 to 64 bytes).
    NeedsUserHandle,
    /// A credential with this ID is on the key already.
    DuplicateId,
    /// A discoverable credential of this RP and userHandle is on the key already (CTAP would
    /// replace it; an import refuses, so that nothing is lost unasked).
    DuplicateUser,
    /// No room left (the capacity, or `--max-credentials`).
    Full,
    /// The record does not fit a slot (see the store's record size).
    TooLarge,
    /// Storage failed.
    Storage,
    /// The key is PIN-locked: its key-wrapping key is sealed until the PIN is given.
    Locked,
}

impl From<StoreError> for ImportError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Full => ImportError::Full,
            StoreError::Filesystem(_)
            | StoreError::Io
            | StoreError::OutOfMemory
            | StoreError::VaultUnreadable => ImportError::Storage,
            StoreError::Locked => ImportError::Locked,
        }
    }
}

/// A credential with its private key, as the runner lists it (W3C Get Credentials).
pub struct Exported {
    pub credential_id: heapless::Vec<u8, MAX_ID_LEN>,
    pub rp_id: heapless::String<256>,
    pub discoverable: bool,
    pub alg: Algorithm,
    /// The private key (wiped when dropped).
    pub secret: zeroize::Zeroizing<[u8; 32]>,
    /// The user, for a discoverable credential.
    pub user: Option<PublicKeyCredentialUserEntity>,
    /// The last counter value the credential signed with (for a credential on the global
    /// counter: the last value the key gave out).
    pub sign_count: u32,
    /// Its largeBlobKey (§12.3), for a discoverable credential: the runner finds its large
    /// blob with it.
    pub large_blob_key: Option<zeroize::Zeroizing<[u8; 32]>>,
    /// Whether it has a record of its own (stored), or is a sealed ID that only opens.
    pub stored: bool,
}

/// Why a counter was not set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterError {
    /// No credential with this ID (stored, or sealed for the given RP).
    Unknown,
    /// Below what the credential already reported (the value it is at): a counter never goes
    /// back.
    Backwards(u32),
    Storage,
}

impl From<StoreError> for CounterError {
    fn from(_: StoreError) -> Self {
        CounterError::Storage
    }
}

impl<P: Platform> Authenticator<'_, P> {
    /// Import a credential made elsewhere; it is on storage when this returns.
    pub fn import_credential(&mut self, import: &Import<'_>) -> Result<(), ImportError> {
        if import.credential_id.is_empty() || import.credential_id.len() > MAX_ID_LEN {
            return Err(ImportError::BadId);
        }
        let rp_id = heapless::String::<256>::try_from(import.rp_id)
            .ok()
            .filter(|r| !r.is_empty())
            .ok_or(ImportError::BadRpId)?;
        let user = match (&import.user, import.discoverable) {
            (Some(user), true) if user.id.is_empty() => return Err(ImportError::NeedsUserHandle),
            (Some(user), true) => user.clone(),
            (None, true) => return Err(ImportError::NeedsUserHandle),
            // A non-discoverable credential answers with no user.
            (_, false) => PublicKeyCredentialUserEntity::from(heapless_bytes::Bytes::new()),
        };
        let credential = Credential::from_secret(
            import.alg,
            import.secret,
            import.discoverable,
            CredProtect::Optional,
        )
        .ok_or(ImportError::BadKey)?;
        let rp_id_hash = sha256(rp_id.as_bytes());
        let kwk = self.store.kwk()?;
        if Credential::open(&kwk, &rp_id_hash, import.credential_id).is_some()
            || self.store.find_resident(import.credential_id)?.is_some()
        {
            return Err(ImportError::DuplicateId);
        }
        let sealed = credential.seal(&kwk, &rp_id_hash, self.platform.rng());
        let mut record = ResidentCredential {
            rp_id,
            user,
            id: heapless_bytes::Bytes::try_from(import.credential_id)
                .map_err(|_| ImportError::BadId)?,
            created: 0,
            cred_protect: CredProtect::Optional as u8,
            sealed: Some(
                heapless_bytes::Bytes::try_from(&sealed[..]).map_err(|_| ImportError::BadId)?,
            ),
            counter: Some(import.sign_count),
            listed_only: !import.discoverable,
        };
        if import.discoverable && self.store.holds_user_of(&record)? {
            return Err(ImportError::DuplicateUser);
        }
        // Creation order, as for the key's own (the counter value it would have signed with).
        record.created = self.store.next_counter()?;
        let mut buffer = [0u8; crate::store::RECORD_LEN];
        if cbor_smol::cbor_serialize(&record, &mut buffer).is_err() {
            return Err(ImportError::TooLarge);
        }
        self.store.save_imported(&record)?;
        Ok(())
    }

    /// The stored credential after `after` (the first if `None`), discoverable or imported,
    /// with its private key: one step of a listing that keeps only its position.
    pub fn next_stored_credential(
        &mut self,
        after: Option<ResidentRef>,
    ) -> Result<Option<(ResidentRef, Exported)>, StoreError> {
        let mut after = after;
        while let Some((reference, record)) = self.store.next_stored(after)? {
            if let Some(exported) = self.export(&record)? {
                return Ok(Some((reference, exported)));
            }
            // One that does not open is of no use to anybody: skip it.
            after = Some(reference);
        }
        Ok(None)
    }

    /// A credential the key does not store, from its sealed ID and RP (the runner remembers
    /// the non-discoverable credentials it saw made); `None` if the ID is not one of ours.
    pub fn open_credential(
        &mut self,
        rp_id: &str,
        credential_id: &[u8],
    ) -> Result<Option<Exported>, StoreError> {
        let kwk = self.store.kwk()?;
        let Some(credential) = Credential::open(&kwk, &sha256(rp_id.as_bytes()), credential_id)
        else {
            return Ok(None);
        };
        Ok(Some(Exported {
            credential_id: heapless::Vec::from_slice(credential_id).map_err(|_| StoreError::Io)?,
            rp_id: heapless::String::try_from(rp_id).map_err(|_| StoreError::Io)?,
            discoverable: credential.discoverable,
            alg: credential.alg,
            secret: credential.secret(),
            user: None,
            sign_count: self.store.peek_counter()?.saturating_sub(1),
            large_blob_key: None,
            stored: false,
        }))
    }

    fn export(&mut self, record: &ResidentCredential) -> Result<Option<Exported>, StoreError> {
        let kwk = self.store.kwk()?;
        let rp_id_hash = sha256(record.rp_id.as_bytes());
        let Some(credential) = Credential::open(&kwk, &rp_id_hash, record.sealed_credential())
        else {
            return Ok(None);
        };
        let sign_count = match record.counter {
            Some(counter) => counter,
            None => self.store.peek_counter()?.saturating_sub(1),
        };
        Ok(Some(Exported {
            credential_id: heapless::Vec::from_slice(&record.id).map_err(|_| StoreError::Io)?,
            rp_id: record.rp_id.clone(),
            discoverable: !record.listed_only,
            alg: credential.alg,
            secret: credential.secret(),
            user: (!record.listed_only).then(|| record.user.clone()),
            sign_count,
            large_blob_key: (!record.listed_only).then(|| credential.large_blob_key()),
            stored: true,
        }))
    }

    /// Remove the stored credential with this ID (discoverable or imported); `false` if the
    /// key stores none (a sealed ID holds no state to remove).
    pub fn remove_credential(&mut self, credential_id: &[u8]) -> Result<bool, StoreError> {
        self.store.delete_resident_id(credential_id)
    }

    /// Remove every stored credential, one atomic slot write each (a power cut leaves the ones
    /// not reached yet); the number removed.
    pub fn clear_credentials(&mut self) -> Result<usize, StoreError> {
        let mut removed = 0;
        while let Some((_, record)) = self.store.next_stored(None)? {
            if !self.store.delete_resident_id(&record.id)? {
                return Err(StoreError::Io);
            }
            removed += 1;
        }
        Ok(removed)
    }

    /// Set a credential's signature counter to `sign_count`, the last value it signed with:
    /// its next signature carries `sign_count + 1`. A stored credential gets a counter of its
    /// own; a sealed one (`rp_id` names its RP) moves the key's global counter, which every
    /// sealed credential shares. Refused below what the credential is at.
    pub fn set_sign_count(
        &mut self,
        credential_id: &[u8],
        rp_id: Option<&str>,
        sign_count: u32,
    ) -> Result<(), CounterError> {
        if let Some(mut record) = self.store.find_resident(credential_id)? {
            let rp_id_hash = sha256(record.rp_id.as_bytes());
            let reference = self
                .store
                .resident_ref(&rp_id_hash, credential_id)?
                .ok_or(CounterError::Unknown)?;
            let current = match record.counter {
                Some(counter) => counter,
                None => self.store.peek_counter()?.saturating_sub(1),
            };
            if sign_count < current {
                return Err(CounterError::Backwards(current));
            }
            record.counter = Some(sign_count);
            return match self.store.rewrite_resident(&reference, &record)? {
                true => Ok(()),
                false => Err(CounterError::Unknown),
            };
        }
        let rp_id = rp_id.ok_or(CounterError::Unknown)?;
        let kwk = self.store.kwk()?;
        if Credential::open(&kwk, &sha256(rp_id.as_bytes()), credential_id).is_none() {
            return Err(CounterError::Unknown);
        }
        let next = sign_count.checked_add(1).ok_or(CounterError::Storage)?;
        match self.store.raise_counter(next)? {
            true => Ok(()),
            false => Err(CounterError::Backwards(
                self.store.peek_counter()?.saturating_sub(1),
            )),
        }
    }
}
