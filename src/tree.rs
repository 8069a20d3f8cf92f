//! Faithful copies of a PostgreSQL data directory, and the sizes of trees. A copy has to be
//! something PostgreSQL and the user can go back to as if it were the original, so it keeps
//! types, owners, modes, symlinks, hard links and times. std has no tree copy, and fs_extra's
//! follows symlinks, loses owners, modes and hard links, and creates directories 0755, which
//! PostgreSQL refuses as a data directory; hence the walk here.
//!
//! A copy can also be made over an earlier one ([`CopyOptions::over`]): the pre-copy of a
//! backup taken while the server served, made exact once it stops. Files provably unchanged
//! since are kept, the others compared page by page (or, where the caller knows which pages
//! changed, those alone: [`Refresh::Pages`]) and only differing pages written, and
//! [`same_tree`] proves the result.

use std::collections::HashSet;
use std::collections::hash_map::{Entry, HashMap};
use std::fs::{self, DirBuilder, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{AtFlags, CWD, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use walkdir::WalkDir;

use crate::pagedigests::PageDigests;

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
    #[error("the copy {path} is not its original ({what}); remove it and copy again")]
    Differs { path: PathBuf, what: String },
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
    /// Copy over what `dst` holds of an earlier copy begun at this time (a pre-copy, or one
    /// cut short): entries missing from the source go, and a file whose size and mtime are
    /// still the copy's and whose mtime is [`SETTLED`] older than this is kept; every other
    /// file is compared page by page and only the pages that differ are written. None: `dst`
    /// must not exist.
    pub over: Option<SystemTime>,
    /// The source serves meanwhile: entries that vanish under the copy are passed over, as a
    /// later copy over this one makes it exact.
    pub live: bool,
    /// At most this many bytes a second, by one copying thread (None: all the disk gives).
    pub rate: Option<u64>,
    /// Over an earlier copy: how to make each file it holds exact again, asked with the
    /// file's path below `src`.
    pub refresh: &'a dyn Fn(&Path) -> Refresh,
    /// Where the pages written are recorded as digests (while `live`), and where a copy over
    /// an earlier one finds those of the files it compares, reading only their source.
    pub digests: Option<&'a PageDigests>,
}

/// How a copy over an earlier one makes a file the earlier copy holds exact again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refresh {
    /// Keep it when provably unchanged (see [`SETTLED`]), else compare every page.
    Compare,
    /// Only these pages (ascending indices of [`PAGE`]-sized pages) and what lies past the
    /// earlier copy's end can differ: each is compared and written if it does, the rest of
    /// the file is kept unread.
    Pages(Vec<u32>),
}

impl Default for CopyOptions<'static> {
    fn default() -> Self {
        Self {
            method: CopyMethod::Copy,
            skip: &|_| false,
            progress: &|_| {},
            interrupted: &|| false,
            over: None,
            live: false,
            rate: None,
            refresh: &|_| Refresh::Compare,
            digests: None,
        }
    }
}

/// How long before an earlier copy began a file's mtime must lie for the file to count as
/// unchanged when its size and mtime are still the copy's. Every write moves the mtime to
/// the clock's coarse tick (a few ms) unless it began within the tick the mtime holds; so an
/// unchanged mtime this old means that no write began after it, and none PostgreSQL makes is
/// still under way a minute after it began.
pub const SETTLED: Duration = Duration::from_secs(60);

/// PostgreSQL's page: what a copy over an earlier one compares and writes.
pub const PAGE: usize = 8192;

impl std::ops::AddAssign for Copied {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.compared += other.compared;
        self.kept += other.kept;
    }
}

/// What [`copy_tree`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Bytes of file data written (cloned bytes count as written).
    pub written: u64,
    /// Bytes of file data compared with an earlier copy (read on both sides, or the source
    /// against the digests of what the earlier copy wrote).
    pub compared: u64,
    /// Bytes of file data kept from an earlier copy unread: unchanged since.
    pub kept: u64,
}

/// A directory of the copy whose contents are still being written.
struct OpenDir {
    src: PathBuf,
    dst: PathBuf,
    meta: Metadata,
}

/// A file of the copy whose contents and metadata a copying thread fills in.
struct FileJob {
    from: PathBuf,
    to: PathBuf,
    fill: Fill,
}

/// What a copying thread does to a file's contents.
enum Fill {
    /// Created empty by the walk: all of them.
    Whole,
    /// An earlier copy's: compare every page.
    Compare,
    /// An earlier copy's: compare these pages and the tail ([`Refresh::Pages`]).
    Pages(Vec<u32>),
}

impl FileJob {
    fn failed(&self, err: io::Error) -> TreeError {
        TreeError::Copy {
            src: self.from.clone(),
            dst: self.to.clone(),
            err,
        }
    }
}

/// What the walk found to do for one entry.
enum Todo {
    Dir,
    /// A regular file's contents.
    Fill(Fill),
    /// Nothing more: made whole (a link, a symlink), or a file kept, of this many bytes.
    Done(u64),
}

