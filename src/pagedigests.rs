//! The digests of the pages a backup's first pass wrote, kept until the second pass of the
//! same run: that pass then reads only the original of a file whose copy is still the one
//! they describe, and writes the pages whose digest differs. Without them (a resumed run,
//! whose first pass ran in another process) it reads both sides.
//!
//! They live in an unlinked temporary file of pgup's work directory, gone with the process
//! (killed or not); in memory only an index, a few dozen bytes a file. A digest is 128 bits
//! of XXH3 seeded at random for each run (so that no page can be made to share another's):
//! two different pages share one with a chance of 2^-128, far below any disk's undetected
//! error rate.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A page's digest.
pub type Digest = u128;

/// Digests of copies, each valid while its copy is untouched since.
pub struct PageDigests {
    file: File,
    seed: u64,
    index: Mutex<Index>,
}

#[derive(Default)]
struct Index {
    /// Where the next record goes.
    end: u64,
    records: HashMap<PathBuf, Record>,
}

/// Where a copy's digests are, and the copy they describe: any write to it, or change of
/// its metadata, moves its ctime (which nothing sets back).
struct Record {
    at: u64,
    pages: usize,
    of: Identity,
}

#[derive(PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    ctime: (i64, i64),
}

impl Identity {
    fn of(path: &Path) -> io::Result<Self> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

const DIGEST_BYTES: usize = std::mem::size_of::<Digest>();

impl PageDigests {
    /// An empty set, its file in `dir` (unlinked at once).
    pub fn new_in(dir: &Path) -> io::Result<Self> {
        let mut seed = [0u8; 8];
        File::open("/dev/urandom")?.read_exact(&mut seed)?;
        Ok(Self {
            file: tempfile::tempfile_in(dir)?,
            seed: u64::from_le_bytes(seed),
            index: Mutex::default(),
        })
    }

    /// The digest of one page (or of a file's last, shorter part).
    pub fn digest(&self, page: &[u8]) -> Digest {
        xxhash_rust::xxh3::xxh3_128_with_seed(page, self.seed)
    }

    /// Records `digests` as those of `copy`'s pages as it is now, its metadata set; None
    /// forgets what was recorded of it (its pages could not be told apart).
    pub fn record(&self, copy: &Path, digests: Option<&[Digest]>) -> io::Result<()> {
        let Some(digests) = digests else {
            let mut index = self.index.lock().expect("not poisoned");
            index.records.remove(copy);
            return Ok(());
        };
        let of = Identity::of(copy)?;
        let bytes: Vec<u8> = digests.iter().flat_map(|d| d.to_le_bytes()).collect();
        let mut index = self.index.lock().expect("not poisoned");
        let at = index.end;
        self.file.write_all_at(&bytes, at)?;
        index.end += bytes.len() as u64;
        let pages = digests.len();
        index
            .records
            .insert(copy.to_owned(), Record { at, pages, of });
        Ok(())
    }

    /// The digests recorded of `copy`'s pages, when it is still the file they were taken of.
    pub fn of(&self, copy: &Path) -> io::Result<Option<Vec<Digest>>> {
        let now = Identity::of(copy)?;
        let (at, pages) = {
            let index = self.index.lock().expect("not poisoned");
            match index.records.get(copy) {
                Some(r) if r.of == now => (r.at, r.pages),
                _ => return Ok(None),
            }
        };
        let mut bytes = vec![0u8; pages * DIGEST_BYTES];
        self.file.read_exact_at(&mut bytes, at)?;
        Ok(Some(
            bytes
                .chunks_exact(DIGEST_BYTES)
                .map(|b| Digest::from_le_bytes(b.try_into().expect("a digest's bytes")))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_hold_while_the_copy_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let set = PageDigests::new_in(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "its file has no name"
        );
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, [1u8; 16384]).unwrap();
        std::fs::write(&b, [2u8; 100]).unwrap();
        assert_eq!(set.of(&a).unwrap(), None, "nothing recorded yet");
        let digest = |page: &[u8]| set.digest(page);
        let da = vec![digest(&[1u8; 8192]); 2];
        set.record(&a, Some(&da)).unwrap();
        set.record(&b, Some(&[digest(&[2u8; 100])])).unwrap();
        assert_eq!(set.of(&a).unwrap(), Some(da.clone()));
        assert_eq!(set.of(&b).unwrap(), Some(vec![digest(&[2u8; 100])]));
        assert_ne!(digest(&[2u8; 100]), digest(&[2u8; 101]), "lengths count");
        let other = PageDigests::new_in(dir.path()).unwrap();
        assert_ne!(
            other.digest(&[2u8; 100]),
            digest(&[2u8; 100]),
            "each set has its own seed"
        );
        // Any write moves the ctime (past the clock's coarse tick, here by a sleep).
        std::thread::sleep(std::time::Duration::from_millis(20));
        File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .write_all_at(&[1u8], 0)
            .unwrap();
        assert_eq!(set.of(&a).unwrap(), None, "written since: not trusted");
        // Recorded anew, the latest counts; forgotten, none.
        let again = vec![digest(&[3u8; 8192])];
        set.record(&a, Some(&again)).unwrap();
        assert_eq!(set.of(&a).unwrap(), Some(again));
        assert_eq!(set.of(&b).unwrap(), Some(vec![digest(&[2u8; 100])]));
        set.record(&b, None).unwrap();
        assert_eq!(set.of(&b).unwrap(), None);
    }
}
