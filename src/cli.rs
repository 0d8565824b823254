//! The command line, as clap definitions only. Resolving these raw flags into
//! opened volumes and unlocked keys happens in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::size::clap_size;

/// Back up encrypted block volumes (EVFS on Linux, in user space).
#[derive(Parser, Debug)]
#[command(
    name = "evfs",
    version,
    about = "Back up encrypted block volumes: EVFS volumes, keys, and a re-encrypting dd-replacement",
    long_about = "evfs manages EVFS encrypted volumes (an EMD holding the wrapped volume key, and an \
AES-XTS data area that stock dm-crypt can map) and backs them up: `evfs backup` reads a source \
volume, decrypts it with the source key, re-encrypts it with a target key across worker threads, \
writes a clone of the EMD, and refuses configurations that would encrypt data twice or leak cleartext. \
LUKS1 and LUKS2 volumes made by cryptsetup are sources too, and LUKS2 volumes targets: a backup \
re-keys them across formats.",
    after_help = "\
Exit status:
  0  success
  1  runtime failure: an I/O error, a broken pipe before the data was complete, a lock held
     (the volume is in use by a backup, restore or map)
  2  usage error, including a wrong kind of argument: plain data, a backup stream, a FIFO or a
     character device where a volume is needed
  3  refused configuration: double encryption, cleartext onto encrypted media, the target is
     the source or the same storage, too small, a foreign target or a target with an EMD of
     its own without --force, a rollback, plain data that looks like ciphertext, a LUKS volume
     evfs does not read
  4  access denied: wrong passphrase, no passphrase source, a key in no slot, a role not
     allowed, a LUKS keyslot that does not open (a wrong passphrase or a damaged keyslot)
  5  integrity failure: a verify mismatch, a corrupt or tampered EMD or stream, a newer format,
     a damaged LUKS header
  6  check found the volume dirty, or holding an unfinished backup or restore (a LUKS2 volume
     too)

Examples:
  evfs key gen alice.k1
  evfs create vol.img --owner alice.k1 --size 1G
  evfs info vol.img --json
  evfs hash vol.img -k alice.k1",
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Keystore directory (default: $EVFS_KEYSTORE, /etc/evfs/pkey for root, else ~/.config/evfs/pkey)
    #[arg(long, global = true, value_name = "DIR")]
    pub keystore: Option<PathBuf>,

    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Print more about what is done (never keys or passphrases)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Accept an unsigned EMD or stream where a signature is required (older volumes, keyless writers)
    #[arg(long, global = true)]
    pub allow_unsigned: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `-k ID` and the file its passphrase comes from.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Key ID (user.keyname) that unlocks the volume
    #[arg(short = 'k', long = "key", value_name = "ID")]
    pub key: String,

    /// Read the passphrase of -k from FILE (- for standard input; one trailing newline is stripped)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// An optional `-k ID`.
#[derive(Args, Debug, Clone)]
pub struct OptKeyArgs {
    /// Key ID (user.keyname) that unlocks the volume
    #[arg(short = 'k', long = "key", value_name = "ID")]
    pub key: Option<String>,

    /// Read the passphrase of -k from FILE (- for standard input; one trailing newline is stripped)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// How `verify` and `restore` judge who signed.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Trust signatures by the key with this fingerprint (b3:...) for this run; may be repeated
    #[arg(long = "trust", value_name = "FINGERPRINT")]
    pub trust: Vec<String>,
    /// Fail (exit 5) when the signature is missing or not by a trusted signer
    #[arg(long)]
    pub require_signature: bool,
}

/// How to open a LUKS volume: the one a command works on, or a backup's
/// source. Without a secret, an enrolled `-k ID` or a prompt opens it.
#[derive(Args, Debug, Clone, Default)]
pub struct LuksArgs {
    /// LUKS volume: read its passphrase from FILE (- for standard input; one trailing newline is stripped)
    #[arg(long, value_name = "FILE", conflicts_with = "luks_key_file")]
    pub luks_passphrase_file: Option<PathBuf>,

    /// LUKS volume: the whole of FILE is the key, a trailing newline included (cryptsetup --key-file)
    #[arg(long, value_name = "FILE")]
    pub luks_key_file: Option<PathBuf>,

    /// LUKS volume: try only keyslot N
    #[arg(long, value_name = "N")]
    pub luks_slot: Option<u32>,

    /// LUKS volume: its header is in FILE (a detached header, cryptsetup --header)
    #[arg(long, value_name = "FILE")]
    pub luks_header: Option<PathBuf>,
}

/// How to open (or make) a LUKS2 target.
#[derive(Args, Debug, Clone, Default)]
pub struct TargetLuksArgs {
    /// LUKS target: read its passphrase from FILE (- for standard input; one trailing newline is stripped)
    #[arg(long, value_name = "FILE", conflicts_with = "target_luks_key_file")]
    pub target_luks_passphrase_file: Option<PathBuf>,

    /// LUKS target: the whole of FILE is the key, a trailing newline included (cryptsetup --key-file)
    #[arg(long, value_name = "FILE")]
    pub target_luks_key_file: Option<PathBuf>,

    /// LUKS target: try only keyslot N
    #[arg(long, value_name = "N")]
    pub target_luks_slot: Option<u32>,

    /// LUKS target: its header is in FILE (a detached header of an existing target)
    #[arg(long, value_name = "FILE")]
    pub target_luks_header: Option<PathBuf>,
}

/// The format of a backup's new target.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetFormatArg {
    /// An EVFS volume (an EMD and an AES-XTS data area)
    Evfs,
    /// A LUKS2 volume that cryptsetup opens
    Luks2,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage key pairs, stored passphrases and trusted signers
    #[command(
        subcommand,
        after_help = "\
Exit status:
  0  success
  1  an I/O error, or a key that is not in the keystore
  2  usage error: an invalid key ID, a key that exists, KDF parameters or a passphrase file
     that do not fit
  4  access denied: wrong or no passphrase, a keystore or key file others could change
  5  a damaged key file

