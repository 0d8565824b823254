//! The keystore from the command line: stored passphrases made by concurrent
//! runs, and the refusals that keep others from swapping key files (the
//! rules ssh applies to its key files).

use std::process::Stdio;

use crate::common::Env;

/// `key gen ID --store-passphrase` with a small KDF, as a process not yet started.
fn gen_stored(env: &Env, id: &str) -> std::process::Command {
    let pw = env.pass_file(id);
    let mut c = env.process(&[
        "key",
        "gen",
        id,
        "--store-passphrase",
        "--passphrase-file",
        &pw,
        "--kdf-memory",
        "256K",
        "--kdf-passes",
        "1",
    ]);
    c.stdin(Stdio::null());
    c
}

/// Regression (issue case 9): concurrent `key gen --store-passphrase` in a
/// fresh keystore each made a `.hostkey`, the last one replaced the others,
/// and a stored passphrase sealed under a lost host key could not be opened.
#[test]
fn concurrent_key_gen_with_stored_passphrases_share_one_host_key() {
    const ROUNDS: usize = 20;
    const KEYS: [&str; 4] = ["ann.k", "ben.k", "cat.k", "dan.k"];
    for round in 0..ROUNDS {
        let env = Env::new();
        // Build every command first so that the starts are as close as can be.
        let mut cmds: Vec<_> = KEYS.iter().map(|id| gen_stored(&env, id)).collect();
        let children: Vec<_> = cmds
            .iter_mut()
            .map(|c| {
                c.stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (id, child) in KEYS.iter().zip(children) {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: key gen {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let list: serde_json::Value =
            serde_json::from_str(&env.ok(&["key", "list", "--json"])).unwrap();
        for id in KEYS {
            let entry = list["keys"]
                .as_array()
                .unwrap()
                .iter()
                .find(|k| k["id"] == id)
                .unwrap_or_else(|| panic!("round {round}: {id} not listed: {list}"));
            assert_eq!(entry["passphrase_stored"], true, "round {round}: {list}");
            // Stdin is empty and there is no terminal: only the stored
            // passphrase can unlock the key.
            let vol = format!("{id}.vol");
            env.create(&vol, id, "4M");
            env.ok(&["hash", &vol, "-k", id]);
        }
    }
}
