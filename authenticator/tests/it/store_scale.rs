//! The discoverable-credential store at scale: the Pico's geometry holds its capacity with
//! every device file at its largest, the remaining count is exact to the last slot, the
//! storage a command touches does not grow with what is stored, and keys of the first layout
//! (`/rk`, one file per credential) are migrated, power-cut safe at every write.

use std::cell::Cell;
use std::rc::Rc;

use authenticator::pico_flash::{self, SECTOR_SIZE as BLOCK, STATE_BLOCKS as PICO_BLOCKS};
use authenticator::store::{
    self, capacity, PinState, ResidentCredential, Settings, Store, StoreError, Visibility,
    MAX_LARGE_BLOB_ARRAY,
};
use ciborium::Value;
use ctap_types::webauthn::PublicKeyCredentialUserEntity;
use littlefs2::fs::{Allocation, Filesystem};
use rand_chacha::rand_core::SeedableRng;
use sha2::{Digest, Sha256};
use test_support::*;

/// The Pico's state partition: 384 blocks of 4 KiB, programmed in 256-byte pages, with the
/// firmware's littlefs settings (`authenticator::pico_flash`, which the firmware uses).
struct PicoFlash {
    bytes: Vec<u8>,
    /// The vault beside the partition (4 sectors on the Pico).
    vault: authenticator::store::vault::RamVault,
    counts: Rc<Counts>,
}

/// What the storage was asked to do, to show what a command costs.
#[derive(Default)]
struct Counts {
    read_bytes: Cell<usize>,
    programs: Cell<usize>,
    erases: Cell<usize>,
    /// Program/erase operations left before the power goes (None: never).
    budget: Cell<Option<usize>>,
    /// Whether the cut operation lands half done.
    tear: Cell<bool>,
}

impl Counts {
    fn snapshot(&self) -> (usize, usize, usize) {
        (
            self.read_bytes.get(),
            self.programs.get(),
            self.erases.get(),
        )
    }

    /// Ok(true) if this operation is the one the power goes during.
    fn spend(&self) -> littlefs2::io::Result<bool> {
        match self.budget.get() {
            Some(0) => Err(littlefs2::io::Error::IO),
            Some(n) => {
                self.budget.set(Some(n - 1));
                Ok(n == 1)
            }
            None => Ok(false),
        }
    }
}

impl PicoFlash {
    fn new() -> Self {
        Self {
            bytes: vec![0xff; PICO_BLOCKS * BLOCK],
            vault: Default::default(),
            counts: Rc::default(),
        }
    }

    /// The same flash (partition and vault), counted afresh.
    fn copy(&self) -> Self {
        Self {
            bytes: self.bytes.clone(),
            vault: authenticator::store::vault::RamVault::from_image(self.vault.image()),
            counts: Rc::default(),
        }
    }
}

/// The vault's programs and erases are counted, and cut, like the partition's.
impl authenticator::platform::Vault for PicoFlash {
    fn vault_read(&mut self, offset: usize, buf: &mut [u8]) -> littlefs2::io::Result<()> {
        self.vault.read(offset, buf)
    }

    fn vault_program(&mut self, offset: usize, data: &[u8]) -> littlefs2::io::Result<()> {
        let cut = self.counts.spend()?;
        self.counts.programs.set(self.counts.programs.get() + 1);
        if cut {
            if self.counts.tear.get() {
                let half = data.len() / 2 / 256 * 256;
                self.vault.program(offset, &data[..half])?;
            }
            return Err(littlefs2::io::Error::IO);
        }
        self.vault.program(offset, data)
    }

    fn vault_erase(&mut self, offset: usize) -> littlefs2::io::Result<()> {
        let cut = self.counts.spend()?;
        self.counts.erases.set(self.counts.erases.get() + 1);
        if cut {
            if self.counts.tear.get() {
                let half = authenticator::platform::VAULT_SLOT_SIZE / 2;
                self.vault.erase_part(offset, half)?;
            }
            return Err(littlefs2::io::Error::IO);
        }
        self.vault.erase(offset)
    }
}

impl littlefs2::driver::Storage for PicoFlash {
    const READ_SIZE: usize = pico_flash::READ_SIZE;
    const WRITE_SIZE: usize = pico_flash::PAGE_SIZE;
    const BLOCK_SIZE: usize = pico_flash::SECTOR_SIZE;
    const BLOCK_COUNT: usize = pico_flash::STATE_BLOCKS;
    const BLOCK_CYCLES: isize = pico_flash::BLOCK_CYCLES;
    type CACHE_SIZE = pico_flash::CacheSize;
    type LOOKAHEAD_SIZE = pico_flash::LookaheadSize;