Examples:
  evfs key gen alice.k1
  evfs key list --json
  evfs key show alice.k1 > alice.k1.pub
  evfs key import backup.cron backup.cron.pub --trust"
    )]
    Key(KeyCommand),

    /// Write a new EMD: make a file or block device an EVFS volume
    #[command(after_help = "\
The EMD is signed with --sign-with ID, else with the owner's key when its private key is here
and its passphrase can be had (--passphrase-file, the stored one, a prompt); otherwise it is
written unsigned, with a note, and `evfs emd sign VOL -k ID` signs it later.

Exit status:
  0  the volume was made
  1  an I/O error, VOL in use by a backup, restore or map, a key that is not in the keystore
  2  usage error: VOL missing without --size, a size or label that does not fit, a recovery key
     as owner, VOL not a regular file or block device
  3  refused without --force: VOL holds an EMD or non-zero data
  4  access denied: a keystore or key file others could change, a wrong passphrase of the
     signing key
  5  a damaged public key file

Examples:
  evfs create vol.img --owner alice.k1 --size 64M --passphrase-file alice.pw
  evfs create /dev/vg0/lv1 --owner alice.k1 --label payroll --recovery evfs.r1")]
    Create(CreateArgs),

    /// Show the public fields of a volume's EMD or LUKS header (no key needed)
    #[command(after_help = "\
A LUKS volume shows its header: format (luks1 or luks2), UUID, label, cipher, sector size, data
offset and size, keyslots with their KDFs, tokens, requirements, what evfs cannot read in it,
and the provenance of a backup evfs wrote into it.

Exit status:
  0  success
  1  an I/O error (VOL missing or unreadable)
  2  usage error, or VOL is plain data, a backup stream, a FIFO or a character device
  5  no valid EMD (both copies damaged), an EMD of a newer format, or a damaged LUKS header

Examples:
  evfs info vol.img
  evfs info vol.img --json
  evfs info disk.img --luks-header disk.hdr")]
    Info {
        /// The volume (EVFS or LUKS)
        vol: PathBuf,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
        /// LUKS volume: its header is in FILE (a detached header, cryptsetup --header)
        #[arg(long, value_name = "FILE")]
        luks_header: Option<PathBuf>,
    },

    /// Enable a volume: its data may be decrypted (owner or authorized user)
    #[command(after_help = "\
Exit status:
  0  success (also when the volume already was in that state)
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, or VOL is plain data, a backup stream, a FIFO or a character device
  4  access denied: wrong or no passphrase, the key has no slot, a recovery key
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged key file

Example:
  evfs enable vol.img -k alice.k1")]
    Enable {
        vol: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },

    /// Disable a volume: only raw ciphertext access (owner or authorized user)
    #[command(after_help = "\
Exit status:
  0  success (also when the volume already was in that state)
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, or VOL is plain data, a backup stream, a FIFO or a character device
  4  access denied: wrong or no passphrase, the key has no slot, a recovery key
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged key file

Example:
  evfs disable vol.img -k bob.k1")]
    Disable {
        vol: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },

    /// Check both EMD copies and the dirty bit; -r resets it and repairs a bad copy
    #[command(after_help = "\
On a LUKS volume: both LUKS2 header copies, and whether an evfs backup into it was interrupted
(the evfs-incomplete requirement); -r does not apply (cryptsetup repair rewrites a bad copy).

Exit status:
  0  clean, both EMD copies good (with -r: after resetting the dirty bit or repairing a copy)
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, or VOL is plain data, a backup stream, a FIFO or a character device, or -r
     on a LUKS volume
  5  no valid EMD, a newer format, or (without -r) a damaged or stale EMD copy; a damaged LUKS
     header or header copy; a volume shorter than its EMD says (cut short: -r writes nothing)
  6  dirty (without -r), or holding an unfinished backup or restore (with -r too); a LUKS2
     volume an evfs backup into was interrupted

Examples:
  evfs check vol.img
  evfs check -r vol.img")]
    Check {
        vol: PathBuf,
        /// Reset the dirty bit and rewrite a bad or stale copy from the good one
        #[arg(short = 'r', long = "reset")]
        reset: bool,
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },

    /// Add or remove authorized users
    #[command(
        subcommand,
        after_help = "\
Exit status:
  0  success
  1  an I/O error, the volume in use by a backup, restore or map, ID not in the keystore
  2  usage error, VOL is not a volume, ID has a slot (add) or none (remove), no free slot
  4  access denied: wrong or no passphrase, -k has no slot or is not the owner
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged key file

Examples:
  evfs user add vol.img bob.k1 -k alice.k1
  evfs user remove vol.img bob.k1 -k alice.k1"
    )]
    User(UserCommand),

    /// Make another key the owner (owner or recovery key); the old owner stays an authorized user
    #[command(after_help = "\
Exit status:
  0  ID owns the volume
  1  an I/O error, the volume in use by a backup, restore or map, ID not in the keystore
  2  usage error, VOL is not a volume, ID is a recovery key, or no slot is free
  4  access denied: wrong or no passphrase, -k has no slot or is neither owner nor recovery key
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged key file

Example:
  evfs owner vol.img carol.k1 -k evfs.r1")]
    Owner {
        vol: PathBuf,
        /// Key ID of the new owner
        id: String,
        #[command(flatten)]
        key: KeyArgs,
    },

    /// Save or restore a volume's EMD (like cryptsetup luksHeaderBackup)
    #[command(
        subcommand,
        after_help = "\
Exit status:
  0  success
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, VOL is not a volume, or the backup FILE exists
  3  refused (restore): the valid EMD of another volume without --force, or VOL is too small
  5  no valid EMD, FILE is not a valid saved EMD, a newer format

