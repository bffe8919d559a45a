//! Scheduled backups: `kith backup add PATH --to POOL|home --every 1h --keep daily=7,...`.
//!
//! Jobs live in `HOME/backups.json` (0600), written whole under a temporary name and renamed.
//! The daemon's `backups` worker looks every [`CHECK_EVERY`] for jobs that are due (never run,
//! or last run `every` ago: a job missed while the machine was off runs as soon as kith starts)
//! and runs them one at a time: a put of the path (unchanged files are not read again), into
//! the pool if the job names one, then the retention (`--keep`, as `restic forget --keep-*`
//! does): versions of the path that no rule keeps are forgotten here and released from the
//! pools, and their chunks reclaimed (here by a gc, in the pool by the holders' reclaim).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::api::store::{BackupJob, BackupRun};
use crate::ops::{Ctx, blocking};

/// How often the worker looks for due jobs.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// The shortest interval a job may have.
const MIN_EVERY_MS: u64 = 60_000;
/// How soon a failed run is tried again (at most).
const RETRY_MS: u64 = 5 * 60_000;
/// The jobs file, in the home.
const FILE: &str = "backups.json";

/// Serialises every read-modify-write of the jobs file in this process.
static LOCK: Mutex<()> = Mutex::new(());

/// What a job keeps: at most this many versions per rule, newest first; a version any rule
/// keeps stays. All zero: every version stays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keep {
    /// The newest N versions.
    #[serde(default)]
    pub last: u32,
    /// The newest version of each of the last N hours that have one (UTC).
    #[serde(default)]
    pub hourly: u32,
    /// ... of N days.
    #[serde(default)]
    pub daily: u32,
    /// ... of N weeks (ISO weeks, from Monday).
    #[serde(default)]
    pub weekly: u32,
    /// ... of N months.
    #[serde(default)]
    pub monthly: u32,
    /// ... of N years.
    #[serde(default)]
    pub yearly: u32,
}

impl Keep {
    /// Parses `daily=7,weekly=4,monthly=12` (rules: last, hourly, daily, weekly, monthly,
    /// yearly), or `all`.
    pub fn parse(s: &str) -> Result<Keep> {
        let mut k = Keep::default();
        if s.trim() == "all" {
            return Ok(k);
        }
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (rule, n) = part.split_once('=').with_context(|| {
                format!("`{part}` is not a rule: write RULE=N, such as daily=7")
            })?;
            let n: u32 =
                n.trim().parse().ok().filter(|n| *n > 0).with_context(|| {
                    format!("`{part}`: the count must be a whole number above 0")
                })?;
            let slot = match rule.trim() {
                "last" => &mut k.last,
                "hourly" => &mut k.hourly,
                "daily" => &mut k.daily,
                "weekly" => &mut k.weekly,
                "monthly" => &mut k.monthly,
                "yearly" => &mut k.yearly,
                other => {
                    bail!("unknown rule `{other}` (last, hourly, daily, weekly, monthly, yearly)")
                }
            };
            *slot = n;
        }
        Ok(k)
    }

    /// The rules in words, as `parse` reads them.
    pub fn describe(&self) -> String {
        let rules = [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ];
        let set: Vec<String> =
            rules.iter().filter(|(_, n)| *n > 0).map(|(r, n)| format!("{r}={n}")).collect();
        if set.is_empty() { "all".into() } else { set.join(",") }
    }

    fn keeps_everything(&self) -> bool {
        *self == Keep::default()
    }
}

