//! Storage identity: whether two names (paths, standard input or output)
//! reach the same bytes, whatever they are called.
//!
//! A name is resolved down to its *bases*: a regular file (by file system
//! and inode) or a whole disk (by device number), each with the byte range
//! the name reaches. A hard link, a symbolic link and a second device node
//! resolve to the same base; so do a loop device and its backing file (the
//! range `lo_offset`, `lo_sizelimit`), a partition and its disk (`start`,
//! `size` in sysfs), and a device-mapper device and the devices its table
//! maps (linear, crypt and striped targets; any other target, or no
//! `dmsetup`, counts as all of its `slaves/`). Layers nest: a partition of a
//! loop device over a file is a range of that file. Two names are the same
//! storage when some extents of theirs share a base and overlap;
//! [`Storage::overlap`] then says how, in words.
//!
//! Pipes, terminals, sockets and character devices are no storage: they
//! overlap nothing.

// The loop device status is an `ioctl` through libc.
#![allow(unsafe_code)]

use std::fmt;
use std::fs::{File, FileType, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bytes in a sysfs or device-mapper sector.
const SECTOR: u64 = 512;

/// How deep layers may nest before resolution stops (a loop in the sysfs
/// graph would otherwise never end).
const MAX_DEPTH: u32 = 16;

/// Where bytes finally live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base {
    /// A regular file, by file system and inode.
    File {
        /// The device number of its file system.
        dev: u64,
        /// Its inode number.
        ino: u64,
    },
    /// A disk with no loop, partition or mapping layer known below it.
    Disk {
        /// Its device number (major and minor).
        rdev: u64,
    },
}

/// A file or block device on the way from a name down to its bases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Object {
    File { dev: u64, ino: u64 },
    Block { rdev: u64 },
}

impl From<Base> for Object {
    fn from(b: Base) -> Object {
        match b {
            Base::File { dev, ino } => Object::File { dev, ino },
            Base::Disk { rdev } => Object::Block { rdev },
        }
    }
}

/// How one layer stands on the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    BackedBy,
    PartitionOf,
    MappedOnto,
    BuiltOn,
}

impl Relation {
    fn text(self) -> &'static str {
        match self {
            Relation::BackedBy => "backed by",
            Relation::PartitionOf => "a partition of",
            Relation::MappedOnto => "mapped onto",
            Relation::BuiltOn => "built on",
        }
    }
}

/// One step down: "is `relation` `name`".
#[derive(Clone, Debug)]
struct Hop {
    relation: Relation,
    name: String,
    object: Object,
}

/// A byte range of a base that a name reaches.
#[derive(Clone, Debug)]
pub struct Extent {
    /// The base the bytes are on.
    pub base: Base,
    /// The first byte on the base.
    pub start: u64,
    /// How many bytes; `None`: to the end of the base, however long.
    pub len: Option<u64>,
    /// Where these bytes begin in the name's own address space, when they
    /// follow each other there as on the base (`linear`); a striped mapping
    /// is not linear, and is never narrowed.
    logical: u64,
    linear: bool,
    /// The layers from the name down to the base (empty: the name is the base).
    route: Vec<Hop>,
    /// A path that opens the base, to lock it.
    open: Option<PathBuf>,
}

impl Extent {
    fn whole(base: Base, open: Option<PathBuf>) -> Extent {
        Extent {
            base,
            start: 0,
            len: None,
            logical: 0,
            linear: true,
            route: Vec::new(),
            open,
        }
    }

    /// A path that opens the base, where one is known.
    pub fn open_path(&self) -> Option<&Path> {
        self.open.as_deref()
    }

    fn end(&self) -> Option<u64> {
        self.len.map(|n| self.start.saturating_add(n))
    }

    fn overlaps(&self, other: &Extent) -> bool {
        self.base == other.base
            && self.end().is_none_or(|e| other.start < e)
            && other.end().is_none_or(|e| self.start < e)
            && self.len != Some(0)
            && other.len != Some(0)
    }

    fn below(mut self, hop: Hop) -> Extent {
        self.route.insert(0, hop);
        self
    }
}