Examples:
  evfs emd backup vol.img vol.emd
  evfs emd restore vol.img vol.emd"
    )]
    Emd(EmdCommand),

    /// Wipe both EMD copies: the data becomes unrecoverable without a saved EMD (owner)
    #[command(after_help = "\
Exit status:
  0  both EMD copies were wiped
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, or VOL is plain data, a backup stream, a FIFO or a character device
  4  access denied: wrong or no passphrase, the key has no slot, or it is not the owner
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged key file

Example:
  evfs emd backup vol.img vol.emd && evfs destroy vol.img -k alice.k1")]
    Destroy {
        vol: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },

    /// BLAKE3 of the plaintext data area, printed as b3sum does
    #[command(after_help = "\
For an EVFS volume this equals `b3sum` of the decrypted data area; for a LUKS volume, `b3sum`
of its decrypted data area (what `cryptsetup open` shows); for a plain file, `b3sum` of the file.

Exit status:
  0  the digest was printed (also when the reader of standard output went away)
  1  an I/O error
  2  usage error, or VOL is a FIFO or character device
  3  refused: the volume is disabled (its data is raw ciphertext); a LUKS volume evfs does not
     read (another cipher, integrity, a reencryption in progress, an unfinished evfs backup)
  4  access denied: a volume without -k, wrong or no passphrase, the key has no slot; a LUKS
     volume without its passphrase, a wrong passphrase or a damaged keyslot
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a data area past the end of
     VOL, a damaged LUKS header

Examples:
  evfs hash vol.img -k alice.k1
  evfs hash disk.img --luks-passphrase-file pw.txt
  evfs hash image.raw")]
    Hash {
        vol: PathBuf,
        #[command(flatten)]
        key: OptKeyArgs,
        /// Worker threads (default: all cores)
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        #[command(flatten)]
        luks: LuksArgs,
    },

    /// Back up SRC to DST: re-encrypt, encrypt, raw clone, or export cleartext
    #[command(after_help = BACKUP_HELP)]
    Backup(BackupArgs),

    /// Write a backup stream (file or -) back onto a volume, EMD included
    #[command(after_help = "\
Needs no key unless the stream is compressed or sparse. Any truncation, reordering or altered
byte exits 5 and leaves the target dirty. The stream's signature is checked: over an existing
volume, or with -k, --trust or --require-signature, it must be valid and by a trusted signer
(a key pair of this keystore, a key imported with --trust) unless --allow-unsigned, and the
stream's EMD clone is checked so before anything is written. Into a new target with no such
flag (disaster recovery on a fresh host), an untrusted or missing signature is reported. Onto
an existing LUKS2 volume, the stream is decrypted with -k and written under the target's own key
(--target-luks-passphrase-file); the target is marked evfs-incomplete until the trailer checked
out.

An incremental stream (backup --since) applies only onto a volume at exactly the state it was
made from: the full stream and the links before it restored, nothing written since. Several
STREAMs are a chain (files), applied in order; their links must follow each other, and each
must end with its trailer and carry what it needs (a trusted signature where one is required,
the key of a sparse or compressed link), which is checked before anything is written. A stream
file that does not end with its trailer (cut short, or added to) is refused before it is
written. A restore of a link that was interrupted completes when run again.
The chunk index a stream carries goes into the restored volume, after its data area: the volume
is then the base of the next incremental stream, or of a changed-only refresh, of the source.

Exit status:
  0  the stream was written and the target's EMD is clean
  1  an I/O error, or the target is in use by another backup, restore or map
  2  usage error, DST of a wrong kind (a FIFO, a character device, -), STREAM not a stream
  3  refused: DST is the stream itself or too small; another volume or foreign data, or a
     rollback, without --force; an incremental stream onto a target not at its base
  4  access denied: a compressed or sparse stream without -k, wrong or no passphrase, no slot
  5  integrity failure: a truncated, reordered or altered stream, a newer format (the target
     is left dirty); a broken signature; a missing or untrusted one where one is required; a
     chain with a link missing, repeated or out of order (named)

Examples:
  evfs restore vol.evfs restored.img
  ssh host 'cat vol.evfs' | evfs restore - restored.img
  evfs restore vol-compressed.evfs /dev/sdb1 -k alice.k1
  evfs restore full.evfs mon.evfs tue.evfs restored.img
  evfs restore vol.evfs disk.img -k alice.k1 --target-luks-passphrase-file t.pw")]
    Restore(RestoreArgs),

    /// Verify a backup: a volume against its provenance, a stream frame by frame, or --against its source
    #[command(after_help = "\
Prints who signed the stream or the volume's EMD (`signed by ID (b3:...), trusted`). A broken
signature fails. With -k, --trust or --require-signature, a missing or untrusted one fails too
unless --allow-unsigned; without them, a keyless verify reports it and exits on integrity alone.

A LUKS TARGET is checked against the provenance evfs recorded in it when it wrote it (both
header copies, no unfinished backup, the plaintext BLAKE3). SRC (--against) opens with
--luks-*, TARGET with --target-luks-*, as in the backup that made the copy; when SRC is no LUKS
volume, --luks-* opens TARGET too.

A volume's chunk index (what the next backup into it compares with) is checked against what its
EMD names; one that does not match is reported (the next backup writes every chunk), not failed.

Several stream TARGETs are a chain (a full stream, then incremental ones): the links must follow
each other, and with -k the plaintext the chain restores to is recombined and checked against
every link's digest. A missing last link cannot be seen.

