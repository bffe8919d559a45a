//! A pool: its signed document and the operations members perform on it.

use kith_crdt::automerge::{Automerge, ChangeHash, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use kith_crdt::{Doc, DocError, Key, Schema, SignedDoc, Signer, hex};

use crate::edit;
use crate::error::ParseError;
use crate::invite::Invite;
use crate::placement::zones;
use crate::rules::{PoolRules, invite_valid};
use crate::view::{Charter, DEFAULT_REPLICAS, Offer, POOL_KIND, PoolView, Role, State};

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// The document refused the change or is damaged.
    #[error(transparent)]
    Doc(#[from] DocError),
    /// The pool's policy cannot be met or a value is invalid.
    #[error("{0}")]
    Policy(String),
    /// Not allowed for this member.
    #[error("{0}")]
    Denied(String),
    /// The document does not parse.
    #[error("the pool document is damaged: {0}")]
    Damaged(String),
    /// A value given does not parse.
    #[error(transparent)]
    Parse(#[from] ParseError),
}

/// The kind of pool documents.
#[derive(Debug)]
pub struct PoolKind;

/// Most copies of each chunk a pool keeps off-site.
pub const MAX_OFFSITE: u64 = 3;

impl Schema for PoolKind {
    const KIND: &'static str = POOL_KIND;
    const EXT: &'static str = "kpool";
    type View = PoolView;
    type Rules<'r> = PoolRules;

    fn read(doc: &impl ReadDoc) -> Result<PoolView, String> {
        PoolView::read(doc).map_err(|e| e.0)
    }
}

/// A pool and its signed document.
#[derive(Debug)]
pub struct Pool {
    doc: Doc<PoolKind>,
}

/// A pool document frozen at one moment, with its history: what the rules of documents that
/// depend on the pool (the ledgers) judge a change against, without holding the pool itself.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    id: Key,
    view: std::sync::Arc<PoolView>,
    history: Automerge,
    /// Answers of [`PoolSnapshot::standing_at`] and [`PoolSnapshot::retired_at`] already read:
    /// every row a device writes names the same few pool states, and a read at heads walks the
    /// pool's history (most of a ledger check's time before it was kept). The history never
    /// changes, so an answer never goes stale; shared by clones of the snapshot.
    at: std::sync::Arc<std::sync::Mutex<AtCache>>,
}

/// Most answers a snapshot keeps (about 150 bytes each for the usual one or two heads, at most
/// 2.2 KB with the 64 heads a note may name: 2.3 MB at worst); past it, it starts again.
const AT_CACHE: usize = 1024;

/// What a snapshot has read at past heads: `(member, device or none, heads)` to an answer.
type AtCache = std::collections::HashMap<(Key, Option<Key>, Vec<ChangeHash>), AtAnswer>;

#[derive(Debug, Clone, Copy)]
enum AtAnswer {
    Standing(Option<Standing>),
    Retired(bool),
}

/// A member's standing at some point of the pool's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// Its role then.
    pub role: Role,
    /// Its state then.
    pub state: State,
}

impl PoolSnapshot {
    /// The pool id.
    pub fn id(&self) -> &Key {
        &self.id
    }

    /// The pool as it is in this snapshot.
    pub fn view(&self) -> &PoolView {
        &self.view
    }

    /// The heads of the snapshot.
    pub fn heads(&self) -> Vec<ChangeHash> {
        self.history.get_heads()
    }

    /// Whether every change in `heads` is in this snapshot's history.
    pub fn knows(&self, heads: &[ChangeHash]) -> bool {
        heads.iter().all(|h| self.history.get_change_meta_by_hash(h).is_some())
    }

    /// `who`'s role and state in the pool at `heads` (all known, see [`PoolSnapshot::knows`]),
    /// or `None` if it had no entry then. Reads only the member's entry, so it costs the same
    /// whatever the size of the pool.
    pub fn standing_at(&self, who: &Key, heads: &[ChangeHash]) -> Option<Standing> {
        match self
            .remembered(who, None, heads, || AtAnswer::Standing(self.read_standing(who, heads)))
        {
            AtAnswer::Standing(s) => s,
            AtAnswer::Retired(_) => None,
        }
    }

