//! Who may change what in a pool document: the pure authorisation core.
//!
//! Every change is judged against the document at its own dependencies (see `kith_crdt`):
//!
//! | path written | who may write it |
//! | --- | --- |
//! | anything, in the genesis | the founder, who must make itself the only member, an admin |
//! | `charter/*` | an active admin |
//! | `members/X/role` | an active admin |
//! | `members/X/state` | an active admin (any value); X itself (`left`) |
//! | `members/X/name`, `members/X/nodes/*`, `members/X/objects/*`, `members/X/audits/*`, `members/X/sites/*`, `members/X/compute/*`, `members/X/checks/*` | X itself, while active |
//! | `members/X/retired/*` (a device X retired) | X itself, while active; never deleted |
//!
//! A change signed by a device that its member retired in this pool (`members/X/retired/<node>`
//! at the change's dependencies) is refused whatever it writes.
//! | `members/X` (a new entry), `joined`, `invite` | X itself, joining with a valid invite |
//! | the root, other keys | nobody after the genesis |
//!
//! Once `charter/dissolved` is set (by the pool's only active admin, who leaves in the same
//! change), the pool takes no change but members leaving (`members/X/state = left`, X itself)
//! and withdrawing their offers; it no longer needs an admin.
//!
//! A removed member cannot join again by itself; a member who left joins again only with a new
//! invite (not the one it joined with first).
//!
//! A join must write exactly `role = member`, `state = active` and an invite that an active
//! admin signed for this pool, used no later than it expires (by the change's time) and by no
//! more members than it allows. After every change the pool keeps at least one active admin and a
//! replication factor of at least one, and the document still parses.

use kith_crdt::automerge::{ObjId, ObjType, PatchAction, ROOT, ReadDoc, Value};
use kith_crdt::{Authorizer, Check, SignedBy, hex, patch_path};

use crate::invite::{Invite, InviteError};
use crate::view::{At, PoolView, Role, State};

/// The pool rules, as a [`kith_crdt::Authorizer`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolRules;

