//! Tests of the EMD format: round trips, hostile bytes, the MAC, and the
//! worked example of `formats/EMD.md`.

use proptest::prelude::*;

use super::format::*;
use crate::crypto::wrap::WRAPPED_LEN;
use crate::crypto::{Cipher, VolumeKey};
use crate::keys::KeyId;
use crate::signature::Sign;
use crate::testutil::{expect_listing, listing, unhexdump};

/// The `hexdump` block of `formats/EMD.md` that holds the version-1 example
/// (the ones before it: the worked example, then the data area's).
const VERSION_1_LISTING: usize = 5;

/// The volume key of the worked example: bytes 0x00..0x3f.
pub(crate) fn example_key() -> VolumeKey {
    let bytes: Vec<u8> = (0u8..64).collect();
    VolumeKey::from_bytes(Cipher::Aes256Xts, &bytes).unwrap()
}

/// The EMD of `formats/EMD.md`'s worked example: fixed values everywhere, so
/// that its bytes never change.
pub(crate) fn example() -> Emd {
    let mut e = Emd {
        version: VERSION,
        generation: 3,
        dirty: false,
        checkpoint: None,
        uuid: [
            0x6b, 0x1f, 0x2c, 0x3d, 0x4e, 0x5f, 0x40, 0x71, 0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7,
            0xe8, 0xf9,
        ],
        created: 1_795_000_000,
        cipher: Cipher::Aes256Xts,
        state: State::Enabled,
        sector_size: 4096,
        data_offset: 1 << 20,
        data_size: 62 << 20,
        data_len: (62 << 20) - 1000,
        data_version: 2,
        clone_of: Some([0x11; 16]),
        index: None,
        state_id: None,
        label: "payroll".to_string(),
        provenance: Some(Provenance {
            origin: Origin::Volume {
                uuid: [0x11; 16],
                data_version: 5,
            },
            started: Timestamp {
                secs: 1_795_000_100,
                nanos: 250_000_000,
            },
            finished: Timestamp {
                secs: 1_795_000_160,
                nanos: 0,
            },
            bytes: (62 << 20) - 1000,
            plaintext_blake3: Some([0xab; 32]),
            data_version: 2,
        }),
        slots: vec![
            Slot {
                role: Role::Owner,
                id: KeyId::parse("alice.k1").unwrap(),
                public: [0xa1; 32],
                wrapped: [0xa2; WRAPPED_LEN],
            },
            Slot {
                role: Role::User,
                id: KeyId::parse("bob.bob").unwrap(),
                public: [0xb1; 32],
                wrapped: [0xb2; WRAPPED_LEN],
            },
        ],
        mac: [0; 32],
        signature: None,
    };
    e.seal(&example_key());
    e
}

/// The signer of the worked examples: `backup.cron`, secret key bytes
/// `0x70 0x71 ... 0x8f` (`formats/SIGNATURE.md`).
pub(crate) fn example_signer() -> crate::keys::PrivateKey {
    let secret: [u8; 32] = std::array::from_fn(|i| 0x70 + i as u8);
    crate::keys::PrivateKey::from_secret(KeyId::parse("backup.cron").unwrap(), secret)
}

#[test]
fn the_worked_example_in_formats_emd_md_parses_to_the_documented_fields() {
    expect_listing("formats/EMD.md", 0, &example().encode()[..]);
    let listing = listing("formats/EMD.md", 0);
    let bytes = unhexdump(&listing);
    assert_eq!(bytes.len(), EMD_SIZE);
    let e = Emd::parse(&bytes).expect("the documented example parses");
    assert_eq!(e, example());
    assert_eq!(e.uuid_string(), "6b1f2c3d-4e5f-4071-8293-a4b5c6d7e8f9");
    assert_eq!(e.label, "payroll");
    assert_eq!(e.owner().id.as_str(), "alice.k1");
    assert_eq!(e.slots[1].role, Role::User);
    assert!(e.mac_ok(&example_key()), "the documented MAC checks out");
}

