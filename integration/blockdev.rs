//! Volumes on block devices: loop devices over files (`losetup`), detached
//! again when a test ends. Where loop devices cannot be set up (not root, no
//! /dev/loop-control in a container), each test says so and returns.

use crate::common::tools::{Loop, Mapped, have_tools, run_tool};
use crate::common::{Env, b3, mixed_data};

const MIB: u64 = 1 << 20;

/// A keystore with alice's key, and `vol.img`: a file volume holding
/// `mixed_data` of `data` bytes, which is returned.
fn setup(data: usize) -> (Env, String, Vec<u8>) {
    let env = Env::new();
    let pa = env.gen_key("alice.k1");
    let plain = env.volume_from_data("data.raw", "vol.img", "alice.k1", data, 5);
    (env, pa, plain)
}

/// A blank (all-zero) file of `size` bytes under the test directory, on a loop device.
fn blank_loop(env: &Env, test: &str, name: &str, size: u64) -> Option<Loop> {
    let file = env.path(name);
    std::fs::File::create(&file).unwrap().set_len(size).unwrap();
    Loop::attach(test, &file)
}

#[test]
fn create_on_a_loop_device_sizes_it_by_seek_and_takes_data() {
    let (env, pa, plain) = setup(3 << 20);
    let Some(dev) = blank_loop(&env, "blockdev_create", "disk", 16 * MIB) else {
        return;
    };
    env.ok(&[
        "create",
        dev.path(),
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
        "--label",
        "loop",
    ]);
    let info = env.info(dev.path());
    // 16 MiB device: 1 MiB before the data area and 1 MiB reserved at the end.
    assert_eq!(info["data_size"], 14 * MIB, "{info}");
    assert_eq!(info["label"], "loop");
    assert_eq!(info["emd"]["backup"], "ok");
    // The backup EMD copy lies at the end of the device, not of some file size.
    let disk = std::fs::read(env.path("disk")).unwrap();
    assert_eq!(&disk[disk.len() - 16384..][..8], b"EVFS-EMD");
    // A second create is refused without --force.
    env.expect(
        3,
        &[
            "create",
            dev.path(),
            "--owner",
            "alice.k1",
            "--passphrase-file",
            "alice.k1.pw",
        ],
    );

    env.ok(&[
        "backup",
        "data.raw",
        dev.path(),
        "--target-key",
        "alice.k1",
        "--target-passphrase-file",
        &pa,
    ]);
    // The data landed at the start of the data area, and the volume now
    // holds exactly that much data.
    let out = env
        .cmd(&[
            "cat",
            dev.path(),
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == plain);
    assert_eq!(env.info(dev.path())["data_length"], plain.len());
    env.ok(&[
        "verify",
        dev.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&["check", dev.path()]);
}

#[test]
fn backups_from_file_to_loop_and_loop_to_loop_verify_against_the_source() {
    let (env, pa, plain) = setup(5 << 20);
    let Some(a) = blank_loop(&env, "blockdev_backup", "disk-a", 12 * MIB) else {
        return;
    };
    let Some(b) = blank_loop(&env, "blockdev_backup", "disk-b", 9 * MIB) else {
        return;
    };
    // File -> loop: a re-keyed clone on a blank block device.
    env.ok(&[
        "backup",
        "vol.img",
        a.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&[
        "verify",
        a.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&[
        "verify",
        a.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "vol.img",
    ]);
    // Loop -> loop.
    env.ok(&[
        "backup",
        a.path(),
        b.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    env.ok(&[
        "verify",
        b.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        a.path(),
    ]);
    env.ok(&[
        "verify",
        b.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "data.raw",
    ]);
    let (ia, ib, iv) = (env.info(a.path()), env.info(b.path()), env.info("vol.img"));
    assert_ne!(ia["uuid"], iv["uuid"]);
    assert_ne!(ib["uuid"], ia["uuid"]);
    assert_eq!(ib["provenance"]["source_uuid"], ia["uuid"]);
    assert_eq!(ib["provenance"]["plaintext_blake3"], b3(&plain));
    assert_eq!(ib["dirty"], false);

    // A verify that must fail: the loop copy against other data.
    std::fs::write(env.path("other.raw"), mixed_data(5 << 20, 6)).unwrap();
    env.expect(
        5,
        &[
            "verify",
            b.path(),
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--against",
            "other.raw",
        ],
    );
    // A device too small for the volume is refused, and left untouched.
    let Some(small) = blank_loop(&env, "blockdev_backup", "disk-small", 4 * MIB) else {
        return;
    };
    env.expect(
        3,
        &[
            "backup",
            "vol.img",
            small.path(),
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
        ],
    );
    let small_bytes = std::fs::read(env.path("disk-small")).unwrap();
    assert!(small_bytes.iter().all(|&b| b == 0));
}

#[test]
fn a_volume_on_a_loop_device_maps_over_nbd() {
    if !have_tools("blockdev_map", &["qemu-img"]) {
        return;
    }
    let (env, pa, plain) = setup(2 << 20);
    let Some(dev) = blank_loop(&env, "blockdev_map", "disk", 8 * MIB) else {
        return;
    };
    env.ok(&[
        "backup",
        "vol.img",
        dev.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
    ]);
    let mapped = Mapped::start(
        &env,
        "loop.sock",
        &[dev.path(), "-k", "alice.k1", "--passphrase-file", &pa],
    );
    let out = env.path("out.img");
    let (ok, text) = run_tool(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &mapped.uri(),
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    let (status, log) = mapped.stop();
    assert!(status.success(), "{log}");
    let got = std::fs::read(&out).unwrap();
    assert!(got == plain, "the export is the data area of the clone");
    assert_eq!(env.info(dev.path())["dirty"], false);
}

#[test]
fn direct_backups_onto_a_loop_device_and_a_file_verify() {
    let (env, pa, _) = setup(3 << 20);
    // A 512-byte-sector source whose plaintext ends off a 4096 boundary (the
    // unaligned-tail path of the O_DIRECT sink is covered by its unit test:
    // evfs always makes data areas of whole 4096-byte blocks).
    env.ok(&[
        "create",
        "odd.img",
        "--owner",
        "alice.k1",
        "--passphrase-file",
        "alice.k1.pw",
        "--size",
        "5M",
        "--sector-size",
        "512",
    ]);
    let odd = mixed_data((3 << 20) - 512, 9);
    std::fs::write(env.path("odd.raw"), &odd).unwrap();
    env.ok(&[
        "backup",
        "odd.raw",
        "odd.img",
        "--target-key",
        "alice.k1",
        "--target-passphrase-file",
        &pa,
    ]);
    // File target with --direct (a new file, then refreshed).
    for _ in 0..2 {
        env.ok(&[
            "backup",
            "odd.img",
            "odd-copy.img",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--direct",
        ]);
        env.ok(&[
            "verify",
            "odd-copy.img",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--against",
            "odd.img",
        ]);
    }
    // --direct has no meaning for a stream.
    env.expect(
        2,
        &[
            "backup",
            "vol.img",
            "-",
            "-k",
            "alice.k1",
            "--passphrase-file",
            &pa,
            "--direct",
        ],
    );

    let Some(dev) = blank_loop(&env, "blockdev_direct", "disk", 8 * MIB) else {
        return;
    };
    env.ok(&[
        "backup",
        "vol.img",
        dev.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--direct",
    ]);
    env.ok(&[
        "verify",
        dev.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "vol.img",
    ]);
    // Raw clone of the odd volume onto a blank device, through O_DIRECT too.
    let Some(dev2) = blank_loop(&env, "blockdev_direct", "disk2", 6 * MIB) else {
        return;
    };
    env.ok(&["backup", "odd.img", dev2.path(), "--raw", "--direct"]);
    env.ok(&[
        "verify",
        dev2.path(),
        "-k",
        "alice.k1",
        "--passphrase-file",
        &pa,
        "--against",
        "odd.raw",
    ]);
}
