//! What `verify` finds, line by line: the report of a verify of an EVFS
//! target and of a LUKS one alike.

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Check {
    /// Whether it passed.
    pub ok: bool,
    /// What was checked, and what was found, in words.
    pub what: String,
}

/// The findings so far; the first failure is what the exit message names.
#[derive(Default)]
pub(crate) struct Findings {
    checks: Vec<Check>,
}

impl Findings {
    pub(crate) fn pass(&mut self, what: impl Into<String>) {
        self.checks.push(Check {
            ok: true,
            what: what.into(),
        });
    }

    pub(crate) fn fail(&mut self, what: impl Into<String>) {
        self.checks.push(Check {
            ok: false,
            what: what.into(),
        });
    }

    pub(crate) fn check(&mut self, ok: bool, what: impl Into<String>) {
        if ok { self.pass(what) } else { self.fail(what) }
    }

    pub(crate) fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// Compare a computed plaintext digest with a recorded one.
    pub(crate) fn digest(
        &mut self,
        hash: blake3::Hash,
        recorded: [u8; 32],
        what: &str,
        whose: &str,
    ) {
        let ok = blake3::Hash::from(recorded) == hash;
        self.check(
            ok,
            format!(
                "plaintext BLAKE3 {what} {} {whose}: {}",
                if ok { "matches" } else { "does NOT match" },
                hash.to_hex()
            ),
        );
    }

    pub(crate) fn first_failure(&self) -> Option<&str> {
        self.checks.iter().find(|c| !c.ok).map(|c| c.what.as_str())
    }

    /// Every check, in order.
    pub(crate) fn checks(&self) -> &[Check] {
        &self.checks
    }
}