/// The budget of a paced copy, shared by its threads: bytes sent since a start that moves
/// on after a stall, so that a pause is not made up for by a burst.
struct Pace {
    rate: u64,
    sent: Mutex<(Instant, u64)>,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            sent: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Waits until `bytes` more are within the rate.
    fn take(&self, bytes: u64) {
        let due = {
            let mut sent = self.sent.lock().expect("not poisoned");
            let now = Instant::now();
            let due = sent.0 + Duration::from_secs_f64(sent.1 as f64 / self.rate as f64);
            if due + Duration::from_secs(1) < now {
                *sent = (now, 0);
            }
            sent.1 += bytes;
            sent.0 + Duration::from_secs_f64(sent.1 as f64 / self.rate as f64)
        };
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
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

/// Copies `src` to `dst` (which must not exist, unless copying [`CopyOptions::over`] an
/// earlier copy) keeping, for every entry: type, content, permission bits (setuid, setgid
/// and sticky too), owner and group, symlinks as symlinks, hard links as hard links within
/// the copy, and access and modification times to the nanosecond (of symlinks too). `dst`
/// itself gets `src`'s owner, mode and times.
///
/// One thread walks the tree and creates every entry (files empty, so that hard links and the
/// directories' listings are whole); several threads fill in the files. Each directory gets
/// its owner, mode and times once everything is written, deepest first: writing them earlier
/// would move its mtime, and until then it stays 0700 so nobody sees a half copy.
/// On error, `dst` is left as far as it got; removing it is the caller's call.
///
/// Before returning it syncs the filesystem holding `dst`, so that a caller renaming `dst`
/// into place after a crash finds either no copy or a complete one.
pub fn copy_tree(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<Copied, TreeError> {
    if opts.over.is_some() && dst.exists() {
        remove_extra(src, dst, opts)?;
    }
    let done = Done::default();
    let failure = Failure::default();
    let pace = opts.rate.map(Pace::new);
    // What the copying threads use (`skip` is the walk's, and need not be Sync).
    let (method, progress, interrupted, live) =
        (opts.method, opts.progress, opts.interrupted, opts.live);
    // Recorded by a live pass, used by the pass after it.
    // (A clone shares its blocks: digests would only have the next pass unshare them.)
    let digests = Digests {
        record: opts.digests.filter(|_| live && method == CopyMethod::Copy),
        known: opts.digests.filter(|_| !live),
    };
    let streams = if pace.is_some() { 1 } else { copy_streams() };
    let (jobs, queue) = std::sync::mpsc::sync_channel::<FileJob>(64);
    let queue = Mutex::new(queue);
    let dirs = std::thread::scope(|scope| {
        for _ in 0..streams {
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
                    let pacing = Pacing {
                        pace: pace.as_ref(),
                        progress,
                        interrupted,
                        root: dst,
                    };
                    let filled = match &job.fill {
                        Fill::Whole => fill_file(&job, method, &pacing, digests.record)
                            .map(|n| done.written.fetch_add(n, Ordering::Relaxed)),
                        Fill::Compare => refresh_file(&job, &pacing, &done, digests),
                        Fill::Pages(pages) => patch_file(&job, pages, &pacing, &done),
                    };
                    match filled {
                        Ok(_) => {}
                        Err(TreeError::Copy { err, .. }) if live && raced(&err) => {}
                        Err(err) => failure.record(err),
                    }
                }
            });
        }
        let walked = walk(src, dst, opts, &jobs, &failure, &done);
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
    Ok(Copied {
        written: done.written.into_inner(),
        compared: done.compared.into_inner(),
        kept: done.kept.into_inner(),
    })
}

/// The page digests a copy records, or compares with.
#[derive(Clone, Copy)]
struct Digests<'a> {
    record: Option<&'a PageDigests>,
    known: Option<&'a PageDigests>,
}

/// What the copying threads need besides the job.
struct Pacing<'a> {
    pace: Option<&'a Pace>,
    progress: &'a (dyn Fn(u64) + Sync),
    interrupted: &'a (dyn Fn() -> bool + Sync),
    /// The copy's root, for errors about the whole copy.
    root: &'a Path,
}

impl Pacing<'_> {
    /// Counts `bytes` just handled, within the rate; fails once interrupted.
    fn handled(&self, bytes: u64) -> Result<(), TreeError> {
        if let Some(pace) = self.pace {
            pace.take(bytes);
        }
        (self.progress)(bytes);
        if (self.interrupted)() {
            return Err(TreeError::Interrupted {
                path: self.root.to_owned(),
            });
        }
        Ok(())
    }
}

/// Whether an error of a live copy is the source changing under it (an entry removed, or
/// replaced by one of another type): the copy over it settles that entry.
fn raced(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::InvalidInput
    )
}

/// The counters behind [`Copied`], shared by the walk and the copying threads.
#[derive(Default)]
struct Done {
    written: AtomicU64,
    compared: AtomicU64,
    kept: AtomicU64,
}