    fn read(&mut self, off: usize, buf: &mut [u8]) -> littlefs2::io::Result<usize> {
        let src = self
            .bytes
            .get(off..off + buf.len())
            .ok_or(littlefs2::io::Error::IO)?;
        buf.copy_from_slice(src);
        self.counts
            .read_bytes
            .set(self.counts.read_bytes.get() + buf.len());
        Ok(buf.len())
    }

    fn write(&mut self, off: usize, data: &[u8]) -> littlefs2::io::Result<usize> {
        let cut = self.counts.spend()?;
        self.counts.programs.set(self.counts.programs.get() + 1);
        let data = if cut && self.counts.tear.get() {
            &data[..data.len() / 2]
        } else {
            data
        };
        self.bytes
            .get_mut(off..off + data.len())
            .ok_or(littlefs2::io::Error::IO)?
            .copy_from_slice(data);
        if cut {
            return Err(littlefs2::io::Error::IO);
        }
        Ok(data.len())
    }

    fn erase(&mut self, off: usize, len: usize) -> littlefs2::io::Result<usize> {
        let cut = self.counts.spend()?;
        self.counts.erases.set(self.counts.erases.get() + 1);
        let len = if cut && self.counts.tear.get() {
            len / 2
        } else {
            len
        };
        self.bytes
            .get_mut(off..off + len)
            .ok_or(littlefs2::io::Error::IO)?
            .fill(0xff);
        if cut {
            return Err(littlefs2::io::Error::IO);
        }
        Ok(len)
    }
}

/// A batch and an enterprise attestation near their largest: certificates of over 1,000 of
/// the 1,024 bytes allowed (a long subject), and 8 RP IDs of 256 bytes.
fn largest_attestations() -> (
    authenticator::attestation::Attestation,
    authenticator::attestation::EnterpriseAttestation,
) {
    use attestation::certificate::{self, Subject};
    use der::Encode;
    let subject = |cn: &str| Subject {
        country: "SE".into(),
        organization: "o".repeat(64),
        common_name: cn.into(),
    };
    let ca = certificate::root_ca(&subject("root"), 30).unwrap();
    let der = |issued: &certificate::Issued| issued.certificate.to_der().unwrap();
    // The longest common name that keeps each certificate within the limit.
    let fit = |make: &dyn Fn(&str) -> certificate::Issued| {
        (0..600)
            .rev()
            .step_by(8)
            .map(|n| make(&"c".repeat(n)))
            .find(|issued| der(issued).len() <= authenticator::attestation::MAX_CERTIFICATE_LEN)
            .unwrap()
    };
    let batch = fit(&|cn| certificate::batch(&ca, &subject(cn), [1; 16], 20).unwrap());
    let enterprise =
        fit(&|cn| certificate::enterprise(&ca, &subject(cn), "SN-1", [1; 16], 20).unwrap());
    assert!(der(&batch).len() > 1000 && der(&enterprise).len() > 1000);
    let ids: Vec<String> = (0..8).map(|i| format!("{i}{}", "r".repeat(255))).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    (
        authenticator::attestation::Attestation::new(&batch.key.to_bytes(), &der(&batch)).unwrap(),
        authenticator::attestation::EnterpriseAttestation::new(
            &enterprise.key.to_bytes(),
            &der(&enterprise),
            &ids,
        )
        .unwrap(),
    )
}

fn rp_hash(rp: &str) -> [u8; 32] {
    Sha256::digest(rp.as_bytes()).into()
}

fn string<const N: usize>(s: &str) -> heapless::String<N> {
    heapless::String::try_from(s).unwrap()
}

/// The largest record a credential can make: RP ID 256, user id 64, icon 128, name and
/// displayName 64, a credential ID carrying a 32-byte credBlob (107 bytes).
fn maximal(rp: &str, i: usize) -> ResidentCredential {
    let mut user_id = format!("user-{i}-").into_bytes();
    user_id.resize(64, b'u');
    let mut user = PublicKeyCredentialUserEntity::from(
        heapless_bytes::Bytes::<64>::try_from(user_id.as_slice()).unwrap(),
    );
    let name = format!("{i}{}", "n".repeat(64))[..64].to_string();
    user.icon = Some(string(&"i".repeat(128)));
    user.name = Some(string(&name));
    user.display_name = Some(string(&name));
    ResidentCredential {
        rp_id: string(rp),
        user,
        id: heapless_bytes::Bytes::try_from(&[i as u8; 107][..]).unwrap(),
        created: i as u32 + 1,
        cred_protect: 1 + (i % 3) as u8,
        sealed: None,
        counter: None,
        listed_only: false,
    }
}

fn long_rp(n: usize) -> String {
    let tail = format!(".rp{n}.example");
    "r".repeat(256 - tail.len()) + &tail
}

fn with_store<S: authenticator::platform::StateStorage, R>(
    storage: &mut S,
    f: impl FnOnce(&mut Store<'_, S>) -> R,
) -> R {
    let mut alloc = Allocation::new();
    let fs = store::mount(&mut alloc, storage).expect("mount");
    let mut store = Store::new(fs);
    store.prepare(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1), TEST_KDF);
    f(&mut store)
}

