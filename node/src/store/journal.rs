//! The object journal (`store/objects.log`): every object recorded and forgotten, in order, as
//! fixed-size checked records appended beside the index. The index (`index.redb`) is the fast
//! copy; the journal is what rebuilding it needs and pack trailers cannot give: which versions
//! were forgotten (their roots stay in packs until `gc`) and the version numbers, which are
//! never reused.
//!
//! ```text
//! header  "KITHOBJJ" | format u32 LE (1)                               12 bytes
//! record  op u8 (1 recorded, 2 forgotten) | object [32] | lineage [32]
//!         | version u32 LE | created_ms u64 LE | check [8]            85 bytes
//! check   = BLAKE3(the 77 bytes before it)[..8]
//! ```
//!
//! A record cut short at the end (a crash during an append) is ignored; a record whose check
//! fails is skipped and reported (the records after it still read).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::ids::ObjectId;
use crate::store::index::ObjectRow;

/// The journal's file name in the store directory.
pub const JOURNAL_FILE: &str = "objects.log";
const MAGIC: &[u8; 8] = b"KITHOBJJ";
/// Journal format this build writes and the newest it reads.
pub const JOURNAL_FORMAT: u32 = 1;
const HEADER_LEN: usize = 12;
const RECORD_LEN: usize = 85;
const OP_RECORDED: u8 = 1;
const OP_FORGOTTEN: u8 = 2;

/// One entry of the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// An object was recorded as a version of its lineage.
    Recorded(ObjectRow),
    /// An object was forgotten (`kith rm`).
    Forgotten(ObjectId),
}

/// What reading the journal found.
#[derive(Debug, Default)]
pub struct Contents {
    /// The readable records, in order.
    pub records: Vec<Record>,
    /// Why reading stopped early, if it did (damage; a torn last record is not reported).
    pub damage: Option<String>,
}

/// A record's 85 bytes.
pub(super) fn encode(r: &Record) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    match r {
        Record::Recorded(row) => {
            b[0] = OP_RECORDED;
            b[1..33].copy_from_slice(&row.id.0);
            b[33..65].copy_from_slice(&row.lineage);
            b[65..69].copy_from_slice(&row.version.to_le_bytes());
            b[69..77].copy_from_slice(&row.created_ms.to_le_bytes());
        }
        Record::Forgotten(id) => {
            b[0] = OP_FORGOTTEN;
            b[1..33].copy_from_slice(&id.0);
        }
    }
    let check = blake3::hash(&b[..77]);
    b[77..].copy_from_slice(&check.as_bytes()[..8]);
    b
}

/// A record from its 85 bytes.
pub(super) fn decode(b: &[u8]) -> Result<Record, String> {
    if b.len() != RECORD_LEN {
        return Err(format!("a record has {RECORD_LEN} bytes, not {}", b.len()));
    }
    if blake3::hash(&b[..77]).as_bytes()[..8] != b[77..RECORD_LEN] {
        return Err("a record does not match its check".into());
    }
    let id = ObjectId(b[1..33].try_into().expect("32 bytes"));
    match b[0] {
        OP_RECORDED => Ok(Record::Recorded(ObjectRow {
            id,
            lineage: b[33..65].try_into().expect("32 bytes"),
            version: u32::from_le_bytes(b[65..69].try_into().expect("4 bytes")),
            created_ms: u64::from_le_bytes(b[69..77].try_into().expect("8 bytes")),
        })),
        OP_FORGOTTEN => Ok(Record::Forgotten(id)),
        op => Err(format!("unknown record type {op}")),
    }
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&JOURNAL_FORMAT.to_le_bytes());
    h
}

