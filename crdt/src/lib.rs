//! kith's replicated documents: automerge documents whose every change is signed and authorised.
//!
//! - [`SignedDoc`] holds a document and a signature per change; local and remote changes both
//!   pass an [`Authorizer`] before they are applied, and a bad batch is rejected whole.
//! - [`SyncFrame`] carries one automerge sync message and the signatures of the changes in it;
//!   [`SignedDoc::sync_out`] and [`SignedDoc::sync_in`] drive a session with a [`SyncState`].
//!
//! - [`Doc`] is a document of one [`Schema`] (a kind: its file name, typed view and rules):
//!   load, save, edit, check and sync, once for every kind.
//!
//! - [`bounds`] checks what automerge would inflate from bytes that come from elsewhere before
//!   it sees them; a panic inside automerge on a peer's input becomes an error.
//!
//! The crate does no I/O: callers move bytes and pass the time.

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bounds;
mod check;
mod file;
mod judge;
pub(crate) mod signed;
mod sync;
#[cfg(test)]
mod tests;
mod typed;

pub use automerge;
pub use check::{Authorizer, Check};
pub use file::DOC_FILE_VERSION;
pub use signed::{
    Author, DEVICE_CERT_CONTEXT, DEVICE_SIG_LEN, DocError, INCARNATION_LEN, Key, MAX_CHANGE_BYTES,
    ROOT_SIG_LEN, SIGNING_CONTEXT, Sig, SignedBy, SignedDoc, Signer, cert_message, hex, patch_path,
    signed_by, verify, verify_device,
};
pub use sync::{SigEntry, SyncFrame, SyncState};
pub use typed::{Doc, Schema};
