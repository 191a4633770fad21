//! The authenticator: CTAP1 and CTAP2 behind the CTAPHID [`App`] interface.

use alloc::vec::Vec;
use littlefs2::fs::Filesystem;
use sha2::{Digest, Sha256};

use crate::attestation::{Attestation, AttestationError, EnterpriseAttestation};
use crate::credential::{CredProtect, Credential};
use crate::ctap2::{Enumeration, Halt, PendingAssertions, PendingWrite, PinRuntime, Step};
use crate::ctaphid::{App, Outcome, Transaction};
use crate::platform::{Indicator, Platform, Touch};
use crate::presence::{NotGranted, UserWait};
use crate::profile::Profile;
use crate::store::{PinKdf, ResidentCredential, ResidentRef, Store, StoreError};

/// Fixed facts about this authenticator model.
#[derive(Clone, Debug)]
pub struct Config {
    /// The AAGUID reported in getInfo and in attested credential data.
    pub aaguid: [u8; 16],
    /// firmwareVersion in getInfo.
    pub firmware_version: u32,
    /// The KDF (and its cost) of new PIN verifiers: the first correct PIN after power-up pays
    /// one evaluation, and so does every guess of an attacker holding a copy of the state.
    /// Each verifier keeps the parameters it was made with.
    pub pin_kdf: PinKdf,
}

/// The authenticator core, generic over the body it runs in.
pub struct Authenticator<'a, P: Platform> {
    pub(crate) platform: P,
    pub(crate) store: Store<'a, P::Storage>,
    pub(crate) config: Config,
    pub(crate) user_wait: UserWait,
    /// What getNextAssertion continues, if the last command was a getAssertion series.
    pub(crate) pending_assertions: Option<PendingAssertions>,
    /// Identifies the request being handled, so a touch approves only that request.
    pub(crate) request_digest: [u8; 32],
    /// PIN/UV auth state that lasts until power-down (key agreement key, token, failures).
    pub(crate) pin: PinRuntime,
    /// What credential management's "get next" subcommands continue.
    pub(crate) enumeration: Option<Enumeration>,
    /// A large-blob array being written in fragments.
    pub(crate) large_blob_write: Option<PendingWrite>,
    /// What kind of key this one presents itself as.
    pub(crate) profile: Profile,
    /// When the last call ended ([`Platform::now_ms`]): idle work that takes long waits for
    /// a quiet key (see [`Authenticator::quiet_ms`]).
    pub(crate) last_request_ms: u64,
}

impl<T, P> Authenticator<'_, P>
where
    T: littlefs2::driver::Storage + crate::platform::Vault,
    P: Platform<Storage = crate::store::ahead::EraseAhead<T>>,
{
    /// Idle work for a platform whose flash erases slowly: one step of erasing ahead the
    /// blocks the next writes will take (see [`crate::store::ahead`]). Call it only between
    /// requests or while a request waits for the user; returns whether more steps have work.
    pub fn erase_ahead_step(&mut self) -> bool {
        self.store.erase_ahead_step()
    }

    /// What erasing ahead did since power-up.
    pub fn erase_ahead_counts(&mut self) -> Option<crate::store::ahead::Counts> {
        self.store.erase_ahead_counts()
    }
}

/// How long the key must have had no request before idle work writes the index's copy (a few
/// blocks erased and programmed): a request that follows another at once (a sign-in right
/// after a registration) does not wait for it.
const INDEX_COPY_QUIET_MS: u64 = 2000;

impl<'a, P: Platform> Authenticator<'a, P> {
    /// Build the authenticator on a mounted filesystem (see [`crate::store::mount`]).
    pub fn new(mut platform: P, fs: Filesystem<'a, P::Storage>, config: Config) -> Self {
        let mut store = Store::new(fs);
        for failure in store.prepare(platform.rng(), config.pin_kdf) {
            platform.store_failed(failure);
        }
        let pin = PinRuntime::power_up(&mut platform);
        let last_request_ms = platform.now_ms();
        Self {
            platform,
            store,
            config,
            user_wait: UserWait::default(),
            pending_assertions: None,
            request_digest: [0; 32],
            pin,
            enumeration: None,
            large_blob_write: None,
            profile: Profile::Full,
            last_request_ms,
        }
    }

    /// Idle work for the credential index, one short step a call (see
    /// [`crate::store::Store::index_step`]): check an index read at power-up from its copy
    /// against the slot files, one file a step, then, once the key has been quiet for
    /// `INDEX_COPY_QUIET_MS`, store a copy if none matching is, so the next power-up reads
    /// the index in one pass. Call it only between requests; returns in how many ms it has
    /// more work (0: at once), or `None`.
    pub fn index_step(&mut self) -> Option<u64> {
        let quiet = self.quiet_ms();
        let more = self.store.index_step(quiet >= INDEX_COPY_QUIET_MS)?;
        Some(if more { 0 } else { INDEX_COPY_QUIET_MS - quiet })
    }

