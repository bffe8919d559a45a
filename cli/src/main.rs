//! `kith`: the command-line interface of a kith node.

mod fmt;
mod progress;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kith_node::store::{GcReport, VerifyReport};
use kith_node::{Home, Identity, ObjectInfo, PutReport, Store};

/// Environment variable holding a passphrase for `key export` and `init --import`.
const PASSPHRASE_ENV: &str = "KITH_PASSPHRASE";

#[derive(Parser)]
#[command(
    name = "kith",
    version,
    about = "An offline-first mesh of neighbours pooling storage, hosting and bandwidth."
)]
struct Cli {
    /// The node's home directory [default: $KITH_HOME, else ~/.local/share/kith]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a home with a new identity, or with one exported from another machine.
    Init {
        /// Restore the identity in FILE (made by `kith key export`); the node gets a new key.
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
    },
    /// Print this node's id, the identity id and the age recipient.
    Id {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Manage the identity's keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Store a file or folder as a new version; prints the object id.
    Put {
        /// The file, folder or symlink to store.
        path: PathBuf,
        /// Print a JSON report on standard output instead of the id.
        #[arg(long)]
        json: bool,
    },
    /// Restore an object: an id (or unique prefix), PATH@VERSION, or a stored path.
    Get {
        /// What to restore.
        spec: String,
        /// Where to restore it; it must not exist. `-` writes a file object to standard output.
        #[arg(short, long, value_name = "DEST")]
        output: Option<PathBuf>,
    },
    /// List stored objects.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the versions stored from a path.
    Log {
        /// The source path.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget an object version; `kith gc` reclaims its space.
    Rm {
        /// An id (or unique prefix) or PATH@VERSION.
        spec: String,
    },
    /// Reclaim the space of chunks that no object references.
    Gc,
    /// Check every chunk against its hash and every object's structure.
    Verify {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write the identity to FILE, encrypted with a passphrase ($KITH_PASSPHRASE or a prompt).
    Export {
        /// Where to write the export; it must not exist.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let mut msg = format!("kith: error: {e}");
            for cause in e.chain().skip(1) {
                msg.push_str(&format!(": {cause}"));
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let root = Home::locate(cli.home.as_deref())?;
    match cli.command {
        Command::Init { import } => init(&root, import.as_deref()),
        Command::Id { json } => id(&open_home(&root)?, json),
        Command::Key { command: KeyCommand::Export { file } } => export(&open_home(&root)?, &file),
        Command::Put { path, json } => put(&open_home(&root)?, &path, json),
        Command::Get { spec, output } => get(&open_home(&root)?, &spec, output.as_deref()),
        Command::Ls { json } => {
            let store = Store::open(&open_home(&root)?, "kith ls")?;
            print_objects(&store.list()?, json)
        }
        Command::Log { path, json } => {
            let store = Store::open(&open_home(&root)?, "kith log")?;
            let versions = store.log(&path)?;
            if versions.is_empty() && !json {
                bail!("no versions stored from {}", kith_node::store::absolute(&path)?.display());
            }
            print_objects(&versions, json)
        }
        Command::Rm { spec } => {
            let store = Store::open(&open_home(&root)?, "kith rm")?;
            let id = store.resolve(&spec)?;
            store.remove(&id)?;
            eprintln!("forgot object {id}; run `kith gc` to reclaim its space");
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc => gc(&open_home(&root)?),
        Command::Verify { json } => verify(&open_home(&root)?, json),
    }
}

/// Opens the home, creating it with a new identity if it does not exist yet.
fn open_home(root: &Path) -> Result<Home> {
    let (home, created) = Home::open_or_init(root)?;
    if created {
        eprintln!("kith: created a new home with a new identity in {}", root.display());
    }
    Ok(home)
}

fn init(root: &Path, import: Option<&Path>) -> Result<ExitCode> {
    let Some(file) = import else {
        let (home, created) = Home::open_or_init(root)?;
        let verb = if created { "created" } else { "already initialised:" };
        eprintln!("kith: {verb} {}", root.display());
        return id(&home, false);
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
    let home = Home::init(root, identity)?;
    eprintln!("kith: imported the identity into {} with a new node key", root.display());
    id(&home, false)
}

fn id(home: &Home, json: bool) -> Result<ExitCode> {
    let node = home.node_key()?.id();
    let identity = home.identity()?;
    let recipient = identity.recipient().to_string();
    if json {
        let v = serde_json::json!({
            "node": node.to_string(), "identity": identity.id().to_string(), "age": recipient,
        });
        println!("{v}");
    } else {
        println!("node      {node}");
        println!("identity  {}", identity.id());
        println!("age       {recipient}");
    }
    Ok(ExitCode::SUCCESS)
}

fn export(home: &Home, file: &Path) -> Result<ExitCode> {
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

use std::os::unix::fs::OpenOptionsExt;

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

fn put(home: &Home, path: &Path, json: bool) -> Result<ExitCode> {
    let mut store = Store::open(home, "kith put")?;
    let report = {
        let bar = progress::Bar::start("storing");
        store.put(path, bar.counters())?
    };
    for w in &report.warnings {
        eprintln!("kith: warning: {w}");
    }
    if json {
        println!("{}", put_json(&report));
    } else {
        println!("{}", report.id);
        print_put_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_put_summary(r: &PutReport) {
    let s = &r.stats;
    let secs = s.elapsed.as_secs_f64();
    let new_share =
        if s.bytes_scanned > 0 { 100.0 * s.bytes_new as f64 / s.bytes_scanned as f64 } else { 0.0 };
    eprintln!("stored {} as version {}", r.source.display(), r.version);
    eprintln!(
        "  {} files ({} unchanged), {} folders, {} links",
        s.files, s.files_unchanged, s.dirs, s.symlinks
    );
    eprintln!(
        "  {} scanned, {} read, {} new ({new_share:.1}%), {} added to the store",
        fmt::bytes(s.bytes_scanned),
        fmt::bytes(s.bytes_read),
        fmt::bytes(s.bytes_new),
        fmt::bytes(s.bytes_stored)
    );
    eprintln!(
        "  dedup ratio {:.1}%, {secs:.2} s, {}",
        100.0 - new_share,
        fmt::rate(s.bytes_scanned, secs)
    );
}

fn put_json(r: &PutReport) -> serde_json::Value {
    let s = &r.stats;
    serde_json::json!({
        "id": r.id.to_string(),
        "version": r.version,
        "source": r.source.to_string_lossy(),
        "files": s.files, "dirs": s.dirs, "symlinks": s.symlinks,
        "files_unchanged": s.files_unchanged,
        "bytes_scanned": s.bytes_scanned, "bytes_read": s.bytes_read,
        "chunks_new": s.chunks_new, "bytes_new": s.bytes_new, "bytes_stored": s.bytes_stored,
        "seconds": s.elapsed.as_secs_f64(),
        "warnings": r.warnings,
    })
}

fn get(home: &Home, spec: &str, output: Option<&Path>) -> Result<ExitCode> {
    let store = Store::open(home, "kith get")?;
    let id = store.resolve(spec)?;
    if output == Some(Path::new("-")) {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        store.restore_to_writer(&id, &mut out, None)?;
        return Ok(ExitCode::SUCCESS);
    }
    let dest = match output {
        Some(d) => d.to_path_buf(),
        None => {
            let info = store.list()?.into_iter().find(|o| o.id == id);
            let name = info.as_ref().and_then(|o| o.source.file_name()).map(PathBuf::from);
            name.context("the object has no name to restore under; pass -o DEST")?
        }
    };
    let stats = {
        let bar = progress::Bar::start("restoring");
        store.restore(&id, &dest, bar.counters())?
    };
    eprintln!(
        "restored {} to {}: {} files, {} folders, {} links, {} in {:.2} s ({})",
        id.short(12),
        dest.display(),
        stats.files,
        stats.dirs,
        stats.symlinks,
        fmt::bytes(stats.bytes),
        stats.elapsed.as_secs_f64(),
        fmt::rate(stats.bytes, stats.elapsed.as_secs_f64())
    );
    Ok(ExitCode::SUCCESS)
}

fn print_objects(objects: &[ObjectInfo], json: bool) -> Result<ExitCode> {
    if json {
        let list: Vec<_> = objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "id": o.id.to_string(), "version": o.version, "created_ms": o.created_ms,
                    "source": o.source.to_string_lossy(), "kind": o.kind.name(),
                    "files": o.stats.files, "dirs": o.stats.dirs, "bytes": o.stats.bytes,
                    "parent": o.parent.map(|p| p.to_string()),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<12}  {:>4}  {:<19}  {:<4}  {:>7}  {:>10}  SOURCE",
        "ID", "VER", "STORED", "KIND", "FILES", "SIZE"
    );
    for o in objects {
        println!(
            "{:<12}  {:>4}  {:<19}  {:<4}  {:>7}  {:>10}  {}",
            o.id.short(12),
            o.version,
            fmt::time(o.created_ms),
            o.kind.name(),
            o.stats.files,
            fmt::bytes(o.stats.bytes),
            o.source.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn gc(home: &Home) -> Result<ExitCode> {
    let mut store = Store::open(home, "kith gc")?;
    let r: GcReport = store.gc()?;
    eprintln!(
        "kept {} objects and {} chunks; removed {} chunks, deleted {} packs, rewrote {}; freed {}",
        r.objects,
        r.blobs_kept,
        r.blobs_removed,
        r.packs_deleted,
        r.packs_rewritten,
        fmt::bytes(r.bytes_freed)
    );
    if r.bytes_unreferenced_kept > 0 {
        eprintln!(
            "  {} of unreferenced chunks stay in packs that are mostly in use",
            fmt::bytes(r.bytes_unreferenced_kept)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(home: &Home, json: bool) -> Result<ExitCode> {
    let store = Store::open(home, "kith verify")?;
    let r: VerifyReport = {
        let bar = progress::Bar::start("verifying");
        store.verify(bar.counters())?
    };
    if json {
        let v = serde_json::json!({
            "packs": r.packs, "blobs": r.blobs, "bytes": r.bytes, "objects": r.objects,
            "damaged_blobs": r.damaged_blobs.iter().map(|(id, why)| serde_json::json!({"chunk": id.to_string(), "reason": why})).collect::<Vec<_>>(),
            "damaged_objects": r.damaged_objects.iter().map(|d| serde_json::json!({"id": d.id.to_string(), "source": d.source.as_ref().map(|s| s.to_string_lossy()), "problems": d.problems, "problem_count": d.problem_count})).collect::<Vec<_>>(),
            "unindexed_packs": r.unindexed_packs.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
            "unreferenced_blobs": r.unreferenced_blobs,
        });
        println!("{v}");
    } else {
        println!(
            "checked {} chunks ({}) in {} packs, and {} objects",
            r.blobs,
            fmt::bytes(r.bytes),
            r.packs,
            r.objects
        );
        for (id, why) in &r.damaged_blobs {
            println!("damaged chunk {id}: {why}");
        }
        for d in &r.damaged_objects {
            let src = d.source.as_ref().map(|s| format!(" ({})", s.display())).unwrap_or_default();
            println!("damaged object {}{src}: {} problem(s)", d.id, d.problem_count);
            for p in &d.problems {
                println!("  {p}");
            }
        }
        if !r.unindexed_packs.is_empty() || r.unreferenced_blobs > 0 {
            println!(
                "{} unindexed packs and {} unreferenced chunks from interrupted puts; `kith gc` removes them",
                r.unindexed_packs.len(),
                r.unreferenced_blobs
            );
        }
        if !r.is_damaged() {
            println!("no damage found");
        }
    }
    Ok(if r.is_damaged() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