/// The version-1 example of `formats/EMD.md` (the worked example of the
/// first format): evfs still reads it, with the fields version 2 added at
/// their version-1 meaning, checks its MAC over the version-1 range, and
/// writes it back unchanged as long as no key holder re-seals it.
#[test]
fn the_version_1_example_in_formats_emd_md_still_parses() {
    let bytes = unhexdump(&listing("formats/EMD.md", VERSION_1_LISTING));
    let e = Emd::parse(&bytes).expect("the version-1 example parses");
    assert_eq!(e.version, 1);
    assert_eq!(e.uuid_string(), "6b1f2c3d-4e5f-4071-8293-a4b5c6d7e8f9");
    assert_eq!(
        (e.data_len, e.data_version, e.clone_of),
        (e.data_size, 0, None)
    );
    let p = e.provenance.as_ref().unwrap();
    assert_eq!(
        (p.origin, p.bytes, p.data_version),
        (
            Origin::Volume {
                uuid: [0x11; 16],
                data_version: 0
            },
            62 << 20,
            0
        )
    );
    assert!(e.mac_ok(&example_key()), "the version-1 MAC checks out");
    assert_eq!(&e.encode()[..], &bytes[..], "re-encoded as version 1");
    let mut resealed = e.clone();
    resealed.seal(&example_key());
    assert_eq!(resealed.version, VERSION);
    assert!(
        Emd::parse(&resealed.encode()[..])
            .unwrap()
            .mac_ok(&example_key())
    );
}

#[test]
fn encode_then_parse_round_trips() {
    let mut e = example();
    e.dirty = true;
    e.checkpoint = Some(Checkpoint {
        task: Task::Restore,
        run_id: [3; 16],
        source_uuid: [4; 16],
        bytes_done: 10,
        total: 20,
        source_generation: 9,
    });
    e.provenance.as_mut().unwrap().plaintext_blake3 = None;
    let back = Emd::parse(&e.encode()[..]).unwrap();
    assert_eq!(back, e);
    let mut bare = example();
    bare.provenance = None;
    bare.label.clear();
    assert_eq!(Emd::parse(&bare.encode()[..]).unwrap(), bare);
}

#[test]
fn every_single_flipped_byte_is_detected() {
    let bytes = example().encode();
    for i in 0..EMD_SIZE {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert!(
            Emd::parse(&bad[..]).is_err(),
            "flip at byte {i} went unnoticed"
        );
    }
}

/// Change a body field, fix the checksum up as an attacker would, and check
/// that the parser accepts it but the MAC does not.
fn tamper(mutate: impl Fn(&mut Emd)) {
    let key = example_key();
    let mut e = example();
    mutate(&mut e);
    let bytes = e.encode(); // same stored MAC, fresh checksum
    let parsed = Emd::parse(&bytes[..]).expect("checksum was fixed up");
    assert!(!parsed.mac_ok(&key), "tampering went unnoticed by the MAC");
}

#[test]
fn tampering_with_state_slots_or_geometry_fails_the_mac() {
    tamper(|e| e.state = State::Disabled);
    tamper(|e| {
        e.slots[0].role = Role::User;
        e.slots[1].role = Role::Owner;
    });
    tamper(|e| e.slots.truncate(1));
    tamper(|e| e.slots[1].public[0] ^= 1);
    tamper(|e| e.data_size += 4096);
    tamper(|e| e.data_offset += 4096);
    tamper(|e| e.sector_size = 512);
    tamper(|e| e.uuid[0] ^= 1);
    tamper(|e| e.label = "other".into());
    tamper(|e| e.provenance.as_mut().unwrap().plaintext_blake3 = Some([0; 32]));
    tamper(|e| e.provenance = None);
    tamper(|e| e.data_version += 1);
    tamper(|e| e.data_len -= 1);
    tamper(|e| e.clone_of = None);
    tamper(|e| {
        if let Some(p) = e.provenance.as_mut() {
            p.origin = Origin::Plain;
        }
    });
}

#[test]
fn the_mutable_header_is_outside_the_mac() {
    let key = example_key();
    let mut e = example();
    e.dirty = true;
    e.generation += 7;
    e.checkpoint = Some(Checkpoint {
        task: Task::Backup,
        run_id: [1; 16],
        source_uuid: [2; 16],
        bytes_done: 0,
        total: 1,
        source_generation: 5,
    });
    assert!(Emd::parse(&e.encode()[..]).unwrap().mac_ok(&key));
}