/// Narrow `extents` (the address space of a device) to `len` bytes from
/// `offset` (`None`: to the end), as a partition or a loop device with an
/// offset sees it.
fn restrict(extents: Vec<Extent>, offset: u64, len: Option<u64>) -> Vec<Extent> {
    let want_end = len.map(|n| offset.saturating_add(n));
    extents
        .into_iter()
        .filter_map(|mut e| {
            if !e.linear {
                return Some(e);
            }
            let lo = e.logical.max(offset);
            let e_end = e.len.map(|n| e.logical.saturating_add(n));
            let hi = match (e_end, want_end) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, None) => a,
                (None, b) => b,
            };
            if hi.is_some_and(|h| h <= lo) {
                return None;
            }
            e.start += lo - e.logical;
            e.len = hi.map(|h| h - lo);
            e.logical = lo - offset;
            Some(e)
        })
        .collect()
}

/// What a name resolves to.
#[derive(Clone, Debug)]
pub struct Storage {
    name: String,
    /// The file or device the name opens; `None` for pipes, terminals, ...
    object: Option<Object>,
    extents: Vec<Extent>,
}

impl Storage {
    /// The storage `path` names (symbolic links followed), or `None` when
    /// nothing is there. Nothing is opened but sysfs and, for a loop device,
    /// the device node (to ask for its backing file).
    pub fn of_path(path: &Path) -> Result<Option<Storage>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(Storage::of_metadata(&m, path.display().to_string()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading the metadata of", path, e)),
        }
    }

    /// The storage behind an open file, called `name` in messages.
    pub fn of_file(file: &File, name: &str) -> Result<Storage> {
        let m = file
            .metadata()
            .map_err(|e| Error::io("reading the metadata of", name, e))?;
        Ok(Storage::of_metadata(&m, name.to_string()))
    }

    /// The storage behind standard input.
    pub fn of_stdin() -> Result<Storage> {
        Storage::of_fd(rustix::stdio::stdin(), "standard input")
    }

    /// The storage behind standard output.
    pub fn of_stdout() -> Result<Storage> {
        Storage::of_fd(rustix::stdio::stdout(), "standard output")
    }

    fn of_fd(fd: std::os::fd::BorrowedFd<'_>, name: &str) -> Result<Storage> {
        match rustix::io::dup(fd) {
            Ok(owned) => Storage::of_file(&File::from(owned), name),
            // A closed standard stream is no storage.
            Err(rustix::io::Errno::BADF) => Ok(Storage {
                name: name.to_string(),
                object: None,
                extents: Vec::new(),
            }),
            Err(e) => Err(Error::io("duplicating", name, e.into())),
        }
    }

    fn of_metadata(m: &Metadata, name: String) -> Storage {
        let t = m.file_type();
        let (object, extents) = if t.is_file() {
            let base = Base::File {
                dev: m.dev(),
                ino: m.ino(),
            };
            (Some(base.into()), vec![Extent::whole(base, None)])
        } else if t.is_block_device() {
            let rdev = m.rdev();
            (Some(Object::Block { rdev }), resolve_block(rdev, 0))
        } else {
            (None, Vec::new())
        };
        Storage {
            name,
            object,
            extents,
        }
    }

    /// The name given for this storage.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The base ranges this storage reaches (none for a pipe or terminal).
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// How `self` and `other` are the same storage, if they are.
    pub fn overlap(&self, other: &Storage) -> Option<Explanation> {
        let (a, b) = self
            .extents
            .iter()
            .find_map(|a| other.extents.iter().find(|b| a.overlaps(b)).map(|b| (a, b)))?;
        let text = if self.object.is_some() && self.object == other.object {
            let what = match self.object {
                Some(Object::Block { .. }) => "the same block device",
                _ => "the same file",
            };
            if self.name == other.name {
                format!("both are {}", self.name)
            } else {
                format!("{} and {} are {what}", self.name, other.name)
            }
        } else if let Some(i) = a.route.iter().position(|h| Some(h.object) == other.object) {
            render(&self.name, &a.route[..=i], Some(&other.name))
        } else if let Some(i) = b.route.iter().position(|h| Some(h.object) == self.object) {
            render(&other.name, &b.route[..=i], Some(&self.name))
        } else {
            let mut text = format!(
                "{}, and {}",
                render(&self.name, &a.route, None),
                render(&other.name, &b.route, None)
            );
            if a.len.is_some() || b.len.is_some() {
                let lo = a.start.max(b.start);
                let hi = match (a.end(), b.end()) {
                    (Some(x), Some(y)) => x.min(y).to_string(),
                    (Some(x), None) | (None, Some(x)) => x.to_string(),
                    (None, None) => "the end".to_string(),
                };
                let base = a.route.last().map_or("it", |h| h.name.as_str());
                text.push_str(&format!(" (both reach bytes {lo} to {hi} of {base})"));
            }
            text
        };
        Some(Explanation(text))
    }
}