    /// The answer kept for `(who, device, heads)`, or `read`'s, kept.
    fn remembered(
        &self,
        who: &Key,
        device: Option<&Key>,
        heads: &[ChangeHash],
        read: impl FnOnce() -> AtAnswer,
    ) -> AtAnswer {
        let key = (*who, device.copied(), heads.to_vec());
        let lock = || self.at.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = lock().get(&key) {
            return *a;
        }
        // Read without the lock held: two threads may both read, and agree.
        let a = read();
        let mut cache = lock();
        if cache.len() >= AT_CACHE {
            cache.clear();
        }
        cache.insert(key, a);
        a
    }

    fn read_standing(&self, who: &Key, heads: &[ChangeHash]) -> Option<Standing> {
        let d = &self.history;
        let map = |at: &kith_crdt::automerge::ObjId, key: &str| match d.get_at(at, key, heads) {
            Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
            _ => None,
        };
        let text = |at: &kith_crdt::automerge::ObjId, key: &str| match d.get_at(at, key, heads) {
            Ok(Some((v, _))) => v.as_str().map(str::to_string),
            _ => None,
        };
        let members = map(&ROOT, "members")?;
        let m = map(&members, &hex(who))?;
        Some(Standing {
            role: Role::parse(&text(&m, "role")?)?,
            state: State::parse(&text(&m, "state")?)?,
        })
    }

    /// Whether `who` had retired its device `node` at `heads` (in any of the concurrent maps
    /// at a key).
    pub fn retired_at(&self, who: &Key, node: &Key, heads: &[ChangeHash]) -> bool {
        let read = || AtAnswer::Retired(self.read_retired(who, node, heads));
        matches!(self.remembered(who, Some(node), heads, read), AtAnswer::Retired(true))
    }

    fn read_retired(&self, who: &Key, node: &Key, heads: &[ChangeHash]) -> bool {
        let d = &self.history;
        let mut level = vec![ROOT];
        for k in ["members", &hex(who), "retired"] {
            level = level
                .iter()
                .flat_map(|o| d.get_all_at(o, k, heads).unwrap_or_default())
                .filter(|(v, _)| matches!(v, Value::Object(ObjType::Map)))
                .map(|(_, id)| id)
                .collect();
        }
        level.iter().any(|o| matches!(d.get_at(o, hex(node), heads), Ok(Some(_))))
    }
}

/// Checks an invite to pool `id`, as `v` has it now (as the node that serves a join would).
pub(crate) fn check_invite(
    v: &PoolView,
    id: &Key,
    inv: &Invite,
    now_ms: i64,
) -> Result<(), PoolError> {
    invite_valid(inv, id, v, now_ms).map_err(PoolError::Denied)?;
    let bytes = inv.to_bytes();
    let used = v.members.values().filter(|m| m.invite.as_deref() == Some(&bytes[..])).count();
    if used >= inv.uses as usize {
        return Err(PoolError::Denied(format!(
            "the invite allowed {} use(s) and has been used up",
            inv.uses
        )));
    }
    Ok(())
}