/// Days since 1970-01-01 to (year, month) in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm).
fn year_month(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// The period of rule `i` (1 hourly, 2 daily, 3 weekly, 4 monthly, 5 yearly) that `ms` is in.
fn bucket(i: usize, ms: i64) -> i64 {
    let day = ms.div_euclid(86_400_000);
    match i {
        1 => ms.div_euclid(3_600_000),
        2 => day,
        // 1970-01-01 was a Thursday: +3 makes weeks start on Monday.
        3 => (day + 3).div_euclid(7),
        4 => {
            let (y, m) = year_month(day);
            y * 12 + i64::from(m)
        }
        _ => year_month(day).0,
    }
}

/// The versions (of `(version, made at ms)`) that `keep` does not keep, as restic's
/// `forget --keep-*` chooses: for each rule, newest first, the first version of each new
/// period is kept until the rule has its count.
pub fn forget_plan(versions: &[(u32, i64)], keep: &Keep) -> BTreeSet<u32> {
    if keep.keeps_everything() {
        return BTreeSet::new();
    }
    let mut newest_first = versions.to_vec();
    // Newest by version number (a clock set wrong once must not make an old version look new).
    newest_first.sort_by_key(|(v, _)| std::cmp::Reverse(*v));
    let counts = [keep.last, keep.hourly, keep.daily, keep.weekly, keep.monthly, keep.yearly];
    let mut kept = BTreeSet::new();
    for (i, count) in counts.iter().enumerate() {
        let mut last: Option<i64> = None;
        let mut n = 0;
        for (v, at) in &newest_first {
            if n >= *count {
                break;
            }
            // `last=N` keeps each of the N newest; the others keep one per period.
            let b = if i == 0 { i64::from(*v) } else { bucket(i, *at) };
            if last != Some(b) {
                kept.insert(*v);
                last = Some(b);
                n += 1;
            }
        }
    }
    versions.iter().map(|(v, _)| *v).filter(|v| !kept.contains(v)).collect()
}

/// A job and how it last went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Its name (unique in the home).
    pub name: String,
    /// What it stores (absolute).
    pub path: PathBuf,
    /// `home`, the pool it puts into, or a folder (an absolute path: a kith home of this
    /// identity on another disk).
    pub to: String,
    /// How often (ms).
    pub every_ms: u64,
    /// What it keeps.
    pub keep: Keep,
    /// When it last ran (ms since the epoch).
    #[serde(default)]
    pub last_run_ms: Option<i64>,
    /// When it last succeeded.
    #[serde(default)]
    pub last_ok_ms: Option<i64>,
    /// Why the last run failed, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The version its last run stored.
    #[serde(default)]
    pub last_version: Option<u32>,
    /// Runs so far.
    #[serde(default)]
    pub runs: u64,
    /// Versions its retention forgot so far.
    #[serde(default)]
    pub forgotten: u64,
    /// The objects this job stored that it keeps (ids): its retention looks at these only.
    #[serde(default)]
    pub made: Vec<String>,
    /// The device the source was on when the job was added.
    #[serde(default)]
    pub device: Option<u64>,
}

impl Job {
    /// Due: never run, run `every` ago, run "in the future" (the clock went back), or failed
    /// last time and 5 minutes passed (a disk mounted late is not a day lost).
    fn due(&self, now_ms: i64) -> bool {
        let Some(t) = self.last_run_ms else { return true };
        let failed = self.last_ok_ms != Some(t);
        let wait = if failed { self.every_ms.min(RETRY_MS) } else { self.every_ms };
        t > now_ms || now_ms >= t.saturating_add(wait as i64)
    }

    /// The typed answer.
    pub fn api(&self) -> BackupJob {
        BackupJob {
            name: self.name.clone(),
            path: self.path.display().to_string(),
            to: self.to.clone(),
            every_s: self.every_ms / 1000,
            keep: self.keep.describe(),
            last_run_ms: self.last_run_ms,
            last_ok_ms: self.last_ok_ms,
            next_run_ms: self.last_run_ms.map(|t| t + self.every_ms as i64),
            last_error: self.last_error.clone(),
            last_version: self.last_version,
            runs: self.runs,
            forgotten: self.forgotten,
        }
    }
}

/// The daemon's clock (which tests may pause), else the system's.
fn now_ms(ctx: &Ctx) -> i64 {
    ctx.pools.as_ref().map_or(kith_node::keys::now_ms() as i64, |p| p.now_ms())
}

fn path_of(ctx: &Ctx) -> PathBuf {
    ctx.home.root().join(FILE)
}