/// Every device file at its largest (before the credentials come); the settings written.
fn largest_device_files<S: authenticator::platform::StateStorage>(
    store: &mut Store<'_, S>,
) -> Settings {
    store
        .save_large_blob_array(&vec![0xA5; MAX_LARGE_BLOB_ARRAY])
        .unwrap();
    let mut settings = Settings::default();
    for i in 0..settings.min_pin_length_rp_ids.capacity() {
        settings
            .min_pin_length_rp_ids
            .push(string(&long_rp(1000 + i)))
            .unwrap();
    }
    store.save_settings(&settings).unwrap();
    store.save_pin(&PinState::default()).unwrap();
    let (batch, enterprise) = largest_attestations();
    store
        .save_attestation(&batch, &mut rand_chacha::ChaCha20Rng::seed_from_u64(2))
        .unwrap();
    store
        .save_enterprise_attestation(enterprise, &mut rand_chacha::ChaCha20Rng::seed_from_u64(3))
        .unwrap();
    settings
}

#[test]
fn the_pico_holds_its_capacity_with_every_device_file_at_its_largest() {
    let mut flash = PicoFlash::new();
    let capacity = capacity(PICO_BLOCKS);
    eprintln!("Pico capacity: {capacity} discoverable credentials of any size");
    assert!(capacity >= 1000, "the Pico holds 1,000 maximal credentials");
    with_store(&mut flash, |store| {
        let settings = largest_device_files(store);
        assert_eq!(store.remaining_resident_slots(), capacity);

        for i in 0..capacity {
            // A third on one RP, the rest one per RP.
            let rp = if i % 3 == 0 { long_rp(0) } else { long_rp(i) };
            let before = store.remaining_resident_slots();
            store.save_resident(&maximal(&rp, i)).unwrap();
            assert_eq!(store.remaining_resident_slots(), before - 1, "at {i}");
        }
        assert_eq!(store.remaining_resident_slots(), 0);
        assert_eq!(store.resident_count().unwrap(), capacity);
        assert_eq!(
            store.save_resident(&maximal(&long_rp(5000), 5000)),
            Err(StoreError::Full),
            "0 remaining: the next creation is refused"
        );
        // Replacing a user's credential needs no room.
        let mut replacement = maximal(&long_rp(0), 0);
        replacement.created = 100_000;
        store.save_resident(&replacement).unwrap();
        assert_eq!(store.remaining_resident_slots(), 0);

        // A full key still writes everything else, many times over.
        for round in 0..4u8 {
            store
                .save_large_blob_array(&vec![round; MAX_LARGE_BLOB_ARRAY])
                .unwrap();
            store.save_settings(&settings).unwrap();
            store.save_pin(&PinState { retries: 8 - round }).unwrap();
        }
        let mut last = 0;
        for _ in 0..10 * store::COUNTER_STEP {
            let next = store.next_counter().unwrap();
            assert!(next > last);
            last = next;
        }
        // A deletion frees exactly one place, which can be used again.
        store.delete_resident(&maximal(&long_rp(4), 4)).unwrap();
        assert_eq!(store.remaining_resident_slots(), 1);
        store.save_resident(&maximal(&long_rp(6000), 6000)).unwrap();
        assert_eq!(store.remaining_resident_slots(), 0);
    });

    // After a power cycle every record reads back whole.
    with_store(&mut flash, |store| {
        assert_eq!(store.resident_count().unwrap(), capacity);
        let one_rp = store.residents(&rp_hash(&long_rp(0))).unwrap();
        assert_eq!(one_rp.len(), capacity.div_ceil(3));
        assert_eq!(one_rp[0].created, 100_000, "newest first");
        for i in [1, 2, 5, capacity - 1] {
            let rp = if i % 3 == 0 { long_rp(0) } else { long_rp(i) };
            assert_eq!(store.residents(&rp_hash(&rp)).unwrap(), [maximal(&rp, i)]);
        }
        assert!(store.residents(&rp_hash(&long_rp(4))).unwrap().is_empty());
        assert_eq!(
            store.large_blob_array().unwrap(),
            vec![3; MAX_LARGE_BLOB_ARRAY]
        );
    });
}

#[test]
fn the_host_state_fills_to_its_exact_capacity() {
    // The virtual key's 16 MiB image.
    let mut storage = RamStorageOf::<4096>::default();
    let capacity = capacity(4096);
    eprintln!("host capacity: {capacity} discoverable credentials of any size");
    with_store(&mut storage, |store| {
        for i in 0..capacity {
            store.save_resident(&maximal(&long_rp(i % 100), i)).unwrap();
        }
        assert_eq!(store.remaining_resident_slots(), 0);
        assert_eq!(
            store.save_resident(&maximal("one.more.example", 0)),
            Err(StoreError::Full)
        );
    });
    with_store(&mut storage, |store| {
        assert_eq!(store.resident_count().unwrap(), capacity);
        assert_eq!(store.rp_count().unwrap(), 100);
        assert_eq!(store.remaining_resident_slots(), 0);
    });
}