impl Authorizer for PoolRules {
    fn authorise(&self, c: &Check<'_>) -> Result<(), String> {
        // A device its identity retired signs nothing more here (one lookup at the change's
        // dependencies; the identity key itself is not a device and is never retired).
        if let SignedBy::Device(d) = c.signed_by
            && !c.genesis
            && any_at_deps(c, &["members", &hex(&c.author.key), "retired", &hex(&d)])
        {
            return Err(format!(
                "device {} was retired by its identity; its changes are refused",
                &hex(&d)[..16]
            ));
        }
        // A node is listed under a member only by itself (or by the identity key): a device
        // cannot list a node key of its own making and act for its member through it.
        for p in c.patches {
            let PatchAction::PutMap { key, value: (Value::Object(_), _), .. } = &p.action else {
                continue;
            };
            let path = patch_path(p);
            if let ["members", who, "nodes", _] =
                path.iter().map(String::as_str).collect::<Vec<_>>()[..]
                && at_deps(c, &["members", who, "nodes", key]).is_none()
                && !matches!(c.signed_by, SignedBy::Root)
                && c.signed_by != SignedBy::Device(crate::view::parse_key(key).unwrap_or([0; 32]))
            {
                return Err(format!("node {} is listed only by itself", &key[..key.len().min(16)]));
            }
        }
        if let Some(verdict) = own_entries(c) {
            return verdict;
        }
        // Someone who is not an active member and does not write its own entry (a join, a
        // departure) may write nothing: refused before any copy of the document is made.
        if !c.genesis {
            let me = hex(&c.author.key);
            let own = |p: &kith_crdt::automerge::Patch| {
                let path = patch_path(p);
                path.first().is_some_and(|s| s == "members") && path.get(1) == Some(&me)
            };
            if !active_at_deps(c, &me) && !c.patches.iter().any(own) {
                let first = c.patches.first().map(patch_path).unwrap_or_default();
                return Err(denial(&first, false, false));
            }
        }
        if c.genesis {
            let after = PoolView::read(c.after())
                .map_err(|e| format!("it breaks the pool document: {e}"))?;
            return genesis(c, &after);
        }
        // The rest is judged by the roster (charter and members) before and after the change,
        // read at heads (no copy of the document), and by the entries the change wrote, which
        // must parse: what it did not touch parsed before it and is unchanged.
        let after = match c.after_if_current() {
            Some(doc) => PoolView::read_roster(doc),
            None => PoolView::read_roster(&At { doc: c.doc, heads: &[c.hash] }),
        }
        .map_err(|e| format!("it breaks the pool document: {e}"))?;
        let before = PoolView::read_roster(&At { doc: c.doc, heads: c.deps })
            .map_err(|e| format!("unreadable history: {e}"))?;
        let me = hex(&c.author.key);
        let admin = before.active(&c.author.key).is_some_and(|m| m.role == Role::Admin);
        let member = before.active(&c.author.key).is_some();
        let joining = !member
            && c.patches.iter().any(|p| patch_path(p).first().is_some_and(|s| s == "members"));
        if before.charter.dissolved_ms.is_some() {
            return dissolved(c, &after, &me, member);
        }
        // A removed member never comes back by itself (only an admin takes it back), whatever
        // invite it still has or time it claims.
        if joining
            && let Some(m) = before.members.get(&c.author.key)
            && m.state == State::Removed
        {
            return Err(format!(
                "{} was removed from this pool; only an admin can take it back",
                if m.name.is_empty() { &me[..16] } else { &m.name }
            ));
        }
        let mut written = Written::default();
        for p in c.patches {
            let path = patch_path(p);
            let deleting = matches!(p.action, PatchAction::DeleteMap { .. });
            let own = path.get(1) == Some(&me);
            if own {
                written.note(&path, deleting);
            }
            let ok = match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                ["charter", "dissolved"] => admin && !deleting && only_admin(&before, c),
                ["charter", _, ..] => admin,
                // Federation: admins, and only as `federation_ok` below allows.
                ["federation", ..] => admin && !deleting,
                ["members", _] => own && joining && !deleting,
                ["members", _, "role"] => admin || (own && joining),
                ["members", _, "state"] => {
                    admin || (own && (joining || (member && left(&after, c))))
                }
                // When it left: written with the departure (by the member or an admin).
                ["members", _, "left"] => {
                    !deleting
                        && crate::view::parse_key(&path[1])
                            .and_then(|k| after.members.get(&k))
                            .is_some_and(|m| m.state != State::Active)
                        && (admin || (own && member && left(&after, c)))
                }
                ["members", _, "name"] => own && (member || joining),
                ["members", _, "joined" | "invite"] => own && joining,
                [
                    "members",
                    _,
                    "nodes" | "objects" | "audits" | "sites" | "compute" | "checks",
                    ..,
                ] => own && (member || joining),
                // Written once: neither the map nor a retirement is ever replaced.
                ["members", _, "retired", ..] => {
                    let at: Vec<&str> = path.iter().map(String::as_str).collect();
                    own && member && !deleting && at_deps(c, &at).is_none()
                }
                _ => false,
            };
            if !ok {
                return Err(denial(&path, admin, member));
            }
        }
        if joining {
            check_join(c, &before, &after)?;
        }
        if c.patches.iter().any(|p| patch_path(p).first().is_some_and(|s| s == "federation")) {
            federation_ok(c, &before, &after)?;
        }
        for name in &written.claims {
            site_claim_at_deps(c, &me, name)?;
        }
        written.parse(c, &me).map_err(|e| format!("it breaks the pool document: {e}"))?;
        if after.charter.dissolved_ms.is_none()
            && !after.members.values().any(|m| m.is_active_admin())
        {
            return Err("the pool would have no active admin left".into());
        }
        if after.charter.replicas == 0 {
            return Err("the replication factor must be at least 1".into());
        }
        if after.charter.repair_after_ms < MIN_REPAIR_AFTER_MS
            || after.charter.audit_every_ms < MIN_REPAIR_AFTER_MS
            || after.charter.record_every_ms < MIN_REPAIR_AFTER_MS
        {
            return Err(format!(
                "repair_after, audit_every and record_every must be at least {} s",
                MIN_REPAIR_AFTER_MS / 1000
            ));
        }
        Ok(())
    }
}