/// Removes from an earlier copy `dst` every entry `src` no longer has (or leaves out), so
/// that the walk finds only entries to keep, refresh or replace.
fn remove_extra(src: &Path, dst: &Path, opts: &CopyOptions) -> Result<(), TreeError> {
    let mut entries = WalkDir::new(dst).min_depth(1).into_iter();
    while let Some(entry) = entries.next() {
        let entry = entry.map_err(|err| walk_error(dst, err))?;
        let rel = entry.path().strip_prefix(dst).expect("below dst");
        let skipped = entry.depth() == 1 && entry.file_name().to_str().is_some_and(opts.skip);
        let gone = match fs::symlink_metadata(src.join(rel)) {
            Ok(_) => skipped,
            // Under a directory that is now something else.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                true
            }
            Err(err) => {
                return Err(TreeError::Read {
                    path: src.join(rel),
                    err,
                });
            }
        };
        if gone {
            let is_dir = entry.file_type().is_dir();
            remove_entry(entry.path(), is_dir).map_err(|err| TreeError::Copy {
                src: src.join(rel),
                dst: entry.path().to_owned(),
                err,
            })?;
            if is_dir {
                entries.skip_current_dir();
            }
        }
    }
    Ok(())
}

fn remove_entry(path: &Path, is_dir: bool) -> io::Result<()> {
    if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
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
    done: &Done,
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
                let rel = entry.path().strip_prefix(src).unwrap_or(Path::new(""));
                let to = match entry.depth() {
                    0 => dst.to_owned(),
                    _ => dst.join(rel),
                };
                match create_entry(entry.path(), rel, &to, &meta, &mut links, opts)? {
                    Todo::Dir => dirs.push(OpenDir {
                        src: entry.into_path(),
                        dst: to,
                        meta,
                    }),
                    Todo::Fill(fill) => {
                        let from = entry.into_path();
                        // Sending fails only when every copying thread is gone, which they
                        // are not before the queue closes.
                        let _ = jobs.send(FileJob { from, to, fill });
                    }
                    Todo::Done(kept) => {
                        done.kept.fetch_add(kept, Ordering::Relaxed);
                        (opts.progress)(kept);
                    }
                }
                Ok(())
            });
        match made {
            Ok(()) => {}
            // Changed under a live copy (a WAL segment recycled, a table dropped).
            Err(TreeError::Read { err, .. } | TreeError::Copy { err, .. })
                if opts.live && raced(&err) => {}
            Err(err) => {
                failure.record(err);
                break;
            }
        }
    }
    dirs
}

/// Makes `to` the entry `from` (`rel` below the copy's source) is, but a regular file's
/// contents and metadata, which [`Todo::Fill`] leaves to a copying thread. Over an earlier
/// copy (`over`), an entry of the same type is reused and one of another type replaced.
/// Symlinks get their metadata here, directories theirs in `finish_dir`.
fn create_entry(
    from: &Path,
    rel: &Path,
    to: &Path,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
    opts: &CopyOptions,
) -> Result<Todo, TreeError> {
    let over = opts.over;
    let fail = |err: io::Error| TreeError::Copy {
        src: from.to_owned(),
        dst: to.to_owned(),
        err,
    };
    let kind = meta.file_type();
    let mut earlier = match over {
        Some(_) => match fs::symlink_metadata(to) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(fail(e)),
        },
        None => None,
    };
    if let Some(old) = earlier.take_if(|old| old.file_type() != kind) {
        remove_entry(to, old.is_dir()).map_err(fail)?;
    }
    if kind.is_dir() {
        if earlier.is_none() {
            DirBuilder::new().mode(0o700).create(to).map_err(fail)?;
        }
        return Ok(Todo::Dir);
    }
    // PostgreSQL keeps none; copying a socket or a device by content would be wrong anyway.
    // A running server's socket may be there (unix_socket_directories in PGDATA): it goes
    // with the stop, and the copy after the stop refuses whatever is left.
    if !kind.is_file() && !kind.is_symlink() {
        if opts.live {
            return Ok(Todo::Done(0));
        }
        return Err(TreeError::Special {
            path: from.to_owned(),
        });
    }
    if meta.nlink() > 1 {
        match links.entry((meta.dev(), meta.ino())) {
            // The inode is the first name's, which gets the contents and metadata.
            Entry::Occupied(first) => {
                let linked = fs::symlink_metadata(first.get()).map_err(fail)?;
                if earlier
                    .as_ref()
                    .is_some_and(|old| (old.dev(), old.ino()) == (linked.dev(), linked.ino()))
                {
                    return Ok(Todo::Done(0));
                }
                if earlier.is_some() {
                    fs::remove_file(to).map_err(fail)?;
                }
                fs::hard_link(first.get(), to).map_err(fail)?;
                return Ok(Todo::Done(0));
            }
            Entry::Vacant(slot) => {
                slot.insert(to.to_owned());
            }
        }
    }
    if kind.is_symlink() {
        let target = fs::read_link(from).map_err(fail)?;
        if earlier.is_none() || fs::read_link(to).map_err(fail)? != target {
            if earlier.is_some() {
                fs::remove_file(to).map_err(fail)?;
            }
            std::os::unix::fs::symlink(target, to).map_err(fail)?;
        }
        set_metadata(to, meta).map_err(fail)?;
        return Ok(Todo::Done(0));
    }
    let kept = || {
        // Owner and mode move no mtime.
        set_metadata(to, meta).map_err(fail)?;
        Ok(Todo::Done(meta.len()))
    };
    match (earlier, over) {
        // A file of one name over an earlier copy of several: a file of its own again.
        (Some(old), _) if old.nlink() > 1 && meta.nlink() == 1 => {
            fs::remove_file(to).map_err(fail)?;
            create_empty(to).map_err(fail)?;
            Ok(Todo::Fill(Fill::Whole))
        }
        (Some(old), Some(began)) => match (opts.refresh)(rel) {
            Refresh::Pages(pages) if pages.is_empty() && old.len() == meta.len() => kept(),
            Refresh::Pages(pages) => Ok(Todo::Fill(Fill::Pages(pages))),
            Refresh::Compare if unchanged(&old, meta, began) => kept(),
            Refresh::Compare => Ok(Todo::Fill(Fill::Compare)),
        },
        (Some(_), None) => Ok(Todo::Fill(Fill::Compare)),
        (None, _) => {
            create_empty(to).map_err(fail)?;
            Ok(Todo::Fill(Fill::Whole))
        }
    }
}