#[test]
fn a_capacity_limit_is_exact_and_keeps_what_is_stored() {
    let mut storage = RamStorage::default();
    with_store(&mut storage, |store| {
        for i in 0..7 {
            store.save_resident(&maximal("a.example", i)).unwrap();
        }
    });
    with_store(&mut storage, |store| {
        store.set_capacity_limit(5);
        assert_eq!(store.remaining_resident_slots(), 0);
        assert_eq!(
            store.resident_count().unwrap(),
            7,
            "nothing stored is dropped"
        );
        assert_eq!(
            store.save_resident(&maximal("a.example", 100)),
            Err(StoreError::Full)
        );
        store.save_resident(&maximal("a.example", 3)).unwrap();
        store.set_capacity_limit(10);
        assert_eq!(store.remaining_resident_slots(), 3);
    });
}

/// A key on Pico flash with `stored` discoverable credentials made through requests: `one_rp`
/// of them on one RP, the others one per RP. Returns what a discovery getAssertion, a
/// getAssertion with an allow list and a discoverable makeCredential cost on storage.
fn costs_with(stored: usize, one_rp: usize) -> [(usize, usize, usize); 3] {
    let mut flash = PicoFlash::new();
    let counts = flash.counts.clone();
    with_key(&mut flash, &Knobs::default(), 7, |key| {
        let mut first_id = Vec::new();
        for i in 0..stored {
            let rp = if i < one_rp {
                "shared.example".to_string()
            } else {
                format!("rp{i}.example")
            };
            let user = format!("user-{i}").into_bytes();
            let (status, body) = ctap2(
                key,
                0x01,
                Some(make_credential_request(&rp, &user, &[-7], true)),
            );
            assert_eq!(status, 0, "credential {i}");
            if i == 0 {
                first_id = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap())
                    .credential_id;
            }
        }
        let mut measure = |request: Value, command: u8| {
            let before = counts.snapshot();
            let (status, _) = ctap2(key, command, Some(request));
            assert_eq!(status, 0);
            let after = counts.snapshot();
            (after.0 - before.0, after.1 - before.1, after.2 - before.2)
        };
        [
            measure(get_assertion_request("shared.example", &[1; 32], &[]), 0x02),
            measure(
                get_assertion_request("shared.example", &[2; 32], &[&first_id]),
                0x02,
            ),
            measure(
                make_credential_request("shared.example", b"newcomer", &[-7], true),
                0x01,
            ),
        ]
    })
}

#[test]
fn what_a_command_touches_does_not_grow_with_what_is_stored() {
    let small = costs_with(10, 3);
    let large = costs_with(1000, 300);
    eprintln!("storage cost (bytes read, programs, erases) with 10 stored: {small:?}");
    eprintln!("storage cost (bytes read, programs, erases) with 1000 stored: {large:?}");
    for (name, (s, l)) in ["discovery", "allow list", "makeCredential"]
        .iter()
        .zip(small.iter().zip(large.iter()))
    {
        // The same work on the same few blocks: a small constant slack for littlefs's metadata
        // (a commit may land in a fuller metadata block, or trigger a compaction).
        assert!(
            l.0 <= s.0 * 2 + 16 * 1024,
            "{name}: bytes read grew from {} to {}",
            s.0,
            l.0
        );
        assert!(
            l.1 <= s.1 + 32,
            "{name}: programs grew from {} to {}",
            s.1,
            l.1
        );
        assert!(
            l.2 <= s.2 + 2,
            "{name}: erases grew from {} to {}",
            s.2,
            l.2
        );
    }
}

/// The first layout's name for a credential: `/rk/<rp digest>.<user digest>`.
fn first_layout_name(rp_id_hash: &[u8; 32], user_id: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(rp_id_hash);
    hasher.update(user_id);
    let user: [u8; 32] = hasher.finalize().into();
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("/rk/{}.{}", hex(&rp_id_hash[..8]), hex(&user[..8]))
}