/// The value at `path` in the document at the change's dependencies (lookups, no copy).
pub(crate) fn at_deps<'d>(c: &Check<'d>, path: &[&str]) -> Option<(Value<'d>, ObjId)> {
    let mut cur = ROOT;
    for (i, k) in path.iter().enumerate() {
        let (v, id) = c.doc.get_at(&cur, *k, c.deps).ok().flatten()?;
        if i + 1 == path.len() {
            return Some((v, id));
        }
        if !matches!(v, Value::Object(ObjType::Map)) {
            return None;
        }
        cur = id;
    }
    None
}

/// Whether anything is at `path` at the change's dependencies, in any of the maps concurrent
/// changes made at one key (automerge shows one of them; a retirement may sit in another).
pub(crate) fn any_at_deps(c: &Check<'_>, path: &[&str]) -> bool {
    let mut level = vec![ROOT];
    for (i, k) in path.iter().enumerate() {
        let mut next = Vec::new();
        for obj in &level {
            for (v, id) in c.doc.get_all_at(obj, *k, c.deps).unwrap_or_default() {
                if i + 1 == path.len() {
                    return true;
                }
                if matches!(v, Value::Object(ObjType::Map)) {
                    next.push(id);
                }
            }
        }
        if next.is_empty() {
            return false;
        }
        level = next;
    }
    false
}

/// Whether `me` is an active member at the change's dependencies.
fn active_at_deps(c: &Check<'_>, me: &str) -> bool {
    at_deps(c, &["members", me, "state"]).is_some_and(|(v, _)| v.as_str() == Some("active"))
}

/// Most of a pool's changes are a member writing its own objects, audits and offers. Such a
/// change, by a member active at the change's dependencies in a pool not dissolved there, is
/// judged from what it touched alone: the entries it wrote must parse (so the document still
/// does), and nothing else can change by it (no charter, role, state or site; the document-wide
/// checks below cannot fail). That keeps a check in proportion to the change, not to the pool.
/// Anything else (`None`) takes the full path.
///
/// What it touched comes from its patches, which automerge makes from what it applied. (Reading
/// the change's own operations instead, and judging a run of changes applied at once, was tried
/// and dropped: an operation's object id and the values it replaces are the author's claims,
/// which automerge does not check against the change's history; see docs/security.md.)
fn own_entries(c: &Check<'_>) -> Option<Result<(), String>> {
    if c.genesis || c.patches.is_empty() {
        return None;
    }
    let me = hex(&c.author.key);
    let mut written = Written::default();
    for p in c.patches {
        let path = patch_path(p);
        if path.get(1) != Some(&me)
            || !written.note(&path, matches!(p.action, PatchAction::DeleteMap { .. }))
        {
            return None;
        }
    }
    // Active, in a pool not dissolved, at the change's dependencies.
    if at_deps(c, &["charter", "dissolved"]).is_some() || !active_at_deps(c, &me) {
        return None;
    }
    // A site name is the claimant's only if no other active member holds it at the change's
    // dependencies.
    for name in &written.claims {
        if let Err(e) = site_claim_at_deps(c, &me, name) {
            return Some(Err(e));
        }
    }
    Some(written.parse(c, &me).map_err(|e| format!("it breaks the pool document: {e}")))
}

/// The entries of its own a change wrote under `members/<author>/`: what must parse after it.
#[derive(Default)]
struct Written {
    /// (kind, key) of each entry of `objects`, `audits`, `nodes` or `sites` written.
    touched: Vec<(String, String)>,
    /// The maps of objects, audits or sites made (on first use).
    maps: Vec<String>,
    /// Site names claimed (their entries made).
    claims: Vec<String>,
}