/// The signature block as `formats/EMD.md` lays it out, and the message it
/// signs: the context, then bytes 0..16 and 128..15872 of the copy, so that
/// the mutable header stays outside.
#[test]
fn the_signature_block_and_the_signed_message_are_as_documented() {
    let signer = example_signer();
    let mut e = example();
    e.sign(|m| signer.sign(m));
    let b = e.encode();
    let block = &b[15872..16320];
    assert_eq!(&block[0..4], b"EVSG");
    assert_eq!(block[4], 1, "block version");
    assert_eq!(block[5], 11, "key ID length");
    assert_eq!(&block[6..8], &[0, 0]);
    assert_eq!(&block[8..19], b"backup.cron");
    assert!(block[19..72].iter().all(|&x| x == 0), "NUL-padded key ID");
    assert_eq!(block[72..104], signer.public());
    assert!(block[168..].iter().all(|&x| x == 0), "zeros to the end");
    // The message, built from the bytes alone.
    let message = |b: &[u8]| {
        [
            b"evfs EMD signature v1\0".as_slice(),
            &b[0..16],
            &b[128..15872],
        ]
        .concat()
    };
    assert_eq!(message(&b[..]), e.signed_message());
    let signature: [u8; 64] = block[104..168].try_into().unwrap();
    assert!(crate::crypto::sign::verify(
        &signer.public(),
        &message(&b[..]),
        &signature
    ));
    // The mutable header is outside: a dirty bit, a checkpoint, another
    // generation (a raw clone, `check -r`) keep the signature valid.
    let mut moved = Emd::parse(&b[..]).unwrap();
    moved.dirty = true;
    moved.generation += 9;
    moved.checkpoint = Some(Checkpoint {
        task: Task::Backup,
        run_id: [1; 16],
        source_uuid: [2; 16],
        bytes_done: 0,
        total: 1,
        source_generation: 5,
    });
    let moved_bytes = moved.encode();
    assert_ne!(moved_bytes[..128], b[..128]);
    let back = Emd::parse(&moved_bytes[..]).unwrap();
    assert_eq!(back.signature_valid(), Some(true));
    assert_eq!(message(&moved_bytes[..]), message(&b[..]));
    // A changed body byte breaks it; an unsigned copy has a zero block.
    let mut relabelled = back.clone();
    relabelled.label = "other".into();
    assert_eq!(relabelled.signature_valid(), Some(false));
    assert!(example().encode()[15872..16320].iter().all(|&x| x == 0));
}

/// The aes-128-xts key of the data-area example: bytes 0x00..0x1f.
fn example_key_128() -> VolumeKey {
    let bytes: Vec<u8> = (0u8..32).collect();
    VolumeKey::from_bytes(Cipher::Aes128Xts, &bytes).unwrap()
}

/// Sector `n` of all-zero plaintext as the `xts-mode` crate encrypts it
/// with the documented layout: the first half of the key encrypts the data,
/// the second the tweak, and the tweak is `n` as 16 little-endian bytes.
fn xts_mode_sector(key: &[u8], n: u64, sector_size: usize) -> Vec<u8> {
    use aes::cipher::KeyInit;
    use aes::{Aes128, Aes256};
    use xts_mode::Xts128;
    let (data_key, tweak_key) = key.split_at(key.len() / 2);
    let mut tweak = [0u8; 16];
    tweak[..8].copy_from_slice(&n.to_le_bytes());
    let mut sector = vec![0u8; sector_size];
    match key.len() {
        64 => Xts128::<Aes256>::new(
            Aes256::new_from_slice(data_key).unwrap(),
            Aes256::new_from_slice(tweak_key).unwrap(),
        )
        .encrypt_sector(&mut sector, tweak.into()),
        32 => Xts128::<Aes128>::new(
            Aes128::new_from_slice(data_key).unwrap(),
            Aes128::new_from_slice(tweak_key).unwrap(),
        )
        .encrypt_sector(&mut sector, tweak.into()),
        n => panic!("a key of {n} bytes"),
    }
    sector
}