/// Parses sizes such as `50GiB`, `1.5 TB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = |m: String| ParseError::new("size", s, m);
    let n: f64 = num.parse().map_err(|_| bad(format!("`{s}` is not a size (try 50GiB)")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        u => {
            return Err(bad(format!(
                "unknown size unit `{u}` in `{s}` (B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            )));
        }
    };
    Ok((n * mult as f64) as u64)
}

impl Pool {
    /// Founds a pool with `signer` as its admin.
    pub fn create(
        signer: &Signer,
        display: &str,
        charter: Charter,
        now_ms: i64,
    ) -> Result<Pool, PoolError> {
        let founder = signer.author().key;
        let doc = Doc::create(signer, now_ms, &PoolRules, |d| {
            edit::init(d, &founder, display, &charter, now_ms)
        })?;
        Ok(Pool { doc })
    }

    /// The default charter for a pool called `name`.
    pub fn charter(name: &str) -> Charter {
        Charter {
            name: name.to_string(),
            replicas: DEFAULT_REPLICAS,
            quota: 0,
            cost_rule: "proportional".into(),
            join_rule: "invite".into(),
            repair_after_ms: crate::view::DEFAULT_REPAIR_AFTER_MS,
            audit_every_ms: crate::view::DEFAULT_AUDIT_EVERY_MS,
            record_every_ms: crate::view::DEFAULT_RECORD_EVERY_MS,
            dissolved_ms: None,
            cpu_price_micro: 0,
            offsite_replicas: 0,
        }
    }

    /// Wraps a document that holds a pool.
    pub fn from_doc(doc: SignedDoc) -> Result<Pool, PoolError> {
        match Doc::wrap(doc) {
            Ok(doc) => Ok(Pool { doc }),
            Err(DocError::Format(why)) => Err(PoolError::Damaged(why)),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a saved pool (a file that is not a kith document is a [`DocError`], one that
    /// does not read as a pool is [`PoolError::Damaged`]).
    pub fn load(bytes: &[u8]) -> Result<Pool, PoolError> {
        Pool::from_doc(SignedDoc::load(bytes, PoolKind::KIND)?)
    }

    /// Reads a pool from another's copy (a sealed copy a partner kept): every change's
    /// signature verified and every change judged by the rules from the first, as a sync from
    /// nothing would.
    pub fn load_judged(bytes: &[u8]) -> Result<Pool, PoolError> {
        let mut theirs = SignedDoc::load(bytes, PoolKind::KIND)?;
        let (changes, sigs) = theirs.changes_since(&[]);
        let mut doc = SignedDoc::empty(*theirs.id());
        doc.ingest(changes, &sigs, &PoolRules)?;
        Pool::from_doc(doc)
    }

    /// The pool as bytes.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// The pool id.
    pub fn id(&self) -> Key {
        self.doc.id()
    }

    /// A copy to check a peer's changes in, outside any lock (see [`Pool::adopt`]).
    pub fn fork(&mut self) -> Pool {
        Pool { doc: self.doc.fork() }
    }

    /// Puts the pool back to `heads`, which it had (see [`kith_crdt::SignedDoc::rewind`]).
    pub fn rewind(&mut self, heads: &[ChangeHash]) -> Result<(), PoolError> {
        Ok(self.doc.rewind(heads)?)
    }

    /// Takes in `checked`, a [`Pool::fork`] made at `heads` with changes checked since (see
    /// [`Doc::adopt`]); the hashes of the changes new here.
    pub fn adopt(
        &mut self,
        checked: Pool,
        heads: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>, PoolError> {
        Ok(self.doc.adopt(checked.doc, heads)?)
    }

    /// The document (for sync).
    pub fn doc_mut(&mut self) -> &mut Doc<PoolKind> {
        &mut self.doc
    }

    /// The document as it is now, with its history, for judging other documents' changes
    /// (a ledger row) against the pool as it was when they were made.
    pub fn snapshot(&mut self) -> PoolSnapshot {
        let view = std::sync::Arc::new(self.view());
        self.snapshot_with(view)
    }

    /// [`Pool::snapshot`] with the view of the pool as it is now, read already.
    pub fn snapshot_with(&mut self, view: std::sync::Arc<PoolView>) -> PoolSnapshot {
        PoolSnapshot {
            id: self.id(),
            view,
            history: self.doc.history().clone(),
            at: Default::default(),
        }
    }

    /// The current state.
    pub fn view(&self) -> PoolView {
        self.doc.view().expect("only authorised, parseable changes are applied")
    }

    /// Whether `who` is an active member (one lookup, not a read of the whole pool).
    pub fn is_active(&self, who: &Key) -> bool {
        let d = self.doc.doc();
        let Ok(Some((_, members))) = d.get(ROOT, "members") else { return false };
        let Ok(Some((_, m))) = d.get(&members, hex(who)) else { return false };
        matches!(d.get(&m, "state"), Ok(Some((v, _))) if v.as_str() == Some("active"))
    }

    fn admin(&self, signer: &Signer) -> Result<PoolView, PoolError> {
        let v = self.view();
        match v.active(&signer.author().key) {
            Some(m) if m.role == Role::Admin => Ok(v),
            Some(_) => Err(PoolError::Denied("only an admin of the pool may do this".into())),
            None => Err(PoolError::Denied("you are not a member of this pool".into())),
        }
    }

    /// Issues an invite.
    pub fn invite(
        &self,
        signer: &Signer,
        id: [u8; 16],
        expires_ms: u64,
        uses: u32,
    ) -> Result<Invite, PoolError> {
        self.admin(signer)?;
        if uses == 0 {
            return Err(PoolError::Policy("an invite must allow at least one use".into()));
        }
        Ok(Invite::issue(signer, self.id(), id, expires_ms, uses))
    }

    /// Checks an invite now, as the node that serves a join would.
    pub fn check_invite(&self, inv: &Invite, now_ms: i64) -> Result<(), PoolError> {
        check_invite(&self.view(), &self.id(), inv, now_ms)
    }

    /// Joins with an invite.
    pub fn join(
        &mut self,
        signer: &Signer,
        display: &str,
        inv: &Invite,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        if self.view().active(&me).is_some() {
            return Err(PoolError::Policy("you are already a member of this pool".into()));
        }
        self.check_invite(inv, now_ms)?;
        let bytes = inv.to_bytes();
        self.doc
            .change(signer, now_ms, &PoolRules, |d| edit::join(d, &me, display, &bytes, now_ms))?;
        Ok(())
    }

    /// Sets a charter field or a role (`role:MEMBER`), refusing policies the pool cannot meet.
    pub fn set(
        &mut self,
        signer: &Signer,
        key: &str,
        value: &str,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let v = self.admin(signer)?;
        if let Some(who) = key.strip_prefix("role:") {
            let member = self.find_member(&v, who)?;
            let role = match value {
                "admin" => Role::Admin,
                "member" => Role::Member,
                _ => {
                    return Err(PoolError::Policy(format!(
                        "unknown role `{value}` (admin or member)"
                    )));
                }
            };
            self.doc.change(signer, now_ms, &PoolRules, |d| edit::set_role(d, &member, role))?;
            return Ok(());
        }
        let scalar = match key {
            "name" if !value.trim().is_empty() => ScalarValue::Str(value.into()),
            "replicas" => {
                let n: u64 = value.parse().map_err(|_| {
                    PoolError::Policy(format!("replicas must be a number, not `{value}`"))
                })?;
                check_replicas(&v, n)?;
                ScalarValue::Uint(n)
            }
            "quota" => ScalarValue::Uint(parse_size(value)?),
            "offsite_replicas" => {
                let n: u64 = value.parse().ok().filter(|n| *n <= MAX_OFFSITE).ok_or_else(|| {
                    PoolError::Policy(format!(
                        "offsite_replicas is how many copies of each chunk federated pools keep (0 to {MAX_OFFSITE}), not `{value}`"
                    ))
                })?;
                let me = self.id();
                if n > 0 && v.federation.agreements.values().all(|e| {
                    e.state(&me, now_ms) == "ended"
                        || e.agreement.lending_of(&me).is_none_or(|(_, lent)| lent.storage == 0)
                }) {
                    return Err(PoolError::Policy(
                        "no federated pool lends this pool storage: `kith federation invite` or `join` one first".into(),
                    ));
                }
                ScalarValue::Uint(n)
            }
            "cost_rule" if value == "proportional" || value == "credits" => {
                ScalarValue::Str(value.into())
            }
            "join_rule" if value == "invite" => ScalarValue::Str(value.into()),
            "cpu_price" => ScalarValue::Uint(parse_price_micro(value).ok_or_else(|| {
                PoolError::Policy(format!(
                    "cpu_price is what a CPU-hour costs in the pool's currency, such as 0.02 (0: counted as credit), not `{value}`"
                ))
            })?),
            "repair_after" | "audit_every" | "record_every" => {
                let ms = parse_duration_ms(value)?;
                if ms < crate::rules::MIN_REPAIR_AFTER_MS {
                    return Err(PoolError::Policy(format!(
                        "{key} must be at least {} s",
                        crate::rules::MIN_REPAIR_AFTER_MS / 1000
                    )));
                }
                ScalarValue::Uint(ms)
            }
            _ => {
                return Err(PoolError::Policy(format!(
                    "cannot set `{key}` to `{value}`: keys are name, replicas (N), quota (SIZE), cost_rule (proportional|credits), join_rule (invite), repair_after (DURATION), audit_every (DURATION), record_every (DURATION), cpu_price (PRICE per CPU-hour), offsite_replicas (N), role:MEMBER (admin|member)"
                )));
            }
        };
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::set_charter(d, key, scalar))?;
        Ok(())
    }

    /// Finds an active or former member by hex prefix or display name.
    pub fn find_member(&self, v: &PoolView, who: &str) -> Result<Key, PoolError> {
        let hits: Vec<Key> = v
            .members
            .iter()
            .filter(|(k, m)| m.name == who || (who.len() >= 4 && hex(&k[..]).starts_with(who)))
            .map(|(k, _)| *k)
            .collect();
        match hits.as_slice() {
            [k] => Ok(*k),
            [] => Err(PoolError::Policy(format!("no member `{who}` in the pool"))),
            _ => Err(PoolError::Policy(format!(
                "`{who}` matches {} members; give more of the key",
                hits.len()
            ))),
        }
    }

    /// Sets what `node` offers.
    pub fn offer(
        &mut self,
        signer: &Signer,
        node: &Key,
        offer: &Offer,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        if !self.is_active(&me) {
            return Err(PoolError::Denied("you are not a member of this pool".into()));
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::set_offer(d, &me, node, offer))?;
        Ok(())
    }

    /// Lends (or with a zero `cpu`, withdraws) this member's node `node` to run jobs.
    pub fn offer_compute(
        &mut self,
        signer: &Signer,
        node: &Key,
        offer: &crate::view::ComputeOffer,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        if !self.is_active(&me) {
            return Err(PoolError::Denied("you are not a member of this pool".into()));
        }
        if !offer.hours.is_empty() && crate::view::parse_hours(&offer.hours).is_none() {
            return Err(PoolError::Policy(format!(
                "hours are H-H in the node's local time (22-7: from 22:00 to 07:00), not `{}`",
                offer.hours
            )));
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::set_compute(d, &me, node, offer))?;
        Ok(())
    }

    /// Adds what one job found of its runners to this member's records of them: for each
    /// node, whether its answer agreed with the accepted result (and if not, why). Nothing is
    /// written when this member is not active.
    pub fn record_checks(
        &mut self,
        signer: &Signer,
        found: &[(Key, Result<(), String>)],
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        let v = self.view();
        let Some(m) = v.active(&me) else { return Ok(()) };
        let mut records: std::collections::BTreeMap<Key, crate::view::CheckRecord> =
            std::collections::BTreeMap::new();
        for (node, verdict) in found {
            let r = records
                .entry(*node)
                .or_insert_with(|| m.checks.get(node).cloned().unwrap_or_default());
            match verdict {
                Ok(()) => r.agreed += 1,
                Err(why) => {
                    r.disagreed += 1;
                    r.reason = why.chars().take(200).collect();
                }
            }
            r.at_ms = now_ms;
        }
        if records.is_empty() {
            return Ok(());
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| {
            for (node, r) in &records {
                edit::set_check(d, &me, node, r)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Records an offer to federate that `signer` (an admin of this pool) made.
    pub fn add_fed_offer(
        &mut self,
        signer: &Signer,
        offer: &kith_federation::Offer,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::add_fed_offer(d, offer))?;
        Ok(())
    }

    /// Records an agreement this pool is in (its own acceptance of another pool's offer, or
    /// another pool's acceptance of this pool's offer); `false` if it is recorded already.
    pub fn add_agreement(
        &mut self,
        signer: &Signer,
        a: &kith_federation::Agreement,
        now_ms: i64,
    ) -> Result<bool, PoolError> {
        if self.view().federation.agreements.contains_key(&a.id()) {
            return Ok(false);
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::add_agreement(d, a))?;
        Ok(true)
    }

    /// Records notice on an agreement: this pool's admin's (`signer` signed it) or the partner's,
    /// carried here; `false` if notice was recorded already.
    pub fn record_notice(
        &mut self,
        signer: &Signer,
        n: &kith_federation::Notice,
        now_ms: i64,
    ) -> Result<bool, PoolError> {
        let v = self.view();
        let e = v
            .federation
            .agreements
            .get(&n.agreement)
            .ok_or_else(|| PoolError::Policy("this pool has no such agreement".into()))?;
        if e.notice.is_some() {
            return Ok(false);
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::record_notice(d, n, now_ms))?;
        Ok(true)
    }

    /// Signs and records this side's roster of agreement `id` when it is missing, out of date
    /// (the active members changed) or past half its time: `signer` must be this side's signer
    /// of the agreement. `false` if nothing needed doing (or the agreement has ended).
    pub fn renew_roster(
        &mut self,
        signer: &Signer,
        id: &Key,
        now_ms: i64,
    ) -> Result<bool, PoolError> {
        let v = self.view();
        let me = self.id();
        let Some(e) = v.federation.agreements.get(id) else { return Ok(false) };
        let g = &e.agreement;
        let side_signer = if g.offer.pool == me { g.offer.by } else { g.acceptance.by };
        if side_signer != signer.author().key || e.state(&me, now_ms) == "ended" {
            return Ok(false);
        }
        let members: Vec<Key> =
            v.members.keys().filter(|m| v.active(m).is_some()).copied().collect();
        let now = now_ms.max(0) as u64;
        let fresh = e.roster.as_ref().is_some_and(|r| {
            let listed: Vec<Key> = r.members.iter().map(|m| **m).collect();
            listed == members && now < r.at_ms + (r.not_after_ms - r.at_ms) / 2
        });
        if fresh {
            return Ok(false);
        }
        let at = e.roster.as_ref().map_or(now, |r| now.max(r.at_ms + 1));
        let r = kith_federation::Roster::sign(
            signer,
            *id,
            me,
            &members,
            at,
            e.ends_ms().map(|x| x.max(0) as u64),
        );
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::set_roster(d, &r))?;
        Ok(true)
    }

    /// Records that the offering pool recorded agreement `id` too (on the accepting side);
    /// `false` if known already.
    pub fn confirm_agreement(
        &mut self,
        signer: &Signer,
        id: &Key,
        now_ms: i64,
    ) -> Result<bool, PoolError> {
        let v = self.view();
        match v.federation.agreements.get(id) {
            Some(e) if e.confirmed_ms.is_none() && e.agreement.acceptance.pool == self.id() => {}
            _ => return Ok(false),
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::confirm_agreement(d, id, now_ms))?;
        Ok(true)
    }

    /// Retires a device of this member in the pool: it holds nothing for it any more (its
    /// share is re-placed), is no longer dialled, and its own changes are refused from then on.
    /// No change if it was retired here already or this member is not active.
    pub fn retire_node(
        &mut self,
        signer: &Signer,
        node: &Key,
        now_ms: i64,
    ) -> Result<bool, PoolError> {
        let me = signer.author().key;
        let v = self.view();
        let Some(m) = v.active(&me) else { return Ok(false) };
        if m.retired.contains_key(node) {
            return Ok(false);
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::retire_node(d, &me, node, now_ms))?;
        Ok(true)
    }

    /// Records an object this member stored in the pool.
    pub fn add_object(
        &mut self,
        signer: &Signer,
        object: &Key,
        o: &crate::view::PoolObject,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        if !self.is_active(&me) {
            return Err(PoolError::Denied("you are not a member of this pool".into()));
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::add_object(d, &me, object, o))?;
        Ok(())
    }

    /// Records this member's audit of `node`.
    pub fn set_audit(
        &mut self,
        signer: &Signer,
        node: &Key,
        a: &crate::view::AuditRecord,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::set_audit(d, &me, node, a))?;
        Ok(())
    }

    /// Publishes a new version of this member's site `name` (a valid DNS label) and serves it;
    /// returns its number. Refused if another member serves a site of that name.
    pub fn publish_site(
        &mut self,
        signer: &Signer,
        name: &str,
        access: crate::view::Access,
        v: &crate::view::SiteVersion,
        now_ms: i64,
    ) -> Result<u64, PoolError> {
        let me = signer.author().key;
        let view = self.view();
        let m = view
            .active(&me)
            .ok_or_else(|| PoolError::Denied("you are not a member of this pool".into()))?;
        if let Some((owner, _)) = view.site(name).filter(|(o, _)| *o != me) {
            let who = view.members.get(&owner).map(|m| m.name.clone()).unwrap_or_default();
            return Err(PoolError::Policy(format!(
                "`{name}` is {who}'s site in this pool; choose another name"
            )));
        }
        let n = m.sites.get(name).and_then(|s| s.versions.keys().max()).map_or(1, |x| x + 1);
        // What the retention drops once this version is in (the new one is served).
        let drop = m.sites.get(name).map_or_else(Vec::new, |s| {
            let mut after = s.clone();
            after.versions.insert(n, v.clone());
            after.current = n;
            after.beyond_keep(s.keep)
        });
        let objects = Self::version_objects(m, name, &drop);
        self.doc.change(signer, now_ms, &PoolRules, |d| {
            edit::set_site_version(d, &me, name, access, n, v)?;
            Self::drop_versions(d, &me, name, &drop, &objects)
        })?;
        Ok(n)
    }

    /// Sets how many versions this member's site `name` keeps (the newest, and the one
    /// served), and forgets the others with their objects (holders reclaim their chunks);
    /// returns the versions forgotten.
    pub fn set_site_keep(
        &mut self,
        signer: &Signer,
        name: &str,
        keep: u64,
        now_ms: i64,
    ) -> Result<Vec<u64>, PoolError> {
        if keep == 0 {
            return Err(PoolError::Policy(format!(
                "a site keeps at least the version it serves; to take it down: `kith site rm {name}`"
            )));
        }
        let me = signer.author().key;
        let view = self.view();
        let m = view
            .active(&me)
            .ok_or_else(|| PoolError::Denied("you are not a member of this pool".into()))?;
        let site = m
            .sites
            .get(name)
            .ok_or_else(|| PoolError::Policy(format!("you have no site `{name}` in this pool")))?;
        let drop = site.beyond_keep(Some(keep));
        let objects = Self::version_objects(m, name, &drop);
        self.doc.change(signer, now_ms, &PoolRules, |d| {
            edit::set_site_keep(d, &me, name, keep)?;
            Self::drop_versions(d, &me, name, &drop, &objects)
        })?;
        Ok(drop)
    }

    /// The pool objects of versions `drop` of `m`'s site `name`.
    fn version_objects(m: &crate::view::Member, name: &str, drop: &[u64]) -> Vec<Key> {
        let Some(site) = m.sites.get(name) else { return Vec::new() };
        drop.iter()
            .filter_map(|n| site.versions.get(n))
            .map(|v| v.index)
            .filter(|o| m.objects.contains_key(o))
            .collect()
    }

    fn drop_versions(
        d: &mut kith_crdt::automerge::AutoCommit,
        me: &Key,
        name: &str,
        drop: &[u64],
        objects: &[Key],
    ) -> Result<(), kith_crdt::automerge::AutomergeError> {
        for n in drop {
            edit::remove_site_version(d, me, name, *n)?;
        }
        for o in objects {
            edit::remove_object(d, me, o)?;
        }
        Ok(())
    }

    /// Serves version `n` of this member's site `name` again.
    pub fn rollback_site(
        &mut self,
        signer: &Signer,
        name: &str,
        n: u64,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        let view = self.view();
        let site = view
            .active(&me)
            .and_then(|m| m.sites.get(name))
            .ok_or_else(|| PoolError::Policy(format!("you have no site `{name}` in this pool")))?;
        if !site.versions.contains_key(&n) {
            let have: Vec<String> = site.versions.keys().map(u64::to_string).collect();
            return Err(PoolError::Policy(format!(
                "site `{name}` has no version {n} (versions: {})",
                have.join(", ")
            )));
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::set_site_current(d, &me, name, n))?;
        Ok(())
    }

    /// Takes this member's site `name` down and forgets its versions (and their objects, so
    /// holders may drop the chunks).
    pub fn remove_site(
        &mut self,
        signer: &Signer,
        name: &str,
        now_ms: i64,
    ) -> Result<crate::view::Site, PoolError> {
        let me = signer.author().key;
        let view = self.view();
        let m = view
            .active(&me)
            .ok_or_else(|| PoolError::Denied("you are not a member of this pool".into()))?;
        let site =
            m.sites.get(name).cloned().ok_or_else(|| {
                PoolError::Policy(format!("you have no site `{name}` in this pool"))
            })?;
        let objects: Vec<Key> =
            site.versions.values().map(|v| v.index).filter(|o| m.objects.contains_key(o)).collect();
        self.doc.change(signer, now_ms, &PoolRules, |d| {
            edit::remove_site(d, &me, name)?;
            for o in &objects {
                edit::remove_object(d, &me, o)?;
            }
            Ok(())
        })?;
        Ok(site)
    }

    /// Forgets an object this member stored; holders may then drop its chunks.
    pub fn remove_object(
        &mut self,
        signer: &Signer,
        object: &Key,
        now_ms: i64,
    ) -> Result<(), PoolError> {
        let me = signer.author().key;
        let v = self.view();
        let Some(m) = v.members.get(&me).filter(|m| m.objects.contains_key(object)) else {
            return Err(PoolError::Policy(format!(
                "you stored no object {} in this pool",
                hex(&object[..8])
            )));
        };
        // A site's version goes with its site, never under it.
        if let Some((name, n)) = m.site_version(object) {
            return Err(PoolError::Policy(format!(
                "object {} is version {n} of your site {name}: take the site down with `kith site rm {name}`",
                hex(&object[..8])
            )));
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| edit::remove_object(d, &me, object))?;
        Ok(())
    }

    /// Leaves the pool.
    pub fn leave(&mut self, signer: &Signer, now_ms: i64) -> Result<(), PoolError> {
        let me = signer.author().key;
        self.doc
            .change(signer, now_ms, &PoolRules, |d| edit::set_state(d, &me, State::Left, now_ms))?;
        Ok(())
    }

    /// Ends the pool for everyone (its only active admin): the pool takes no change after this
    /// but members leaving, and the admin leaves in the same change.
    pub fn dissolve(&mut self, signer: &Signer, now_ms: i64) -> Result<(), PoolError> {
        let v = self.admin(signer)?;
        let me = signer.author().key;
        let others: Vec<String> = v
            .members
            .iter()
            .filter(|(k, m)| **k != me && m.is_active_admin())
            .map(|(_, m)| m.name.clone())
            .collect();
        if !others.is_empty() {
            return Err(PoolError::Denied(format!(
                "{} also admin(s) of this pool, which can go on without you: leave it with \
                 `kith pool leave {}`; to end it for everyone, the other admins leave first",
                if others.len() == 1 {
                    format!("{} is", others[0])
                } else {
                    format!("{} are", others.join(", "))
                },
                v.charter.name
            )));
        }
        self.doc.change(signer, now_ms, &PoolRules, |d| {
            edit::set_charter(d, "dissolved", ScalarValue::Int(now_ms))?;
            edit::set_state(d, &me, State::Left, now_ms)
        })?;
        Ok(())
    }

    /// Removes a member (admins only).
    pub fn remove(&mut self, signer: &Signer, who: &str, now_ms: i64) -> Result<Key, PoolError> {
        let v = self.admin(signer)?;
        let member = self.find_member(&v, who)?;
        self.doc.change(signer, now_ms, &PoolRules, |d| {
            edit::set_state(d, &member, State::Removed, now_ms)
        })?;
        Ok(member)
    }
}

/// Parses a duration such as `30s`, `10m`, `24h` or `7d` (a bare number is hours), in ms.
pub fn parse_duration_ms(s: &str) -> Result<u64, ParseError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let bad = |m: String| ParseError::new("duration", s, m);
    let n: u64 =
        num.parse().map_err(|_| bad(format!("`{s}` is not a duration (try 24h, 30m, 7d)")))?;
    let mult = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" | "" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad(format!("unknown duration unit `{unit}` in `{s}` (s, m, h, d)"))),
    };
    Ok(n.saturating_mul(mult))
}

/// Refuses a replication factor the pool's zones cannot hold.
pub fn check_replicas(v: &PoolView, n: u64) -> Result<(), PoolError> {
    if n == 0 {
        return Err(PoolError::Policy("replicas must be at least 1".into()));
    }
    let holders = v.holders();
    let z = zones(&holders) as u64;
    if n > z {
        let members = holders
            .iter()
            .filter(|h| h.weight > 0)
            .map(|h| h.member)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        return Err(PoolError::Policy(format!(
            "cannot keep {n} replicas: the pool has {members} member(s) offering storage in {z} zone(s), and replicas go to distinct zones; invite members or offer storage first"
        )));
    }
    Ok(())
}

impl crate::fsutil::Stored for Pool {
    type Kind = PoolKind;

    fn load(bytes: &[u8]) -> Result<Self, String> {
        Pool::load(bytes).map_err(|e| e.to_string())
    }

    fn save(&mut self) -> Vec<u8> {
        Pool::save(self)
    }
}

/// A price such as `0.02` in millionths (20000): at most six decimals, at most a million.
pub fn parse_price_micro(s: &str) -> Option<u64> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !whole.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().ok()? };
    if whole > 1_000_000 {
        return None;
    }
    let frac: u64 = format!("{frac:0<6}").parse().ok()?;
    Some(whole * 1_000_000 + frac)
}