impl Written {
    /// Notes what a patch at `path` (under the author's entry) wrote; `false` if it is not an
    /// entry of objects, audits, nodes or sites (or the making of such a map).
    fn note(&mut self, path: &[String], deleting: bool) -> bool {
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [
                "members",
                _,
                kind @ ("objects" | "audits" | "nodes" | "sites" | "compute" | "checks"),
                key,
                rest @ ..,
            ] => {
                // A site name claimed (its entry made): checked against the other members'.
                if *kind == "sites" && rest.is_empty() && !deleting {
                    self.claims.push(key.to_string());
                }
                self.touched.push((kind.to_string(), key.to_string()));
                true
            }
            // The map of objects, audits or sites made on first use (checked to be a map).
            ["members", _, kind @ ("objects" | "audits" | "sites" | "compute" | "checks")]
                if !deleting =>
            {
                self.maps.push(kind.to_string());
                true
            }
            _ => false,
        }
    }

    /// Whether what was written parses, in the document after the change (the document itself
    /// when nothing concurrent is in it, else read at the change: no copy either way).
    fn parse(mut self, c: &Check<'_>, me: &str) -> Result<(), String> {
        if self.touched.is_empty() && self.maps.is_empty() {
            return Ok(());
        }
        self.touched.sort();
        self.touched.dedup();
        match c.after_if_current() {
            Some(doc) => entries_parse(doc, me, &self.maps, &self.touched),
            None => {
                entries_parse(&At { doc: c.doc, heads: &[c.hash] }, me, &self.maps, &self.touched)
            }
        }
    }
}

/// Whether member `me`'s maps `maps` are maps and its entries `touched` (kind, key) parse.
fn entries_parse(
    after: &impl crate::view::Get,
    me: &str,
    maps: &[String],
    touched: &[(String, String)],
) -> Result<(), String> {
    let members = crate::view::obj(after, &ROOT, "members")?;
    let m = crate::view::obj(after, &members, me)?;
    for kind in maps {
        crate::view::obj(after, &m, kind)?;
    }
    for (kind, key) in touched {
        let Some((Value::Object(ObjType::Map), kinds)) = after.get_value(&m, kind.as_str())? else {
            return Err(format!("`{kind}` is not a map"));
        };
        let e = match after.get_value(&kinds, key.as_str())? {
            None => continue,
            Some((Value::Object(ObjType::Map), e)) => e,
            Some(_) => return Err(format!("{kind} entry `{key}` is not a map")),
        };
        if kind == "sites" {
            PoolView::read_site(after, &e).map_err(|e| format!("site {key}: {e}"))?;
            continue;
        }
        crate::view::parse_key(key).ok_or(format!("{kind} key `{key}` is not a key"))?;
        match kind.as_str() {
            "objects" => crate::view::read_object(after, &e, key).map(|_| ())?,
            "audits" => crate::view::read_audit(after, &e).map(|_| ())?,
            "compute" => crate::view::read_compute(after, &e).map(|_| ())?,
            "checks" => crate::view::read_check(after, &e).map(|_| ())?,
            _ => crate::view::read_offer(after, &e).map(|_| ())?,
        }
    }
    Ok(())
}

/// A member may claim a site name only if no other active member holds it at the change's
/// dependencies: a name someone published is theirs, whatever time a later claim says it was
/// made at. By lookups at the change's dependencies: the name's holder is the lowest active
/// member holding it ([`PoolView::site`]); a claim by anyone else is refused. Claims made
/// concurrently (on two sides of a partition) are resolved by [`PoolView::site`], which never
/// looks at claimed times.
fn site_claim_at_deps(c: &Check<'_>, me: &str, name: &str) -> Result<(), String> {
    let Some((Value::Object(ObjType::Map), members)) =
        c.doc.get_at(&ROOT, "members", c.deps).ok().flatten()
    else {
        return Ok(());
    };
    let holder = c
        .doc
        .keys_at(&members, c.deps)
        .filter(|m| active_at_deps(c, m) && at_deps(c, &["members", m, "sites", name]).is_some())
        .min();
    match holder {
        Some(h) if h != me => {
            let by = at_deps(c, &["members", &h, "name"])
                .and_then(|(v, _)| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Err(format!("the site name `{name}` is {by}'s in this pool"))
        }
        _ => Ok(()),
    }
}

/// Whether the author is the pool's only active admin.
fn only_admin(before: &PoolView, c: &Check<'_>) -> bool {
    before.members.iter().filter(|(_, m)| m.is_active_admin()).all(|(k, _)| *k == c.author.key)
}

/// A change to a dissolved pool: only a member leaving, or withdrawing its offers.
fn dissolved(c: &Check<'_>, after: &PoolView, me: &str, member: bool) -> Result<(), String> {
    for p in c.patches {
        let path = patch_path(p);
        let own = path.get(1).map(String::as_str) == Some(me);
        let ok = match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["members", _, "state" | "left"] => own && member && left(after, c),
            ["members", _, "nodes" | "compute", ..] => own && member,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "the pool was dissolved; it takes no change but members leaving (`{}`)",
                path.join("/")
            ));
        }
    }
    Ok(())
}