/// Rewrite a key's discoverable credentials as the first layout stored them: one 768-byte
/// file each (CBOR map r, u, i, c, zero-padded), no slot files.
fn to_first_layout<S: authenticator::platform::StateStorage>(storage: &mut S, rps: &[&str]) {
    let mut records = Vec::new();
    with_store(storage, |store| {
        for rp in rps {
            records.extend(store.residents(&rp_hash(rp)).unwrap());
        }
    });
    let mut alloc = Allocation::new();
    let fs = Filesystem::mount(&mut alloc, storage).unwrap();
    fs.remove_dir_all(littlefs2::path!("/cr")).unwrap();
    fs.create_dir_all(littlefs2::path!("/rk")).unwrap();
    for record in &records {
        let Value::Map(mut entries) = Value::serialized(record).unwrap() else {
            panic!("a record is a map");
        };
        entries.retain(|(k, _)| k.as_text() != Some("p"));
        let mut bytes = Vec::new();
        ciborium::into_writer(&Value::Map(entries), &mut bytes).unwrap();
        bytes.resize(768, 0);
        let name = first_layout_name(&rp_hash(&record.rp_id), &record.user.id);
        fs.write(
            &littlefs2::path::PathBuf::try_from(name.as_str()).unwrap(),
            &bytes,
        )
        .unwrap();
    }
}

/// A key of the first layout: credentials on two RPs, some with credProtect, a PIN set.
fn first_layout_key() -> (PicoFlash, Vec<(String, Vec<u8>, Value)>) {
    let mut flash = PicoFlash::new();
    let mut made = Vec::new();
    with_key(&mut flash, &Knobs::default(), 3, |key| {
        for i in 0..9u8 {
            let rp = if i < 6 { "one.example" } else { "two.example" };
            let mut request = make_credential_request(rp, &[b'u', i], &[-7], true);
            if let Value::Map(entries) = &mut request {
                entries.push((
                    int(6),
                    map(vec![(text("credProtect"), int(1 + i64::from(i % 3)))]),
                ));
            }
            let (status, body) = ctap2(key, 0x01, Some(request));
            assert_eq!(status, 0);
            let auth_data = parse_auth_data(get(&body.unwrap(), 2).unwrap().as_bytes().unwrap());
            made.push((
                rp.to_string(),
                auth_data.credential_id,
                auth_data.public_key.unwrap(),
            ));
        }
    });
    to_first_layout(&mut flash, &["one.example", "two.example"]);
    (flash, made)
}

/// Every credential made before is stored exactly once, signs, and has its credProtect level.
fn check_migrated(flash: &mut PicoFlash, made: &[(String, Vec<u8>, Value)]) {
    with_store(flash, |store| {
        assert_eq!(
            store.resident_count().unwrap(),
            made.len(),
            "none lost or doubled"
        );
        assert_eq!(store.residents(&rp_hash("one.example")).unwrap().len(), 6);
        assert_eq!(
            store
                .resident_count_of(&rp_hash("one.example"), Visibility::Unprotected)
                .unwrap(),
            2,
            "credProtect levels 2 and 3 stay out of discovery without UV"
        );
    });
    {
        let mut alloc = Allocation::new();
        let fs = Filesystem::mount(&mut alloc, &mut *flash).unwrap();
        assert!(
            !fs.exists(littlefs2::path!("/rk")),
            "the first layout is gone"
        );
    }
    with_key(flash, &Knobs::default(), 4, |key| {
        for (i, (rp, id, cose)) in made.iter().enumerate() {
            let client_data_hash = [i as u8; 32];
            let request = get_assertion_request(rp, &client_data_hash, &[id]);
            if i % 3 == 2 {
                // credProtect 3 needs UV: not asked here, so the credential does not exist.
                let (status, _) = ctap2(key, 0x02, Some(request));
                assert_eq!(status, 0x2E, "credProtect 3 kept through the migration");
                continue;
            }
            let (status, body) = ctap2(key, 0x02, Some(request.clone()));
            assert_eq!(status, 0, "credential {i} signs after the migration");
            let body = body.unwrap();
            let auth_data = get(&body, 2).unwrap().as_bytes().unwrap();
            let signature = get(&body, 3).unwrap().as_bytes().unwrap();
            verify(
                cose,
                &[&auth_data[..], &client_data_hash].concat(),
                signature,
            );
        }
    });
}

#[test]
fn a_key_of_the_first_layout_is_migrated_at_power_up() {
    let (mut flash, made) = first_layout_key();
    check_migrated(&mut flash, &made);
}

#[test]
fn the_migration_survives_a_power_cut_at_every_write() {
    let (image, made) = first_layout_key();
    // How many program/erase operations a whole migration takes.
    let mut probe = image.copy();
    with_store(&mut probe, |_| {});
    let ops = probe.counts.programs.get() + probe.counts.erases.get();
    eprintln!(
        "a migration of {} credentials: {ops} program/erase operations",
        made.len()
    );
    for tear in [false, true] {
        for cut in 1..=ops {
            let mut flash = image.copy();
            flash.counts.budget.set(Some(cut));
            flash.counts.tear.set(tear);
            {
                let mut alloc = Allocation::new();
                if let Ok(fs) = store::mount(&mut alloc, &mut flash) {
                    Store::new(fs)
                        .prepare(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1), TEST_KDF);
                }
            }
            // Power back: the next power-up finishes the migration.
            flash.counts.budget.set(None);
            with_store(&mut flash, |store| {
                assert_eq!(
                    store.resident_count().unwrap(),
                    made.len(),
                    "cut at operation {cut} (torn: {tear}): none lost or doubled"
                );
            });
            if cut % 97 == 1 {
                // The full check (signatures) on a sample; the count on every cut.
                check_migrated(&mut flash, &made);
            }
        }
    }
}