/// The journal of a store directory.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal in `store_dir`.
    pub fn new(store_dir: &Path) -> Journal {
        Journal { path: store_dir.join(JOURNAL_FILE) }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file exists.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Appends `r` and syncs it to disk (a new file gets its header first).
    pub fn append(&self, r: &Record) -> io::Result<()> {
        let mut f = OpenOptions::new().create(true).append(true).mode_private().open(&self.path)?;
        let len = f.metadata()?.len();
        if len == 0 {
            f.write_all(&header())?;
        } else if len < HEADER_LEN as u64 {
            return Err(io::Error::other(format!("{} is truncated", self.path.display())));
        } else {
            // A torn record at the end is cut off first, so the next one lines up.
            let whole = HEADER_LEN as u64
                + (len - HEADER_LEN as u64) / RECORD_LEN as u64 * RECORD_LEN as u64;
            if whole != len {
                f.set_len(whole)?;
            }
        }
        f.write_all(&encode(r))?;
        f.sync_data()
    }

    /// Writes the journal anew, atomically: `rows` recorded, in order.
    pub fn rewrite(&self, rows: &[ObjectRow]) -> io::Result<()> {
        let mut bytes = header().to_vec();
        for row in rows {
            bytes.extend_from_slice(&encode(&Record::Recorded(*row)));
        }
        crate::fsutil::write_atomic(&self.path, &bytes, 0o600)
    }

    /// Reads what is readable (an absent file reads as empty).
    pub fn read(&self) -> io::Result<Contents> {
        let mut bytes = Vec::new();
        match File::open(&self.path) {
            Ok(mut f) => f.read_to_end(&mut bytes)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Contents::default()),
            Err(e) => return Err(e),
        };
        let mut out = Contents::default();
        if bytes.len() < HEADER_LEN || &bytes[..8] != MAGIC {
            out.damage = Some("it is not an object journal (its header is wrong)".into());
            return Ok(out);
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if format > JOURNAL_FORMAT {
            return Err(io::Error::other(format!(
                "{} has format {format}; this kith reads up to {JOURNAL_FORMAT}: upgrade kith",
                self.path.display()
            )));
        }
        // Records have one size: a damaged one is skipped, the ones after it still read.
        let mut bad = Vec::new();
        for (n, rec) in bytes[HEADER_LEN..].chunks(RECORD_LEN).enumerate() {
            if rec.len() < RECORD_LEN {
                break;
            }
            match decode(rec) {
                Ok(r) => out.records.push(r),
                Err(_) => bad.push((n + 1).to_string()),
            }
        }
        if !bad.is_empty() {
            out.damage = Some(format!("record {} did not read (skipped)", bad.join(", ")));
        }
        Ok(out)
    }

    /// Removes the file.
    pub fn remove(&self) -> io::Result<()> {
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

trait PrivateMode {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateMode for OpenOptions {
    fn mode_private(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: u8) -> ObjectRow {
        ObjectRow { id: ObjectId([n; 32]), lineage: [n + 1; 32], version: n as u32, created_ms: 7 }
    }

    #[test]
    fn records_read_back_and_a_torn_or_damaged_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        assert!(j.read().unwrap().records.is_empty());
        j.append(&Record::Recorded(row(1))).unwrap();
        j.append(&Record::Recorded(row(2))).unwrap();
        j.append(&Record::Forgotten(ObjectId([1; 32]))).unwrap();
        let want = vec![
            Record::Recorded(row(1)),
            Record::Recorded(row(2)),
            Record::Forgotten(ObjectId([1; 32])),
        ];
        assert_eq!(j.read().unwrap().records, want);
        // A crash in the middle of an append: the part written is ignored, and cut off by the
        // next append.
        let mut f = OpenOptions::new().append(true).open(j.path()).unwrap();
        f.write_all(&encode(&Record::Recorded(row(3)))[..40]).unwrap();
        let r = j.read().unwrap();
        assert_eq!((r.records.len(), r.damage), (3, None));
        j.append(&Record::Recorded(row(4))).unwrap();
        assert_eq!(j.read().unwrap().records.last(), Some(&Record::Recorded(row(4))));
        // A flipped bit costs that record only, and says so.
        let mut bytes = fs::read(j.path()).unwrap();
        bytes[HEADER_LEN + RECORD_LEN + 5] ^= 1;
        fs::write(j.path(), &bytes).unwrap();
        let r = j.read().unwrap();
        let left = vec![
            Record::Recorded(row(1)),
            Record::Forgotten(ObjectId([1; 32])),
            Record::Recorded(row(4)),
        ];
        assert_eq!(r.records, left);
        assert!(r.damage.unwrap().contains("record 2 did not read"));
        // A newer format is refused by name.
        bytes[8] = 9;
        fs::write(j.path(), &bytes).unwrap();
        assert!(j.read().unwrap_err().to_string().contains("upgrade kith"));
    }
}
