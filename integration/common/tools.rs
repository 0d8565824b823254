//! Tests that need the operating system's help: external tools (qemu-img,
//! qemu-io, losetup, man, python3), `evfs map` running in the background,
//! loop devices and small file systems.
//!
//! A test that cannot run here never passes silently: with `CI` set (as
//! `.ci/run` sets it, after installing every tool) it fails; elsewhere it
//! says `SKIPPED` and why on stderr, and returns.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Env;

/// A test cannot run here: fail under CI, else say on stderr (past
/// libtest's capture) that it is skipped, and why.
pub fn unavailable(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test} cannot run: {why} (CI is set, so every tool the tests use must be installed)"
        );
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// Whether every tool runs (`TOOL --version`); if not, [`unavailable`].
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    for tool in tools {
        // `--version`, or `-V` for tools such as mke2fs.
        let ok = ["--version", "-V"].iter().any(|flag| {
            Command::new(tool)
                .arg(flag)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        if !ok {
            unavailable(test, &format!("`{tool}` is not installed or not runnable"));
            return false;
        }
    }
    true
}

/// Wait for `child` at most `limit`; kill it and panic past that.
fn wait_for(child: &mut Child, what: &str, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run a tool with a deadline; (success, stdout and stderr together).
pub fn run_tool(program: &str, args: &[&str]) -> (bool, String) {
    let mut out = tempfile::tempfile().expect("tempfile");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(out.try_clone().expect("dup")))
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let status = wait_for(
        &mut child,
        &format!("{program} {args:?}"),
        Duration::from_secs(120),
    );
    let mut text = String::new();
    out.seek(SeekFrom::Start(0)).expect("seek");
    out.read_to_string(&mut text).expect("read");
    (status.success(), text)
}

/// `evfs map` running in the background until [`Mapped::stop`] (SIGTERM);
/// killed on drop if a test fails first.
pub struct Mapped {
    child: Option<Child>,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Mapped {
    /// `evfs --keystore <ks> map ARGS --socket <dir>/NAME`, and wait until it
    /// says it serves (by then the socket listens and the EMD is marked).
    pub fn start(env: &Env, socket_name: &str, args: &[&str]) -> Mapped {
        let socket = env.path(socket_name);
        let log = env.path(&format!("{socket_name}.log"));
        let child = env
            .process(&["map"])
            .args(args)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&log).expect("log file")))
            .spawn()
            .expect("spawn evfs map");
        let mut mapped = Mapped {
            child: Some(child),
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !mapped.log().contains("evfs map: serving") {
            let child = mapped.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("evfs map exited early ({status}): {}", mapped.log());
            }
            assert!(
                Instant::now() < deadline,
                "evfs map did not listen: {}",
                mapped.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        mapped
    }

    /// The process id of the running map.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The URI qemu tools take.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    /// What `evfs map` wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send SIGTERM and wait; (exit status, stderr).
    pub fn stop(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .expect("SIGTERM");
        let status = wait_for(
            &mut child,
            "evfs map after SIGTERM",
            Duration::from_secs(30),
        );
        (status, self.log())
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A small tmpfs, unmounted when dropped.
pub struct SmallFs {
    pub dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mount a tmpfs of `size` (as `mount -o size=` takes it); `None`
    /// (with the reason, see [`unavailable`]) where mounting is not permitted.
    pub fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            unavailable(
                "SmallFs::mount",
                "mounting a tmpfs is not permitted here (needs root)",
            );
            return None;
        }
        Some(SmallFs { dir })
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A loop device over a file, detached on drop (its partitions removed first).
pub struct Loop {
    pub dev: PathBuf,
    partitions: bool,
}

impl Loop {
    /// `losetup --find --show FILE`; `None` (with the reason printed) where
    /// loop devices cannot be set up.
    pub fn attach(test: &str, file: &Path) -> Option<Loop> {
        Loop::attach_with(test, file, &[])
    }

    /// [`Loop::attach`] with more `losetup` options (`--offset N`, `--sizelimit N`).
    pub fn attach_with(test: &str, file: &Path, options: &[&str]) -> Option<Loop> {
        let out = match Command::new("losetup")
            .args(options)
            .arg("--find")
            .arg("--show")
            .arg(file)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                unavailable(test, &format!("losetup cannot run: {e}"));
                return None;
            }
        };
        if !out.status.success() {
            unavailable(
                test,
                &format!(
                    "losetup is not permitted here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            return None;
        }
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(Loop {
            dev,
            partitions: false,
        })
    }

    /// A loop device over `file`, which starts with an MBR, with its
    /// partitions added by `partx -a` (the kernel may have no partition
    /// table parser of its own); `None` where that cannot be done.
    pub fn attach_partitioned(test: &str, file: &Path) -> Option<Loop> {
        let mut l = Loop::attach(test, file)?;
        if !have_tools(test, &["partx"]) {
            return None;
        }
        let (ok, text) = run_tool("partx", &["-a", l.path()]);
        if !ok {
            unavailable(test, &format!("partx -a {} failed: {text}", l.path()));
            return None;
        }
        l.partitions = true;
        // The nodes appear when devtmpfs or udev makes them.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !l.partition(1).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            l.partition(1).exists(),
            "no node for {}",
            l.partition(1).display()
        );
        Some(l)
    }

    /// The node of partition `n`.
    pub fn partition(&self, n: u32) -> PathBuf {
        PathBuf::from(format!("{}p{n}", self.dev.display()))
    }

    pub fn path(&self) -> &str {
        self.dev.to_str().expect("loop device path")
    }
}

/// Write an MBR with primary partitions (start sector, sectors) at the
/// start of `file`.
pub fn write_mbr(file: &Path, parts: &[(u32, u32)]) {
    use std::os::unix::fs::FileExt;
    assert!(parts.len() <= 4);
    let mut mbr = [0u8; 512];
    for (i, (start, sectors)) in parts.iter().enumerate() {
        let e = &mut mbr[446 + 16 * i..446 + 16 * (i + 1)];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&start.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }
    mbr[510..].copy_from_slice(&[0x55, 0xaa]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open the disk image")
        .write_all_at(&mbr, 0)
        .expect("write the MBR");
}

impl Drop for Loop {
    fn drop(&mut self) {
        if self.partitions {
            let _ = Command::new("partx").arg("-d").arg(&self.dev).status();
        }
        let _ = Command::new("losetup")
            .arg("--detach")
            .arg(&self.dev)
            .status();
    }
}
