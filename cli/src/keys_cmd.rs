//! Identity files: `kith init` (a new home, or one from an imported identity), `kith key
//! export`, and the passphrase that protects an export.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use kith_node::{Home, Identity};

use crate::{local_id, render};

/// Environment variable holding a passphrase for `key export` and `init --import`.
const PASSPHRASE_ENV: &str = "KITH_PASSPHRASE";

pub(crate) fn init(root: &Path, import: Option<&Path>, keep_key: bool) -> Result<ExitCode> {
    let Some(file) = import else {
        let (_, created) = Home::open_or_init(root)?;
        let verb = if created { "created" } else { "already initialised:" };
        eprintln!("kith: {verb} {}", root.display());
        return render::id(&local_id(root)?, false);
    };
    let mut data = Vec::new();
    std::fs::File::open(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .take(kith_node::keys::MAX_KEY_FILE_BYTES as u64 + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let pass = passphrase("Passphrase of the key export", false)?;
    let identity = Identity::import(&data, &pass)
        .with_context(|| format!("cannot import {}", file.display()))?;
    if identity.signing_key().is_none() {
        bail!("{} holds no identity key; it is not a key export", file.display());
    }
    if keep_key {
        Home::init(root, identity)?;
        eprintln!(
            "kith: imported the identity into {} with a new node key (the identity key is kept \
             here too)",
            root.display()
        );
    } else {
        let mut failed = None;
        Home::init_with(root, |node| match kith::device_grant(&identity, node) {
            Ok(g) => identity.clone().into_device(g),
            Err(e) => {
                failed = Some(e);
                identity.clone()
            }
        })?;
        if let Some(e) = failed {
            bail!("cannot make this a device of the identity: {e}");
        }
        eprintln!(
            "kith: {} is now a device of identity {} with its own key; the identity key stays \
             in {} (keep it safe: it adds devices and restores everything)",
            root.display(),
            identity.id(),
            file.display()
        );
    }
    render::id(&local_id(root)?, false)
}

pub(crate) fn export(home: &Home, file: &Path) -> Result<ExitCode> {
    use std::os::unix::fs::OpenOptionsExt;
    if file.exists() {
        bail!("{} already exists; choose a new file name", file.display());
    }
    let identity = home.identity()?;
    let pass = passphrase("Passphrase for the export", true)?;
    let bytes = identity.export(&pass)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(file);
        })?;
    eprintln!("kith: wrote the identity {} to {}", identity.id(), file.display());
    Ok(ExitCode::SUCCESS)
}

/// A passphrase from $KITH_PASSPHRASE, else asked on the terminal (twice when `confirm`).
fn passphrase(prompt: &str, confirm: bool) -> Result<String> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        if p.is_empty() {
            bail!("{PASSPHRASE_ENV} is set but empty");
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() && !std::io::stderr().is_terminal() {
        bail!("no passphrase: set {PASSPHRASE_ENV} or run kith on a terminal");
    }
    let p =
        rpassword::prompt_password(format!("{prompt}: ")).context("cannot read the passphrase")?;
    if p.is_empty() {
        bail!("the passphrase is empty");
    }
    if confirm && rpassword::prompt_password("Again: ").context("cannot read the passphrase")? != p
    {
        bail!("the passphrases differ");
    }
    Ok(p)
}