    /// How long since the last call to [`App::call`] ended: how long the key has been without
    /// a request, for a platform's idle work (erasing ahead waits for a quiet key, as the
    /// index's copy does).
    pub fn quiet_ms(&self) -> u64 {
        self.platform.now_ms().saturating_sub(self.last_request_ms)
    }

    /// Present the key as another kind of key (see [`Profile`]); a runner chooses before the
    /// first request.
    pub fn set_profile(&mut self, profile: Profile) {
        self.profile = profile;
    }

    /// Does every request need the user verified, as alwaysUv says: alwaysUv on by
    /// authenticatorConfig or for good by the profile, or the key locked (PIN lock on, no PIN
    /// since power-up), which behaves as alwaysUv does until the PIN is given?
    pub(crate) fn always_uv(&mut self) -> Result<bool, StoreError> {
        Ok(self.profile.forces_always_uv()
            || self.store.settings()?.always_uv
            || self.store.locked())
    }

    /// Hold at most `limit` discoverable credentials, fewer than the storage allows: getInfo's
    /// remainingDiscoverableCredentials counts down to 0 from it, and credentials already
    /// stored beyond it stay (only new ones are refused).
    pub fn set_credential_limit(&mut self, limit: usize) {
        self.store.set_capacity_limit(limit);
    }

    /// The platform, for runners that need to reach it (e.g. to answer a presence prompt).
    pub fn platform(&mut self) -> &mut P {
        &mut self.platform
    }

    /// Install a batch attestation (from the vendor command or a runner's configuration). Only
    /// a key without one accepts it, and not while it is locked.
    pub fn install_attestation(
        &mut self,
        attestation: &Attestation,
    ) -> Result<(), AttestationError> {
        self.check_attestation(attestation)?;
        self.store
            .save_attestation(attestation, self.platform.rng())
            .map_err(|_| AttestationError::Storage)
    }

    /// Whether `install_attestation` would take `attestation`, changing nothing.
    pub(crate) fn check_attestation(
        &mut self,
        _attestation: &Attestation,
    ) -> Result<(), AttestationError> {
        match self.store.attestation() {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(AttestationError::AlreadyProvisioned),
            Err(crate::store::StoreError::Locked) => Err(AttestationError::Locked),
            Err(_) => Err(AttestationError::Storage),
        }
    }

    /// Install an enterprise attestation (CTAP 2.1 §7.1), disabled until authenticatorConfig
    /// enables it. Only a key with a batch attestation and no enterprise attestation accepts
    /// it: the batch answers every RP the enterprise attestation is not for, and the AAGUID in
    /// authenticatorData must be what both certificates name, so they must name the same.
    pub fn install_enterprise_attestation(
        &mut self,
        attestation: EnterpriseAttestation,
    ) -> Result<(), AttestationError> {
        self.check_enterprise_attestation(&attestation)?;
        self.store
            .save_enterprise_attestation(attestation, self.platform.rng())
            .map_err(|_| AttestationError::Storage)
    }

    /// Whether `install_enterprise_attestation` would take `attestation`, changing nothing.
    pub(crate) fn check_enterprise_attestation(
        &mut self,
        attestation: &EnterpriseAttestation,
    ) -> Result<(), AttestationError> {
        let storage = |error| match error {
            crate::store::StoreError::Locked => AttestationError::Locked,
            _ => AttestationError::Storage,
        };
        match self.store.attestation().map_err(storage)? {
            Some(batch) if batch.aaguid() != attestation.attestation().aaguid() => {
                return Err(AttestationError::AaguidMismatch)
            }
            Some(_) => {}
            None => return Err(AttestationError::NoBatch),
        }
        match self.store.enterprise_attestation().map_err(storage)? {
            None => Ok(()),
            Some(_) => Err(AttestationError::AlreadyProvisioned),
        }
    }

    /// The installed batch attestation, if any. (One that cannot be read counts as none: the
    /// key then attests itself rather than failing every registration.)
    pub fn attestation(&mut self) -> Option<&Attestation> {
        self.store.attestation().ok().flatten()
    }

    /// The AAGUID: the attestation certificate's once provisioned, the model's before (known
    /// while the key is locked too).
    pub(crate) fn aaguid(&mut self) -> [u8; 16] {
        self.store
            .attestation_aaguid()
            .unwrap_or(self.config.aaguid)
    }

    /// CTAP2's presence check for the current request.
    pub(crate) fn user_presence(&mut self) -> Step<()> {
        self.presence_check().map_err(Halt::from)
    }