Exit status:
  0  everything checked out (also a volume written through map since its backup)
  1  an I/O error
  2  usage error, or TARGET is plain data without --against
  3  refused: a disabled volume given to --against; a LUKS volume evfs does not read
  4  access denied: a volume given to --against without -k, wrong or no passphrase, no slot;
     a wrong LUKS passphrase or a damaged keyslot
  5  a mismatch or damage, naming where: a digest, an EMD copy, a dirty volume, a frame, the
     trailer, a MAC, a newer format, a signature (broken, or missing or untrusted where
     required), a LUKS header copy, an unfinished backup into a LUKS volume, a chain's link
     missing, repeated or out of order

Examples:
  evfs verify copy.img -k alice.k1
  evfs verify copy.img -k alice.k1 --against vol.img
  evfs verify vol.evfs
  evfs verify vol.evfs -k alice.k1 --json
  evfs verify full.evfs mon.evfs tue.evfs -k alice.k1
  evfs verify copy-luks.img --target-luks-passphrase-file t.pw --against disk.img --luks-passphrase-file s.pw")]
    Verify(VerifyArgs),

    /// Run the main job end to end on sample data: keys, volumes, backup, stream, restore, verify
    #[command(after_help = "\
Needs no terminal and no input; exits 0 only when every verification passed.

Exit status:
  0  every verification passed
  1  an I/O error
  2  usage error (--size is not a positive multiple of 4 KiB)
  4  access denied: the keystore under --dir is one others could change
  5  a verification failed

Examples:
  evfs demo
  evfs demo --dir /tmp/evfs-demo --size 1G")]
    Demo {
        /// Work in DIR (kept) instead of a temporary directory (removed after success)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Size of the sample data (K, M, G suffixes)
        #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = clap_size)]
        size: u64,
        /// Worker threads (default: all cores)
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
    },

    /// Write the decrypted data area to standard output
    #[command(after_help = "\
Exit status:
  0  the data was written (also when the reader of standard output went away)
  1  an I/O error
  2  usage error, or VOL is plain data, a backup stream, a FIFO or a character device
  3  refused: the volume is disabled, or standard output is VOL itself; a LUKS volume evfs
     does not read
  4  access denied: no -k, wrong or no passphrase, the key has no slot; a LUKS volume without
     its passphrase, a wrong passphrase or a damaged keyslot
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a data area past the end of
     VOL, a damaged LUKS header

Examples:
  evfs cat vol.img -k alice.k1 | b3sum
  evfs cat disk.img --luks-key-file disk.key | b3sum")]
    Cat {
        vol: PathBuf,
        #[command(flatten)]
        key: OptKeyArgs,
        /// Worker threads (default: all cores)
        #[arg(long, value_name = "N")]
        threads: Option<usize>,
        #[command(flatten)]
        luks: LuksArgs,
    },

    /// Serve the decrypted (or --raw) data area over NBD on a unix socket until SIGINT or SIGTERM
    #[command(after_help = MAP_HELP)]
    Map(MapArgs),

    /// Print the dm-crypt table line that maps the data area with the kernel (shows the volume key)
    #[command(after_help = "\
The line holds the volume key in hex: it is printed on standard output only, with a warning on
standard error. A file volume needs a loop device first; run dmtable on the loop device so that
the line names it. A LUKS volume's line is the one cryptsetup loads: IVs in 512-byte units from
the segment's IV offset, `sector_size:N` for large sectors, no `iv_large_sectors`.

Exit status:
  0  the table line was printed
  1  an I/O error
  2  usage error, VOL is not a volume, or a path that a table line cannot hold
  3  refused: the volume is disabled; a LUKS volume evfs does not read
  4  access denied: no -k, wrong or no passphrase, the key has no slot; a LUKS volume without
     its passphrase, a wrong passphrase or a damaged keyslot
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged LUKS header

Examples:
  evfs dmtable /dev/vg0/data -k alice.k1 | dmsetup create data-clear
  evfs dmtable \"$(losetup --find --show vol.img)\" -k alice.k1 | dmsetup create vol-clear
  evfs dmtable /dev/sdb2 --luks-passphrase-file pw.txt | dmsetup create sdb2-clear
  dmsetup remove vol-clear")]
    Dmtable {
        vol: PathBuf,
        #[command(flatten)]
        key: OptKeyArgs,
        #[command(flatten)]
        luks: LuksArgs,
    },

    /// LUKS2 volumes: enroll an evfs key pair in a keyslot of its own, or unenroll it
    #[command(
        subcommand,
        after_help = "\
Exit status:
  0  success
  1  an I/O error, the volume in use, its LUKS metadata locked by another program, ID not in
     the keystore
  2  usage error: VOL is not a LUKS volume, ID enrolled already (enroll) or not (unenroll)
  3  refused: a LUKS1 volume, requirements evfs does not know, the last keyslot (unenroll)
  4  access denied: no passphrase, a wrong passphrase or a damaged keyslot
  5  a damaged LUKS header

Examples:
  evfs luks enroll disk.img backup.cron --luks-passphrase-file pw.txt
  evfs hash disk.img -k backup.cron
  evfs luks unenroll disk.img backup.cron --luks-passphrase-file pw.txt"
    )]
    Luks(LuksCommand),

    /// Print shell completions for bash, zsh, fish, elvish or powershell
    #[command(after_help = "\
Exit status:
  0  the script was printed
  1  an I/O error
  2  usage error (an unknown shell)

Examples:
  evfs completions bash > /etc/bash_completion.d/evfs
  evfs completions zsh > \"${fpath[1]}/_evfs\"
  evfs completions fish > ~/.config/fish/completions/evfs.fish")]
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

