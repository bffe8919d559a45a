//! What an [`Authorizer`] is shown about a change, and what it decides.

use std::cell::OnceCell;

use automerge::{Automerge, ChangeHash, Patch};

use crate::signed::{Author, Key, SignedBy};

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
    /// Which key signed it: the identity key, or the device `author.device` (certified by the
    /// identity), so rules can refuse the changes of a device the identity retired.
    pub signed_by: SignedBy,
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
    pub patches: &'a [Patch],
    /// Whether the document was at `deps` when the change arrived (every head of it a
    /// dependency), so that `doc` is the state after the change.
    pub(crate) sequential: bool,
    pub(crate) before: OnceCell<Automerge>,
    pub(crate) after: OnceCell<Automerge>,
}

impl Check<'_> {
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
}