/// Installing the enterprise attestation is one file write: a power cut at any program or
/// erase of it, clean or torn, leaves either no record or the whole of it (never a record that
/// reads wrong, which would fail every later read), and the batch is untouched.
#[test]
fn the_enterprise_record_survives_a_power_cut_at_every_write() {
    let (batch, enterprise) = largest_attestations();
    let mut base = PicoFlash::new();
    with_store(&mut base, |store| {
        store
            .save_attestation(&batch, &mut rand_chacha::ChaCha20Rng::seed_from_u64(2))
            .unwrap()
    });
    let mut probe = base.copy();
    with_store(&mut probe, |store| {
        store
            .save_enterprise_attestation(
                enterprise.clone(),
                &mut rand_chacha::ChaCha20Rng::seed_from_u64(3),
            )
            .unwrap()
    });
    let ops = probe.counts.programs.get() + probe.counts.erases.get();
    let (mut none, mut whole) = (0, 0);
    for tear in [false, true] {
        for cut in 1..=ops {
            let mut flash = base.copy();
            flash.counts.budget.set(Some(cut));
            flash.counts.tear.set(tear);
            {
                let mut alloc = Allocation::new();
                if let Ok(fs) = store::mount(&mut alloc, &mut flash) {
                    // A key boots (prepare reads the vault, writing nothing here), then installs.
                    let mut store = Store::new(fs);
                    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
                    store.prepare(&mut rng, TEST_KDF);
                    let _ = store.save_enterprise_attestation(enterprise.clone(), &mut rng);
                }
            }
            flash.counts.budget.set(None);
            with_store(&mut flash, |store| {
                let context = format!("cut at operation {cut} (torn: {tear})");
                match store.enterprise_attestation().expect(&context) {
                    None => none += 1,
                    Some(read) => {
                        assert_eq!(read, &enterprise, "{context}");
                        whole += 1;
                    }
                }
                assert_eq!(store.attestation().unwrap(), Some(&batch), "{context}");
            });
        }
    }
    eprintln!("{ops} operations: {none} cuts left no record, {whole} the whole one");
    assert!(none > 0 && whole > 0, "both outcomes seen");
}

#[test]
fn a_registration_rewrites_its_slot_file_in_one_pass() {
    // littlefs copies a file's block when it is written, and again after every seek: a slot
    // written as entry, record and generation where they lie cost up to three erases. Written
    // whole, front to back, it costs one (and littlefs's metadata an occasional compaction).
    let mut flash = PicoFlash::new();
    let counts = flash.counts.clone();
    with_key(&mut flash, &Knobs::default(), 9, |key| {
        let mut register = |i: usize| {
            let user = format!("user-{i}").into_bytes();
            let request =
                make_credential_request(&format!("rp{}.example", i % 7), &user, &[-7], true);
            assert_eq!(ctap2(key, 0x01, Some(request)).0, 0, "credential {i}");
        };
        for i in 0..20 {
            register(i);
        }
        let before = counts.erases.get();
        for i in 20..220 {
            register(i);
        }
        let erases = counts.erases.get() - before;
        eprintln!("200 discoverable registrations: {erases} erases");
        assert!(erases <= 240, "{erases} erases for 200 registrations");
    });
}

#[test]
fn a_replaced_record_leaves_nothing_of_the_longer_one() {
    let mut flash = PicoFlash::new();
    let rp = "replace.example";
    let long = maximal(rp, 1);
    let mut short = long.clone();
    short.user.icon = None;
    short.user.name = Some(string("s"));
    short.user.display_name = None;
    with_store(&mut flash, |store| {
        store.save_resident(&long).unwrap();
        store.save_resident(&short).unwrap();
        assert_eq!(store.residents(&rp_hash(rp)).unwrap(), vec![short.clone()]);
    });
    // The longer record's name and displayName (64 bytes each, runs of 'n') and icon (128 'i's)
    // end well past the shorter record: none of them is left in the slot file.
    // (The block the file was copied from keeps it until littlefs reuses it: a reset's wipe is
    // another matter.)
    let mut alloc = Allocation::new();
    let fs = store::mount(&mut alloc, &mut flash).expect("mount");
    let file = fs
        .read::<4096>(&littlefs2::path::PathBuf::try_from("/cr/0/0").unwrap())
        .expect("the slot file");
    for run in ["i".repeat(16), "n".repeat(16)] {
        assert!(
            !file.windows(run.len()).any(|w| w == run.as_bytes()),
            "the replaced record's {run} is still in the slot file"
        );
    }
}

