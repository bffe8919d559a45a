//! What an [`Authorizer`] is shown about a change, and what it decides.

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;

use automerge::{Automerge, Change, ChangeHash, Patch, Prop};

use crate::signed::{Author, Key};

/// What an [`Authorizer`] is shown about one change.
///
/// The change is judged against the document at its own dependencies ([`Check::deps`]), not
/// against whatever this node happens to hold. Reading one value before the change costs a
/// lookup (`doc.get_at(obj, key, deps)`); [`Check::before`] and [`Check::after`] give whole
/// documents at those points, made when first asked for (a copy of the document, so rules that
/// must stay cheap read values with `get_at` instead).
pub struct Check<'a> {
    /// The document id.
    pub doc_id: &'a Key,
    /// Who made the change.
    pub author: Author,
    /// The change's own timestamp (milliseconds since the Unix epoch, as its author claims).
    pub time_ms: i64,
    /// The change's note (automerge's commit message), covered by its hash and signature:
    /// documents that depend on another say here which state of it a change was made in.
    pub note: Option<&'a str>,
    /// Whether this is the document's genesis change.
    pub genesis: bool,
    /// The change's dependencies: the heads of the document it was made in.
    pub deps: &'a [ChangeHash],
    /// The change's hash.
    pub hash: ChangeHash,
    /// The document with the change applied (and possibly changes concurrent with it, which
    /// the change's author had not seen: read it at `deps` or at `[hash]`).
    pub doc: &'a Automerge,
    /// What the change did, as patches from the document at `deps` to it plus the change.
    /// Empty while [`Authorizer::quick`] runs (patches are computed only for a full check).
    pub patches: &'a [Patch],
    /// The change itself.
    pub(crate) change: &'a Change,
    /// Paths of objects named so far in this batch, by object id.
    pub(crate) paths: &'a RefCell<HashMap<String, Vec<String>>>,
    /// Whether the document was at `deps` when the change arrived (every head of it a
    /// dependency), so that `doc` is the state after the change.
    pub(crate) sequential: bool,
    pub(crate) before: OnceCell<Automerge>,
    pub(crate) after: OnceCell<Automerge>,
}

/// What one operation of a change wrote (see [`Check::touched`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The path from the root to the key the operation set, made, deleted or incremented.
    pub path: Vec<String>,
    /// Whether it deleted the key.
    pub deleting: bool,
}

impl Check<'_> {
    /// What each operation of the change wrote, in order, read from the change itself (its
    /// cost is the change's, not the document's: automerge's patches walk every key of each
    /// touched object's parent to name its path). `None` if an operation writes into a list
    /// or text (whose positions this does not resolve).
    pub fn touched(&self) -> Option<Vec<Touch>> {
        use automerge::ReadDoc;
        use automerge::legacy::{Key as OpKey, ObjectId, OpType};
        // Objects never move, so their paths are kept for the rest of the batch.
        let mut paths = self.paths.borrow_mut();
        let (start, actor) = (self.change.start_op().get(), self.change.actor_id().to_string());
        let mut out = Vec::new();
        for (i, op) in self.change.decode().operations.into_iter().enumerate() {
            let OpKey::Map(key) = &op.key else { return None };
            let mut path = match &op.obj {
                ObjectId::Root => Vec::new(),
                obj => {
                    let name = obj.to_string();
                    if let Some(p) = paths.get(&name) {
                        p.clone()
                    } else {
                        let id = self.doc.import_obj(&name).ok()?;
                        let mut p = Vec::new();
                        for (_, prop) in self.doc.parents(&id).ok()?.path() {
                            match prop {
                                Prop::Map(k) => p.push(k),
                                Prop::Seq(_) => return None,
                            }
                        }
                        paths.insert(name, p.clone());
                        p
                    }
                }
            };
            path.push(key.to_string());
            if let OpType::Make(_) = op.action {
                // The object this operation makes is named by its id: no lookup for it.
                paths.insert(format!("{}@{actor}", start + i as u64), path.clone());
            }
            out.push(Touch { path, deleting: matches!(op.action, OpType::Delete) });
        }
        Some(out)
    }

    /// The document after the change when it is `doc` itself (nothing concurrent with the
    /// change in it), else `None` (read `doc` at `[hash]` then). Reading the current state is
    /// cheaper than reading at heads.
    pub fn after_if_current(&self) -> Option<&Automerge> {
        self.sequential.then_some(self.doc)
    }

    /// The document at the change's dependencies (made on first use).
    pub fn before(&self) -> &Automerge {
        self.before.get_or_init(|| {
            self.doc.fork_at(self.deps).expect("the change's dependencies are in the document")
        })
    }

    /// The document at the change's dependencies plus the change (the document itself when
    /// nothing concurrent is in it).
    pub fn after(&self) -> &Automerge {
        if self.sequential {
            return self.doc;
        }
        self.after
            .get_or_init(|| self.doc.fork_at(&[self.hash]).expect("the change was just applied"))
    }
}

/// Decides whether an author may make a change. Must be a pure function of the [`Check`].
pub trait Authorizer {
    /// `Ok` if the change is allowed, or why not.
    fn authorise(&self, check: &Check<'_>) -> Result<(), String>;

    /// A verdict from what the change's operations wrote ([`Check::touched`]) and lookups,
    /// before its patches are computed (`check.patches` is empty here); `None`, the default,
    /// asks for the full check by [`Authorizer::authorise`]. Rules use it for the common
    /// changes they can judge in proportion to the change.
    fn quick(&self, check: &Check<'_>) -> Option<Result<(), String>> {
        let _ = check;
        None
    }
}