/// Shortest `repair_after` (a holder that misses a few sync rounds is not gone).
pub const MIN_REPAIR_AFTER_MS: u64 = 5_000;

fn left(after: &PoolView, c: &Check<'_>) -> bool {
    after.members.get(&c.author.key).is_some_and(|m| m.state == State::Left)
}

fn denial(path: &[String], admin: bool, member: bool) -> String {
    let who = match (admin, member) {
        (true, _) => "an admin",
        (false, true) => "a member",
        (false, false) => "a non-member",
    };
    format!("{who} may not write `{}`", path.join("/"))
}

fn genesis(c: &Check<'_>, after: &PoolView) -> Result<(), String> {
    let founder = after.members.get(&c.author.key);
    if after.members.len() != 1 || !founder.is_some_and(|m| m.is_active_admin()) {
        return Err("a pool must start with its founder as its only member, an admin".into());
    }
    if after.charter.replicas == 0 {
        return Err("the replication factor must be at least 1".into());
    }
    Ok(())
}

fn check_join(c: &Check<'_>, before: &PoolView, after: &PoolView) -> Result<(), String> {
    let m = after.members.get(&c.author.key).ok_or("a join must add the joining member")?;
    if m.role != Role::Member || m.state != State::Active {
        return Err("a join must add the member with role `member`, active".into());
    }
    let bytes = m.invite.as_deref().ok_or("a join must carry an invite")?;
    // A member who left comes back with a new invite, never the one it joined with.
    if before.members.get(&c.author.key).is_some_and(|b| b.invite.as_deref() == Some(bytes)) {
        return Err("a member who left needs a new invite to come back".into());
    }
    let inv = Invite::from_bytes(bytes).map_err(|e| e.to_string())?;
    invite_valid(&inv, c.doc_id, before, c.time_ms)?;
    let used = after.members.values().filter(|m| m.invite.as_deref() == Some(bytes)).count();
    if used > inv.uses as usize {
        return Err(InviteError::UsedUp(inv.uses).to_string());
    }
    Ok(())
}

/// Whether `inv` admits someone to `pool` at `now_ms`, given the pool as it is.
pub fn invite_valid(
    inv: &Invite,
    pool: &[u8; 32],
    view: &PoolView,
    now_ms: i64,
) -> Result<(), String> {
    if &inv.pool != pool {
        return Err(InviteError::OtherPool.to_string());
    }
    let Some(by) = inv.signed_by() else {
        return Err(InviteError::Forged.to_string());
    };
    let Some(issuer) = view.active(&inv.issuer).filter(|m| m.role == Role::Admin) else {
        return Err(InviteError::NotAdmin(hex(&inv.issuer)).to_string());
    };
    // An invite made on a device its admin retired admits nobody.
    if let SignedBy::Device(d) = by
        && issuer.retired.contains_key(&d)
    {
        return Err(format!(
            "the invite was made on a device its admin retired ({})",
            &hex(&d)[..16]
        ));
    }
    let now = now_ms.max(0) as u64;
    if now > inv.expires_ms {
        return Err(InviteError::Expired((now - inv.expires_ms) / 1000).to_string());
    }
    Ok(())
}

/// A new roster of this pool's side of an agreement: signed by that side's signer, who records
/// it, newer than the last, naming only active members.
fn roster_ok(
    c: &Check<'_>,
    before: &PoolView,
    old: Option<&kith_federation::Roster>,
    r: &kith_federation::Roster,
) -> Result<(), String> {
    if r.pool != *c.doc_id || r.by != c.author.key {
        return Err(
            "a roster is this pool's, signed and recorded by its signer of the agreement".into()
        );
    }
    if r.at_ms > (c.time_ms.max(0) as u64).saturating_add(kith_federation::MAX_SKEW_MS) {
        return Err("a roster is signed at most a day after the change that records it".into());
    }
    if old.is_some_and(|o| o.at_ms >= r.at_ms) {
        return Err("a roster replaces only an older one".into());
    }
    if let Some(m) = r.members.iter().find(|m| before.active(m).is_none()) {
        return Err(format!(
            "the roster names {}, who is not an active member of this pool",
            kith_crdt::hex(&m[..8])
        ));
    }
    Ok(())
}

