//! Faithful copies of a PostgreSQL data directory, and the sizes of trees. A copy has to be
//! something PostgreSQL and the user can go back to as if it were the original, so it keeps
//! types, owners, modes, symlinks, hard links and times. std has no tree copy, and fs_extra's
//! follows symlinks, loses owners, modes and hard links, and creates directories 0755, which
//! PostgreSQL refuses as a data directory; hence the walk here.

use std::collections::HashSet;
use std::collections::hash_map::{Entry, HashMap};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use walkdir::WalkDir;

/// How file contents reach the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyMethod {
    /// Copy the bytes.
    Copy,
    /// Share the source's extents (reflink, FICLONE): instant and takes no space until written.
    Clone,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot read {path}: {err}")]
    Read { path: PathBuf, err: io::Error },
    #[error("cannot copy {src} to {dst}: {err}")]
    Copy {
        src: PathBuf,
        dst: PathBuf,
        err: io::Error,
    },
    #[error("cannot flush {path} to disk: {err}")]
    Sync { path: PathBuf, err: io::Error },
    #[error("the filesystem holding {path} does not support reflinks (clone); use --mode copy")]
    NoReflink { path: PathBuf },
    #[error("unexpected special file {path} in the data directory; move it away and try again")]
    Special { path: PathBuf },
    #[error("the copy to {path} was interrupted")]
    Interrupted { path: PathBuf },
}

pub struct CopyOptions<'a> {
    pub method: CopyMethod,
    /// Top-level entry names (directly under src) to leave out.
    pub skip: &'a dyn Fn(&str) -> bool,
    /// Called, from any of the copying threads, with the number of bytes of file data just
    /// copied (for a progress bar).
    pub progress: &'a (dyn Fn(u64) + Sync),
    /// Asked before each entry: true stops the copy (Ctrl-C), leaving `dst` as far as it got.
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// A directory of the copy whose contents are still being written.
struct OpenDir {
    src: PathBuf,
    dst: PathBuf,
    meta: Metadata,
}

/// A file of the copy, created empty by the walk, whose contents and metadata a copying
/// thread fills in.
struct FileJob {
    from: PathBuf,
    to: PathBuf,
    meta: Metadata,
}

/// How many threads fill in file contents. One in-kernel copy stream is CPU-bound: two copy a
/// 3 GB cluster in 5.3 s where one takes 8.2 s (2 cores); more than 4 only queue on the disk.
fn copy_streams() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(4))
}

/// The first failure of a copy. A real failure (a full disk) says more than the interruption
/// it caused, so it replaces one.
#[derive(Default)]
struct Failure(Mutex<Option<TreeError>>);

impl Failure {
    fn record(&self, err: TreeError) {
        let mut slot = self.0.lock().expect("not poisoned");
        let interruption = |e: &TreeError| matches!(e, TreeError::Interrupted { .. });
        if slot
            .as_ref()
            .is_none_or(|old| interruption(old) && !interruption(&err))
        {
            *slot = Some(err);
        }
    }

    fn failed(&self) -> bool {
        self.0.lock().expect("not poisoned").is_some()
    }
}