/// "NAME is REL A, which is REL B", the last name replaced by `last`.
fn render(name: &str, hops: &[Hop], last: Option<&str>) -> String {
    let mut s = name.to_string();
    for (i, hop) in hops.iter().enumerate() {
        let target = match last {
            Some(l) if i + 1 == hops.len() => l,
            _ => hop.name.as_str(),
        };
        if i > 0 {
            s.push_str(", which is");
        } else {
            s.push_str(" is");
        }
        s.push_str(&format!(" {} {target}", hop.relation.text()));
    }
    s
}

/// Why two names are the same storage, in words: "/dev/loop0 is backed by
/// vol.img".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation(String);

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What kind of file `t` is, with an article: "a FIFO (named pipe)".
pub fn kind_name(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

// ------------------------------------------------------------ block devices

fn sys_dir(rdev: u64) -> PathBuf {
    PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        rustix::fs::major(rdev),
        rustix::fs::minor(rdev)
    ))
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim_end_matches('\n').to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.trim().parse().ok()
}

/// "MAJOR:MINOR" as sysfs and device-mapper tables write it.
fn parse_dev(text: &str) -> Option<u64> {
    let (maj, min) = text.trim().split_once(':')?;
    Some(rustix::fs::makedev(maj.parse().ok()?, min.parse().ok()?))
}

/// The device node of `rdev`: `/dev/NAME` from sysfs, checked.
fn dev_node(rdev: u64) -> Option<PathBuf> {
    let uevent = read_trimmed(&sys_dir(rdev).join("uevent"))?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let node = Path::new("/dev").join(name);
    let m = std::fs::metadata(&node).ok()?;
    (m.file_type().is_block_device() && m.rdev() == rdev).then_some(node)
}

/// The name of `rdev` for messages: its device node, else MAJOR:MINOR.
fn dev_name(rdev: u64) -> String {
    dev_node(rdev).map_or_else(
        || {
            format!(
                "block device {}:{}",
                rustix::fs::major(rdev),
                rustix::fs::minor(rdev)
            )
        },
        |p| p.display().to_string(),
    )
}

/// Resolve the block device `rdev` to the bases it reaches.
fn resolve_block(rdev: u64, depth: u32) -> Vec<Extent> {
    let whole = || vec![Extent::whole(Base::Disk { rdev }, dev_node(rdev))];
    if depth > MAX_DEPTH {
        return whole();
    }
    let Ok(sys) = sys_dir(rdev).canonicalize() else {
        return whole();
    };
    if sys.join("partition").exists() {
        return partition_extents(&sys, depth).unwrap_or_else(whole);
    }
    if sys.join("loop").is_dir()
        && let Some(v) = loop_extents(rdev, &sys, depth)
    {
        return v;
    }
    if sys.join("dm").is_dir() {
        let v = dm_extents(&sys, depth);
        if !v.is_empty() {
            return v;
        }
    }
    let v = slave_extents(&sys, Relation::BuiltOn, depth);
    if v.is_empty() { whole() } else { v }
}

/// A partition: its range of the disk it belongs to (the parent directory
/// in sysfs).
fn partition_extents(sys: &Path, depth: u32) -> Option<Vec<Extent>> {
    let start = read_u64(&sys.join("start"))?;
    let size = read_u64(&sys.join("size"))?;
    let disk = parse_dev(&read_trimmed(&sys.parent()?.join("dev"))?)?;
    let hop = Hop {
        relation: Relation::PartitionOf,
        name: dev_name(disk),
        object: Object::Block { rdev: disk },
    };
    let v = restrict(
        resolve_block(disk, depth + 1),
        start * SECTOR,
        Some(size * SECTOR),
    );
    Some(v.into_iter().map(|e| e.below(hop.clone())).collect())
}

/// What the kernel says a loop device reads from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LoopStatus {
    /// The backing file's file system and inode.
    dev: u64,
    ino: u64,
    /// The backing file's device number, when it is a block device.
    rdev: u64,
    offset: u64,
    /// 0: to the end of the backing file.
    sizelimit: u64,
}

