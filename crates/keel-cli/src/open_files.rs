//! `keel serve` raises its soft open-file limit to the hard limit at start-up: every connection
//! (from an agent, to an upstream) and the store's files count against it, and many systems
//! start services with a soft limit of 1024.

#![cfg_attr(not(unix), allow(dead_code, reason = "raising the limit is Unix-only"))]

/// Below this many open files keel may refuse connections under load.
const LOW: u64 = 4096;

/// The open-file limits before and after raising.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenFiles {
    /// The soft limit keel was started with.
    pub(crate) soft_before: u64,
    /// The soft limit now.
    pub(crate) soft: u64,
    /// The hard limit (the most the soft limit may be raised to without privileges).
    pub(crate) hard: u64,
    /// Why raising failed, if it did.
    pub(crate) error: Option<String>,
}

/// Raises the soft limit to the hard one and logs both (call after logging is set up). Does
/// nothing where there is no such limit.
pub(crate) fn raise_and_log() {
    #[cfg(unix)]
    match raise() {
        Ok(limits) => log(&limits),
        Err(err) => tracing::warn!(
            error = %err,
            "cannot read the open-file limit; if keel refuses connections under load, raise it (`ulimit -n`, or LimitNOFILE= in keel's systemd unit)"
        ),
    }
}

/// Raises the soft open-file limit to the hard one (on macOS to what the kernel allows a
/// process), and reads back both.
#[cfg(unix)]
fn raise() -> std::io::Result<OpenFiles> {
    use rlimit::Resource;

    let (soft_before, hard) = rlimit::getrlimit(Resource::NOFILE)?;
    let error =
        if soft_before < hard { rlimit::increase_nofile_limit(hard).err().map(|e| e.to_string()) } else { None };
    let (soft, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap_or((soft_before, hard));
    Ok(OpenFiles { soft_before, soft, hard, error })
}

/// One info line with the limits, and a warning when they are a problem.
fn log(limits: &OpenFiles) {
    let message = if limits.soft > limits.soft_before {
        "raised the open-file limit to the hard limit"
    } else if limits.soft >= limits.hard {
        "the open-file limit is at the hard limit already"
    } else {
        "open-file limit"
    };
    tracing::info!(
        open_files_soft_before = limits.soft_before,
        open_files_soft = limits.soft,
        open_files_hard = limits.hard,
        "{message}"
    );
    if let Some(warning) = warning(limits) {
        tracing::warn!(open_files_soft = limits.soft, open_files_hard = limits.hard, "{warning}");
    }
}

/// What to tell the operator about `limits`, if anything.
fn warning(limits: &OpenFiles) -> Option<String> {
    const HOW: &str = "raise the hard limit: LimitNOFILE=65536 in keel's systemd unit, `ulimit -Hn 65536` (as root) \
                       in the shell that starts keel, or a nofile line in /etc/security/limits.conf";
    if let Some(error) = &limits.error {
        return Some(format!(
            "cannot raise the open-file limit from {} to the hard limit {} ({error}): keel may refuse connections \
             under load; {HOW}",
            limits.soft, limits.hard
        ));
    }
    (limits.soft < LOW).then(|| {
        format!(
            "the open-file limit is only {} (hard limit {}): each connection from an agent and to an upstream \
             takes one, so keel may refuse connections under load; {HOW}",
            limits.soft, limits.hard
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(soft_before: u64, soft: u64, hard: u64, error: Option<&str>) -> OpenFiles {
        OpenFiles { soft_before, soft, hard, error: error.map(str::to_owned) }
    }

    #[test]
    fn warns_when_raising_failed_or_the_limit_stays_low() {
        assert_eq!(warning(&limits(1024, 524_288, 524_288, None)), None);
        assert_eq!(warning(&limits(65_536, 65_536, 65_536, None)), None);
        let low = warning(&limits(256, 1024, 1024, None)).unwrap();
        assert!(low.contains("only 1024") && low.contains("LimitNOFILE"), "{low}");
        let failed = warning(&limits(1024, 1024, 1_048_576, Some("Operation not permitted"))).unwrap();
        assert!(failed.contains("from 1024 to the hard limit 1048576 (Operation not permitted)"), "{failed}");
    }

    #[cfg(unix)]
    #[test]
    fn raising_ends_at_the_hard_limit() {
        let limits = raise().unwrap();
        assert!(limits.soft >= limits.soft_before);
        if limits.error.is_none() {
            assert_eq!(limits.soft, limits.hard);
        }
    }
}