/// Copies `src` to `dst` (which must not exist) keeping, for every entry: type, content,
/// permission bits (setuid, setgid and sticky too), owner and group, symlinks as symlinks,
/// hard links as hard links within the copy, and access and modification times to the
/// nanosecond (of symlinks too). `dst` itself gets `src`'s owner, mode and times. Returns the
/// bytes of file data copied (cloned bytes count as copied).
///
/// One thread walks the tree and creates every entry (files empty, so that hard links and the
/// directories' listings are whole); several threads fill in the files. Each directory gets
/// its owner, mode and times once everything is written, deepest first: writing them earlier
/// would move its mtime, and until then it stays 0700 so nobody sees a half copy.
/// On error, `dst` is left as far as it got; removing it is the caller's call.
///
/// Before returning it syncs the filesystem holding `dst`, so that a caller renaming `dst`
/// into place after a crash finds either no copy or a complete one.
pub fn copy_tree(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<u64, TreeError> {
    let copied = AtomicU64::new(0);
    let failure = Failure::default();
    // What the copying threads use (`skip` is the walk's, and need not be Sync).
    let (method, progress, interrupted) = (opts.method, opts.progress, opts.interrupted);
    let (jobs, queue) = std::sync::mpsc::sync_channel::<FileJob>(64);
    let queue = Mutex::new(queue);
    let dirs = std::thread::scope(|scope| {
        for _ in 0..copy_streams() {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("not poisoned").recv();
                    let Ok(job) = next else { break };
                    // After a failure the rest of the queue is drained, not copied.
                    if failure.failed() {
                        continue;
                    }
                    if interrupted() {
                        failure.record(TreeError::Interrupted {
                            path: dst.to_owned(),
                        });
                        continue;
                    }
                    match fill_file(&job, method, dst) {
                        Ok(bytes) => {
                            copied.fetch_add(bytes, Ordering::Relaxed);
                            progress(bytes);
                        }
                        Err(err) => failure.record(err),
                    }
                }
            });
        }
        let walked = walk(src, dst, opts, &jobs, &failure);
        drop(jobs); // the threads end once the queue is empty
        walked
    });
    if let Some(err) = failure.0.into_inner().expect("not poisoned") {
        return Err(err);
    }
    for dir in dirs.into_iter().rev() {
        finish_dir(dir)?;
    }
    let sync_error = |err| TreeError::Sync {
        path: dst.to_owned(),
        err,
    };
    let root = File::open(dst).map_err(sync_error)?;
    rustix::fs::syncfs(&root).map_err(|err| sync_error(err.into()))?;
    Ok(copied.into_inner())
}

/// The walk of [`copy_tree`]: creates every entry, queues the files' contents, and returns
/// the directories in the order they were made. Stops at the first failure, its own or a
/// copying thread's, recorded in `failure`.
fn walk(
    src: &Path,
    dst: &Path,
    opts: &CopyOptions,
    jobs: &std::sync::mpsc::SyncSender<FileJob>,
    failure: &Failure,
) -> Vec<OpenDir> {
    // The first copy of each inode with several names, for the later names to link to.
    let mut links = HashMap::new();
    let mut dirs = Vec::new();
    let entries = WalkDir::new(src)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || !e.file_name().to_str().is_some_and(opts.skip));
    for entry in entries {
        if failure.failed() {
            break;
        }
        if (opts.interrupted)() {
            failure.record(TreeError::Interrupted {
                path: dst.to_owned(),
            });
            break;
        }
        let made = entry
            .and_then(|e| Ok((e.metadata()?, e)))
            .map_err(|err| walk_error(src, err))
            .and_then(|(meta, entry)| {
                let to = match entry.path().strip_prefix(src) {
                    Ok(rel) if entry.depth() > 0 => dst.join(rel),
                    _ => dst.to_owned(),
                };
                let job = create_entry(entry.path(), &to, &meta, &mut links)?;
                if meta.is_dir() {
                    dirs.push(OpenDir {
                        src: entry.into_path(),
                        dst: to,
                        meta,
                    });
                } else if job {
                    let from = entry.into_path();
                    // Sending fails only when every copying thread is gone, which they are
                    // not before the queue closes.
                    let _ = jobs.send(FileJob { from, to, meta });
                }
                Ok(())
            });
        if let Err(err) = made {
            failure.record(err);
            break;
        }
    }
    dirs
}

/// Creates `to` as a copy of `from`, but a regular file's contents and metadata: true when
/// they are still to be filled in (the file's first name). Symlinks get their metadata here,
/// directories theirs in `finish_dir`.
fn create_entry(
    from: &Path,
    to: &Path,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<bool, TreeError> {
    let fail = |err: io::Error| TreeError::Copy {
        src: from.to_owned(),
        dst: to.to_owned(),
        err,
    };
    let kind = meta.file_type();
    if kind.is_dir() {
        DirBuilder::new().mode(0o700).create(to).map_err(fail)?;
        return Ok(false);
    }
    // PostgreSQL keeps none; copying a socket or a device by content would be wrong anyway.
    if !kind.is_file() && !kind.is_symlink() {
        return Err(TreeError::Special {
            path: from.to_owned(),
        });
    }
    if meta.nlink() > 1 {
        match links.entry((meta.dev(), meta.ino())) {
            // The inode is the first name's, which gets the contents and metadata.
            Entry::Occupied(first) => {
                fs::hard_link(first.get(), to).map_err(fail)?;
                return Ok(false);
            }
            Entry::Vacant(slot) => {
                slot.insert(to.to_owned());
            }
        }
    }
    if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from).map_err(fail)?, to).map_err(fail)?;
        set_metadata(to, meta).map_err(fail)?;
        return Ok(false);
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(fail)?;
    Ok(true)
}

