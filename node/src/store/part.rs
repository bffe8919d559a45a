//! Inside an object: its entries listed from the tree alone, one file or folder of it picked
//! out (`ID:path/inside`), and what changed between two versions. Only the tree stream is read
//! to list and compare; a part reads (and fetches) only the chunks of the files it holds.

use std::collections::BTreeMap;

use super::tree::{ChunkRef, Item, Meta};
use super::{Store, StoreError};
use crate::ids::ObjectId;

/// One entry of an object, as `kith ls ID` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the object, `/`-separated; empty for the object's root entry.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: EntryType,
    /// Bytes (files only).
    pub size: u64,
    /// Mode, times and owner.
    pub meta: Meta,
    /// The link's target (symlinks only).
    pub target: Vec<u8>,
    /// The file's content, as the ids of its chunks (equal ids, equal bytes).
    pub content: Vec<[u8; 32]>,
}

/// The type of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    /// A folder.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
}

impl EntryType {
    /// `dir`, `file` or `symlink`.
    pub fn name(self) -> &'static str {
        match self {
            EntryType::Dir => "dir",
            EntryType::File => "file",
            EntryType::Symlink => "symlink",
        }
    }
}

/// One difference between two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Only in the newer version.
    Added(Entry),
    /// Only in the older version.
    Removed(Entry),
    /// In both, with other content (or of another type, or another link target).
    Modified {
        /// As it was.
        old: Entry,
        /// As it is.
        new: Entry,
    },
    /// In both with the same content; mode, owner or time differ.
    Meta {
        /// As it was.
        old: Entry,
        /// As it is.
        new: Entry,
    },
}

/// A file or folder inside an object: the items of the tree at `prefix` and below, with
/// paths made relative to it (the picked entry becomes the root, as in an object of its own).
#[derive(Debug, Clone)]
pub struct Part {
    prefix: Vec<u8>,
    /// Picks nothing: the tree alone is read (to list or compare).
    nothing: bool,
    /// Whether the current file is picked (its chunks and end are kept).
    in_file: bool,
    /// Whether anything was picked.
    found: bool,
}

impl Part {
    /// The entry at `path` inside an object (`/`-separated, no leading or trailing slash;
    /// empty for the whole object).
    pub fn new(path: &str) -> Result<Part, StoreError> {
        let p = path.trim_matches('/');
        if p.split('/').any(|c| c == ".." || c == ".") {
            return Err(StoreError::BadSpec(format!(
                "`{path}`: a path inside an object has no `.` or `..`"
            )));
        }
        Ok(Part { prefix: p.as_bytes().to_vec(), nothing: false, in_file: false, found: false })
    }

    /// No entry: what reading the tree alone needs.
    pub fn nothing() -> Part {
        Part { prefix: Vec::new(), nothing: true, in_file: false, found: false }
    }

    /// Whether a tree path is the picked entry or inside it, and its path relative to it.
    fn relative(&self, path: &[u8]) -> Option<Vec<u8>> {
        if self.prefix.is_empty() {
            return Some(path.to_vec());
        }
        if path == self.prefix.as_slice() {
            return Some(Vec::new());
        }
        let rest = path.strip_prefix(self.prefix.as_slice())?;
        rest.strip_prefix(b"/").map(<[u8]>::to_vec)
    }

    /// The item as the part has it (paths relative to it), or `None` if it is outside.
    pub fn pick(&mut self, item: Item) -> Option<Item> {
        if self.nothing {
            return None;
        }
        let keep = match item {
            Item::Dir { path, meta } => {
                self.in_file = false;
                self.relative(&path).map(|path| Item::Dir { path, meta })
            }
            Item::File { path, meta, change } => {
                let rel = self.relative(&path);
                self.in_file = rel.is_some();
                rel.map(|path| Item::File { path, meta, change })
            }
            Item::Symlink { path, meta, target } => {
                self.in_file = false;
                self.relative(&path).map(|path| Item::Symlink { path, meta, target })
            }
            Item::Chunk(_) | Item::FileEnd { .. } => self.in_file.then_some(item),
            // The counts are the whole object's; a part ends without them.
            Item::End(_) => None,
        };
        if keep.is_some() {
            self.found = true;
        }
        keep
    }

    /// Whether any entry was picked.
    pub fn found(&self) -> bool {
        self.found
    }

    /// The path picked, for messages.
    pub fn path(&self) -> String {
        String::from_utf8_lossy(&self.prefix).into_owned()
    }

    /// Whether the part is the whole object.
    pub fn is_whole(&self) -> bool {
        self.prefix.is_empty() && !self.nothing
    }
}

impl Store {
    /// The entries of object `id`, in tree order (read from its tree alone).
    pub fn entries(&self, id: &ObjectId) -> Result<Vec<Entry>, StoreError> {
        let root = self.read_root(id)?;
        let mut reader = self.tree_reader(&root);
        let mut out: Vec<Entry> = Vec::new();
        let entry = |path, kind, meta| Entry {
            path,
            kind,
            size: 0,
            meta,
            target: Vec::new(),
            content: Vec::new(),
        };
        while let Some(item) = reader.next_item()? {
            match item {
                Item::Dir { path, meta } => out.push(entry(path, EntryType::Dir, meta)),
                Item::File { path, meta, .. } => out.push(entry(path, EntryType::File, meta)),
                Item::Symlink { path, meta, target } => {
                    out.push(Entry { target, ..entry(path, EntryType::Symlink, meta) })
                }
                Item::Chunk(ChunkRef { id, len, .. }) => {
                    if let Some(f) = out.last_mut() {
                        f.content.push(id);
                        f.size += u64::from(len);
                    }
                }
                Item::FileEnd { .. } | Item::End(_) => {}
            }
        }
        Ok(out)
    }

    /// What changed from object `old` to object `new`, by path (in path order).
    pub fn diff(&self, old: &ObjectId, new: &ObjectId) -> Result<Vec<Change>, StoreError> {
        let by_path = |id| -> Result<BTreeMap<Vec<u8>, Entry>, StoreError> {
            Ok(self.entries(id)?.into_iter().map(|e| (e.path.clone(), e)).collect())
        };
        let (mut before, after) = (by_path(old)?, by_path(new)?);
        let mut changes = Vec::new();
        for (path, new) in after {
            match before.remove(&path) {
                None => changes.push((path, Change::Added(new))),
                Some(old) if old.kind != new.kind || old.content != new.content => {
                    changes.push((path, Change::Modified { old, new }))
                }
                Some(old) if old.target != new.target => {
                    changes.push((path, Change::Modified { old, new }))
                }
                Some(old) if old.meta != new.meta => {
                    changes.push((path, Change::Meta { old, new }))
                }
                Some(_) => {}
            }
        }
        changes.extend(before.into_iter().map(|(p, e)| (p, Change::Removed(e))));
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(changes.into_iter().map(|(_, c)| c).collect())
    }
}