const MAP_HELP: &str = "\
The export is the data area only (its size is the volume's data size): decrypted with -k, or the \
ciphertext as it lies with --raw (no key, any state; EVFS `evfsvol raw`). A read-write map holds the \
volume's write lock and marks it dirty until it stops cleanly; a --read-only map shares the lock with \
backup sources. Any export name is answered, including the empty default. The socket is made 0600. \
A LUKS volume is served with dm-crypt's IV rule; it has no dirty bit, and data written into one \
that evfs backed up marks its provenance modified.

Exit status:
  0  stopped by SIGINT or SIGTERM, the data synced and the volume clean again
  1  an I/O error, the volume in use by a backup, restore or another map, the socket in use
  2  usage error, VOL is not a volume, or the socket path is another kind of file
  3  refused: the volume is disabled (without --raw); a LUKS volume evfs does not read
  4  access denied: wrong or no passphrase, the key has no slot; a wrong LUKS passphrase or a
     damaged keyslot
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged LUKS header

Examples:
  evfs map vol.img --socket /run/evfs-vol.sock -k alice.k1 &
  evfs map disk.img --socket disk.sock --luks-passphrase-file pw.txt --read-only &
  qemu-img convert -O raw 'nbd+unix:///?socket=/run/evfs-vol.sock' plain-copy.raw
  nbd-client -unix /run/evfs-vol.sock /dev/nbd0 -b 4096 && mount /dev/nbd0 /mnt
  umount /mnt && nbd-client -d /dev/nbd0 && kill %1
  evfs map vol.img --socket vol.sock --raw --read-only";

#[derive(Args, Debug, Clone)]
pub struct MapArgs {
    /// The volume (file or block device)
    pub vol: PathBuf,

    /// Unix socket to listen on (created 0600; a stale socket file is replaced)
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// Key ID (user.keyname) that unlocks the volume (not needed with --raw, nor for a LUKS volume opened with its passphrase)
    #[arg(short = 'k', long = "key", value_name = "ID")]
    pub key: Option<String>,

    /// Read the passphrase of -k from FILE (- for standard input; one trailing newline is stripped)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,

    /// Serve the ciphertext as it lies (no key needed, disabled volumes too)
    #[arg(long)]
    pub raw: bool,

    /// Refuse writes; the volume is opened read-only and its dirty bit left alone
    #[arg(long)]
    pub read_only: bool,

    #[command(flatten)]
    pub luks: LuksArgs,
}

const BACKUP_HELP: &str = "\
Configurations:
  enabled volume -k ID  -> new file or device, or a stream: re-encrypt with a fresh key
  enabled volume -k ID  -> a clone of it (an earlier backup): refresh, keeping its UUID and key
  enabled volume -k ID  -> a volume with an EMD of its own where -k or --target-key has a slot:
                           re-encrypt with that volume's key, keeping its EMD
  plain file --owner ID -> new volume or stream: encrypt
  plain file -k ID      -> a volume (or --target-key ID): encrypt into it
  --raw volume          -> new file, stream or disabled volume: ciphertext and EMD cloned, no key
  enabled volume --cleartext -> plain file, device or -: plaintext export
  LUKS volume (its passphrase, key file or an enrolled -k ID):
                        -> new EVFS volume (--owner ID) or stream, or a volume (--target-key):
                           decrypt and re-encrypt; --cleartext: plaintext export
  any of these --target-format luks2 -> new file or device: a fresh LUKS2 volume (new UUID and
                           key, an Argon2id keyslot for --target-luks-passphrase-file)
  any of these          -> an existing LUKS2 volume: re-encrypt with its own key, keeping its
                           header and keyslots
  refused (exit 3): a disabled or --raw source into an encrypting target (double encryption),
  --raw of a LUKS source; cleartext onto encrypted media, a LUKS target included; the target is
  the source or the same storage; too small (a LUKS target too); a LUKS1 target; a LUKS volume
  evfs does not read; without --force: foreign data, a volume with an EMD of its own and no slot
  for -k, a rollback (a copy onto its volume written to since), plain data that looks like
  ciphertext, an EVFS volume as a new LUKS2 target or a LUKS volume as a new EVFS target.
  A LUKS2 target carries the evfs-incomplete requirement (cryptsetup will not activate it)
  until its data is complete; then an evfs-provenance token records the backup.

Signatures: the target's EMD and a stream are signed by --sign-with ID, else by the key that
unlocked the source (-k), else by the owner's key when its private key is here and its
passphrase can be had (--passphrase-file without -k, the stored one, a prompt); otherwise they
are written unsigned, with a note. A raw clone keeps the source's EMD and its signature.

Incremental: a backup into a volume that a backup of the same source made keeps a chunk index
there, and the next one writes only the chunks that changed (--full: all of them). A stream
--since BASE (an earlier stream of SRC, its --manifest FILE, or a volume a backup or restore made
of SRC) carries only the chunks changed since BASE, and restore applies it onto a volume at that
state. Streams of EVFS volumes carry their chunk index, so any of them can be the next BASE.

Exit status:
  0  the backup completed and was synced
  1  an I/O error, a broken pipe (standard output closed before the end), the source or target
     in use by another backup, restore or map, a source that ends early
  2  usage error: flags that do not apply here, a plain or LUKS source without --owner or with
     -k and no target volume, SRC or DST a FIFO or character device (- is a pipe)
  3  refused: the configurations refused under Configurations, a backup stream as SRC, a
     --resume that does not match the interrupted run; a --since BASE that is not a finished
     backup of SRC, or a stream without a chunk index; a source holding an unfinished backup or
     restore (part old, part new: finish it first)
  4  access denied: a volume source without -k, wrong or no passphrase, the key has no slot; a
     LUKS source or target without its passphrase, a wrong passphrase or a damaged keyslot
  5  integrity failure: a corrupt or tampered EMD, a newer format, a damaged LUKS header, a
     damaged chunk index or a cut stream as BASE

