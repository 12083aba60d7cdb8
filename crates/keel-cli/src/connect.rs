//! How the commands that talk to a running keel over HTTP (`keel status`, `keel chat`) find it —
//! one order for all of them:
//!
//! 1. `--url URL` / `KEEL_URL` (older names, still accepted: `--host`, `KEEL_HOST`);
//! 2. else `http://LISTEN` for the `[server] listen` of the config file (`--config FILE` /
//!    `KEEL_CONFIG`, else `./keel.toml` if it exists), an unspecified address (`0.0.0.0`, `[::]`)
//!    reached through loopback (`127.0.0.1`, `[::1]`);
//! 3. else [`DEFAULT_URL`].
//!
//! The API key comes from `--key` / `KEEL_KEY` (older: `--api-key`, `KEEL_API_KEY`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use reqwest::Url;

use crate::config_file;

/// Where keel listens when nothing says otherwise.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:11435";

/// The flags that say where the running keel is; flattened into each command that talks to it.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Finding keel")]
pub(crate) struct ConnectArgs {
    /// Base URL of the running keel. Order: --url, KEEL_URL, else http://LISTEN from the
    /// [server] listen of the config file (0.0.0.0 and [::] are reached through loopback),
    /// else http://127.0.0.1:11435.
    #[arg(long, env = "KEEL_URL", alias = "host", value_name = "URL")]
    pub(crate) url: Option<String>,
    /// The keel config file whose [server] listen to use when no --url is given. Default:
    /// ./keel.toml if it exists.
    #[arg(long, short, env = "KEEL_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// API key, sent as `Authorization: Bearer KEY` (needed when keel has [auth] keys: the
    /// admin scope for `keel status`, the inference scope for `keel chat`).
    #[arg(long, env = "KEEL_KEY", alias = "api-key", hide_env_values = true, value_name = "KEY")]
    pub(crate) key: Option<String>,
}

/// A running keel as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keel {
    /// Its base URL.
    pub(crate) url: Url,
    /// The API key, if one was given (never empty).
    pub(crate) key: Option<String>,
    /// Where the URL came from, for error messages.
    pub(crate) origin: Origin,
}

/// Where the URL of a [`Keel`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `--url` or `KEEL_URL` (or `--host`).
    Flag,
    /// The older `KEEL_HOST`.
    LegacyEnv,
    /// `[server] listen` of this config file.
    Config(PathBuf),
    /// Nothing was configured.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("from --url / KEEL_URL"),
            Origin::LegacyEnv => f.write_str("from KEEL_HOST"),
            Origin::Config(path) => write!(f, "from [server] listen in {}", path.display()),
            Origin::Default => f.write_str("the default: no --url, KEEL_URL, --config or ./keel.toml"),
        }
    }
}

impl ConnectArgs {
    /// Finds keel: see the module documentation for the order.
    pub(crate) fn resolve(self) -> anyhow::Result<Keel> {
        self.resolve_with(&|name| std::env::var(name).ok(), Path::new(""))
    }

    /// [`ConnectArgs::resolve`] with the environment (for the older `KEEL_HOST` and
    /// `KEEL_API_KEY`) and the working directory (for `./keel.toml`) passed in.
    fn resolve_with(self, env: &dyn Fn(&str) -> Option<String>, dir: &Path) -> anyhow::Result<Keel> {
        let given = |value: Option<String>| value.filter(|value| !value.trim().is_empty());
        let key = given(self.key).or_else(|| given(env("KEEL_API_KEY")));
        let (text, origin) = if let Some(url) = given(self.url) {
            (url, Origin::Flag)
        } else if let Some(url) = given(env("KEEL_HOST")) {
            (url, Origin::LegacyEnv)
        } else if let Some(path) = config_file::locate_in(self.config, dir) {
            let raw = config_file::read(&path)?;
            let listen = raw.server.listen;
            let addr: SocketAddr = listen.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}: [server] listen = {listen:?} is not an address like \"127.0.0.1:11435\"",
                    path.display()
                )
            })?;
            (format!("http://{}", reachable(addr)), Origin::Config(path))
        } else {
            (DEFAULT_URL.to_owned(), Origin::Default)
        };
        let url = parse_url(&text).with_context(|| format!("keel's URL {text:?} ({origin})"))?;
        Ok(Keel { url, key, origin })
    }
}

/// The address a client on this machine reaches a server listening on `addr` through: an
/// unspecified address (`0.0.0.0`, `[::]`) becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// A base URL: `http://` is assumed when the scheme is missing; only http and https with a
/// host are accepted.
pub(crate) fn parse_url(text: &str) -> anyhow::Result<Url> {
    let text = text.trim();
    let with_scheme = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
    Url::parse(&with_scheme)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .with_context(|| format!("{text:?} is not a URL like {DEFAULT_URL}"))
}

/// `base` with `segments` appended to its path, each percent-encoded (`base` may have a path of
/// its own, e.g. behind a reverse proxy).
pub(crate) fn join(base: &Url, segments: &[&str]) -> anyhow::Result<Url> {
    let mut url = base.clone();
    url.path_segments_mut().map_err(|()| anyhow::anyhow!("{base} cannot have a path"))?.pop_if_empty().extend(segments);
    Ok(url)
}