/// `struct loop_info64` of `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// A device number as the loop driver reports it (`huge_encode_dev`), as
/// `stat` reports it.
fn from_kernel_dev(huge: u64) -> u64 {
    let major = ((huge & 0xfff00) >> 8) as u32;
    let minor = ((huge & 0xff) | ((huge >> 12) & 0xfff00)) as u32;
    rustix::fs::makedev(major, minor)
}

/// `LOOP_GET_STATUS64` on an open loop device (the whole device, not a
/// partition of it: the driver would answer for the disk).
fn loop_status_of(file: &File) -> Option<LoopStatus> {
    let mut info = std::mem::MaybeUninit::<LoopInfo64>::zeroed();
    // SAFETY: LOOP_GET_STATUS64 writes one `struct loop_info64`, whose
    // layout `LoopInfo64` reproduces, into the buffer it is given; the
    // buffer is that big and lives across the call; the descriptor is open.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_GET_STATUS64 as _, info.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: the buffer was zero-initialized (a valid `LoopInfo64`: plain
    // integers and byte arrays) and the kernel filled it in.
    let info = unsafe { info.assume_init() };
    Some(LoopStatus {
        dev: from_kernel_dev(info.lo_device),
        ino: info.lo_inode,
        rdev: from_kernel_dev(info.lo_rdevice),
        offset: info.lo_offset,
        sizelimit: info.lo_sizelimit,
    })
}

/// A loop device's status: by ioctl on its node, else from sysfs.
fn loop_status(rdev: u64, sys: &Path) -> Option<(LoopStatus, Option<PathBuf>)> {
    let backing = read_trimmed(&sys.join("loop/backing_file"))
        .map(|s| PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s)));
    let by_ioctl = dev_node(rdev).and_then(|node| {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(node)
            .ok()?;
        loop_status_of(&f)
    });
    if let Some(s) = by_ioctl {
        return Some((s, backing));
    }
    // sysfs only: the backing file by its path.
    let path = backing?;
    let m = std::fs::metadata(&path).ok()?;
    let status = LoopStatus {
        dev: m.dev(),
        ino: m.ino(),
        rdev: if m.file_type().is_block_device() {
            m.rdev()
        } else {
            0
        },
        offset: read_u64(&sys.join("loop/offset")).unwrap_or(0),
        sizelimit: read_u64(&sys.join("loop/sizelimit")).unwrap_or(0),
    };
    Some((status, Some(path)))
}

/// A loop device: a range of its backing file (or backing block device).
fn loop_extents(rdev: u64, sys: &Path, depth: u32) -> Option<Vec<Extent>> {
    let (s, backing) = loop_status(rdev, sys)?;
    let len = (s.sizelimit != 0).then_some(s.sizelimit);
    if s.rdev != 0 {
        let hop = Hop {
            relation: Relation::BackedBy,
            name: dev_name(s.rdev),
            object: Object::Block { rdev: s.rdev },
        };
        let v = restrict(resolve_block(s.rdev, depth + 1), s.offset, len);
        return Some(v.into_iter().map(|e| e.below(hop.clone())).collect());
    }
    let base = Base::File {
        dev: s.dev,
        ino: s.ino,
    };
    // The path sysfs gives is only trusted to open the file it names.
    let open = backing.clone().filter(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.file_type().is_file() && m.dev() == s.dev && m.ino() == s.ino)
    });
    let name = backing.map_or_else(
        || {
            format!(
                "inode {} of the file system on device {}:{}",
                s.ino,
                rustix::fs::major(s.dev),
                rustix::fs::minor(s.dev)
            )
        },
        |p| p.display().to_string(),
    );
    let extent = Extent {
        base,
        start: s.offset,
        len,
        logical: 0,
        linear: true,
        route: vec![Hop {
            relation: Relation::BackedBy,
            name,
            object: base.into(),
        }],
        open,
    };
    Some(vec![extent])
}

/// Every device in `sys/slaves`, whole and not linear.
fn slave_extents(sys: &Path, relation: Relation, depth: u32) -> Vec<Extent> {
    let Ok(dir) = std::fs::read_dir(sys.join("slaves")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(rdev) = read_trimmed(&entry.path().join("dev")).and_then(|d| parse_dev(&d)) else {
            continue;
        };
        let hop = Hop {
            relation,
            name: dev_name(rdev),
            object: Object::Block { rdev },
        };
        out.extend(resolve_block(rdev, depth + 1).into_iter().map(|mut e| {
            e.linear = false;
            e.below(hop.clone())
        }));
    }
    out
}