fn create_empty(to: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
}

/// Whether the earlier copy `copy` of a file is provably still its original `now` (see
/// [`SETTLED`]), when that copy began at `began`.
fn unchanged(copy: &Metadata, now: &Metadata, began: SystemTime) -> bool {
    let mtime = now.modified().ok();
    let settled = mtime
        .and_then(|m| m.checked_add(SETTLED))
        .is_some_and(|m| m < began);
    // A file with several names is compared: which names share the copy's inode is not
    // in its size and mtime.
    let single = copy.nlink() == 1 && now.nlink() == 1;
    settled && single && copy.len() == now.len() && copy.modified().ok() == mtime
}

/// Fills in a file that [`create_entry`] made: its contents, then its metadata. Returns the
/// bytes of file data copied.
fn fill_file(
    job: &FileJob,
    method: CopyMethod,
    pacing: &Pacing,
    record: Option<&PageDigests>,
) -> Result<u64, TreeError> {
    let fail = |err| job.failed(err);
    let (mut input, meta) = open_source(job)?;
    let mut output = OpenOptions::new().write(true).open(&job.to).map_err(fail)?;
    let mut digests = Vec::new();
    let mut aligned = true;
    let bytes = match (method, pacing.pace, record) {
        (CopyMethod::Copy, None, None) => {
            // In the kernel (copy_file_range) where it can.
            let bytes = io::copy(&mut input, &mut output).map_err(fail)?;
            (pacing.progress)(bytes);
            bytes
        }
        (CopyMethod::Copy, _, _) => {
            use std::os::unix::fs::FileExt;
            // Whole pages at a time, so that each page's digest is of the page.
            let mut buf = vec![0u8; 128 * PAGE];
            let mut bytes = 0;
            loop {
                let n = read_full(&input, &mut buf, bytes).map_err(fail)?;
                if n == 0 {
                    break bytes;
                }
                // A live file seen mid-extension, then longer: the digests from here on
                // would be of pages astride two.
                aligned &= bytes.is_multiple_of(PAGE as u64);
                output.write_all_at(&buf[..n], bytes).map_err(fail)?;
                if let Some(set) = record {
                    digests.extend(buf[..n].chunks(PAGE).map(|p| set.digest(p)));
                }
                pacing.handled(n as u64)?;
                bytes += n as u64;
            }
        }
        (CopyMethod::Clone, _, _) => {
            match rustix::fs::ioctl_ficlone(&output, &input) {
                Ok(()) => {}
                // What filesystems without reflinks (or across two filesystems) answer.
                // No quiet fallback to copying: that takes the space and time clone
                // promised not to, so the caller decides.
                Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY) => {
                    return Err(TreeError::NoReflink {
                        path: pacing.root.to_owned(),
                    });
                }
                Err(err) => return Err(fail(err.into())),
            }
            let bytes = output.metadata().map_err(fail)?.len();
            (pacing.progress)(bytes);
            bytes
        }
    };
    set_metadata(&job.to, &meta).map_err(fail)?;
    if let Some(set) = record {
        set.record(&job.to, aligned.then_some(&digests[..]))
            .map_err(fail)?;
    }
    Ok(bytes)
}

/// Opens a job's source with the metadata of what is read, taken before its contents: under
/// a live copy the name may lead to another file than the walk saw, and the copy must carry
/// the mtime of the file it holds.
fn open_source(job: &FileJob) -> Result<(File, Metadata), TreeError> {
    let input = File::open(&job.from).map_err(|err| job.failed(err))?;
    let meta = input.metadata().map_err(|err| job.failed(err))?;
    Ok((input, meta))
}