/// A file's bytes, read through littlefs alone (`None` if there is none).
fn raw_file(flash: &mut PicoFlash, name: &str) -> Option<Vec<u8>> {
    let mut alloc = Allocation::new();
    let fs = Filesystem::mount(&mut alloc, flash).unwrap();
    let path = littlefs2::path::PathBuf::try_from(name).unwrap();
    fs.open_file_and_then(&path, |f| {
        let mut bytes = vec![0u8; f.len()?];
        let n = f.read(&mut bytes)?;
        bytes.truncate(n);
        Ok(bytes)
    })
    .ok()
}

/// Write a file through littlefs alone, as a firmware that knows nothing of it would leave it.
fn put_raw_file(flash: &mut PicoFlash, name: &str, bytes: &[u8]) {
    let mut alloc = Allocation::new();
    let fs = Filesystem::mount(&mut alloc, flash).unwrap();
    let path = littlefs2::path::PathBuf::try_from(name).unwrap();
    fs.write(&path, bytes).unwrap();
}

/// Run the index's idle work to its end, storing a copy (as a quiet key does).
fn idle(store: &mut Store<'_, PicoFlash>) {
    while store.index_step(true).is_some() {}
}

/// A key holding `n` maximal credentials of one RP, made without the idle work: no copy of
/// the index is stored.
fn key_with(n: usize) -> PicoFlash {
    let mut flash = PicoFlash::new();
    with_store(&mut flash, |store| {
        for i in 0..n {
            store.save_resident(&maximal(&long_rp(0), i)).unwrap();
        }
    });
    flash
}

/// Every credential made by [`key_with`] and after, by ID.
fn holds_all(store: &mut Store<'_, PicoFlash>, made: impl Iterator<Item = usize>) -> bool {
    made.into_iter()
        .all(|i| store.find_resident(&[i as u8; 107]).unwrap().is_some())
}

/// The bytes a power-up reads from the partition (the vault aside).
fn power_up_reads(flash: &mut PicoFlash) -> usize {
    let before = flash.counts.read_bytes.get();
    with_store(flash, |_| {});
    flash.counts.read_bytes.get() - before
}

#[test]
fn a_power_up_reads_the_index_from_its_copy() {
    let mut flash = key_with(40);
    let without = power_up_reads(&mut flash);
    with_store(&mut flash, idle);
    let with = power_up_reads(&mut flash);
    eprintln!("power-up with 40 stored reads {without} B without the index copy, {with} B with it");
    assert!(
        with * 4 < without,
        "{with} B read with the copy, {without} B without"
    );
    with_store(&mut flash, |store| {
        assert_eq!(store.resident_count().unwrap(), 40);
        assert!(holds_all(store, 0..40));
        let rp = rp_hash(&long_rp(0));
        assert_eq!(store.resident_count_of(&rp, Visibility::All).unwrap(), 40);
        // A sign-in's counter rewrite keeps the copy: the next power-up still reads it.
        let (reference, record) = store
            .next_resident_record(&rp, Visibility::All, None)
            .unwrap()
            .unwrap();
        assert!(store.rewrite_resident(&reference, &record).unwrap());
    });
    let after_sign_in = power_up_reads(&mut flash);
    assert!(
        after_sign_in * 4 < without,
        "{after_sign_in} B read after a sign-in"
    );
    // A registration removes it (and a quiet while stores it again)...
    with_store(&mut flash, |store| {
        store.save_resident(&maximal(&long_rp(0), 40)).unwrap();
    });
    let after_registration = power_up_reads(&mut flash);
    assert!(
        after_registration >= without,
        "{after_registration} B read after a registration"
    );
    with_store(&mut flash, idle);
    let again = power_up_reads(&mut flash);
    assert!(again * 4 < without, "{again} B read once stored again");
    with_store(&mut flash, |store| assert!(holds_all(store, 0..41)));
}

