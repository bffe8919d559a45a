//! A ledger document of one pool and one period, and the changes a member's device writes to
//! it.

use std::collections::BTreeMap;

use kith_crdt::automerge::transaction::Transactable;
use kith_crdt::automerge::{AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use kith_crdt::{Doc, DocError, Key, Schema, SignedDoc, Signer, hex};

use super::evidence::Receipt;
use super::rules::{LedgerRules, genesis_signer};
use super::seal::Seal;
use super::{Counter, LEDGER_KIND, LEDGER_SCHEMA_VERSION, LedgerView, Period, row_key};

/// Signing nodes of one partner whose receipts a holder files in a month, at most (a
/// member of the partner could certify any number of device keys).
pub const MAX_PARTNER_NODES: usize = 256;

/// The kind of ledger documents.
#[derive(Debug)]
pub struct LedgerKind;

impl Schema for LedgerKind {
    const KIND: &'static str = LEDGER_KIND;
    const EXT: &'static str = "kledger";
    type View = LedgerView;
    type Rules<'r> = LedgerRules<'r>;

    fn read(doc: &impl ReadDoc) -> Result<LedgerView, String> {
        LedgerView::read(doc).map_err(|e| e.0)
    }
}

/// A ledger: one pool, one period.
#[derive(Debug)]
pub struct Ledger {
    doc: Doc<LedgerKind>,
}

impl Ledger {
    /// The ledger of `period`, as it starts: the same document on every node (its genesis is
    /// canonical and signed with a key anyone can derive, see [`genesis_signer`]).
    pub fn start(rules: &LedgerRules<'_>, period: Period) -> Result<Ledger, DocError> {
        let pool = *rules.pool_id();
        let signer = genesis_signer(&pool, period);
        let doc = Doc::create(&signer, period.start_ms(), rules, |d| {
            d.put(ROOT, "v", LEDGER_SCHEMA_VERSION)?;
            d.put(ROOT, "kind", LEDGER_KIND)?;
            d.put(ROOT, "pool", ScalarValue::Bytes(pool.to_vec()))?;
            d.put(ROOT, "period", period.to_string())?;
            d.put_object(ROOT, "carried", ObjType::Map)?;
            d.put_object(ROOT, "rows", ObjType::Map)?;
            d.put_object(ROOT, "costs", ObjType::Map)?;
            Ok(())
        })?;
        Ok(Ledger { doc })
    }

    /// Carries credit balances in from the previous period's seal (an admin, once per member).
    pub fn carry(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        carried: &BTreeMap<Key, i64>,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if carried.is_empty() {
            return Ok(());
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let cs = crate::edit::map_or_new(d, &ROOT, "carried")?;
            for (m, b) in carried {
                d.put(&cs, hex(m), *b)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Wraps a document (after load or sync).
    pub fn from_doc(doc: SignedDoc) -> Result<Ledger, DocError> {
        Ok(Ledger { doc: Doc::wrap(doc)? })
    }

    /// Reads a saved ledger.
    pub fn load(bytes: &[u8]) -> Result<Ledger, DocError> {
        Ok(Ledger { doc: Doc::load(bytes)? })
    }

    /// The ledger as bytes.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    /// Records the previous period's seal and carries its credit balances in (an admin, once).
    pub fn record_seal(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        seal: &Seal,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if self.view().sealed.is_some() {
            return Err(DocError::Format("the previous period is sealed once".into()));
        }
        let carried = seal.carried();
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            d.put(ROOT, "sealed", ScalarValue::Bytes(seal.to_bytes()))?;
            let cs = crate::edit::map_or_new(d, &ROOT, "carried")?;
            for (m, b) in &carried {
                if d.get(&cs, hex(m))?.is_none() {
                    d.put(&cs, hex(m), *b)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// How many changes it holds (1: only the genesis).
    pub fn len(&self) -> usize {
        self.doc.len()
    }

    /// Whether it holds no changes (never true: it has its genesis).
    pub fn is_empty(&self) -> bool {
        self.doc.is_empty()
    }

    /// The document.
    pub fn doc_mut(&mut self) -> &mut Doc<LedgerKind> {
        &mut self.doc
    }

    /// The typed view.
    pub fn view(&self) -> LedgerView {
        self.doc.view().expect("checked on every change")
    }

    fn own_row(
        d: &mut AutoCommit,
        signer: &Signer,
    ) -> Result<ObjId, kith_crdt::automerge::AutomergeError> {
        let a = signer.author();
        let rs = crate::edit::map_or_new(d, &ROOT, "rows")?;
        let key = row_key(&a.key, &a.device);
        match d.get(&rs, &key)? {
            Some((Value::Object(ObjType::Map), id)) => Ok(id),
            _ => {
                let r = d.put_object(&rs, &key, ObjType::Map)?;
                for c in Counter::ALL {
                    d.put(&r, c.key(), ScalarValue::counter(0))?;
                }
                d.put_object(&r, "receipts", ObjType::Map)?;
                Ok(r)
            }
        }
    }

    /// Adds `by` to this device's counter `c`.
    pub fn add(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        c: Counter,
        by: i64,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if by <= 0 {
            return Err(DocError::Format(format!("`{}` may only grow", c.key())));
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let r = Self::own_row(d, signer)?;
            Self::counter_or_new(d, &r, c, by)
        })?;
        Ok(())
    }

    /// Adds to several counters and files several receipts in one change (what a node records
    /// once a day).
    pub fn record(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        adds: &[(Counter, i64)],
        receipts: &[Receipt],
        cpu_receipts: &[Receipt],
        now_ms: i64,
    ) -> Result<(), DocError> {
        if let Some((c, by)) = adds.iter().find(|(_, by)| *by <= 0) {
            return Err(DocError::Format(format!("`{}` may only grow, not by {by}", c.key())));
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let row = Self::own_row(d, signer)?;
            for (c, by) in adds {
                Self::counter_or_new(d, &row, *c, *by)?;
            }
            let rec = crate::edit::map_or_new(d, &row, "receipts")?;
            for r in receipts {
                d.put(&rec, hex(&r.server), ScalarValue::Bytes(r.to_bytes()))?;
            }
            if !cpu_receipts.is_empty() {
                let rec = crate::edit::map_or_new(d, &row, "cpu_receipts")?;
                for r in cpu_receipts {
                    d.put(&rec, hex(&r.server), ScalarValue::Bytes(r.to_bytes()))?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Adds to this device's counts with federated partners (by agreement), in one change.
    pub fn record_partners(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        adds: &[(Key, super::PartnerCounts)],
        now_ms: i64,
    ) -> Result<(), DocError> {
        if let Some((k, n)) = adds.iter().flat_map(|(_, p)| p.fields()).find(|(_, n)| *n < 0) {
            return Err(DocError::Format(format!("`{k}` may only grow, not by {n}")));
        }
        let adds: Vec<&(Key, super::PartnerCounts)> =
            adds.iter().filter(|(_, p)| p.fields().iter().any(|(_, n)| *n > 0)).collect();
        if adds.is_empty() {
            return Ok(());
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let row = Self::own_row(d, signer)?;
            let ps = crate::edit::map_or_new(d, &row, "partners")?;
            for (ag, p) in adds {
                let m = crate::edit::map_or_new(d, &ps, &hex(ag))?;
                for (k, n) in p.fields().into_iter().filter(|(_, n)| *n > 0) {
                    if d.get(&m, k)?.is_some() {
                        d.increment(&m, k, n)?;
                    } else {
                        d.put(&m, k, ScalarValue::counter(n))?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Files partner receipts in this device's row: those it `signed` for the partner's
    /// holders (under `partners/<agreement>/signed/<holder>`) and those the partner's nodes
    /// signed for it as their holder (`partners/<agreement>/receipts/<node>`), with the
    /// partner's roster each was taken under (`rosters`; the newest is filed beside them,
    /// `partners/<agreement>/roster`, and must name their signers). A receipt no larger than
    /// the one filed, signed by another member than it, or whose signer the roster filed
    /// does not name, is left out; so is a new signing node past
    /// `MAX_PARTNER_NODES` (256) for one agreement.
    pub fn file_partner_receipts(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        signed: &[Receipt],
        theirs: &[(Receipt, kith_federation::Roster)],
        now_ms: i64,
    ) -> Result<usize, DocError> {
        if signed.is_empty() && theirs.is_empty() {
            return Ok(0);
        }
        let view = self.view();
        let row = view.rows.get(&(signer.author().key, signer.author().device));
        let grows = |r: &Receipt, prev: Option<&Receipt>| {
            prev.is_none_or(|p| {
                (r.bytes, r.blobs) != (p.bytes, p.blobs)
                    && r.bytes >= p.bytes
                    && r.blobs >= p.blobs
                    && r.receiver == p.receiver
            })
        };
        let signed: Vec<&Receipt> = signed
            .iter()
            .filter(|r| grows(r, row.and_then(|w| w.partner_signed.get(&(r.pool, r.server)))))
            .collect();
        // The roster to file per agreement: the newest of those given and the one filed.
        let mut rosters: BTreeMap<Key, &kith_federation::Roster> = BTreeMap::new();
        for (_, ro) in theirs {
            let filed = row.and_then(|w| w.partner_rosters.get(&ro.agreement));
            let best = rosters.entry(ro.agreement).or_insert(ro);
            if ro.at_ms > best.at_ms {
                *best = ro;
            }
            if filed.is_some_and(|f| f.at_ms >= best.at_ms) {
                rosters.remove(&ro.agreement);
            }
        }
        let named = |r: &Receipt| {
            rosters
                .get(&r.pool)
                .copied()
                .or_else(|| row.and_then(|w| w.partner_rosters.get(&r.pool)))
                .is_some_and(|ro| ro.names(&r.receiver))
        };
        let mut nodes: BTreeMap<Key, usize> = BTreeMap::new();
        if let Some(w) = row {
            for (ag, _) in w.partner_receipts.keys() {
                *nodes.entry(*ag).or_default() += 1;
            }
        }
        let mut theirs_kept: Vec<&Receipt> = Vec::new();
        for (r, _) in theirs {
            let prev = row.and_then(|w| w.partner_receipts.get(&(r.pool, r.last)));
            if !grows(r, prev) || !named(r) {
                continue;
            }
            if prev.is_none() {
                let n = nodes.entry(r.pool).or_default();
                if *n >= MAX_PARTNER_NODES {
                    continue;
                }
                *n += 1;
            }
            theirs_kept.push(r);
        }
        let theirs = theirs_kept;
        rosters.retain(|ag, _| theirs.iter().any(|r| r.pool == *ag));
        let n = signed.len() + theirs.len();
        if n == 0 {
            return Ok(0);
        }
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let row = Self::own_row(d, signer)?;
            let ps = crate::edit::map_or_new(d, &row, "partners")?;
            for (ag, ro) in &rosters {
                let m = crate::edit::map_or_new(d, &ps, &hex(ag))?;
                d.put(&m, "roster", ScalarValue::Bytes(ro.to_bytes()))?;
            }
            for (sub, r, under) in signed
                .iter()
                .map(|r| ("signed", r, r.server))
                .chain(theirs.iter().map(|r| ("receipts", r, r.last)))
            {
                let m = crate::edit::map_or_new(d, &ps, &hex(&r.pool))?;
                let rec = crate::edit::map_or_new(d, &m, sub)?;
                d.put(&rec, hex(&under), ScalarValue::Bytes(r.to_bytes()))?;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// Adds `by` to counter `c` of `row`, making it in a row from before it existed.
    fn counter_or_new(
        d: &mut AutoCommit,
        row: &ObjId,
        c: Counter,
        by: i64,
    ) -> Result<(), kith_crdt::automerge::AutomergeError> {
        // Rows have every counter from their start (`own_row`); only a row made before a
        // counter existed lacks it, and increment says so without changing anything.
        match d.increment(row, c.key(), by) {
            Err(kith_crdt::automerge::AutomergeError::MissingCounter) => {
                d.put(row, c.key(), ScalarValue::counter(by))
            }
            r => r,
        }
    }

    /// Files (or grows) a receipt this member signed.
    pub fn file_receipt(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        r: &Receipt,
        now_ms: i64,
    ) -> Result<(), DocError> {
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let row = Self::own_row(d, signer)?;
            let rec = crate::edit::map_or_new(d, &row, "receipts")?;
            d.put(&rec, hex(&r.server), ScalarValue::Bytes(r.to_bytes()))
        })?;
        Ok(())
    }

    /// Enters a shared cost (admins).
    pub fn add_cost(
        &mut self,
        signer: &Signer,
        rules: &LedgerRules<'_>,
        id: &str,
        what: &str,
        cents: i64,
        now_ms: i64,
    ) -> Result<(), DocError> {
        if cents <= 0 {
            return Err(DocError::Format(format!("a cost must be positive, not {cents} cents")));
        }
        if what.trim().is_empty() || what.len() > 200 {
            return Err(DocError::Format(
                "say what the cost paid for, in at most 200 characters".into(),
            ));
        }
        let by = signer.author().key;
        self.doc.change_noted(signer, now_ms, rules.note(), rules, |d| {
            let cs = crate::edit::map_or_new(d, &ROOT, "costs")?;
            let c = d.put_object(&cs, id, ObjType::Map)?;
            d.put(&c, "by", ScalarValue::Bytes(by.to_vec()))?;
            d.put(&c, "what", what)?;
            d.put(&c, "cents", cents)?;
            d.put(&c, "at", now_ms)
        })?;
        Ok(())
    }
}

impl crate::fsutil::Stored for Ledger {
    type Kind = LedgerKind;

    fn load(bytes: &[u8]) -> Result<Self, String> {
        Ledger::load(bytes).map_err(|e| e.to_string())
    }

    fn save(&mut self) -> Vec<u8> {
        Ledger::save(self)
    }
}
