//! Typed documents: a [`Schema`] says what a kind of document is (its name in files, its
//! typed view, the rules its changes pass), and [`Doc`] gives every kind the same load, save,
//! edit, check and sync. A document can only be edited or synced under its own kind's rules:
//! the type says which.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use automerge::{AutoCommit, Automerge, AutomergeError, Change, ChangeHash, ReadDoc};

use crate::check::Authorizer;
use crate::signed::{DocError, Key, SignedDoc, Signer};
use crate::sync::{SyncFrame, SyncState};

/// A kind of document.
pub trait Schema: 'static {
    /// The kind written in its files (checked when one is read).
    const KIND: &'static str;
    /// The extension of its files.
    const EXT: &'static str;
    /// Its typed view.
    type View;
    /// The rules its changes pass (some judge in a context, as a ledger in its pool's).
    type Rules<'r>: Authorizer;

    /// The typed view of a document, or why it is not one of this kind.
    fn read(doc: &impl ReadDoc) -> Result<Self::View, String>;

    /// What a document read from a file must be beyond its kind and view (nothing by
    /// default); it may rebuild the document, for instance judging every change again.
    fn admit(doc: SignedDoc) -> Result<SignedDoc, DocError> {
        Ok(doc)
    }
}

/// A signed document of kind `S`.
pub struct Doc<S: Schema> {
    signed: SignedDoc,
    kind: PhantomData<fn() -> S>,
}

impl<S: Schema> std::fmt::Debug for Doc<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doc").field("kind", &S::KIND).field("doc", &self.signed).finish()
    }
}

impl<S: Schema> Doc<S> {
    /// Starts a document: `init` writes the genesis, which `rules` must accept.
    pub fn create(
        signer: &Signer,
        time_ms: i64,
        rules: &S::Rules<'_>,
        init: impl FnOnce(&mut AutoCommit) -> Result<(), AutomergeError>,
    ) -> Result<Self, DocError> {
        Self::wrap(SignedDoc::create(signer, time_ms, rules, init)?)
    }

    /// A signed document that holds a document of this kind.
    pub fn wrap(signed: SignedDoc) -> Result<Self, DocError> {
        S::read(signed.doc()).map_err(DocError::Format)?;
        Ok(Doc { signed, kind: PhantomData })
    }

    /// Reads a saved document of this kind.
    pub fn load(bytes: &[u8]) -> Result<Self, DocError> {
        Self::wrap(S::admit(SignedDoc::load(bytes, S::KIND)?)?)
    }

    /// The document as bytes.
    pub fn save(&mut self) -> Vec<u8> {
        self.signed.save(S::KIND)
    }

    /// The typed view (only authorised changes are applied, so it reads unless the rules let
    /// through what the view cannot read).
    pub fn view(&self) -> Result<S::View, String> {
        S::read(self.signed.doc())
    }

    /// The document id.
    pub fn id(&self) -> Key {
        *self.signed.id()
    }

    /// The automerge document.
    pub fn doc(&self) -> &AutoCommit {
        self.signed.doc()
    }

    /// The document with its history, for reading at past heads.
    pub fn history(&mut self) -> &Automerge {
        self.signed.history()
    }

    /// Its heads.
    pub fn heads(&mut self) -> Vec<ChangeHash> {
        self.signed.heads()
    }

    /// How many changes it holds.
    pub fn len(&self) -> usize {
        self.signed.len()
    }

    /// Whether it holds no change.
    pub fn is_empty(&self) -> bool {
        self.signed.is_empty()
    }

    /// Makes a change by `signer` (see [`SignedDoc::change`]).
    pub fn change<T>(
        &mut self,
        signer: &Signer,
        time_ms: i64,
        rules: &S::Rules<'_>,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, AutomergeError>,
    ) -> Result<(T, Option<ChangeHash>), DocError> {
        self.signed.change(signer, time_ms, rules, f)
    }

    /// [`Doc::change`] with a note the rules read.
    pub fn change_noted<T>(
        &mut self,
        signer: &Signer,
        time_ms: i64,
        note: Option<String>,
        rules: &S::Rules<'_>,
        f: impl FnOnce(&mut AutoCommit) -> Result<T, AutomergeError>,
    ) -> Result<(T, Option<ChangeHash>), DocError> {
        self.signed.change_noted(signer, time_ms, note, rules, f)
    }

    /// Checks and applies changes from elsewhere, all or none (see [`SignedDoc::ingest`]).
    pub fn ingest(
        &mut self,
        changes: Vec<Change>,
        sigs: &BTreeMap<ChangeHash, crate::signed::Sig>,
        rules: &S::Rules<'_>,
    ) -> Result<Vec<ChangeHash>, DocError> {
        self.signed.ingest(changes, sigs, rules)
    }

    /// Every change not in the history of `heads`, with their signatures.
    pub fn changes_since(
        &mut self,
        heads: &[ChangeHash],
    ) -> (Vec<Change>, BTreeMap<ChangeHash, crate::signed::Sig>) {
        self.signed.changes_since(heads)
    }

    /// The next sync message for a peer, if there is anything to say.
    pub fn sync_out(&mut self, state: &mut SyncState) -> Option<SyncFrame> {
        self.signed.sync_out(state)
    }

    /// Takes in a peer's sync message, every change checked by `rules`.
    pub fn sync_in(
        &mut self,
        state: &mut SyncState,
        frame: &SyncFrame,
        rules: &S::Rules<'_>,
    ) -> Result<Vec<ChangeHash>, DocError> {
        self.signed.sync_in(state, frame, rules)
    }

    /// A copy to check a peer's changes in, outside any lock (see [`Doc::adopt`]).
    pub fn fork(&mut self) -> Self {
        Doc { signed: self.signed.fork(), kind: PhantomData }
    }

    /// Puts the document back to `heads` (see [`SignedDoc::rewind`]).
    pub fn rewind(&mut self, heads: &[ChangeHash]) -> Result<(), DocError> {
        self.signed.rewind(heads)
    }

    /// Takes in `checked`, a [`Doc::fork`] made at `heads` with changes checked since; the
    /// hashes of the changes new here (see [`SignedDoc::adopt`]).
    pub fn adopt(
        &mut self,
        checked: Self,
        heads: &[ChangeHash],
    ) -> Result<Vec<ChangeHash>, DocError> {
        self.signed.adopt(checked.signed, heads)
    }

    /// The signed document underneath (for what no kind needs, such as tests forging changes).
    pub fn signed_mut(&mut self) -> &mut SignedDoc {
        &mut self.signed
    }
}