    /// CTAP2's presence check for a request that needs a long touch (reset, when the owner
    /// enabled longTouchForReset).
    pub(crate) fn long_touch(&mut self) -> Step<()> {
        let request = self.request_digest;
        self.user_wait
            .check(&mut self.platform, &request, Touch::Long)
            .map_err(Halt::from)
    }

    /// The presence check for the current request, whatever the protocol.
    pub(crate) fn presence_check(&mut self) -> Result<(), NotGranted> {
        let request = self.request_digest;
        self.user_wait
            .check(&mut self.platform, &request, Touch::Short)
    }

    /// Is `id` a live credential of ours for this RP that this request may see? A discoverable
    /// one must still be stored; credProtect level 3 hides it from unverified requests.
    pub(crate) fn credential_exists(
        &mut self,
        kwk: &[u8; 32],
        rp_id_hash: &[u8; 32],
        id: &[u8],
        uv: bool,
    ) -> bool {
        match Credential::open(kwk, rp_id_hash, id) {
            Some(credential) if credential.cred_protect == CredProtect::Required && !uv => false,
            Some(credential) if credential.discoverable => {
                self.store.resident_exists(rp_id_hash, id)
            }
            Some(_) => true,
            None => matches!(
                self.imported_credential(kwk, rp_id_hash, id, uv),
                Ok(Some(_))
            ),
        }
    }

    /// The imported credential (see [`crate::automation`]) stored with this ID for this RP,
    /// if this request may see it (credProtect level 3 hides it from unverified requests):
    /// where it is stored, and its private key.
    pub(crate) fn imported_credential(
        &mut self,
        kwk: &[u8; 32],
        rp_id_hash: &[u8; 32],
        id: &[u8],
        uv: bool,
    ) -> Result<Option<(ResidentRef, Credential)>, StoreError> {
        let Some(reference) = self.store.resident_ref(rp_id_hash, id)? else {
            return Ok(None);
        };
        let Some(record) = self.store.load_resident(&reference)? else {
            return Ok(None);
        };
        let credential = record
            .sealed
            .as_ref()
            .and_then(|sealed| Credential::open(kwk, rp_id_hash, sealed))
            .filter(|c| c.cred_protect != CredProtect::Required || uv);
        Ok(credential.map(|credential| (reference, credential)))
    }

    /// The signature counter for a signature by `stored` (or by a credential the key does
    /// not store): the credential's own if it has one, else the key's global counter. Either
    /// is on storage before the signature exists, so no value is ever given out twice.
    pub(crate) fn signature_counter(
        &mut self,
        stored: Option<(&ResidentRef, &mut ResidentCredential)>,
    ) -> Result<u32, StoreError> {
        let Some((reference, record)) = stored.filter(|(_, r)| r.counter.is_some()) else {
            return self.store.next_counter();
        };
        let next = record
            .counter
            .unwrap_or(0)
            .checked_add(1)
            .ok_or(StoreError::Full)?;
        record.counter = Some(next);
        // Deleted or replaced since it was found: nothing to count for.
        if !self.store.rewrite_resident(reference, record)? {
            return Err(StoreError::Io);
        }
        Ok(next)
    }
}

impl<P: Platform> App for Authenticator<'_, P> {
    fn call(
        &mut self,
        transaction: Transaction,
        request: &[u8],
        response: &mut Vec<u8>,
    ) -> Outcome {
        // Room for a status-only answer, so that every failure below can be reported; without
        // even that, an empty answer, which CTAPHID turns into ERR_OTHER.
        if response
            .try_reserve(crate::ctaphid::MIN_RESPONSE_ROOM)
            .is_err()
        {
            return Outcome::Done;
        }
        let mut digest = Sha256::new();
        digest.update([transaction as u8]);
        digest.update(request);
        self.request_digest = digest.finalize().into();
        let outcome = match transaction {
            Transaction::Msg => {
                crate::ctap1::handle(self, request, response);
                Outcome::Done
            }
            Transaction::Cbor => crate::ctap2::handle(self, request, response),
            Transaction::Provision => match crate::vendor::provision(self, request) {
                Ok(status) => {
                    response.push(status);
                    Outcome::Done
                }
                Err(status) => Outcome::Waiting(status),
            },
        };
        // From the answer, not the request: a client's next request follows the answer.
        self.last_request_ms = self.platform.now_ms();
        outcome
    }

    fn cancel(&mut self) {
        self.user_wait.cancel();
    }

    fn abort(&mut self) {
        self.user_wait.end(&mut self.platform);
    }

    fn wink(&mut self) {
        self.platform.indicate(Indicator::Wink);
    }

    fn speaks_cbor(&self) -> bool {
        self.profile.speaks_cbor()
    }
}