Examples:
  evfs backup vol.img vol-copy.img -k alice.k1
  evfs backup disk.raw vol.img --owner alice.k1
  evfs backup vol.img - -k alice.k1 | ssh host 'cat > vol.evfs'
  evfs backup vol.img vol-mirror.img --raw
  evfs backup vol.img plain.raw --cleartext -k alice.k1
  evfs backup vol.img --stream mon.evfs --since sun.evfs -k alice.k1
  evfs backup vol.img /dev/sdb1 -k backup.cron --progress --progress-interval 1m --json
  evfs backup disk.img copy.vol --luks-passphrase-file pw.txt --owner alice.k1
  evfs backup disk.img copy.img --luks-passphrase-file pw.txt --target-format luks2 \\
      --target-luks-passphrase-file copy.pw";

#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// Source: an EVFS or LUKS volume, a plain file or block device, or - for standard input
    pub src: PathBuf,

    /// Target: an EVFS or LUKS2 volume, a new or blank file, a block device, or - for a backup stream on standard output
    #[arg(required_unless_present = "stream")]
    pub dst: Option<PathBuf>,

    #[command(flatten)]
    pub key: OptKeyArgs,

    /// Worker threads (default: all cores)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Copy the ciphertext as it lies and clone the EMD with the same key (no key needed)
    #[arg(long)]
    pub raw: bool,

    /// Keep the source's volume key in the clone instead of a fresh one
    #[arg(long, conflicts_with = "rekey")]
    pub same_key: bool,

    /// Refresh a clone under a fresh volume key (a refresh keeps the clone's key by default)
    #[arg(long)]
    pub rekey: bool,

    /// Rewrite every chunk of the target under its key, changed or not (by default a backup into a target with a chunk index writes only the chunks whose source changed since its last backup)
    #[arg(long)]
    pub full: bool,

    /// Write an incremental stream: only the chunks changed since BASE (an earlier stream of SRC, its --manifest, or a volume a backup or restore made of SRC), which the stream then applies onto
    #[arg(long, value_name = "BASE")]
    pub since: Option<PathBuf>,

    /// Also write a manifest of this stream to FILE (its final EMD and chunk index): the BASE of a later --since of an EVFS volume, so the stream itself need not be read back
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Sector size of a new or rekeyed target's data area (default: the source's, 4096 for plain data)
    #[arg(long, value_name = "BYTES", value_parser = parse_sector_size)]
    pub sector_size: Option<u32>,

    /// Export the plaintext to a plain file, device or standard output
    #[arg(long)]
    pub cleartext: bool,

    /// Owner of the new volume when the source is plain data (only the public key is needed)
    #[arg(long, value_name = "ID")]
    pub owner: Option<String>,

    /// Key of an existing target volume: re-encrypt into it with its own key, keeping its EMD
    #[arg(long, value_name = "ID")]
    pub target_key: Option<String>,

    /// Read the passphrase of --target-key from FILE (- for standard input)
    #[arg(long, value_name = "FILE")]
    pub target_passphrase_file: Option<PathBuf>,

    /// Sign the target's EMD or the stream with this key (default: -k's, else the owner's when its private key is here); without -k, --passphrase-file serves it
    #[arg(long, value_name = "ID")]
    pub sign_with: Option<String>,

    /// Write a backup stream to FILE (instead of DST)
    #[arg(long, value_name = "FILE", conflicts_with = "dst")]
    pub stream: Option<PathBuf>,

    /// Stream only: zstd-compress the plaintext (LEVEL 1-19, default 3), sealed with an AEAD
    #[arg(long, value_name = "LEVEL", num_args = 0..=1, require_equals = true, default_missing_value = "3", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub compress: Option<i32>,

    /// Stream only: send all-zero chunks as markers
    #[arg(long)]
    pub sparse: bool,

    /// Continue an interrupted backup into the same target from its checkpoint
    #[arg(long)]
    pub resume: bool,

    /// Print plain progress lines to stderr (for cron logs)
    #[arg(long)]
    pub progress: bool,

    /// Time between --progress lines (e.g. 5s, 1m, 100ms)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub progress_interval: std::time::Duration,

    /// Print one JSON object with the result
    #[arg(long)]
    pub json: bool,

    /// Overwrite a target that holds foreign data or another volume
    #[arg(long)]
    pub force: bool,

    /// Write the target file or block device with O_DIRECT, past the page cache
    #[arg(long)]
    pub direct: bool,

    #[command(flatten)]
    pub luks: LuksArgs,

    #[command(flatten)]
    pub target_luks: TargetLuksArgs,

    /// Format of the target (default: an existing target's own format, else evfs)
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub target_format: Option<TargetFormatArg>,

    /// Argon2id memory of a new LUKS2 target's keyslot (K, M, G suffixes; default 1G, as cryptsetup)
    #[arg(long, value_name = "SIZE", value_parser = clap_size)]
    pub luks_kdf_memory: Option<u64>,

    /// Argon2id passes of a new LUKS2 target's keyslot (default 4, cryptsetup's minimum)
    #[arg(long, value_name = "N")]
    pub luks_kdf_iterations: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup stream: a file, or - for standard input; several files: a chain (a full stream, then the incremental ones made after it), applied in order
    #[arg(required = true, num_args = 1.., value_name = "STREAM")]
    pub streams: Vec<PathBuf>,
    /// Target file or block device
    pub dst: PathBuf,
    #[command(flatten)]
    pub key: OptKeyArgs,
    /// Overwrite a target that holds foreign data or another volume
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Print plain progress lines to stderr
    #[arg(long)]
    pub progress: bool,
    /// Time between --progress lines
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub progress_interval: std::time::Duration,
    /// Print one JSON object with the result
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target_luks: TargetLuksArgs,
}

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// A volume, a plain file, or a backup stream (- for standard input); several stream files: a chain (a full stream, then the incremental ones made after it)
    #[arg(required = true, num_args = 1.., value_name = "TARGET")]
    pub targets: Vec<PathBuf>,
    #[command(flatten)]
    pub key: OptKeyArgs,
    /// Also check that TARGET's plaintext equals SRC's (a volume, plain file or stream)
    #[arg(long, value_name = "SRC")]
    pub against: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Worker threads (default: all cores)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print one JSON object with the result
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub luks: LuksArgs,
    #[command(flatten)]
    pub target_luks: TargetLuksArgs,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// File or block device (a file is created when --size is given and it does not exist)
    pub vol: PathBuf,
    /// Key ID of the owner (only its public key is needed)
    #[arg(long, value_name = "ID")]
    pub owner: String,
    /// Size of the file to create (K, M, G, T suffixes)
    #[arg(long, value_name = "SIZE", value_parser = clap_size)]
    pub size: Option<u64>,
    /// Data-area cipher
    #[arg(long, value_enum, default_value_t = CipherArg::Aes256Xts)]
    pub cipher: CipherArg,
    /// Sector size of the data area (the XTS data unit)
    #[arg(long, value_name = "BYTES", default_value_t = 4096, value_parser = parse_sector_size)]
    pub sector_size: u32,
    /// Free-form label (at most 64 bytes)
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub label: String,
    /// Recovery key (user evfs), may be given twice
    #[arg(long, value_name = "ID")]
    pub recovery: Vec<String>,
    /// Sign the new EMD with this key (default: the owner's, when its private key is here)
    #[arg(long, value_name = "ID")]
    pub sign_with: Option<String>,
    /// Read the signing key's passphrase from FILE (- for standard input)
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Overwrite an existing EMD or non-zero data
    #[arg(long)]
    pub force: bool,
}

