//! Progress of a running use-case on the command line: a bar with rate and
//! ETA when stderr is a terminal, plain lines at most once per interval with
//! `--progress` (for cron logs), and a GNU dd style stats line on SIGUSR1.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Ctx;
use crate::ops::Observer;
use crate::pipeline::Meter;
use crate::size::human;

/// How progress is shown.
#[derive(Clone, Debug)]
pub struct ProgressMode {
    /// Plain lines every `interval` (`--progress`).
    pub lines: Option<Duration>,
    /// A bar when stderr is a terminal (off with `--quiet` or `--json`).
    pub bar: bool,
}

impl ProgressMode {
    pub fn silent() -> Self {
        ProgressMode {
            lines: None,
            bar: false,
        }
    }
}

/// The command line's observer of a use-case: notes on stderr (unless
/// `--quiet`), details with `-v`, and progress as `mode` says, with a
/// GNU dd style stats line on SIGUSR1 while a task runs.
pub struct CliObserver<'a> {
    ctx: &'a Ctx,
    mode: ProgressMode,
    running: Mutex<Option<Running>>,
}

/// The reporter thread of the task under way.
struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    signal: Option<signal_hook::SigId>,
}

impl<'a> CliObserver<'a> {
    pub fn new(ctx: &'a Ctx, mode: ProgressMode) -> CliObserver<'a> {
        CliObserver {
            ctx,
            mode,
            running: Mutex::new(None),
        }
    }

    fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = running {
            r.stop.store(true, Ordering::Relaxed);
            r.thread.thread().unpark();
            let _ = r.thread.join();
            if let Some(id) = r.signal {
                signal_hook::low_level::unregister(id);
            }
        }
    }
}

impl Observer for CliObserver<'_> {
    fn note(&self, msg: &str) {
        self.ctx.note(msg);
    }

    fn detail(&self, msg: &str) {
        self.ctx.detail(msg);
    }

    fn warn(&self, msg: &str) {
        super::to_stderr(&format!("{msg}\n"));
    }

    fn started(&self, what: &str, total: Option<u64>, meter: Arc<Meter>) {
        self.stop();
        let usr1 = Arc::new(AtomicBool::new(false));
        let signal = signal_hook::flag::register(signal_hook::consts::SIGUSR1, usr1.clone()).ok();
        let stop = Arc::new(AtomicBool::new(false));
        let (mode, what, flag) = (self.mode.clone(), what.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            report(&mode, &what, total, &meter, &usr1, &flag, Instant::now());
        });
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running {
            stop,
            thread,
            signal,
        });
    }

    fn finished(&self) {
        self.stop();
    }
}

impl Drop for CliObserver<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn report(
    mode: &ProgressMode,
    what: &str,
    total: Option<u64>,
    meter: &Meter,
    usr1: &AtomicBool,
    stop: &AtomicBool,
    start: Instant,
) {
    let bar = (mode.bar && mode.lines.is_none() && std::io::stderr().is_terminal()).then(|| {
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if total.is_some() {
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{msg} {binary_bytes} {binary_bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        bar
    });
    let mut last_line = start;
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(Duration::from_millis(50));
        let done = meter.done();
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
        if usr1.swap(false, Ordering::Relaxed) {
            super::to_stderr(&format!("{}\n", dd_stats(meter, start.elapsed())));
        }
        if let Some(every) = mode.lines
            && last_line.elapsed() >= every
            && !stop.load(Ordering::Relaxed)
        {
            last_line = Instant::now();
            let mut text = line(what, done, total, start.elapsed());
            // A changed-only refresh or an incremental stream says how
            // much it passed over.
            let unchanged = meter.unchanged();
            if unchanged > 0 {
                text.push_str(&format!(
                    ", {unchanged} of {} chunks unchanged",
                    meter.chunks()
                ));
            }
            super::to_stderr(&format!("{text}\n"));
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

/// A plain progress line: `evfs: backup: 1.2 GiB of 4.0 GiB (30%), 1.1 GiB/s, ETA 3s`.
pub fn line(what: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    let rate = done as f64 / secs;
    match total {
        Some(t) if t > 0 => {
            let eta = if rate > 0.0 {
                Duration::from_secs(((t.saturating_sub(done)) as f64 / rate).round() as u64)
            } else {
                Duration::ZERO
            };
            format!(
                "evfs: {what}: {} of {} ({:.0}%), {}/s, ETA {}",
                human(done),
                human(t),
                done as f64 * 100.0 / t as f64,
                human(rate as u64),
                humantime::format_duration(eta)
            )
        }
        _ => format!("evfs: {what}: {}, {}/s", human(done), human(rate as u64)),
    }
}

/// GNU dd's SIGUSR1 report: records in/out, then bytes, time and rate.
pub fn dd_stats(meter: &Meter, elapsed: Duration) -> String {
    let bytes = meter.done();
    let records = meter.chunks();
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    format!(
        "{records}+0 records in\n{records}+0 records out\n{bytes} bytes ({}, {}) copied, {secs:.3} s, {}/s",
        si(bytes as f64),
        human(bytes),
        si(rate)
    )
}

fn si(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_amount_share_rate_and_eta() {
        let l = line("backup", 512 << 20, Some(1 << 30), Duration::from_secs(1));
        assert!(l.contains("512.0 MiB of 1.0 GiB (50%)"), "{l}");
        assert!(l.contains("ETA 1s"), "{l}");
        let l = line("restore", 10, None, Duration::from_secs(1));
        assert!(l.contains("10 B"), "{l}");
    }

    #[test]
    fn dd_stats_look_like_gnu_dd() {
        let m = Meter::default();
        m.add(1_000_000);
        m.add(1_000_000);
        let s = dd_stats(&m, Duration::from_secs(2));
        assert!(s.starts_with("2+0 records in\n2+0 records out\n2000000 bytes (2.0 MB, 1.9 MiB) copied, 2.000 s, 1.0 MB/s"), "{s}");
    }
}