/// The jobs of this home.
pub fn load(ctx: &Ctx) -> Result<Vec<Job>> {
    let path = path_of(ctx);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{} does not read as kith's backup jobs", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn save(ctx: &Ctx, jobs: &[Job]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path_of(ctx);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(jobs)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Changes the jobs under the lock.
fn update<T>(ctx: &Ctx, f: impl FnOnce(&mut Vec<Job>) -> Result<T>) -> Result<T> {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut jobs = load(ctx)?;
    let out = f(&mut jobs)?;
    save(ctx, &jobs)?;
    Ok(out)
}

/// `kith backup add`.
pub fn add(
    ctx: &Ctx,
    path: PathBuf,
    to: String,
    every: &str,
    keep: &str,
    name: Option<String>,
) -> Result<BackupJob> {
    use std::os::unix::fs::MetadataExt;
    // Through symlinks: a link to a folder backs up the folder, not the link.
    let path = std::fs::canonicalize(&path)
        .with_context(|| format!("cannot back up {}: it cannot be read", path.display()))?;
    let device = std::fs::metadata(&path)?.dev();
    let home_root = std::fs::canonicalize(ctx.home.root()).unwrap_or(ctx.home.root().into());
    if home_root.starts_with(&path) {
        bail!(
            "{} holds this node's home ({}): each run would store the store; back up the folders inside it instead",
            path.display(),
            home_root.display()
        );
    }
    let every_ms = crate::pool_ops::parse_duration_ms(every)?;
    if every_ms < MIN_EVERY_MS {
        bail!("--every {every} is too often: at least 1m");
    }
    let keep = Keep::parse(keep)?;
    let to = if to == "home" {
        to
    } else if to.starts_with('/') {
        // A folder (another disk): a kith home of this identity, made now, so that a run that
        // finds no home there (the disk not mounted) makes none.
        let dir = PathBuf::from(&to);
        if dir.starts_with(&home_root) || dir.starts_with(ctx.home.root()) {
            bail!(
                "{to} is inside this node's home; a backup place must be elsewhere (another disk)"
            );
        }
        if dir.starts_with(&path) {
            bail!("{to} is inside {}: each run would store the backup itself", path.display());
        }
        match kith_node::Home::open(&dir) {
            Ok(h) if h.identity()?.id() != ctx.home.identity()?.id() => {
                bail!("{to} is a kith home of another identity; choose another folder")
            }
            Ok(_) => {}
            Err(_) => {
                // Its parent must be there already: a missing one is a disk not mounted.
                if !dir.parent().is_some_and(Path::is_dir) {
                    bail!(
                        "cannot make a backup place in {to}: {} is not there (a disk not mounted?)",
                        dir.parent().unwrap_or(&dir).display()
                    );
                }
                kith_node::Home::init(&dir, ctx.home.identity()?)
                    .with_context(|| format!("cannot make a backup place in {to}"))?;
            }
        }
        to
    } else {
        // The pool by its name, so the job survives a typo being fixed nowhere else.
        let pools = match &ctx.pools {
            Some(p) => p.clone(),
            None => crate::pool_ops::open(&ctx.home, kith_node::Clock::system())?,
        };
        let id = pools.resolve(&to)?;
        pools.view_of(&id).map(|v| v.charter.name.clone()).unwrap_or(to)
    };
    let name = name.unwrap_or_else(|| {
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into())
    });
    if name.is_empty() || name.len() > 64 || name.contains(['/', '\n']) {
        bail!("`{name}` is not a job name (1 to 64 characters, no `/`)");
    }
    update(ctx, |jobs| {
        if jobs.iter().any(|j| j.name == name) {
            bail!(
                "there is a backup job named {name} already (`kith backup ls`); give another with --name"
            );
        }
        let job = Job {
            name,
            path,
            to,
            every_ms,
            keep,
            last_run_ms: None,
            last_ok_ms: None,
            last_error: None,
            last_version: None,
            runs: 0,
            forgotten: 0,
            made: Vec::new(),
            device: Some(device),
        };
        let api = job.api();
        jobs.push(job);
        Ok(api)
    })
}

/// `kith backup rm NAME`: the job goes; the versions it stored stay.
pub fn remove(ctx: &Ctx, name: &str) -> Result<BackupJob> {
    update(ctx, |jobs| {
        let i = jobs
            .iter()
            .position(|j| j.name == name)
            .with_context(|| format!("no backup job named {name} (`kith backup ls`)"))?;
        Ok(jobs.remove(i).api())
    })
}

/// Runs job `name` now (or every job), records how it went, and reports.
pub async fn run_now(ctx: &Ctx, name: Option<&str>) -> Result<Vec<BackupRun>> {
    let jobs = load(ctx)?;
    let chosen: Vec<Job> = jobs.into_iter().filter(|j| name.is_none_or(|n| j.name == n)).collect();
    if let (Some(n), true) = (name, chosen.is_empty()) {
        bail!("no backup job named {n} (`kith backup ls`)");
    }
    let mut out = Vec::new();
    for job in chosen {
        out.push(run_and_record(ctx, &job).await?);
    }
    Ok(out)
}