/// The data-area example of `formats/EMD.md`: the first 32 bytes of the
/// ciphertext of sectors 0 and 1 of all-zero plaintext in 4096-byte
/// sectors, under the example key as aes-256-xts (listings 1 and 2) and its
/// first 32 bytes as aes-128-xts (listings 3 and 4); the same from the code
/// and from the `xts-mode` crate; and evfs's reader decrypts the two
/// sectors, put at the data offset of a device, to zeros.
#[test]
fn the_data_area_example_in_formats_emd_md_is_xts_by_sector_of_the_data_area() {
    const SECTOR: usize = 4096;
    for (key, first_listing) in [(example_key(), 1), (example_key_128(), 3)] {
        let mut ct = vec![0u8; 2 * SECTOR];
        key.xts().encrypt_sectors(&mut ct, SECTOR, 0);
        expect_listing("formats/EMD.md", first_listing, &ct[..32]);
        expect_listing(
            "formats/EMD.md",
            first_listing + 1,
            &ct[SECTOR..SECTOR + 32],
        );
        for n in 0..2u64 {
            let oracle = xts_mode_sector(key.expose(), n, SECTOR);
            let at = n as usize * SECTOR;
            assert!(
                ct[at..at + SECTOR] == oracle[..],
                "{:?} sector {n}",
                key.cipher()
            );
            let documented = unhexdump(&listing("formats/EMD.md", first_listing + n as usize));
            assert_eq!(
                documented[..],
                oracle[..32],
                "{:?} sector {n}",
                key.cipher()
            );
        }
    }

    // The reader: the sectors at byte `data offset` of a device are sectors
    // 0 and 1, not the device's 512-byte (or 4096-byte) sectors 2048 (256).
    let mut e = example();
    e.data_len = (2 * SECTOR) as u64;
    let mut ct = vec![0u8; 2 * SECTOR];
    example_key().xts().encrypt_sectors(&mut ct, SECTOR, 0);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("vol");
    let mut image = vec![0u8; e.data_offset as usize];
    image.extend_from_slice(&ct);
    std::fs::write(&path, &image).unwrap();
    let dev = crate::volume::Device::open_read(&path).unwrap();
    let mut plain = Vec::new();
    crate::ops::read::Plaintext::of_data(&dev, &e, &example_key())
        .write_to(1, &mut plain, &crate::pipeline::Meter::default())
        .unwrap();
    assert!(plain == vec![0u8; 2 * SECTOR], "decrypted to zeros");
    let mut device_numbered = ct.clone();
    example_key().xts().decrypt_sectors(
        &mut device_numbered,
        SECTOR,
        e.data_offset / SECTOR as u64,
    );
    assert!(
        device_numbered != plain,
        "the device's sector numbers would not do"
    );
}

#[test]
fn invalid_tables_are_refused() {
    let mut two_owners = example();
    two_owners.slots[1].role = Role::Owner;
    assert_eq!(
        Emd::parse(&two_owners.encode()[..]),
        Err(EmdError::Field("owner"))
    );
    let mut bad_recovery = example();
    bad_recovery.slots[1].role = Role::Recovery;
    assert_eq!(
        Emd::parse(&bad_recovery.encode()[..]),
        Err(EmdError::Field("recovery"))
    );
    let mut dup = example();
    dup.slots[1].id = dup.slots[0].id.clone();
    dup.slots[1].role = Role::User;
    assert_eq!(Emd::parse(&dup.encode()[..]), Err(EmdError::Field("slots")));
}

#[test]
fn short_or_foreign_input_is_not_an_emd() {
    assert_eq!(Emd::parse(b""), Err(EmdError::NoMagic));
    assert_eq!(Emd::parse(&[0u8; EMD_SIZE]), Err(EmdError::NoMagic));
    // A newer version than this build reads is named as such, before its
    // layout is judged; version 0 never existed.
    for (version, err) in [(3, EmdError::Newer(3)), (0, EmdError::Version(0))] {
        let mut b = example().encode();
        b[8] = version;
        assert_eq!(Emd::parse(&b[..]), Err(err.clone()));
    }
    assert!(EmdError::Newer(3).to_string().contains("newer format"));
}

#[test]
fn a_data_length_beyond_the_data_area_is_refused() {
    let mut e = example();
    e.data_len = e.data_size + 1;
    assert_eq!(
        Emd::parse(&e.encode()[..]),
        Err(EmdError::Field("data_len"))
    );
}