/// A device-mapper device: its table's extents where `dmsetup` gives the
/// table and every target is understood; else all of its slaves.
fn dm_extents(sys: &Path, depth: u32) -> Vec<Extent> {
    let table = read_trimmed(&sys.join("dm/name")).and_then(|name| {
        let out = std::process::Command::new("dmsetup")
            .args(["table", name.as_str()])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| parse_dm_table(&String::from_utf8_lossy(&out.stdout)))
            .flatten()
    });
    let mut lower = |dev: &str| -> Option<Lower> {
        let rdev = match parse_dev(dev) {
            Some(r) => r,
            None => {
                let m = std::fs::metadata(dev).ok()?;
                m.file_type().is_block_device().then(|| m.rdev())?
            }
        };
        Some(Lower {
            rdev,
            name: dev_name(rdev),
            extents: resolve_block(rdev, depth + 1),
        })
    };
    table
        .and_then(|t| table_extents(&t, &mut lower))
        .unwrap_or_else(|| slave_extents(sys, Relation::MappedOnto, depth))
}

/// One line of a device-mapper table, as far as identity needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DmTarget {
    /// Start and length in the mapped device, in 512-byte sectors.
    pub start: u64,
    /// Length in the mapped device, in 512-byte sectors.
    pub len: u64,
    /// The lower devices ("MAJOR:MINOR" or a path) and the sector each
    /// part starts at on them.
    pub devices: Vec<(String, u64)>,
    /// Striped: the length is spread over the devices.
    pub striped: bool,
}

/// Parse `dmsetup table` output for one device. `None` when a line has a
/// target type whose layout is not known here (thin, snapshot, raid, ...)
/// or does not parse: the caller then falls back to the slaves.
pub(crate) fn parse_dm_table(text: &str) -> Option<Vec<DmTarget>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let start = f.first()?.parse().ok()?;
        let len = f.get(1)?.parse().ok()?;
        let (devices, striped) = match *f.get(2)? {
            // linear DEV OFFSET
            "linear" => (
                vec![(f.get(3)?.to_string(), f.get(4)?.parse().ok()?)],
                false,
            ),
            // crypt CIPHER KEY IV_OFFSET DEV OFFSET [OPTIONS]
            "crypt" => (
                vec![(f.get(6)?.to_string(), f.get(7)?.parse().ok()?)],
                false,
            ),
            // striped #STRIPES CHUNK DEV OFFSET [DEV OFFSET]...
            "striped" => {
                let n: usize = f.get(3)?.parse().ok()?;
                let mut devs = Vec::with_capacity(n);
                for i in 0..n {
                    devs.push((
                        f.get(5 + 2 * i)?.to_string(),
                        f.get(6 + 2 * i)?.parse().ok()?,
                    ));
                }
                (devs, true)
            }
            "zero" | "error" => (Vec::new(), false),
            _ => return None,
        };
        out.push(DmTarget {
            start,
            len,
            devices,
            striped,
        });
    }
    Some(out)
}

/// A device a mapping table names: its number, name and extents.
struct Lower {
    rdev: u64,
    name: String,
    extents: Vec<Extent>,
}