/// What a change may do to the pool's federation (its entries parsed and their signatures
/// checked already, by reading `after`): an offer is this pool's, signed by the admin who
/// records it, and never replaced; an agreement names this pool on one side, is never
/// replaced, and is this pool's to record: as the offering side, of an offer this pool made
/// (recorded before, signed by one who was an admin then), taken up once; as the accepting
/// side, accepted by the admin who records it. Notice is given once, by an admin.
fn federation_ok(c: &Check<'_>, before: &PoolView, after: &PoolView) -> Result<(), String> {
    let (b, a) = (&before.federation, &after.federation);
    for (id, o) in &a.offers {
        match b.offers.get(id) {
            Some(old) if old == o => {}
            Some(_) => return Err("a federation offer is never replaced".into()),
            None => {
                if o.pool != *c.doc_id || o.by != c.author.key {
                    return Err(
                        "a federation offer is this pool's, signed by the admin who records it"
                            .into(),
                    );
                }
            }
        }
    }
    for (id, e) in &a.agreements {
        let g = &e.agreement;
        // Notice: once, signed by an admin here (who records it) or by the partner's signer
        // of the agreement (carried here).
        let old = b.agreements.get(id);
        if let Some(n) = &e.notice
            && old.is_none_or(|o| o.notice.is_none())
        {
            let partner = if g.offer.pool == *c.doc_id { g.acceptance.by } else { g.offer.by };
            if n.by != c.author.key && n.by != partner {
                return Err(
                    "notice is given by an admin of this pool or the partner's signer".into()
                );
            }
        }
        if let Some(o) = old
            && o.notice.is_some()
            && o.notice != e.notice
        {
            return Err("notice on an agreement is given once".into());
        }
        // When this pool recorded the notice: the time of the change that records it, written
        // with it and never changed.
        let was_noticed = old.and_then(|o| o.noticed_ms);
        let new_notice = e.notice.is_some() && old.is_none_or(|o| o.notice.is_none());
        if new_notice {
            if e.noticed_ms != Some(c.time_ms) {
                return Err(
                    "a notice is recorded with the time of the change that records it".into()
                );
            }
            let at = e.notice.as_ref().map_or(0, |n| n.at_ms);
            if at > (c.time_ms.max(0) as u64).saturating_add(kith_federation::MAX_SKEW_MS) {
                return Err(
                    "a notice is signed at most a day after the change that records it".into()
                );
            }
        } else if e.noticed_ms != was_noticed {
            return Err("when a notice was recorded is written once, with the notice".into());
        }
        if let Some(r) = &e.roster
            && old.is_none_or(|o| o.roster.as_ref() != Some(r))
        {
            roster_ok(c, before, old.and_then(|o| o.roster.as_ref()), r)?;
        }
        if e.confirmed_ms.is_some() && g.acceptance.pool != *c.doc_id {
            return Err("only the accepting side records that the offering side confirmed".into());
        }
        if let Some(old) = old {
            if old.agreement != e.agreement {
                return Err("an agreement is never replaced".into());
            }
            if old.confirmed_ms.is_some() && old.confirmed_ms != e.confirmed_ms {
                return Err("an agreement is confirmed once".into());
            }
            continue;
        }
        if e.notice.is_some() {
            return Err("an agreement is recorded before notice is given on it".into());
        }
        if g.offer.pool == *c.doc_id {
            let made = b.offers.get(&g.offer.id).is_some_and(|o| *o == g.offer);
            if !made {
                return Err(
                    "this pool made no such federation offer (a forged or foreign ticket)".into()
                );
            }
            if !before.active(&g.offer.by).is_some_and(|m| m.role == Role::Admin) {
                return Err("the offer's signer is not an admin of this pool".into());
            }
        } else if g.acceptance.pool == *c.doc_id {
            if g.acceptance.by != c.author.key {
                return Err("an acceptance is recorded by the admin who signed it".into());
            }
        } else {
            return Err("the agreement is between two other pools".into());
        }
    }
    Ok(())
}