/// Fills in a file that [`create_entry`] made: its contents, then its metadata. Returns the
/// bytes of file data copied.
fn fill_file(job: &FileJob, method: CopyMethod, root: &Path) -> Result<u64, TreeError> {
    let FileJob { from, to, meta } = job;
    let fail = |err: io::Error| TreeError::Copy {
        src: from.to_owned(),
        dst: to.to_owned(),
        err,
    };
    let bytes = match method {
        CopyMethod::Copy => fs::copy(from, to).map_err(fail)?,
        CopyMethod::Clone => {
            let input = File::open(from).map_err(fail)?;
            let output = OpenOptions::new().write(true).open(to).map_err(fail)?;
            match rustix::fs::ioctl_ficlone(&output, &input) {
                Ok(()) => {}
                // What filesystems without reflinks (or across two filesystems) answer.
                // No quiet fallback to copying: that takes the space and time clone
                // promised not to, so the caller decides.
                Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY) => {
                    return Err(TreeError::NoReflink {
                        path: root.to_owned(),
                    });
                }
                Err(err) => return Err(fail(err.into())),
            }
            output.metadata().map_err(fail)?.len()
        }
    };
    set_metadata(to, meta).map_err(fail)?;
    Ok(bytes)
}

fn finish_dir(dir: OpenDir) -> Result<(), TreeError> {
    set_metadata(&dir.dst, &dir.meta).map_err(|err| TreeError::Copy {
        src: dir.src,
        dst: dir.dst,
        err,
    })
}

/// Gives `path` (not followed if a symlink) the owner, mode and times in `meta`.
pub fn set_metadata(path: &Path, meta: &Metadata) -> io::Result<()> {
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?;
    // After chown, which clears setuid and setgid. Symlinks have no mode of their own.
    if !meta.is_symlink() {
        rustix::fs::chmodat(
            CWD,
            path,
            Mode::from_raw_mode(meta.mode()),
            AtFlags::empty(),
        )?;
    }
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

fn walk_error(root: &Path, err: walkdir::Error) -> TreeError {
    TreeError::Read {
        path: err.path().unwrap_or(root).to_owned(),
        err: err.into(),
    }
}

/// Whether files in `dir` can be reflink-cloned from `sample`, a regular file on the same
/// filesystem. The probe is an unnamed O_TMPFILE file: a check run on a data directory must
/// leave it byte-identical, so no entry may appear or vanish and the directory's mtime must
/// not move; the kernel frees the file when it is closed. Any failure, including a filesystem
/// without O_TMPFILE, answers false.
/// Renames every entry of `from` into `to` (one filesystem), except those `keep` names.
/// Each rename is atomic, so an interrupted move leaves every entry in one place or the
/// other, and running it again finishes it.
pub fn move_entries(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(keep) {
            continue;
        }
        fs::rename(entry.path(), to.join(&name))?;
        crate::failpoint::hit("move-midway");
    }
    sync_dir(to)?;
    sync_dir(from)
}

/// Makes a directory's entries (renames, creations) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub fn supports_reflink(dir: &Path, sample: &Path) -> bool {
    let probe = || -> rustix::io::Result<()> {
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        let tmp = rustix::fs::openat(CWD, dir, flags, Mode::RUSR | Mode::WUSR)?;
        let input = rustix::fs::open(sample, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        rustix::fs::ioctl_ficlone(&tmp, &input)
    };
    probe().is_ok()
}

/// The apparent size of a tree as `du -sb` counts it: every entry (directories and symlinks
/// too), hard links once, symlinks not followed. Top-level entries named as `skip` says are
/// left out.
pub fn tree_bytes(root: &Path, skip: impl Fn(&str) -> bool) -> io::Result<u64> {
    tree_size(root, skip).map(|s| s.bytes)
}

/// Bytes and files of a tree, each counted as [`tree_bytes`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSize {
    pub bytes: u64,
    /// Regular files: pg_upgrade's time grows with them (one link or copy each).
    pub files: u64,
}

/// The size of a cluster's data, leaving out pgup's own entries in it.
pub fn data_size(data: &Path) -> io::Result<TreeSize> {
    tree_size(data, crate::layout::is_pgup_entry)
}

