//! `kith service install`: `kith up` as a systemd service, for this user (`--user`, the default:
//! the node of a person's own machine, with their home) or for the machine (`--system`: a node
//! of its own, in `/var/lib/kith`, run by a user systemd makes for it). The unit carries the
//! hardening a network daemon should have; docs/service.md says what each line is for.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow};

/// The unit's name.
pub const UNIT: &str = "kith.service";
/// The home of the system service (its state directory).
pub const SYSTEM_HOME: &str = "/var/lib/kith";

/// Which service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user's own (`systemctl --user`).
    User,
    /// The machine's.
    System,
}

/// Options every unit shares: what a network daemon must not be able to do.
const COMMON: &str = "\
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# iroh and the LAN listener (IPv4, IPv6), the control socket (Unix), interfaces (netlink).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
UMask=0077
";

/// The unit file for `kith up` run by `exe`, on `home` (a user's; the system service's is
/// [`SYSTEM_HOME`]).
pub fn unit(scope: Scope, exe: &Path, home: &Path) -> String {
    let home = match scope {
        Scope::System => Path::new(SYSTEM_HOME),
        Scope::User => home,
    };
    let start = format!(
        "[Unit]
Description=kith node: offline-first mesh and community pools
Documentation=https://example.invalid/kith/docs/guide.md
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart={} --home {} up
# kith stops within a few seconds of SIGTERM; a crash is restarted.
Restart=on-failure
RestartSec=5s
TimeoutStopSec=30s
",
        quote(exe),
        quote(home)
    );
    let scoped = match scope {
        // A user's node keeps its home where the user's kith commands find it; the rest of the
        // file system is the user's own business (its backups read from it, restores write to
        // it), so only the system's folders are read-only. The namespaces need PrivateUsers
        // in a user's service manager.
        Scope::User => "\
PrivateUsers=yes
ProtectSystem=full

[Install]
WantedBy=default.target
"
        .to_string(),
        // The machine's node runs as a user of its own, writes only its state directory, and
        // sees no one's home.
        Scope::System => format!(
            "\
DynamicUser=yes
StateDirectory=kith
StateDirectoryMode=0700
Environment=KITH_HOME={SYSTEM_HOME}
ProtectSystem=strict
ProtectHome=yes
PrivateDevices=yes
ProtectProc=invisible
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=multi-user.target
"
        ),
    };
    format!("{start}{COMMON}{scoped}")
}

/// A path as systemd reads it on a command line (quoted when it has spaces or quotes).
fn quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars().any(|c| c.is_whitespace() || c == '"' || c == '\\') {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s
    }
}

/// Where the unit goes: `dir` if given, else the scope's folder.
pub fn unit_path(scope: Scope, dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match (dir, scope) {
        (Some(d), _) => d.to_path_buf(),
        (None, Scope::System) => PathBuf::from("/etc/systemd/system"),
        (None, Scope::User) => dirs::config_dir()
            .ok_or_else(|| anyhow!("cannot tell where this user's configuration lives ($HOME)"))?
            .join("systemd/user"),
    };
    Ok(dir.join(UNIT))
}

/// What an install did.
#[derive(Debug)]
pub struct Installed {
    /// The unit file.
    pub path: PathBuf,
    /// The node's home.
    pub home: PathBuf,
    /// Whether it was enabled and started.
    pub enabled: bool,
}

/// Writes the unit (replacing an earlier one kith wrote) and, if `enable`, reloads the
/// service manager and enables and starts it.
pub fn install(scope: Scope, home: &Path, dir: Option<&Path>, enable: bool) -> Result<Installed> {
    let exe = std::env::current_exe().context("cannot tell where this kith binary is")?;
    let home = match scope {
        Scope::System => PathBuf::from(SYSTEM_HOME),
        Scope::User => home.to_path_buf(),
    };
    let path = unit_path(scope, dir)?;
    if let Ok(old) = std::fs::read_to_string(&path)
        && !old.contains("Description=kith node")
    {
        return Err(anyhow!(
            "{} exists and was not written by kith; move it away first",
            path.display()
        ));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let text = unit(scope, &exe, &home);
    let tmp = path.with_extension("service.tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    if enable {
        systemctl(scope, &["daemon-reload"])?;
        systemctl(scope, &["enable", "--now", UNIT])?;
    }
    Ok(Installed { path, home, enabled: enable })
}

fn systemctl(scope: Scope, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("systemctl");
    if scope == Scope::User {
        cmd.arg("--user");
    }
    let out = cmd.args(args).output().context(
        "cannot run systemctl (is this a systemd system? `--no-enable` writes the unit only)",
    )?;
    if !out.status.success() {
        return Err(anyhow!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_units_carry_the_hardening_and_run_the_right_home() {
        let exe = Path::new("/usr/local/bin/kith");
        let user = unit(Scope::User, exe, Path::new("/home/ada/.local/share/kith"));
        let system = unit(Scope::System, exe, Path::new("/ignored"));
        for u in [&user, &system] {
            for line in ["NoNewPrivileges=yes", "PrivateTmp=yes", "Restart=on-failure"] {
                assert!(u.lines().any(|l| l == line), "{line} in\n{u}");
            }
            assert!(u.lines().any(|l| l.starts_with("ProtectSystem=")), "{u}");
        }
        assert!(
            user.contains("ExecStart=/usr/local/bin/kith --home /home/ada/.local/share/kith up")
        );
        assert!(user.contains("WantedBy=default.target") && user.contains("PrivateUsers=yes"));
        assert!(system.contains("StateDirectory=kith") && system.contains("DynamicUser=yes"));
        assert!(system.contains("ExecStart=/usr/local/bin/kith --home /var/lib/kith up"));
        assert!(system.contains("ProtectSystem=strict") && system.contains("ProtectHome=yes"));
        assert!(system.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn a_path_with_spaces_is_quoted() {
        let u = unit(Scope::User, Path::new("/opt/my kith/kith"), Path::new("/home/a b/k"));
        assert!(u.contains("ExecStart=\"/opt/my kith/kith\" --home \"/home/a b/k\" up"), "{u}");
    }

    #[test]
    fn a_unit_kith_did_not_write_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(UNIT), "[Unit]\nDescription=something else\n").unwrap();
        let e = install(Scope::User, Path::new("/h"), Some(dir.path()), false).unwrap_err();
        assert!(e.to_string().contains("not written by kith"), "{e}");
        let kept = std::fs::read_to_string(dir.path().join(UNIT)).unwrap();
        assert!(kept.contains("something else"));
        // Its own it replaces.
        std::fs::remove_file(dir.path().join(UNIT)).unwrap();
        let first = install(Scope::User, Path::new("/h1"), Some(dir.path()), false).unwrap();
        let again = install(Scope::User, Path::new("/h2"), Some(dir.path()), false).unwrap();
        assert_eq!(first.path, again.path);
        assert!(std::fs::read_to_string(&again.path).unwrap().contains("--home /h2 up"));
    }
}