/// Makes an earlier copy of a file its original again: reads the original a chunk at a time
/// and writes only the pages that differ, then the length and metadata. The copy is read
/// beside it, unless `digests` knows its pages. Counts into `done`.
fn refresh_file(
    job: &FileJob,
    pacing: &Pacing,
    done: &Done,
    digests: Digests,
) -> Result<u64, TreeError> {
    use std::os::unix::fs::FileExt;
    let fail = |err| job.failed(err);
    let (input, meta) = open_source(job)?;
    let output = open_copy(job)?;
    let copy_len = output.metadata().map_err(fail)?.len();
    let known = match digests.known {
        // A digest for each page of the copy, and not one more.
        Some(set) => set
            .of(&job.to)
            .map_err(fail)?
            .filter(|d| d.len() as u64 == copy_len.div_ceil(PAGE as u64))
            .map(|d| (set, d)),
        None => None,
    };
    const CHUNK: usize = 128 * PAGE;
    let (mut new, mut old) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut recorded = Vec::new();
    let mut aligned = true;
    let mut at = 0u64;
    loop {
        let n = read_full(&input, &mut new, at).map_err(fail)?;
        if n == 0 {
            break;
        }
        aligned &= at.is_multiple_of(PAGE as u64);
        let had = match &known {
            Some(_) => usize::try_from(copy_len.saturating_sub(at)).map_or(n, |left| left.min(n)),
            None => read_full(&output, &mut old[..n], at).map_err(fail)?,
        };
        let mut written = 0;
        for (i, page) in new[..n].chunks(PAGE).enumerate() {
            let start = i * PAGE;
            let end = start + page.len();
            let same = match &known {
                // Its digest is of the copy's bytes of that page, however many there were.
                Some((set, pages)) => pages
                    .get(at as usize / PAGE + i)
                    .is_some_and(|d| *d == set.digest(page)),
                None => end <= had && old[start..end] == *page,
            };
            if !same {
                output.write_all_at(page, at + start as u64).map_err(fail)?;
                written += page.len() as u64;
            }
            if let Some(set) = digests.record {
                recorded.push(set.digest(page));
            }
        }
        done.compared.fetch_add(had as u64, Ordering::Relaxed);
        done.written.fetch_add(written, Ordering::Relaxed);
        at += n as u64;
        pacing.handled(n as u64)?;
    }
    output.set_len(at).map_err(fail)?;
    set_metadata(&job.to, &meta).map_err(fail)?;
    if let Some(set) = digests.record {
        set.record(&job.to, aligned.then_some(&recorded[..]))
            .map_err(fail)?;
    }
    Ok(at)
}

/// Makes an earlier copy of a file its original again where only `pages` (ascending) and
/// the tail past the copy's end can differ: reads those on both sides and writes the pages
/// that differ, then the length and metadata. The rest is counted kept, unread.
fn patch_file(
    job: &FileJob,
    pages: &[u32],
    pacing: &Pacing,
    done: &Done,
) -> Result<u64, TreeError> {
    use std::os::unix::fs::FileExt;
    let fail = |err| job.failed(err);
    let (input, meta) = open_source(job)?;
    let output = open_copy(job)?;
    let len = meta.len();
    let page_bytes = PAGE as u64;
    // The first page the earlier copy does not hold whole: from there on, all of them.
    let tail = output.metadata().map_err(fail)?.len() / page_bytes;
    let named = pages
        .iter()
        .map(|&p| u64::from(p))
        .take_while(|&p| p < tail);
    let (mut new, mut old) = (vec![0u8; PAGE], vec![0u8; PAGE]);
    let mut read = 0;
    for page in named.chain(tail..len.div_ceil(page_bytes)) {
        let at = page * page_bytes;
        let n = read_full(&input, &mut new, at).map_err(fail)?;
        if n == 0 {
            break;
        }
        let had = read_full(&output, &mut old[..n], at).map_err(fail)?;
        if had < n || old[..n] != new[..n] {
            output.write_all_at(&new[..n], at).map_err(fail)?;
            done.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        done.compared.fetch_add(had as u64, Ordering::Relaxed);
        read += n as u64;
        pacing.handled(n as u64)?;
    }
    let kept = len.saturating_sub(read);
    done.kept.fetch_add(kept, Ordering::Relaxed);
    (pacing.progress)(kept);
    output.set_len(len).map_err(fail)?;
    set_metadata(&job.to, &meta).map_err(fail)?;
    Ok(len)
}

/// Opens an earlier copy of a job's file to read and write it. A read-only file
/// (server.key, 0400) when pgup is not root is made writable until its metadata goes back on.
fn open_copy(job: &FileJob) -> Result<File, TreeError> {
    let fail = |err| job.failed(err);
    let open = || OpenOptions::new().read(true).write(true).open(&job.to);
    match open() {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mode = fs::symlink_metadata(&job.to).map_err(fail)?.mode();
            fs::set_permissions(&job.to, fs::Permissions::from_mode(mode | 0o200)).map_err(fail)?;
            open()
        }
        opened => opened,
    }
    .map_err(fail)
}

