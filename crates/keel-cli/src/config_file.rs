//! Which keel config file a command reads, the same way for every command: `--config FILE` /
//! `KEEL_CONFIG`, else `./keel.toml` when it exists, else none (built-in defaults).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use keel_gateway::config::RawConfig;

/// The file name looked for in the working directory.
const LOCAL: &str = "keel.toml";

/// The config file to use: `explicit` (from `--config` / `KEEL_CONFIG`; an empty path counts as
/// not given), else `./keel.toml` when it exists.
pub(crate) fn locate(explicit: Option<PathBuf>) -> Option<PathBuf> {
    locate_in(explicit, Path::new(""))
}

/// [`locate`] with `dir` as the working directory (`""` is the real one; tests pass a tempdir).
pub(crate) fn locate_in(explicit: Option<PathBuf>, dir: &Path) -> Option<PathBuf> {
    explicit.filter(|path| !path.as_os_str().is_empty()).or_else(|| {
        let local = dir.join(LOCAL);
        local.exists().then_some(local)
    })
}

/// Reads and parses the file as written (no validation beyond the keys). Errors name the file.
pub(crate) fn read(path: &Path) -> anyhow::Result<RawConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
    RawConfig::parse(&text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_file_wins_over_the_local_one() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(locate_in(None, dir.path()), None);
        std::fs::write(dir.path().join("keel.toml"), "").unwrap();
        assert_eq!(locate_in(None, dir.path()), Some(dir.path().join("keel.toml")));
        assert_eq!(locate_in(Some("other.toml".into()), dir.path()), Some(PathBuf::from("other.toml")));
        assert_eq!(locate_in(Some(PathBuf::new()), dir.path()), Some(dir.path().join("keel.toml")));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let err = format!("{:#}", read(&missing).unwrap_err());
        assert!(err.contains("missing.toml"), "{err}");
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[server]\nlistne = 1\n").unwrap();
        let err = read(&bad).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("listne"), "{err}");
    }
}