/// A copy that no longer says what the slot files say (left by a firmware that knew nothing
/// of it, which then made credentials): a change first checks every slot file, so it
/// overwrites none, and the idle work corrects the index and removes the copy.
#[test]
fn a_stale_index_copy_is_never_trusted_over_the_slot_files() {
    let mut flash = key_with(20);
    with_store(&mut flash, idle);
    let stale = raw_file(&mut flash, "/cr/index").unwrap();
    with_store(&mut flash, |store| {
        for i in 20..30 {
            store.save_resident(&maximal(&long_rp(0), i)).unwrap();
        }
    });
    put_raw_file(&mut flash, "/cr/index", &stale);
    with_store(&mut flash, |store| {
        // Until checked, the index is the copy's: it misses the ten newer credentials...
        assert_eq!(store.resident_count().unwrap(), 20);
        // ...but a registration starts from the slot files: it takes a free slot.
        store.save_resident(&maximal(&long_rp(0), 30)).unwrap();
        assert_eq!(store.resident_count().unwrap(), 31);
        assert!(holds_all(store, 0..31));
    });
    with_store(&mut flash, |store| {
        assert_eq!(store.resident_count().unwrap(), 31);
        assert!(holds_all(store, 0..31));
    });
    // Without a change, the idle check alone corrects the index and removes the copy.
    with_store(&mut flash, idle);
    put_raw_file(&mut flash, "/cr/index", &stale);
    with_store(&mut flash, |store| {
        assert_eq!(store.resident_count().unwrap(), 20);
        while store.index_step(false) == Some(true) {}
        assert_eq!(store.resident_count().unwrap(), 31);
        assert!(holds_all(store, 0..31));
    });
    assert!(raw_file(&mut flash, "/cr/index").is_none());
    // One that is no copy at all (cut short): the slot files decide at once, and it goes.
    put_raw_file(&mut flash, "/cr/index", &stale[..stale.len() - 1]);
    with_store(&mut flash, |store| {
        assert_eq!(store.resident_count().unwrap(), 31);
    });
    assert!(raw_file(&mut flash, "/cr/index").is_none());
}

/// The copy's write and its removal before a registration, cut at every program and erase,
/// clean and torn: the next power-up's index (from a copy or not) says what the slot files
/// say, and no credential is lost.
#[test]
fn the_index_copy_survives_a_power_cut_at_every_write() {
    let image = key_with(12);
    let session = |flash: &mut PicoFlash| {
        let mut alloc = Allocation::new();
        if let Ok(fs) = store::mount(&mut alloc, flash) {
            let mut store = Store::new(fs);
            store.prepare(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1), TEST_KDF);
            idle(&mut store);
            let _ = store.save_resident(&maximal(&long_rp(0), 12));
            idle(&mut store);
        }
    };
    let mut probe = image.copy();
    session(&mut probe);
    let ops = probe.counts.programs.get() + probe.counts.erases.get();
    eprintln!("the index copy's session: {ops} program/erase operations");
    for tear in [false, true] {
        for cut in 1..=ops {
            let mut flash = image.copy();
            flash.counts.budget.set(Some(cut));
            flash.counts.tear.set(tear);
            session(&mut flash);
            flash.counts.budget.set(None);
            with_store(&mut flash, |store| {
                let at_power_up = store.resident_count().unwrap();
                let generation = store.resident_generation().unwrap();
                assert!(
                    holds_all(store, 0..12),
                    "cut {cut} (torn: {tear}): none lost"
                );
                while store.index_step(false) == Some(true) {}
                assert_eq!(
                    (
                        store.resident_count().unwrap(),
                        store.resident_generation().unwrap()
                    ),
                    (at_power_up, generation),
                    "cut {cut} (torn: {tear}): the index at power-up is the slot files'"
                );
            });
        }
    }
}

/// A key two slot files short of full, every device file at its largest: the idle work
/// stores no copy (it would take blocks of the device files' reserve), and the device files
/// are still written many times over and the remaining count is still exact.
#[test]
fn the_index_copy_never_takes_room_the_store_counts_on() {
    let mut flash = PicoFlash::new();
    let capacity = capacity(PICO_BLOCKS);
    let settings = with_store(&mut flash, |store| {
        let settings = largest_device_files(store);
        for i in 0..capacity - 2 * store::SLOTS_PER_FILE {
            store.save_resident(&maximal(&long_rp(i), i)).unwrap();
        }
        settings
    });
    with_store(&mut flash, idle);
    assert!(
        raw_file(&mut flash, "/cr/index").is_none(),
        "no room: no copy"
    );
    with_store(&mut flash, |store| {
        for round in 0..4u8 {
            store
                .save_large_blob_array(&vec![round; MAX_LARGE_BLOB_ARRAY])
                .unwrap();
            store.save_settings(&settings).unwrap();
            store.save_pin(&PinState { retries: 8 - round }).unwrap();
        }
        assert_eq!(store.remaining_resident_slots(), 2 * store::SLOTS_PER_FILE);
        for i in capacity - 2 * store::SLOTS_PER_FILE..capacity {
            store.save_resident(&maximal(&long_rp(i), i)).unwrap();
        }
        assert_eq!(store.remaining_resident_slots(), 0);
        assert_eq!(
            store.save_resident(&maximal(&long_rp(5000), 5000)),
            Err(StoreError::Full)
        );
        store
            .save_large_blob_array(&vec![9; MAX_LARGE_BLOB_ARRAY])
            .unwrap();
    });
    // A key with room stores one, and it takes none of the count either.
    let mut roomy = key_with(40);
    with_store(&mut roomy, |store| {
        let before = store.remaining_resident_slots();
        idle(store);
        assert_eq!(store.remaining_resident_slots(), before);
    });
    assert!(raw_file(&mut roomy, "/cr/index").is_some());
}