fn parse_sector_size(text: &str) -> Result<u32, String> {
    match text {
        "4096" => Ok(4096),
        "512" => Ok(512),
        _ => Err("the sector size is 4096 or 512".to_string()),
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherArg {
    #[value(name = "aes-256-xts")]
    Aes256Xts,
    #[value(name = "aes-128-xts")]
    Aes128Xts,
}

impl CipherArg {
    pub fn cipher(self) -> crate::crypto::Cipher {
        match self {
            CipherArg::Aes256Xts => crate::crypto::Cipher::Aes256Xts,
            CipherArg::Aes128Xts => crate::crypto::Cipher::Aes128Xts,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Make a new key pair (private key sealed under a passphrase with Argon2id)
    #[command(after_help = "\
Exit status:
  0  the key pair was made
  1  an I/O error
  2  usage error: an invalid key ID, a key of that name exists, KDF parameters out of range,
     an empty passphrase, two passphrases that differ, --recovery for a user other than evfs
  4  access denied: no passphrase source (no --passphrase-file and no terminal), a keystore
     directory others could change

Examples:
  evfs key gen alice.k1
  evfs key gen backup.cron --passphrase-file pw.txt --store-passphrase
  evfs key gen evfs.r1 --recovery")]
    Gen {
        /// Key ID: user.keyname (a bare name means name.name)
        id: String,
        /// Read the new passphrase from FILE (- for standard input)
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Also store the passphrase, sealed with the host key, for non-interactive use
        #[arg(long)]
        store_passphrase: bool,
        /// A recovery key (the user part must be `evfs`)
        #[arg(long)]
        recovery: bool,
        /// Argon2id memory (K, M, G suffixes)
        #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = clap_size)]
        kdf_memory: u64,
        /// Argon2id passes
        #[arg(long, value_name = "N", default_value_t = 3)]
        kdf_passes: u32,
    },
    /// List key IDs, fingerprints, whether a passphrase is stored, and which keys are trusted signers
    #[command(after_help = "\
Exit status:
  0  success (also with no keys)
  1  an I/O error
  2  usage error
  4  access denied: a keystore directory or key file others could change
  5  a damaged public key file

Examples:
  evfs key list
  evfs --keystore /etc/evfs/pkey key list --json")]
    List {
        /// Print one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Print a public key (the line `key import` reads)
    #[command(after_help = "\
Exit status:
  0  the public key line was printed
  1  an I/O error, or ID is not in the keystore
  2  usage error (an invalid key ID)
  4  access denied: a keystore directory or key file others could change
  5  a damaged public key file

Example:
  evfs key show alice.k1 > alice.k1.pub")]
    Show { id: String },
    /// Add someone's public key to the keystore
    #[command(after_help = "\
Exit status:
  0  the key was imported (or was there already, the same)
  1  an I/O error
  2  usage error: an invalid key ID, FILE without a public key line, ID in the keystore with
     another public key
  4  access denied: a keystore directory others could change

Examples:
  evfs key import bob.k1 bob.k1.pub
  evfs key import backup.cron backup.cron.pub --trust")]
    Import {
        id: String,
        /// File with the public key line (- for standard input)
        file: PathBuf,
        /// Also trust its signatures (of backups and EMDs), as the keystore's own keys are
        #[arg(long)]
        trust: bool,
    },
    /// Stop trusting the signatures of an imported key
    #[command(after_help = "\
Exit status:
  0  trust was withdrawn (or the key was not trusted)
  1  an I/O error, or ID is not in the keystore
  2  usage error: an invalid key ID, or ID is a key pair of this keystore (trusted while its
     private key is here)
  4  access denied: a keystore directory others could change

Example:
  evfs key untrust backup.cron")]
    Untrust { id: String },
    /// Store a key's passphrase, sealed with the host key, for cron
    #[command(after_help = "\
Exit status:
  0  the passphrase was stored
  1  an I/O error
  2  usage error: an invalid key ID, an empty or too long passphrase file
  4  access denied: wrong or no passphrase, no private key for ID, a key file others could
     change
  5  a damaged key file

Example:
  evfs key store-passphrase backup.cron --passphrase-file pw.txt")]
    StorePassphrase {
        id: String,
        /// Read the passphrase from FILE (- for standard input)
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Remove a key's stored passphrase
    #[command(after_help = "\
Exit status:
  0  the stored passphrase was removed (or there was none)
  1  an I/O error
  2  usage error (an invalid key ID)
  4  access denied: a keystore directory others could change

Example:
  evfs key forget-passphrase backup.cron")]
    ForgetPassphrase { id: String },
}

#[derive(Subcommand, Debug)]
pub enum LuksCommand {
    /// Add a LUKS2 keyslot whose random passphrase is wrapped for key pair ID, so that -k ID opens the volume
    #[command(after_help = "\
The volume is opened with its passphrase or key file (or a prompt); only ID's public key is
needed. The new keyslot's passphrase is 256 random bits, stored wrapped for ID in a LUKS2 token
of type evfs-key; `cryptsetup luksDump` lists both.

Exit status:
  0  ID was enrolled
  1  an I/O error, the volume in use, its LUKS metadata locked, ID not in the keystore
  2  usage error: VOL is not a LUKS volume, ID is enrolled already
  3  refused: a LUKS1 volume, requirements evfs does not know
  4  access denied: no passphrase, a wrong passphrase or a damaged keyslot
  5  a damaged LUKS header

Example:
  evfs luks enroll disk.img backup.cron --luks-passphrase-file pw.txt")]
    Enroll {
        /// The LUKS2 volume (file or block device)
        vol: PathBuf,
        /// Key ID (user.keyname) to enroll
        id: String,
        #[command(flatten)]
        luks: LuksArgs,
    },
    /// Remove the keyslot and token of key pair ID (opened with the volume's passphrase, or with ID itself)
    #[command(after_help = "\
Exit status:
  0  ID was unenrolled: its keyslot overwritten with random data and removed, its token removed
  1  an I/O error, the volume in use, its LUKS metadata locked
  2  usage error: VOL is not a LUKS volume, ID is not enrolled
  3  refused: the keyslot is the volume's last one
  4  access denied: no passphrase, a wrong passphrase or a damaged keyslot
  5  a damaged LUKS header

Example:
  evfs luks unenroll disk.img backup.cron --luks-passphrase-file pw.txt")]
    Unenroll {
        /// The LUKS2 volume (file or block device)
        vol: PathBuf,
        /// Key ID (user.keyname) to unenroll
        id: String,
        #[command(flatten)]
        luks: LuksArgs,
        /// Read the passphrase of ID from FILE (- for standard input), when the volume's own passphrase is not given
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Give a key access to the volume (owner only); an evfs.* ID becomes a recovery key
    #[command(after_help = "\
Exit status:
  0  ID was added
  1  an I/O error, the volume in use by a backup, restore or map, ID not in the keystore
  2  usage error, VOL is not a volume, ID has a slot already, or no slot is free
  4  access denied: wrong or no passphrase, -k has no slot or is not the owner
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged key file

Example:
  evfs user add vol.img bob.k1 -k alice.k1")]
    Add {
        vol: PathBuf,
        /// Key ID to add (its public key must be in the keystore)
        id: String,
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Remove a key's slot (owner only)
    #[command(after_help = "\
Exit status:
  0  the slot was removed
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, VOL is not a volume, ID has no slot, or ID is the owner
  4  access denied: wrong or no passphrase, -k has no slot or is not the owner
  5  no valid EMD, a tampered or unsigned EMD, a newer format, a damaged key file

Example:
  evfs user remove vol.img bob.k1 -k alice.k1")]
    Remove {
        vol: PathBuf,
        id: String,
        #[command(flatten)]
        key: KeyArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum EmdCommand {
    /// Save the volume's EMD to FILE
    #[command(after_help = "\
Exit status:
  0  the EMD was saved
  1  an I/O error
  2  usage error, VOL is not a volume, or FILE exists (an EMD backup is never overwritten)
  5  no valid EMD, or a newer format

Example:
  evfs emd backup vol.img vol.emd")]
    Backup { vol: PathBuf, file: PathBuf },
    /// Write a saved EMD back to both copies of the volume
    #[command(after_help = "\
Exit status:
  0  the EMD was written to both copies
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, or VOL is not a regular file or block device
  3  refused: VOL holds the valid EMD of another volume (without --force), or is too small for
     the saved EMD's data area
  5  FILE is not a valid saved EMD (wrong size, damaged, a newer format)

Example:
  evfs emd restore vol.img vol.emd")]
    Restore {
        vol: PathBuf,
        file: PathBuf,
        /// Replace a valid EMD of another volume
        #[arg(long)]
        force: bool,
    },
    /// Sign the volume's EMD with a key that unlocks it (an older or keyless-written volume)
    #[command(after_help = "\
Exit status:
  0  the EMD was signed
  1  an I/O error, or the volume is in use by a backup, restore or map
  2  usage error, or VOL is not a volume
  4  access denied: wrong or no passphrase, -k has no slot
  5  no valid EMD, a tampered EMD (its MAC fails), a newer format, a damaged key file

Sign only an EMD whose content you trust: its slots, owner and label are
what the signature vouches for. An EMD of version 1 is rewritten as version 2
(which has room for a signature).

Example:
  evfs emd sign vol.img -k alice.k1")]
    Sign {
        vol: PathBuf,
        #[command(flatten)]
        key: KeyArgs,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