/// The extents of a mapped device from its table; `lower` resolves a
/// table's device ("MAJOR:MINOR" or a path).
fn table_extents(
    table: &[DmTarget],
    lower: &mut dyn FnMut(&str) -> Option<Lower>,
) -> Option<Vec<Extent>> {
    let mut out = Vec::new();
    for t in table {
        let n = t.devices.len().max(1) as u64;
        for (dev, offset) in &t.devices {
            let Lower {
                rdev,
                name,
                extents,
            } = lower(dev)?;
            let hop = Hop {
                relation: Relation::MappedOnto,
                name,
                object: Object::Block { rdev },
            };
            // A stripe holds its share of the length, spread over it.
            let on_dev = if t.striped { t.len.div_ceil(n) } else { t.len };
            let v = restrict(extents, offset * SECTOR, Some(on_dev * SECTOR));
            out.extend(v.into_iter().map(|mut e| {
                if t.striped {
                    e.linear = false;
                } else {
                    e.logical += t.start * SECTOR;
                }
                e.below(hop.clone())
            }));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn storage(p: &Path) -> Storage {
        Storage::of_path(p).unwrap().unwrap()
    }

    fn same(a: &Storage, b: &Storage) -> Option<String> {
        a.overlap(b).map(|e| e.to_string())
    }

    #[test]
    fn hard_links_and_symlinks_are_one_file_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, b"x").unwrap();
        std::fs::write(dir.path().join("other"), b"x").unwrap();
        std::fs::hard_link(&p, dir.path().join("h")).unwrap();
        std::os::unix::fs::symlink(&p, dir.path().join("s")).unwrap();
        let v = storage(&p);
        for name in ["h", "s"] {
            let why = same(&v, &storage(&dir.path().join(name))).unwrap();
            assert!(why.ends_with("are the same file"), "{why}");
        }
        assert_eq!(same(&v, &v).unwrap(), format!("both are {}", p.display()));
        assert_eq!(same(&v, &storage(&dir.path().join("other"))), None);
        assert!(
            Storage::of_path(&dir.path().join("none"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn pipes_and_character_devices_are_no_storage() {
        let null = storage(Path::new("/dev/null"));
        assert!(null.extents().is_empty());
        assert_eq!(same(&null, &null), None);
        let mut child = Command::new("true")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let w = File::from(std::os::fd::OwnedFd::from(child.stdin.take().unwrap()));
        let a = Storage::of_file(&w, "w").unwrap();
        assert!(a.extents().is_empty());
        assert_eq!(same(&a, &a), None);
        let _ = child.wait();
    }

    #[test]
    fn an_open_file_is_the_storage_of_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, b"x").unwrap();
        let f = File::open(&p).unwrap();
        let by_fd = Storage::of_file(&f, "standard output").unwrap();
        let why = same(&by_fd, &storage(&p)).unwrap();
        assert!(why.starts_with("standard output and "), "{why}");
    }

    #[test]
    fn standard_streams_resolve_by_fstat() {
        // Whatever the harness gave us, resolving must not fail.
        Storage::of_stdin().unwrap();
        Storage::of_stdout().unwrap();
    }

    fn file_extent(ino: u64, start: u64, len: Option<u64>) -> Extent {
        Extent {
            base: Base::File { dev: 1, ino },
            start,
            len,
            logical: 0,
            linear: true,
            route: Vec::new(),
            open: None,
        }
    }

    #[test]
    fn restricting_maps_ranges_through_layers() {
        // A loop device at offset 1 MiB, 8 MiB long, of a file.
        let lo = restrict(vec![file_extent(7, 0, None)], 1 << 20, Some(8 << 20));
        assert_eq!((lo[0].start, lo[0].len), (1 << 20, Some(8 << 20)));
        // Its partition from 4 MiB, 8 MiB long: cut at the loop's end.
        let p = restrict(lo.clone(), 4 << 20, Some(8 << 20));
        assert_eq!((p[0].start, p[0].len), (5 << 20, Some(4 << 20)));
        // A partition past the end reaches nothing.
        assert!(restrict(lo, 9 << 20, Some(1)).is_empty());
        // Overlap needs the same base and a shared byte.
        let a = file_extent(7, 0, Some(10));
        assert!(a.overlaps(&file_extent(7, 9, None)));
        assert!(!a.overlaps(&file_extent(7, 10, None)));
        assert!(!a.overlaps(&file_extent(8, 0, None)));
    }

    #[test]
    fn dm_tables_parse_linear_crypt_and_striped_lines() {
        let t = parse_dm_table(
            "0 409600 linear 8:16 2048\n\
             409600 1024 crypt aes-xts-plain64 :64:logon:cryptsetup:abc 0 8:32 4096 1 allow_discards\n\
             410624 2048 striped 2 128 8:48 0 /dev/sdd 100\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].devices, vec![("8:16".to_string(), 2048)]);
        assert_eq!(t[1].devices, vec![("8:32".to_string(), 4096)]);
        assert_eq!(
            t[2].devices,
            vec![("8:48".to_string(), 0), ("/dev/sdd".to_string(), 100)]
        );
        assert!(t[2].striped && !t[0].striped);
        assert!(parse_dm_table("0 100 thin 253:2 7\n").is_none());
        assert!(parse_dm_table("0 100 linear 8:16\n").is_none());
        assert_eq!(parse_dm_table("").unwrap(), vec![]);
    }

    /// Two mapped devices over fake disks: 8:16 and 8:32.
    fn mapped(name: &str, table: &str) -> Storage {
        let t = parse_dm_table(table).unwrap();
        let mut lower = |dev: &str| {
            let rdev = parse_dev(dev)?;
            Some(Lower {
                rdev,
                name: format!("/dev/disk-{dev}"),
                extents: vec![Extent::whole(Base::Disk { rdev }, None)],
            })
        };
        Storage {
            name: name.to_string(),
            object: Some(Object::Block {
                rdev: rustix::fs::makedev(253, name.len() as u32),
            }),
            extents: table_extents(&t, &mut lower).unwrap(),
        }
    }

    #[test]
    fn mapped_devices_are_the_same_only_where_their_extents_overlap() {
        // Two logical volumes side by side on one physical volume.
        let lv1 = mapped("/dev/vg/a", "0 2048 linear 8:16 2048\n");
        let lv2 = mapped("/dev/vg/bb", "0 2048 linear 8:16 4096\n");
        assert_eq!(same(&lv1, &lv2), None);
        // A third, overlapping the first by one sector.
        let lv3 = mapped(
            "/dev/vg/ccc",
            "0 8 linear 8:32 0\n8 2048 linear 8:16 4095\n",
        );
        let why = same(&lv1, &lv3).unwrap();
        assert!(
            why.contains("/dev/vg/a is mapped onto /dev/disk-8:16"),
            "{why}"
        );
        assert!(why.contains("bytes 2096640 to 2097152"), "{why}");
        // A striped volume over both disks is the same as anything on either.
        let st = mapped("/dev/vg/dddd", "0 4096 striped 2 128 8:16 1000000 8:32 0\n");
        assert!(same(&st, &lv3).is_some());
        assert_eq!(same(&st, &lv1), None);
        // The stripe's share of 8:16 is 2048 sectors from sector 1000000.
        let near = mapped("/dev/vg/eeeee", "0 8 linear 8:16 1002047\n");
        assert!(same(&st, &near).is_some());
        let past = mapped("/dev/vg/ffffff", "0 8 linear 8:16 1002048\n");
        assert_eq!(same(&st, &past), None);
        // A crypt mapping over a partition of the first volume's range.
        let cr = mapped(
            "/dev/mapper/c",
            "0 100 crypt aes-xts-plain64 :64:logon:x 0 8:16 2100 1\n",
        );
        assert!(same(&cr, &lv1).is_some());
    }

    #[test]
    fn kernel_device_numbers_decode_as_stat_encodes_them() {
        // huge_encode_dev(MKDEV(259, 0x12345)) = minor low byte | major << 8 | minor high bits << 12
        let huge = 0x45 | (259 << 8) | (0x123 << 20);
        assert_eq!(from_kernel_dev(huge), rustix::fs::makedev(259, 0x12345));
        assert_eq!(from_kernel_dev((7 << 8) | 3), rustix::fs::makedev(7, 3));
    }

    /// Loop devices, where `losetup` may run (root, a kernel with loop).
    struct TestLoop(String);

    impl TestLoop {
        fn attach(file: &Path, extra: &[&str]) -> Option<TestLoop> {
            let out = Command::new("losetup")
                .args(extra)
                .args(["--find", "--show"])
                .arg(file)
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            Some(TestLoop(
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            ))
        }

        fn path(&self) -> &Path {
            Path::new(&self.0)
        }
    }

    impl Drop for TestLoop {
        fn drop(&mut self) {
            let _ = Command::new("partx").arg("-d").arg(&self.0).output();
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }

    /// Loop tests cannot run here: fail under CI, else say so.
    fn no_loop(test: &str) {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: losetup is not available, and CI requires it"
        );
        eprintln!("SKIPPED {test}: losetup is not available (not root, or no loop driver)");
    }

    fn sparse(dir: &Path, name: &str, size: u64) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().set_len(size).unwrap();
        p
    }

    #[test]
    fn loop_devices_are_their_backing_file_range() {
        let dir = tempfile::tempdir().unwrap();
        let file = sparse(dir.path(), "vol.img", 16 << 20);
        let Some(l0) = TestLoop::attach(&file, &[]) else {
            return no_loop("loop_devices_are_their_backing_file_range");
        };
        let f = storage(&file);
        let d0 = storage(l0.path());
        let why = same(&d0, &f).unwrap();
        assert_eq!(why, format!("{} is backed by {}", l0.0, file.display()));
        assert_eq!(
            same(&f, &d0).unwrap(),
            format!("{} is backed by {}", l0.0, file.display())
        );
        // Two loop devices over one file.
        let l1 = TestLoop::attach(&file, &[]).unwrap();
        let why = same(&d0, &storage(l1.path())).unwrap();
        assert!(why.contains(", and "), "{why}");
        // Offset and size limit: the first 4 MiB and the rest are apart.
        let head = TestLoop::attach(&file, &["--sizelimit", "4194304"]).unwrap();
        let tail = TestLoop::attach(&file, &["--offset", "4194304"]).unwrap();
        let (h, t) = (storage(head.path()), storage(tail.path()));
        assert_eq!(same(&h, &t), None);
        assert!(same(&h, &d0).is_some() && same(&t, &f).is_some());
        assert_eq!(h.extents()[0].len, Some(4 << 20));
        assert_eq!(t.extents()[0].start, 4 << 20);
        // A loop device over a loop device: the file underneath.
        let nested = TestLoop::attach(l0.path(), &["--offset", "1048576"]).unwrap();
        let why = same(&storage(nested.path()), &f).unwrap();
        assert_eq!(
            why,
            format!(
                "{} is backed by {}, which is backed by {}",
                nested.0,
                l0.0,
                file.display()
            )
        );
        // Another file is another storage.
        let other = sparse(dir.path(), "other.img", 1 << 20);
        assert_eq!(same(&d0, &storage(&other)), None);
        // By descriptor too (what stdout would be).
        let fd = File::open(l0.path()).unwrap();
        assert!(same(&Storage::of_file(&fd, "standard output").unwrap(), &f).is_some());
    }

    /// An MBR with two partitions: sectors 2048..10240 and 10240..18432.
    fn partitioned(dir: &Path) -> PathBuf {
        let p = sparse(dir, "disk.img", 16 << 20);
        let mut mbr = [0u8; 512];
        for (i, start) in [2048u32, 10240].into_iter().enumerate() {
            let e = &mut mbr[446 + 16 * i..446 + 16 * (i + 1)];
            e[4] = 0x83;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&8192u32.to_le_bytes());
        }
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&mbr, 0)
            .unwrap();
        p
    }

    #[test]
    fn partitions_are_ranges_of_their_disk_and_its_backing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = partitioned(dir.path());
        let Some(l) = TestLoop::attach(&file, &[]) else {
            return no_loop("partitions_are_ranges_of_their_disk_and_its_backing_file");
        };
        let ok = Command::new("partx")
            .arg("-a")
            .arg(l.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return no_loop("partitions (partx -a failed)");
        }
        let (p1, p2) = (format!("{}p1", l.0), format!("{}p2", l.0));
        for _ in 0..100 {
            if Path::new(&p2).exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (s1, s2) = (storage(Path::new(&p1)), storage(Path::new(&p2)));
        let (disk, f) = (storage(l.path()), storage(&file));
        assert_eq!(same(&s1, &s2), None, "two partitions are apart");
        assert_eq!(
            same(&s1, &f).unwrap(),
            format!(
                "{p1} is a partition of {}, which is backed by {}",
                l.0,
                file.display()
            )
        );
        assert_eq!(
            same(&disk, &s2).unwrap(),
            format!("{p2} is a partition of {}", l.0)
        );
        assert_eq!(s1.extents()[0].start, 2048 * 512);
        assert_eq!(s1.extents()[0].len, Some(8192 * 512));
        // A loop device over the first partition, and one over a range of
        // the file inside the second.
        let over_p1 = TestLoop::attach(Path::new(&p1), &[]).unwrap();
        assert!(same(&storage(over_p1.path()), &s1).is_some());
        assert_eq!(same(&storage(over_p1.path()), &s2), None);
        let inside_p2 =
            TestLoop::attach(&file, &["--offset", "6291456", "--sizelimit", "4096"]).unwrap();
        assert!(same(&storage(inside_p2.path()), &s2).is_some());
        assert_eq!(same(&storage(inside_p2.path()), &s1), None);
    }
}
