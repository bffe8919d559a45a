//! `kith up`'s optional config file: TOML, at `HOME/kith.toml` or where `--config` says. Every
//! key is optional; a flag on the command line wins over the file, the file over the built-in
//! defaults (docs/config.md lists the keys and their defaults). An unknown key or a bad value is
//! an error that names the key and the line: a typo must not silently run a node with defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;

use crate::daemon::{Config, DEFAULT_HTTP_PORT, DEFAULT_UDP_PORT};
use kith_node::net::blobs::MAX_CONNECTIONS_PER_PEER;

/// The config file's name in the home.
pub const FILE: &str = "kith.toml";
/// The largest config file read (a config file is a few lines).
const MAX_FILE: u64 = 64 << 10;

/// What the file says (absent keys are `None`).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// UDP addresses of the node's endpoint.
    pub listen: Option<Vec<SocketAddr>>,
    /// The LAN HTTP listener.
    pub http: Option<SocketAddr>,
    /// LAN discovery on (`true`) or off.
    pub mdns: Option<bool>,
    /// Interfaces mDNS uses (all when empty).
    pub mdns_iface: Option<Vec<String>>,
    /// Memory for opened site content, such as `256MiB`.
    pub site_cache: Option<String>,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
    /// Serve federated partners' public sites as their CDN edge.
    pub cdn: Option<bool>,
    /// Relays to use (URLs).
    pub relay: Option<Vec<String>>,
    /// Serve a relay on this address.
    pub serve_relay: Option<SocketAddr>,
    /// Connections one node may hold open to this one for blobs.
    pub max_connections_per_peer: Option<usize>,
}