/// Reads into `buf` from `at` until it is full or the file ends; the bytes read.
fn read_full(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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

/// Proves that the copy `dst` is `src` (top-level entries `skip` names left out) by a walk
/// comparing each entry's type, mode, owner, size, mtime and symlink target, and that the
/// copy holds nothing more. `dst`'s own mode and times are the caller's to set. Returns the
/// entries compared. Contents are not read: a copy over an earlier one compares the pages
/// of every file not provably unchanged, which a whole copy reads anyway.
pub fn same_tree(src: &Path, dst: &Path, skip: &dyn Fn(&str) -> bool) -> Result<u64, TreeError> {
    let differs = |path: &Path, what: String| TreeError::Differs {
        path: path.to_owned(),
        what,
    };
    let mut compared = 0u64;
    let entries = WalkDir::new(src)
        .min_depth(1)
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || !e.file_name().to_str().is_some_and(skip));
    for entry in entries {
        let entry = entry.map_err(|err| walk_error(src, err))?;
        let rel = entry.path().strip_prefix(src).expect("below src");
        let to = dst.join(rel);
        let read = |path: &Path| {
            fs::symlink_metadata(path).map_err(|err| TreeError::Read {
                path: path.to_owned(),
                err,
            })
        };
        let (s, d) = (read(entry.path())?, read(&to)?);
        let facts = |m: &Metadata| {
            let len = if m.is_dir() { 0 } else { m.len() };
            (m.mode(), m.uid(), m.gid(), len, m.mtime(), m.mtime_nsec())
        };
        if facts(&s) != facts(&d) {
            return Err(differs(
                &to,
                format!(
                    "{} has mode, owner, size and mtime {:o} {}:{} {} {}.{:09}, the copy {:o} {}:{} {} {}.{:09}",
                    rel.display(),
                    s.mode(),
                    s.uid(),
                    s.gid(),
                    facts(&s).3,
                    s.mtime(),
                    s.mtime_nsec(),
                    d.mode(),
                    d.uid(),
                    d.gid(),
                    facts(&d).3,
                    d.mtime(),
                    d.mtime_nsec(),
                ),
            ));
        }
        if s.is_symlink() {
            let target = |p: &Path| {
                fs::read_link(p).map_err(|err| TreeError::Read {
                    path: p.to_owned(),
                    err,
                })
            };
            if target(entry.path())? != target(&to)? {
                return Err(differs(&to, format!("{} links elsewhere", rel.display())));
            }
        }
        compared += 1;
    }
    let held = WalkDir::new(dst).min_depth(1).into_iter().count() as u64;
    if held != compared {
        return Err(differs(
            dst,
            format!("it holds {held} entries where the original has {compared}"),
        ));
    }
    Ok(compared)
}

fn walk_error(root: &Path, err: walkdir::Error) -> TreeError {
    TreeError::Read {
        path: err.path().unwrap_or(root).to_owned(),
        err: err.into(),
    }
}

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