/// The innermost cause of an error: reqwest's own message is only "error sending request".
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves `args` in `dir` with only `vars` in the environment.
    fn resolve(args: ConnectArgs, vars: &[(&str, &str)], dir: &Path) -> anyhow::Result<Keel> {
        let vars: Vec<(String, String)> = vars.iter().map(|&(k, v)| (k.to_owned(), v.to_owned())).collect();
        args.resolve_with(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()), dir)
    }

    fn args(url: Option<&str>, config: Option<&Path>, key: Option<&str>) -> ConnectArgs {
        ConnectArgs { url: url.map(str::to_owned), config: config.map(Path::to_owned), key: key.map(str::to_owned) }
    }

    #[test]
    fn the_order_is_flag_then_legacy_env_then_config_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keel.toml"), "[server]\nlisten = \"127.0.0.1:9001\"\n").unwrap();
        let other = dir.path().join("other.toml");
        std::fs::write(&other, "[server]\nlisten = \"127.0.0.1:9002\"\n").unwrap();

        let keel = resolve(args(Some("http://h:1"), Some(&other), None), &[("KEEL_HOST", "x:2")], dir.path()).unwrap();
        assert_eq!((keel.url.as_str(), keel.origin), ("http://h:1/", Origin::Flag));

        let keel = resolve(args(None, Some(&other), None), &[("KEEL_HOST", "x:2")], dir.path()).unwrap();
        assert_eq!((keel.url.as_str(), keel.origin), ("http://x:2/", Origin::LegacyEnv));

        let keel = resolve(args(None, Some(&other), None), &[], dir.path()).unwrap();
        assert_eq!((keel.url.as_str(), keel.origin), ("http://127.0.0.1:9002/", Origin::Config(other.clone())));

        let keel = resolve(args(None, None, None), &[], dir.path()).unwrap();
        assert_eq!(keel.url.as_str(), "http://127.0.0.1:9001/");
        assert_eq!(keel.origin, Origin::Config(dir.path().join("keel.toml")));

        let keel = resolve(args(None, None, None), &[], empty.path()).unwrap();
        assert_eq!((keel.url.as_str(), keel.origin), ("http://127.0.0.1:11435/", Origin::Default));

        // Empty values count as not given.
        let keel = resolve(args(Some(""), None, Some("")), &[("KEEL_HOST", "")], empty.path()).unwrap();
        assert_eq!((keel.url.as_str(), keel.key), ("http://127.0.0.1:11435/", None));
    }

    #[test]
    fn a_url_given_skips_the_config_file_even_a_broken_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keel.toml"), "[server]\nlistne = 1\n").unwrap();
        assert!(resolve(args(Some("127.0.0.1:1"), None, None), &[], dir.path()).is_ok());
        let err = resolve(args(None, None, None), &[], dir.path()).unwrap_err().to_string();
        assert!(err.contains("keel.toml") && err.contains("listne"), "{err}");
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_through_loopback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        for (listen, url) in [
            ("0.0.0.0:11435", "http://127.0.0.1:11435/"),
            ("[::]:8080", "http://[::1]:8080/"),
            ("192.168.1.5:11435", "http://192.168.1.5:11435/"),
            ("[::1]:11435", "http://[::1]:11435/"),
        ] {
            std::fs::write(&path, format!("[server]\nlisten = \"{listen}\"\n")).unwrap();
            let keel = resolve(args(None, Some(&path), None), &[], dir.path()).unwrap();
            assert_eq!(keel.url.as_str(), url, "{listen}");
        }
        std::fs::write(&path, "[server]\nlisten = \"localhost\"\n").unwrap();
        let err = resolve(args(None, Some(&path), None), &[], dir.path()).unwrap_err().to_string();
        assert!(err.contains("k.toml") && err.contains("localhost"), "{err}");
    }

    #[test]
    fn a_missing_explicit_config_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve(args(None, Some(&dir.path().join("nope.toml")), None), &[], dir.path()).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }

    #[test]
    fn the_key_comes_from_the_flag_then_the_older_variable() {
        let dir = tempfile::tempdir().unwrap();
        let keel = resolve(args(None, None, Some("k1")), &[("KEEL_API_KEY", "k2")], dir.path()).unwrap();
        assert_eq!(keel.key.as_deref(), Some("k1"));
        let keel = resolve(args(None, None, None), &[("KEEL_API_KEY", "k2")], dir.path()).unwrap();
        assert_eq!(keel.key.as_deref(), Some("k2"));
    }

    #[test]
    fn old_flag_names_still_parse() {
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            connect: ConnectArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["x", "--host", "h:1", "--api-key", "k"]).unwrap();
        assert_eq!(cli.connect.url.as_deref(), Some("h:1"));
        assert_eq!(cli.connect.key.as_deref(), Some("k"));
    }

    #[test]
    fn urls_get_a_scheme_and_bad_ones_are_refused() {
        assert_eq!(parse_url("127.0.0.1:11435").unwrap().as_str(), "http://127.0.0.1:11435/");
        assert_eq!(parse_url("https://k.example/base/").unwrap().as_str(), "https://k.example/base/");
        let err = parse_url("ftp://x").unwrap_err().to_string();
        assert!(err.contains("ftp://x") && err.contains(DEFAULT_URL), "{err}");
    }
}