pub fn tree_size(root: &Path, skip: impl Fn(&str) -> bool) -> io::Result<TreeSize> {
    let mut seen = HashSet::new();
    let mut total = TreeSize::default();
    let walk = WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || !e.file_name().to_str().is_some_and(&skip));
    for entry in walk {
        let meta = entry?.metadata()?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total.bytes += meta.len();
        total.files += u64::from(meta.is_file());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, chown, symlink};

    use super::*;
    use crate::layout::is_pgup_entry;

    #[test]
    fn sizes_count_hard_links_once_and_skip_backups() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
        std::fs::create_dir(root.join("upgrade_backup_20261121T101530Z")).unwrap();
        std::fs::write(
            root.join("upgrade_backup_20261121T101530Z/big"),
            vec![0u8; 5000],
        )
        .unwrap();
        let dir_len = std::fs::metadata(root).unwrap().len();
        assert_eq!(tree_bytes(root, is_pgup_entry).unwrap(), dir_len + 1000);
        assert_eq!(data_size(root).unwrap().files, 1, "hard links count once");
        assert!(tree_bytes(root, |_| false).unwrap() >= dir_len + 6000);
    }

    /// 2020-01-02 03:04:05 UTC; each entry gets a few seconds more so that mixups show.
    const PAST: i64 = 1_577_934_245;
    const NSEC: i64 = 123_456_789;

    fn set_times(path: &Path, sec: i64) {
        let at = Timespec {
            tv_sec: sec,
            tv_nsec: NSEC,
        };
        let times = Timestamps {
            last_access: at,
            last_modification: at,
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    fn dir(path: &Path, mode: u32) {
        fs::create_dir(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn file(path: &Path, content: &str, mode: u32, owner: Option<u32>) {
        fs::write(path, content).unwrap();
        if let Some(id) = owner {
            chown(path, Some(id), Some(id)).unwrap();
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A data directory with one of everything a copy must keep. Times go on last, deepest
    /// first, since writing into a directory moves its mtime.
    fn source_tree(src: &Path) {
        dir(src, 0o700);
        file(&src.join("PG_VERSION"), "17\n", 0o600, None);
        dir(&src.join("base"), 0o700);
        dir(&src.join("base/1"), 0o750);
        file(&src.join("base/1/data"), "rows", 0o640, Some(999));
        // chown clears setuid and setgid: this one shows the mode goes on after the owner.
        file(&src.join("base/1/setid"), "#!/bin/sh\n", 0o6750, Some(999));
        file(&src.join("base/1/skipme"), "nested, so kept", 0o600, None);
        dir(&src.join("global"), 0o700);
        file(&src.join("global/a"), "linked", 0o600, None);
        fs::hard_link(src.join("global/a"), src.join("global/b")).unwrap();
        dir(&src.join("shared"), 0o3770);
        dir(&src.join("empty"), 0o700);
        symlink("base/1", src.join("pg_wal")).unwrap();
        symlink("nowhere", src.join("dangling")).unwrap();
        dir(&src.join("skipme"), 0o700);
        file(&src.join("skipme/big"), "left out", 0o600, None);
        let entries = [
            "PG_VERSION",
            "base/1/data",
            "base/1/setid",
            "base/1/skipme",
            "global/a",
            "pg_wal",
            "dangling",
            "skipme/big",
            "base/1",
            "base",
            "global",
            "shared",
            "empty",
            "skipme",
            "",
        ];
        for (i, rel) in (0..).zip(entries) {
            set_times(&src.join(rel), PAST + i);
        }
    }

    fn entries(root: &Path, skip: &str) -> Vec<(PathBuf, Metadata)> {
        WalkDir::new(root)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| e.depth() != 1 || e.file_name() != skip)
            .map(|e| {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(root).unwrap().to_owned();
                (rel, e.metadata().unwrap())
            })
            .collect()
    }

    #[test]
    fn copies_keep_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("copy"));
        source_tree(&src);
        let before = entries(&src, "skipme");
        let reported = AtomicU64::new(0);
        let opts = CopyOptions {
            method: CopyMethod::Copy,
            skip: &|name| name == "skipme",
            progress: &|n| {
                reported.fetch_add(n, Ordering::Relaxed);
            },
            interrupted: &|| false,
        };
        let copied = copy_tree(&src, &dst, &opts).unwrap();

        assert_eq!(reported.load(Ordering::Relaxed), copied);
        let mut inodes = HashSet::new();
        let data: u64 = before
            .iter()
            .filter(|(_, m)| m.is_file() && inodes.insert(m.ino()))
            .map(|(_, m)| m.len())
            .sum();
        assert_eq!(copied, data);

        let after = entries(&dst, "");
        let names =
            |list: &[(PathBuf, Metadata)]| list.iter().map(|e| e.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&before), names(&after));
        assert!(after.iter().any(|e| e.0 == Path::new("base/1/skipme")));
        for ((rel, s), (_, d)) in before.iter().zip(&after) {
            let what = Path::new(".").join(rel);
            let what = what.display();
            assert_eq!(s.mode(), d.mode(), "{what}: type and mode");
            assert_eq!((s.uid(), s.gid()), (d.uid(), d.gid()), "{what}");
            assert_eq!(s.mtime(), d.mtime(), "{what}");
            assert_eq!(s.mtime_nsec(), d.mtime_nsec(), "{what}");
            // A directory's size is the filesystem's (XFS's shrinks with the skipped entry),
            // and listing it moves its atime; the rest must match.
            if !s.is_dir() {
                assert_eq!(s.len(), d.len(), "{what}");
                assert_eq!(
                    (s.atime(), s.atime_nsec()),
                    (d.atime(), d.atime_nsec()),
                    "{what}"
                );
            }
            if s.is_file() {
                let content = |root: &Path| fs::read(root.join(rel)).unwrap();
                assert_eq!(content(&src), content(&dst), "{what}");
            }
            if s.is_symlink() {
                let target = |root: &Path| fs::read_link(root.join(rel)).unwrap();
                assert_eq!(target(&src), target(&dst), "{what}");
            }
        }
        assert_eq!(after[0].1.mode() & 0o7777, 0o700);
        assert_eq!(after[0].1.mtime(), PAST + 14, "the root's, set last");

        let ino = |root: &Path, rel| fs::metadata(root.join(rel)).unwrap().ino();
        assert_eq!(ino(&dst, "global/a"), ino(&dst, "global/b"));
        assert_ne!(ino(&dst, "global/a"), ino(&src, "global/a"));

        let err = copy_tree(&src, &dst, &opts).unwrap_err();
        assert!(
            matches!(&err, TreeError::Copy { err, .. } if err.kind() == io::ErrorKind::AlreadyExists),
            "{err}"
        );
    }

    #[test]
    fn special_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        std::os::unix::net::UnixListener::bind(src.join("socket")).unwrap();
        let opts = CopyOptions {
            method: CopyMethod::Copy,
            skip: &|_| false,
            progress: &|_| {},
            interrupted: &|| false,
        };
        let err = copy_tree(&src, &tmp.path().join("copy"), &opts).unwrap_err();
        assert!(matches!(err, TreeError::Special { .. }), "{err}");
    }

    #[test]
    fn reflink_probe_leaves_the_directory_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("copy"));
        source_tree(&src);
        let sample = src.join("PG_VERSION");
        let mtime = |p: &Path| {
            let m = fs::metadata(p).unwrap();
            (m.mtime(), m.mtime_nsec())
        };
        let listing = |p: &Path| fs::read_dir(p).unwrap().count();
        let (was, count) = (mtime(&src), listing(&src));
        let clones = supports_reflink(&src, &sample);
        assert_eq!((mtime(&src), listing(&src)), (was, count));

        // ext2/3/4 and tmpfs have no reflinks; elsewhere (btrfs, XFS) either answer is fine.
        let fs_type = rustix::fs::statfs(tmp.path()).unwrap().f_type;
        if matches!(fs_type, 0xEF53 | 0x0102_1994) {
            assert!(!clones);
        }
        let opts = CopyOptions {
            method: CopyMethod::Clone,
            skip: &|_| false,
            progress: &|_| {},
            interrupted: &|| false,
        };
        match copy_tree(&src, &dst, &opts) {
            Err(TreeError::NoReflink { path }) if !clones => assert_eq!(path, dst),
            Ok(_) if clones => {}
            other => panic!("reflinks: {clones}, yet a clone copy gave {other:?}"),
        }
    }
}