/// Whether files in `dir` can be reflink-cloned from `sample`, a regular file on the same
/// filesystem. The probe is an unnamed O_TMPFILE file: a check run on a data directory must
/// leave it byte-identical, so no entry may appear or vanish and the directory's mtime must
/// not move; the kernel frees the file when it is closed. Any failure, including a filesystem
/// without O_TMPFILE, answers false.
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
        // An entry a running server removed as it was walked takes no room.
        let meta = match entry.and_then(|e| e.metadata()) {
            Ok(meta) => meta,
            Err(e)
                if e.io_error()
                    .is_some_and(|e| e.kind() == io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
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
    /// A temporary directory holding [`source_tree`] at `src` and room for its copy at `copy`.
    fn source_and_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("copy"));
        source_tree(&src);
        (tmp, src, dst)
    }

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
        let (_tmp, src, dst) = source_and_copy();
        let before = entries(&src, "skipme");
        let reported = AtomicU64::new(0);
        let opts = CopyOptions {
            method: CopyMethod::Copy,
            skip: &|name| name == "skipme",
            progress: &|n| {
                reported.fetch_add(n, Ordering::Relaxed);
            },
            ..CopyOptions::default()
        };
        let copied = copy_tree(&src, &dst, &opts).unwrap().written;

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
            ..CopyOptions::default()
        };
        let dst = tmp.path().join("copy");
        let err = copy_tree(&src, &dst, &opts).unwrap_err();
        assert!(matches!(err, TreeError::Special { .. }), "{err}");
        // A running server's socket: passed over while it serves, refused after the stop.
        let _ = fs::remove_dir_all(&dst);
        let began = Some(SystemTime::now());
        let live = CopyOptions {
            over: began,
            live: true,
            ..CopyOptions::default()
        };
        copy_tree(&src, &dst, &live).unwrap();
        assert!(!dst.join("socket").exists());
        let after = CopyOptions {
            over: began,
            ..CopyOptions::default()
        };
        let err = copy_tree(&src, &dst, &after).unwrap_err();
        assert!(matches!(err, TreeError::Special { .. }), "{err}");
    }

    #[test]
    fn reflink_probe_leaves_the_directory_alone() {
        let (tmp, src, dst) = source_and_copy();
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
            ..CopyOptions::default()
        };
        match copy_tree(&src, &dst, &opts) {
            Err(TreeError::NoReflink { path }) if !clones => assert_eq!(path, dst),
            Ok(_) if clones => {}
            other => panic!("reflinks: {clones}, yet a clone copy gave {other:?}"),
        }
    }

    fn write_at(path: &Path, at: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, at).unwrap();
    }

    /// A 64-page table in the source, each page filled with its number.
    fn numbered_table(src: &Path) -> PathBuf {
        let table = src.join("base/1/16384");
        let pages: Vec<u8> = (0..64 * PAGE).map(|i| (i / PAGE) as u8).collect();
        fs::write(&table, pages).unwrap();
        table
    }

    #[test]
    fn copying_over_an_earlier_copy_writes_only_what_changed() {
        let (_tmp, src, dst) = source_and_copy();
        let table = numbered_table(&src);
        fs::write(src.join("base/1/16385"), vec![7u8; 4 * PAGE]).unwrap();
        fs::write(src.join("base/1/gone"), b"dropped").unwrap();
        dir(&src.join("base/2"), 0o700);
        fs::write(src.join("base/2/x"), b"in a directory that becomes a file").unwrap();
        let began = SystemTime::now();
        let live = CopyOptions {
            over: Some(began),
            live: true,
            ..CopyOptions::default()
        };
        let first = copy_tree(&src, &dst, &live).unwrap();
        assert_eq!((first.compared, first.kept), (0, 0), "nothing to copy over");

        // What a server does between the passes, and a stop's checkpoint.
        write_at(&table, 5 * PAGE as u64, &[0xAA; PAGE]);
        write_at(&table, 64 * PAGE as u64, &[0xBB; PAGE]); // extended
        OpenOptions::new()
            .write(true)
            .open(src.join("base/1/16385"))
            .unwrap()
            .set_len(PAGE as u64)
            .unwrap(); // truncated
        fs::remove_file(src.join("base/1/gone")).unwrap();
        fs::remove_dir_all(src.join("base/2")).unwrap();
        fs::write(src.join("base/2"), b"now a file").unwrap();
        fs::write(src.join("base/1/new"), b"created").unwrap();
        fs::remove_dir(src.join("empty")).unwrap();
        fs::write(src.join("empty"), b"a file where a directory was").unwrap();
        fs::remove_file(src.join("dangling")).unwrap();
        symlink("elsewhere", src.join("dangling")).unwrap();
        fs::set_permissions(src.join("PG_VERSION"), fs::Permissions::from_mode(0o640)).unwrap();

        let second = copy_tree(
            &src,
            &dst,
            &CopyOptions {
                over: Some(began),
                ..CopyOptions::default()
            },
        )
        .unwrap();
        let page = PAGE as u64;
        assert_eq!(
            second.written,
            2 * page + 7 + 28 + 10,
            "the changed and the added page, and the three new files"
        );
        assert_eq!(
            second.compared,
            64 * page + page + 6,
            "the table, the truncated file and the one with two names read back"
        );
        assert!(
            second.kept > 0,
            "the files untouched since long before are kept unread"
        );
        assert_eq!(
            same_tree(&src, &dst, &|_| false).unwrap(),
            entries(&src, "").len() as u64 - 1
        );
        for rel in [
            "base/1/16384",
            "base/1/16385",
            "base/1/new",
            "empty",
            "PG_VERSION",
        ] {
            assert_eq!(
                fs::read(src.join(rel)).unwrap(),
                fs::read(dst.join(rel)).unwrap(),
                "{rel}"
            );
        }
        assert!(!dst.join("base/1/gone").exists());
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("elsewhere")
        );
    }

    #[test]
    fn pages_named_are_the_only_ones_read_with_the_tail() {
        let (_tmp, src, dst) = source_and_copy();
        let table = src.join("base/1/16384");
        fs::write(&table, vec![1u8; 16 * PAGE]).unwrap();
        fs::write(src.join("base/1/16385"), vec![2u8; 4 * PAGE]).unwrap();
        let began = SystemTime::now();
        let over = CopyOptions {
            over: Some(began),
            ..CopyOptions::default()
        };
        copy_tree(&src, &dst, &over).unwrap();
        write_at(&table, 3 * PAGE as u64, &[0xAA; PAGE]);
        write_at(&table, 9 * PAGE as u64, &[0xCC; PAGE]); // a change no one names
        write_at(&table, 16 * PAGE as u64, &[0xBB; PAGE / 2]); // extended by half a page
        let named = |rel: &Path| match rel.to_str() {
            Some("base/1/16384") => Refresh::Pages(vec![2, 3, 40]),
            Some("base/1/16385") => Refresh::Pages(vec![]),
            _ => Refresh::Compare,
        };
        let second = copy_tree(
            &src,
            &dst,
            &CopyOptions {
                refresh: &named,
                ..over
            },
        )
        .unwrap();
        let page = PAGE as u64;
        assert_eq!(second.written, page + page / 2, "page 3 and the tail");
        let copy = fs::read(dst.join("base/1/16384")).unwrap();
        let original = fs::read(&table).unwrap();
        assert_eq!(copy.len(), original.len());
        assert_eq!(copy[3 * PAGE..4 * PAGE], original[3 * PAGE..4 * PAGE]);
        assert_eq!(copy[16 * PAGE..], original[16 * PAGE..]);
        assert_eq!(copy[9 * PAGE], 1, "a page not named is not read");
        assert!(
            second.kept >= 14 * page + 4 * page,
            "the rest is kept unread"
        );
        assert!(second.compared < 3 * page + 6 + 100, "{second:?}");
    }

    #[test]
    fn after_a_first_pass_with_digests_only_the_originals_are_read() {
        let (tmp, src, dst) = source_and_copy();
        let table = numbered_table(&src);
        let short = src.join("base/1/16385");
        fs::write(&short, vec![7u8; 4 * PAGE + 100]).unwrap();
        let set = PageDigests::new_in(tmp.path()).unwrap();
        let began = SystemTime::now();
        let first = CopyOptions {
            over: Some(began),
            live: true,
            digests: Some(&set),
            ..CopyOptions::default()
        };
        copy_tree(&src, &dst, &first).unwrap();
        let page = PAGE as u64;
        write_at(&table, 5 * page, &[0xAA; PAGE]);
        write_at(&table, 64 * page, &[0xBB; PAGE / 2]); // extended by half a page
        write_at(&short, 4 * page, &[7u8; 200]); // its last, short page longer
        let after = CopyOptions {
            over: Some(began),
            digests: Some(&set),
            ..CopyOptions::default()
        };
        let second = copy_tree(&src, &dst, &after).unwrap();
        assert_eq!(second.written, page + page / 2 + 200, "{second:?}");
        for file in [&table, &short] {
            let copy = dst.join(file.strip_prefix(&src).unwrap());
            assert_eq!(fs::read(copy).unwrap(), fs::read(file).unwrap());
        }
        same_tree(&src, &dst, &|_| false).unwrap();

        // The digests, not the copy, decide: recorded as if the copy held other pages, every
        // page is written though the copy is already its original.
        let copy = dst.join("base/1/16384");
        // One digest too many (pages astride two, as a live file seen mid-extension would
        // give) is not trusted: the copy is read back.
        set.record(&copy, Some(&vec![set.digest(&[0x55; PAGE]); 66]))
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let ignored = copy_tree(&src, &dst, &after).unwrap();
        assert!(ignored.written < page, "{ignored:?}");
        let other = vec![set.digest(&[0x55; PAGE]); 65];
        set.record(&copy, Some(&other)).unwrap();
        // Past the clock's coarse tick, so that the writes below move the copy's ctime.
        std::thread::sleep(Duration::from_millis(20));
        let third = copy_tree(&src, &dst, &after).unwrap();
        assert!(third.written >= 64 * page + page / 2, "{third:?}");
        assert_eq!(fs::read(&copy).unwrap(), fs::read(&table).unwrap());
        // Written since, the copy's digests are not trusted: it is read back, and equal.
        let fourth = copy_tree(&src, &dst, &after).unwrap();
        assert!(fourth.written < page, "{fourth:?}");
    }

    #[test]
    fn a_recent_file_is_read_back_even_when_its_mtime_is_the_copys() {
        let (_tmp, src, dst) = source_and_copy();
        fs::write(src.join("base/1/data"), vec![1u8; 3 * PAGE]).unwrap();
        let over = CopyOptions {
            over: Some(SystemTime::now()),
            ..CopyOptions::default()
        };
        copy_tree(&src, &dst, &over).unwrap();
        let again = copy_tree(&src, &dst, &over).unwrap();
        assert_eq!(
            again.compared,
            3 * PAGE as u64 + 6,
            "written within a minute: compared (and the file with two names, as always)"
        );
        assert_eq!(again.written, 0, "and nothing differs");
    }

    #[test]
    fn a_copy_that_is_not_its_original_is_caught() {
        let (_tmp, src, dst) = source_and_copy();
        copy_tree(&src, &dst, &CopyOptions::default()).unwrap();
        assert!(same_tree(&src, &dst, &|_| false).is_ok());
        fs::set_permissions(dst.join("PG_VERSION"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = same_tree(&src, &dst, &|_| false).unwrap_err();
        assert!(err.to_string().contains("PG_VERSION has mode"), "{err}");
        fs::set_permissions(dst.join("PG_VERSION"), fs::Permissions::from_mode(0o600)).unwrap();
        set_times(&dst.join("PG_VERSION"), PAST);
        assert!(same_tree(&src, &dst, &|_| false).is_ok());
        fs::write(dst.join("base/extra"), b"").unwrap();
        set_metadata(&dst.join("base"), &fs::metadata(src.join("base")).unwrap()).unwrap();
        let err = same_tree(&src, &dst, &|_| false).unwrap_err();
        assert!(
            err.to_string().contains("entries where the original has"),
            "{err}"
        );
    }

    #[test]
    fn a_paced_copy_keeps_to_its_rate() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("copy"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("big"), vec![3u8; 3 << 20]).unwrap();
        let began = Instant::now();
        let opts = CopyOptions {
            rate: Some(6 << 20),
            ..CopyOptions::default()
        };
        assert_eq!(copy_tree(&src, &dst, &opts).unwrap().written, 3 << 20);
        // A floor, not a speed: 3 MiB at 6 MiB/s cannot take less than half a second.
        assert!(
            began.elapsed() >= Duration::from_millis(450),
            "{:?}",
            began.elapsed()
        );
        assert_eq!(
            fs::read(src.join("big")).unwrap(),
            fs::read(dst.join("big")).unwrap()
        );
    }
}