/// Offset + size near 2^64 passed the parser, and `device_size_for` (size
/// plus 2 MiB) could then overflow in a restore of a hostile stream.
#[test]
fn an_absurd_data_area_is_refused_so_layout_sums_cannot_overflow() {
    let mut e = example();
    e.data_size = u64::MAX - (u64::MAX % 4096) - (1 << 20);
    assert_eq!(
        Emd::parse(&e.encode()[..]),
        Err(EmdError::Field("data_size"))
    );
    e.data_size = MAX_DATA_END - e.data_offset + 4096;
    assert_eq!(
        Emd::parse(&e.encode()[..]),
        Err(EmdError::Field("data_size"))
    );
    e.data_size = MAX_DATA_END - e.data_offset;
    let parsed = Emd::parse(&e.encode()[..]).unwrap();
    let device = crate::volume::layout::device_size_for(parsed.data_size);
    assert!(device > parsed.data_size && device < i64::MAX as u64);
}

fn arb_emd() -> impl Strategy<Value = Emd> {
    (
        any::<u64>(),
        any::<bool>(),
        any::<[u8; 16]>(),
        prop_oneof![Just(Cipher::Aes256Xts), Just(Cipher::Aes128Xts)],
        any::<bool>(),
        prop_oneof![Just(512u32), Just(4096u32)],
        1u64..1 << 30,
        "[a-z0-9 ]{0,64}",
        1usize..MAX_SLOTS,
        proptest::option::of((
            any::<[u8; 16]>(),
            any::<u64>(),
            proptest::option::of(any::<[u8; 32]>()),
        )),
        proptest::option::of((
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )),
        (
            any::<u64>(),
            proptest::option::of(any::<[u8; 16]>()),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                generation,
                dirty,
                uuid,
                cipher,
                enabled,
                sector_size,
                sectors,
                label,
                n,
                prov,
                checkpoint,
                (data_version, clone_of, prov_version, plain, restore),
            )| {
                let slots = (0..n)
                    .map(|i| Slot {
                        role: if i == 0 { Role::Owner } else { Role::User },
                        id: KeyId::parse(&format!("user{i}.key")).unwrap(),
                        public: [i as u8; 32],
                        wrapped: [i as u8 ^ 0x5a; WRAPPED_LEN],
                    })
                    .collect();
                let data_size = sectors * u64::from(sector_size);
                Emd {
                    version: VERSION,
                    generation,
                    dirty,
                    checkpoint: checkpoint.map(|(run_id, source_uuid, a, b, source_generation)| {
                        Checkpoint {
                            task: if restore { Task::Restore } else { Task::Backup },
                            run_id,
                            source_uuid,
                            bytes_done: a.min(b),
                            total: a.max(b),
                            source_generation,
                        }
                    }),
                    uuid,
                    created: 1_700_000_000,
                    cipher,
                    state: if enabled {
                        State::Enabled
                    } else {
                        State::Disabled
                    },
                    sector_size,
                    data_offset: 1 << 20,
                    data_size,
                    data_len: data_version % (data_size + 1),
                    data_version,
                    clone_of,
                    state_id: (generation % 2 == 0).then_some(uuid),
                    // Any length but 0 (no index), any digest.
                    index: (generation % 3 != 0).then_some(IndexRef {
                        len: generation | 1,
                        blake3: uuid.repeat(2).try_into().unwrap(),
                    }),
                    label,
                    provenance: prov.map(|(uuid, bytes, plaintext_blake3)| Provenance {
                        origin: if plain {
                            Origin::Plain
                        } else {
                            Origin::Volume {
                                uuid,
                                data_version: prov_version,
                            }
                        },
                        started: Timestamp { secs: 1, nanos: 2 },
                        finished: Timestamp { secs: 3, nanos: 4 },
                        bytes,
                        plaintext_blake3,
                        data_version: prov_version / 2,
                    }),
                    slots,
                    mac: [7; 32],
                    signature: None,
                }
            },
        )
}

proptest! {
    #[test]
    fn random_emds_round_trip(e in arb_emd()) {
        prop_assert_eq!(Emd::parse(&e.encode()[..]).unwrap(), e);
    }

    #[test]
    fn random_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..EMD_SIZE + 64)) {
        let _ = Emd::parse(&bytes);
    }

    #[test]
    fn random_bytes_with_magic_and_a_valid_checksum_never_panic(
        body in proptest::collection::vec(any::<u8>(), EMD_SIZE - 32..=EMD_SIZE - 32)
    ) {
        let mut bytes = body;
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..10].copy_from_slice(&VERSION.to_le_bytes());
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        let _ = Emd::parse(&bytes);
    }
}