/// What the command line says (absent or default flags are `None`, empty or `false`).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    /// `--listen`.
    pub listen: Vec<SocketAddr>,
    /// `--http`.
    pub http: Option<SocketAddr>,
    /// `--no-mdns`.
    pub no_mdns: bool,
    /// `--mdns-iface`.
    pub mdns_iface: Vec<String>,
    /// `--site-cache`.
    pub site_cache: Option<String>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--cdn`.
    pub cdn: bool,
    /// `--relay`.
    pub relay: Vec<String>,
    /// `--serve-relay`.
    pub serve_relay: Option<SocketAddr>,
    /// `--config`.
    pub config: Option<PathBuf>,
}

impl FileConfig {
    /// Parses a config file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig> {
        basic_toml::from_str(text).map_err(|e| {
            let msg = e.to_string();
            // The parser's own position, without the text it appends.
            let msg = match msg.rfind(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            // An unknown key or a bad value is placed at its table; the line that has the key
            // is what to fix.
            let line = key_in(&msg)
                .and_then(|k| line_of(text, k))
                .or_else(|| e.line_col().map(|(line, _)| line + 1));
            let at = line.map(|l| format!(" line {l}")).unwrap_or_default();
            anyhow!("{}{at}: {}", path.display(), describe(&msg))
        })
    }

    /// Reads the file `flag` names (which must exist), else `HOME/kith.toml` if there is one.
    pub fn load(flag: Option<&Path>, home: &Path) -> Result<(FileConfig, Option<PathBuf>)> {
        let (path, required) = match flag {
            Some(p) => (p.to_path_buf(), true),
            None => (home.join(FILE), false),
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok((FileConfig::default(), None));
            }
            Err(e) => return Err(anyhow!("cannot read the config file {}: {e}", path.display())),
        };
        if meta.len() > MAX_FILE {
            return Err(anyhow!(
                "{} is {} bytes; a config file is at most {MAX_FILE}",
                path.display(),
                meta.len()
            ));
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Ok((FileConfig::parse(&text, &path)?, Some(path)))
    }

    /// The daemon's configuration: each flag given, else the file's key, else the default.
    pub fn merge(self, flags: Flags) -> Result<Config> {
        let d = Config::default();
        let site_cache = match flags.site_cache.or(self.site_cache) {
            Some(s) => kith_pools::parse_size(&s)
                .map_err(|e| anyhow!("site_cache `{s}`: {e}"))?
                .try_into()
                .map_err(|_| anyhow!("site_cache `{s}` is too large for this machine"))?,
            None => d.site_cache,
        };
        let listen = match (flags.listen, self.listen) {
            (f, _) if !f.is_empty() => f,
            (_, Some(l)) if !l.is_empty() => l,
            (_, Some(_)) => return Err(anyhow!("listen: give at least one address")),
            (_, None) => d.listen,
        };
        let mut mdns = d.mdns;
        mdns.disabled = flags.no_mdns || self.mdns == Some(false);
        mdns.interfaces = match (flags.mdns_iface, self.mdns_iface) {
            (f, _) if !f.is_empty() => f,
            (_, Some(i)) => i,
            (_, None) => mdns.interfaces,
        };
        let relays = match (flags.relay, self.relay) {
            (f, _) if !f.is_empty() => f,
            (_, Some(r)) => r,
            (_, None) => Vec::new(),
        };
        let relays = relays
            .iter()
            .map(|u| parse_relay(u).map_err(|e| anyhow!("relay `{u}`: {e}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Config {
            listen,
            relays,
            serve_relay: flags.serve_relay.or(self.serve_relay),
            http: flags.http.or(self.http).unwrap_or(d.http),
            mdns,
            site_cache,
            metrics: flags.metrics.or(self.metrics),
            cdn: flags.cdn || self.cdn == Some(true),
            max_connections_per_peer: match self.max_connections_per_peer {
                Some(0) => return Err(anyhow!("max_connections_per_peer: at least 1")),
                Some(n) => n,
                None => d.max_connections_per_peer,
            },
            ..d
        })
    }
}

/// A relay's URL: `http://` or `https://`, a host, and a port if not the scheme's.
pub fn parse_relay(s: &str) -> Result<iroh::RelayUrl> {
    let url: iroh::RelayUrl =
        s.trim().parse().map_err(|_| anyhow!("not a URL (such as http://10.0.0.5:7790)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(anyhow!("a relay's URL is http://HOST:PORT (or https://)"));
    }
    Ok(url)
}

/// The key an error is about: the first name in backquotes.
fn key_in(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// The line (from 1) where `key` is given.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// serde's words for a config file's reader.
fn describe(e: &str) -> String {
    e.replace("unknown field", "unknown key").replace("expected one of", "known keys are")
}

/// The documented file: every key, commented out, with its default (`kith up --print-config`
/// prints it; docs/config.md shows it).
pub fn example() -> String {
    format!(
        "# kith up's configuration (HOME/{FILE}). Every key is optional; the values shown are
# the defaults. A flag on the command line wins over this file.

# UDP addresses of the node's endpoint (iroh).
# listen = [\"0.0.0.0:{DEFAULT_UDP_PORT}\"]

# The LAN HTTP listener: sites, the node's page, browser peers.
# http = \"0.0.0.0:{DEFAULT_HTTP_PORT}\"

# LAN discovery (mDNS): find and announce nodes on the LAN.
# mdns = true

# Interfaces mDNS uses; all when empty (\"lo\" for loopback).
# mdns_iface = []

# Memory for opened site content the gateway keeps.
# site_cache = \"256MiB\"

# Serve Prometheus metrics at http://ADDR/metrics; off when absent.
# metrics = \"127.0.0.1:9781\"

# Serve federated partners' public sites at NAME.local as their CDN edge (when a pool of this
# node lends its partner CDN: kith federation invite/join --cdn).
# cdn = false

# Relays to use to reach nodes with no direct path (a partner's neighbourhood); none when
# empty: nothing leaves the LAN.
# relay = []

# Serve a relay on this address, which both neighbourhoods reach, for this node's pools and
# the partners they lend relay (kith federation invite/join --relay); off when absent.
# serve_relay = \"10.0.0.5:7790\"

# Connections one node may hold open to this one to fetch blobs; those past it are refused,
# and a fetch whose further connections are refused uses its first (a large fetch uses 4).
# max_connections_per_peer = {MAX_CONNECTIONS_PER_PEER}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig> {
        FileConfig::parse(text, Path::new("kith.toml"))
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_example_parses_to_the_defaults() {
        let f = parse(&example()).unwrap();
        assert_eq!(f, FileConfig::default());
        let c = f.merge(Flags::default()).unwrap();
        let d = Config::default();
        assert_eq!(
            (c.listen, c.http, c.site_cache, c.metrics),
            (d.listen.clone(), d.http, d.site_cache, None)
        );
        assert!(!c.mdns.disabled);
        // Uncommented, the example's values are the defaults.
        let all: String = example()
            .lines()
            .filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ")))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = parse(&all).unwrap();
        let c = f.merge(Flags::default()).unwrap();
        assert_eq!((c.listen, c.http, c.site_cache), (d.listen, d.http, d.site_cache));
        assert_eq!(c.metrics, Some(addr("127.0.0.1:9781")));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_the_defaults() {
        let f = parse(
            "http = \"127.0.0.1:8080\"\nmdns = false\nsite_cache = \"1MiB\"\nlisten = [\"127.0.0.1:9000\"]\n",
        )
        .unwrap();
        let c = f.clone().merge(Flags::default()).unwrap();
        assert_eq!(c.http, addr("127.0.0.1:8080"));
        assert_eq!(c.listen, vec![addr("127.0.0.1:9000")]);
        assert_eq!(c.site_cache, 1 << 20);
        assert!(c.mdns.disabled);
        let flags = Flags {
            http: Some(addr("127.0.0.1:9090")),
            listen: vec![addr("127.0.0.1:9001")],
            site_cache: Some("2MiB".into()),
            ..Flags::default()
        };
        let c = f.merge(flags).unwrap();
        assert_eq!(c.http, addr("127.0.0.1:9090"));
        assert_eq!(c.listen, vec![addr("127.0.0.1:9001")]);
        assert_eq!(c.site_cache, 2 << 20);
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_names_the_key_and_the_line() {
        let e = parse("mdns = true\nlisen = [\"0.0.0.0:1\"]\n").unwrap_err().to_string();
        assert!(e.contains("unknown key `lisen`") && e.contains("line 2"), "{e}");
        assert!(e.contains("known keys are") && e.contains("`listen`"), "{e}");
        let e = parse("\n\nhttp = \"not an address\"\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("http"), "{e}");
        let e = parse("mdns = \"yes\"\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("mdns"), "{e}");
        let e = parse("site_cache = \"lots\"\n").unwrap().merge(Flags::default()).unwrap_err();
        assert!(e.to_string().contains("site_cache `lots`"), "{e}");
        let e = parse("listen = []\n").unwrap().merge(Flags::default()).unwrap_err();
        assert!(e.to_string().contains("listen"), "{e}");
        let e = parse("max_connections_per_peer = 0\n").unwrap().merge(Flags::default());
        assert!(e.unwrap_err().to_string().contains("max_connections_per_peer: at least 1"));
        let c = parse("max_connections_per_peer = 2\n").unwrap().merge(Flags::default()).unwrap();
        assert_eq!(c.max_connections_per_peer, 2);
        let e = parse("[http\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn relays_are_urls_named_when_wrong_and_none_by_default() {
        assert!(Config::default().relays.is_empty() && Config::default().serve_relay.is_none());
        let f =
            parse("relay = [\"http://10.0.0.5:7790\"]\nserve_relay = \"10.0.0.5:7790\"\n").unwrap();
        let c = f.clone().merge(Flags::default()).unwrap();
        assert_eq!(c.relays.len(), 1);
        assert_eq!(c.relays[0].as_str(), "http://10.0.0.5:7790/");
        assert_eq!(c.serve_relay, Some(addr("10.0.0.5:7790")));
        let flags = Flags { relay: vec!["http://10.0.0.6:7790".into()], ..Flags::default() };
        assert_eq!(f.merge(flags).unwrap().relays[0].as_str(), "http://10.0.0.6:7790/");
        for bad in ["ftp://10.0.0.5:7790", "10.0.0.5:7790", "relay"] {
            let flags = Flags { relay: vec![bad.into()], ..Flags::default() };
            let e = FileConfig::default().merge(flags).unwrap_err().to_string();
            assert!(e.starts_with(&format!("relay `{bad}`")), "{e}");
        }
    }

    #[test]
    fn a_missing_default_file_is_no_file_and_a_missing_named_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (f, path) = FileConfig::load(None, dir.path()).unwrap();
        assert_eq!((f, path), (FileConfig::default(), None));
        let named = dir.path().join("other.toml");
        let e = FileConfig::load(Some(&named), dir.path()).unwrap_err().to_string();
        assert!(e.contains("other.toml"), "{e}");
        std::fs::write(dir.path().join(FILE), "mdns = false\n").unwrap();
        let (f, path) = FileConfig::load(None, dir.path()).unwrap();
        assert_eq!(f.mdns, Some(false));
        assert_eq!(path, Some(dir.path().join(FILE)));
        std::fs::write(&named, vec![b'#'; (MAX_FILE + 1) as usize]).unwrap();
        let e = FileConfig::load(Some(&named), dir.path()).unwrap_err().to_string();
        assert!(e.contains("at most"), "{e}");
    }
}