/// Runs every due job once (the worker's pass).
pub async fn run_due(ctx: &Ctx) -> Result<(), String> {
    let now = now_ms(ctx);
    let jobs = load(ctx).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for job in jobs.into_iter().filter(|j| j.due(now)) {
        match run_and_record(ctx, &job).await {
            Ok(r) if r.error.is_some() => {
                errors.push(format!("{}: {}", job.name, r.error.unwrap_or_default()))
            }
            Ok(_) => {}
            Err(e) => errors.push(format!("{}: {e}", job.name)),
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

async fn run_and_record(ctx: &Ctx, job: &Job) -> Result<BackupRun> {
    let started = now_ms(ctx);
    let t = std::time::Instant::now();
    let r = run_job(ctx, job).await;
    let mut report = match r {
        Ok(r) => r,
        Err(e) => BackupRun {
            name: job.name.clone(),
            version: None,
            made: None,
            files_unchanged: 0,
            bytes_new: 0,
            pool: None,
            forgotten: Vec::new(),
            forgotten_ids: Vec::new(),
            warning: None,
            error: Some(crate::ops::chain(&e)),
            seconds: 0.0,
        },
    };
    report.seconds = t.elapsed().as_secs_f64();
    update(ctx, |jobs| {
        // Removed meanwhile: nothing to record.
        if let Some(j) = jobs.iter_mut().find(|j| j.name == job.name) {
            j.last_run_ms = Some(started);
            j.runs += 1;
            j.forgotten += report.forgotten.len() as u64;
            j.last_error = report.error.clone().or_else(|| report.warning.clone());
            if report.error.is_none() {
                j.last_ok_ms = Some(started);
                j.last_version = report.version;
            }
            j.made.retain(|id| !report.forgotten_ids.contains(id));
            if let Some(id) = &report.made
                && !j.made.contains(id)
            {
                j.made.push(id.clone());
            }
        }
        Ok(())
    })?;
    Ok(report)
}

/// Whether the source is empty now while the job kept versions: then nothing is forgotten.
fn emptied(job: &Job, put: &kith_node::PutReport) -> bool {
    let empty = put.stats.files == 0 && put.stats.symlinks == 0 && put.stats.dirs <= 1;
    empty && !job.made.is_empty()
}

/// The report of a run that stored `put` into `place`, before its retention.
fn stored(
    job: &Job,
    put: &kith_node::PutReport,
    place: Option<String>,
    warning: Option<String>,
) -> BackupRun {
    BackupRun {
        name: job.name.clone(),
        version: Some(put.version),
        made: Some(put.id.to_string()),
        files_unchanged: put.stats.files_unchanged,
        bytes_new: put.stats.bytes_new,
        pool: place,
        forgotten: Vec::new(),
        forgotten_ids: Vec::new(),
        warning,
        error: None,
        seconds: 0.0,
    }
}

/// Whether the source is there, and on the disk it was on when the job was added (an
/// unmounted disk leaves an empty mount point: storing that would make the retention forget
/// every real version).
fn check_source(job: &Job) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let gone = || {
        anyhow::anyhow!(
            "{} is gone (a disk not mounted?); nothing was stored, and the versions kept so far stay",
            job.path.display()
        )
    };
    let meta = std::fs::metadata(&job.path).map_err(|_| gone())?;
    if job.device.is_some_and(|d| d != meta.dev()) {
        bail!(
            "{} is not on the disk it was on when the job was added (a disk not mounted?); nothing was stored, and the versions kept so far stay",
            job.path.display()
        );
    }
    Ok(())
}

/// The versions of `versions` (of the job's path) that the job made, and the one just stored,
/// that the retention forgets; the one just stored is always kept.
fn plan_for(job: &Job, versions: &[kith_node::ObjectInfo], now: u32) -> Vec<(u32, String)> {
    let mine: Vec<&kith_node::ObjectInfo> = versions
        .iter()
        .filter(|o| o.version == now || job.made.contains(&o.id.to_string()))
        .collect();
    let plan = forget_plan(
        &mine.iter().map(|o| (o.version, o.created_ms as i64)).collect::<Vec<_>>(),
        &job.keep,
    );
    mine.iter()
        .filter(|o| plan.contains(&o.version) && o.version != now)
        .map(|o| (o.version, o.id.to_string()))
        .collect()
}

async fn run_job(ctx: &Ctx, job: &Job) -> Result<BackupRun> {
    check_source(job)?;
    let path = job.path.clone();
    if job.to.starts_with('/') {
        let (home, job) = (ctx.home.clone(), job.clone());
        return blocking(move || run_into_folder(&home, &job)).await;
    }
    let into_pool = job.to != "home";
    if into_pool {
        let rep = match (&ctx.node, &ctx.replicator) {
            (Some(_), Some(rep)) => rep,
            _ => bail!("backing up into pool {} needs `kith up` running", job.to),
        };
        rep.ready_for_put(&job.to).map_err(|e| anyhow::anyhow!(e))?;
    }
    let store = ctx.store.clone();
    let p = path.clone();
    let put = blocking(move || store.put(&p, None)).await?;
    let mut warning = put.warnings.first().cloned();
    let mut pool = None;
    let mut whole = true;
    if let (true, Some(rep)) = (into_pool, &ctx.replicator) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let pp = rep.put(&job.to, put.id.0, &name).await.map_err(|e| anyhow::anyhow!(e))?;
        if pp.short_blobs > 0 || pp.acks.iter().any(|a| a.result.is_err()) {
            whole = false;
            warning = Some(format!(
                "version {} is stored here and in pool {}, not yet on every holder (repair finishes it); nothing was forgotten this time",
                put.version, job.to
            ));
        }
        pool = Some(job.to.clone());
    }
    let empty = emptied(job, &put);
    if empty {
        warning = Some(format!("{} is empty now; nothing was forgotten this time", path.display()));
    }
    let mut report = stored(job, &put, pool, warning);
    if !whole || empty {
        return Ok(report);
    }
    // The retention, over the versions this job made; released from the job's pool only.
    let (store, p) = (ctx.store.clone(), path.clone());
    let versions = blocking(move || store.log(&p)).await?;
    let forget = plan_for(job, &versions, put.version);
    if forget.is_empty() {
        return Ok(report);
    }
    let (store, ids) = (ctx.store.clone(), forget.clone());
    let released = blocking(move || {
        let mut released = std::collections::HashSet::new();
        for (_, id) in &ids {
            let oid: kith_node::ObjectId = id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            released.extend(store.object_blobs(&oid)?.into_iter().map(|(c, _)| c));
        }
        Ok::<_, anyhow::Error>(released)
    })
    .await?;
    let pools = match &ctx.pools {
        Some(p) => p.clone(),
        None => crate::pool_ops::open(&ctx.home, kith_node::Clock::system())?,
    };
    for (version, id) in &forget {
        let oid: kith_node::ObjectId = id.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        if into_pool {
            let now = pools.now_ms();
            let key = oid.0;
            pools
                .with_pool(&job.to, |p| {
                    let me = pools.signer().author().key;
                    if p.view().members.get(&me).is_some_and(|m| m.objects.contains_key(&key)) {
                        p.remove_object(pools.signer(), &key, now)?;
                    }
                    Ok(())
                })
                .with_context(|| {
                    format!("cannot release version {version} from pool {}", job.to)
                })?;
        }
        let store = ctx.store.clone();
        blocking(move || store.remove(&oid)).await?;
        report.forgotten.push(*version);
        report.forgotten_ids.push(id.clone());
    }
    // Their chunks, unless another object or a pool keeps them; the set kept is read under
    // the store's writer lock, so nothing a hold or repair brings in meanwhile is taken.
    let store = ctx.store.clone();
    blocking(move || {
        store.reclaim(&released, || {
            let (keep, unreadable) = kith_pools::replica::keep_set(&pools, &store);
            match unreadable.first() {
                Some(first) => {
                    Err(format!("cannot tell what this node holds for its pools ({first})"))
                }
                None => Ok(keep),
            }
        })
    })
    .await
    .map(|_| ())
    .or_else(|e| {
        // Forgotten all the same; `kith gc` reclaims the space later.
        report.warning =
            Some(format!("the space of the forgotten versions is not reclaimed yet: {e}"));
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(report)
}

/// A job whose place is a folder (another disk): a kith home of this identity, made when the
/// job was added, so `kith --home DIR log PATH` and `get` read it directly. The path is put
/// into its store (its own record of unchanged files saves reading them again), then the
/// retention runs there and a gc reclaims what it forgot.
fn run_into_folder(home: &kith_node::Home, job: &Job) -> Result<BackupRun> {
    let dir = PathBuf::from(&job.to);
    let there = kith_node::Home::open(&dir).map_err(|_| {
        anyhow::anyhow!(
            "{} is not there (a disk not mounted?); nothing was stored, and the versions kept so far stay",
            dir.display()
        )
    })?;
    if there.identity()?.id() != home.identity()?.id() {
        bail!("{} is a kith home of another identity; choose another folder", dir.display());
    }
    let store = kith_node::Store::open_patiently(&there, "a backup", Duration::from_secs(10))?;
    let put = store.put(&job.path, None)?;
    let mut report =
        stored(job, &put, Some(dir.display().to_string()), put.warnings.first().cloned());
    if emptied(job, &put) {
        report.warning =
            Some(format!("{} is empty now; nothing was forgotten this time", job.path.display()));
        return Ok(report);
    }
    let versions = store.log(&job.path)?;
    for (version, id) in plan_for(job, &versions, put.version) {
        store.remove(&id.parse().map_err(|e| anyhow::anyhow!("{e}"))?)?;
        report.forgotten.push(version);
        report.forgotten_ids.push(id);
    }
    if !report.forgotten.is_empty() {
        store.gc()?;
    }
    Ok(report)
}

/// The daemon's worker: runs due jobs, every [`CHECK_EVERY`], until `cancel`.
pub async fn worker(
    ctx: std::sync::Arc<Ctx>,
    workers: std::sync::Arc<kith_node::worker::Workers>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let pace = kith_node::worker::Pace { interval: CHECK_EVERY, tranquility: 0 };
    workers
        .run("backups".into(), pace, cancel, move |_| {
            let ctx = ctx.clone();
            async move { run_due(&ctx).await }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;
    const D: i64 = 24 * H;

    #[test]
    fn keep_rules_parse_and_read_back() {
        let k = Keep::parse("daily=7, weekly=4,monthly=12").unwrap();
        assert_eq!((k.daily, k.weekly, k.monthly, k.last), (7, 4, 12, 0));
        assert_eq!(k.describe(), "daily=7,weekly=4,monthly=12");
        assert_eq!(Keep::parse("all").unwrap().describe(), "all");
        for bad in ["daily", "daily=0", "daily=x", "fortnightly=2"] {
            assert!(Keep::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_calendar_is_right_at_its_edges() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(31), (1970, 2));
        // 2024-02-29 and 2024-03-01.
        assert_eq!(year_month(19_782), (2024, 2));
        assert_eq!(year_month(19_783), (2024, 3));
        assert_eq!(year_month(-1), (1969, 12));
    }

    #[test]
    fn retention_chooses_as_restic_forget_does() {
        // A version every 6 hours for 30 days, from Monday 2026-11-02 00:00 UTC.
        let start = 20_394 * D;
        let versions: Vec<(u32, i64)> =
            (0..120).map(|i| (i + 1, start + i as i64 * 6 * H)).collect();
        // Nothing given: everything stays.
        assert!(forget_plan(&versions, &Keep::default()).is_empty());
        // last=3: the three newest.
        let keep = Keep { last: 3, ..Keep::default() };
        let kept: Vec<u32> =
            (1..=120).filter(|v| !forget_plan(&versions, &keep).contains(v)).collect();
        assert_eq!(kept, vec![118, 119, 120]);
        // daily=7, weekly=2: the newest of each of the last 7 days (v120 on day 30 back to
        // v96 on day 24), plus the newest of the week before the newest one's week.
        let keep = Keep { daily: 7, weekly: 2, ..Keep::default() };
        let forget = forget_plan(&versions, &keep);
        let kept: Vec<u32> = (1..=120).filter(|v| !forget.contains(v)).collect();
        // Day n (1-based) has versions 4n-3..4n; its newest is 4n. Days 24..30 are 96..120.
        // Day 30 is Tuesday 2026-12-01: its week began on day 29; the week before ended on
        // Sunday, day 28 (v112), already kept as a daily.
        assert_eq!(kept, vec![96, 100, 104, 108, 112, 116, 120]);
        // The newest is always kept, whatever the rules.
        let keep = Keep { yearly: 1, ..Keep::default() };
        assert!(!forget_plan(&versions, &keep).contains(&120));
        assert_eq!(forget_plan(&versions, &keep).len(), 119);
    }
}
