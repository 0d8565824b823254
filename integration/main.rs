//! The command-line tests: the real `evfs` binary driven as users and cron
//! jobs drive it, one module per area, with one shared helper module
//! ([`common`]). Run them with `cargo test --release`; `--test cli NAME`
//! runs the tests whose name holds NAME.

mod common;

mod admin;
mod authenticity;
mod backup;
mod blockdev;
mod crash;
mod golden;
mod identity;
mod incremental;
mod keystore;
mod luks;
mod man;
mod map;
mod reference;
mod reliability;
mod safety;
mod stream;
