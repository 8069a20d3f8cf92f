//! The pages of the old cluster that changed since a checkpoint, as its WAL says: what lets
//! the backup's second pass, after the stop, read and write only those pages instead of
//! comparing every page of the data.
//!
//! Every change to a page of a permanent relation is in the WAL, a hint bit's too where the
//! cluster logs those (data checksums or `wal_log_hints`, with `full_page_writes`): the first
//! change to a page after a checkpoint logs it whole. So once a checkpoint has completed,
//! every page that differs on disk from what it was then is named by a record after the
//! checkpoint's redo point, and a copy begun after it is made exact by those pages, the
//! relations created or truncated since (copied whole), and the files' lengths; pg_rewind
//! relies on the same. A replication slot holds the WAL from before that checkpoint until the
//! stop (a checkpoint removes the WAL it no longer needs); the old major's `pg_waldump`
//! reads it after the stop, up to the shutdown checkpoint. What the WAL does not name page by
//! page is compared: unlogged relations, the visibility and free space maps, and the files
//! that are not relations (pg_control, pg_xact, ...).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Component, Path};

use tokio_postgres::Client;

use crate::cluster::{Lsn, WalStart};
use crate::docker::Container;
use crate::pgclient::{self, ClientError};
use crate::relay::Relay;
use crate::tree::{self, Refresh};

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("the WAL does not name every changed page: {0}")]
    Unfit(String),
    #[error("cannot read the WAL: {0}")]
    Unreadable(String),
}

type Result<T> = std::result::Result<T, WalError>;

/// The replication slot an upgrade keeps the WAL with, named by its stamp.
pub fn slot_name(stamp: &str) -> String {
    format!("pgup_{}", stamp.to_ascii_lowercase())
}

/// Whether the cluster's settings let its WAL name every changed page, from the words of
/// pg_controldata or the running server; the reason when not.
pub fn fit(
    wal_level: &str,
    checksums: bool,
    wal_log_hints: bool,
) -> std::result::Result<(), String> {
    if wal_level == "minimal" {
        return Err("wal_level is minimal, so some writes skip the WAL".into());
    }
    if !checksums && !wal_log_hints {
        return Err(
            "without data checksums or wal_log_hints a hint bit's change leaves no WAL record"
                .into(),
        );
    }
    Ok(())
}

/// Asks the running server, over `client` (a superuser's), to keep its WAL from a checkpoint
/// taken now: creates the slot unless it exists (a resumed first pass reuses it, and with it
/// `earlier`, the start recorded then), checkpoints, and returns where its WAL starts.
pub async fn hold(client: &Client, slot: &str, earlier: Option<WalStart>) -> Result<WalStart> {
    let q = pgclient::query_err("template1");
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'), current_setting('data_checksums'), \
             current_setting('wal_log_hints'), current_setting('full_page_writes'), \
             current_setting('block_size'), pg_is_in_recovery(), \
             EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = $1)",
            &[&slot],
        )
        .await
        .map_err(&q)?;
    let (level, sums, hints, fpw, block): (String, String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    let (recovering, held): (bool, bool) = (row.get(5), row.get(6));
    fit(&level, sums == "on", hints == "on").map_err(WalError::Unfit)?;
    if fpw != "on" {
        return Err(WalError::Unfit("full_page_writes is off".into()));
    }
    if block != tree::PAGE.to_string() {
        return Err(WalError::Unfit(format!("the block size is {block} bytes")));
    }
    if recovering {
        return Err(WalError::Unfit("the server is in recovery".into()));
    }
    if let (true, Some(since)) = (held, earlier) {
        return Ok(since);
    }
    if !held {
        client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true, false)",
                &[&slot],
            )
            .await
            .map_err(|e| {
                WalError::Unfit(format!("no replication slot: {}", pgclient::message(&e)))
            })?;
    }
    let start = async {
        // Completed before the first pass begins: every page written since was changed
        // after its redo point.
        client.batch_execute("CHECKPOINT").await.map_err(&q)?;
        let row = client
            .query_one(
                "SELECT redo_lsn::text, timeline_id::int8 FROM pg_control_checkpoint()",
                &[],
            )
            .await
            .map_err(&q)?;
        let (redo, timeline): (String, i64) = (row.get(0), row.get(1));
        Ok(WalStart {
            redo: redo
                .parse()
                .map_err(|_| WalError::Unreadable(format!("a redo point of {redo:?}")))?,
            timeline: u32::try_from(timeline).unwrap_or_default(),
        })
    }
    .await;
    if start.is_err() {
        let _ = client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await;
    }
    start
}

/// A superuser's connection to a running old server, through a relay to its socket.
pub struct Live {
    pub client: Client,
    _relay: Relay,
}

/// Connects to the server running on `data` in `server`'s container as `superuser`, or, when
/// unknown, as the bootstrap superuser asked as the image's login.
pub async fn connect(
    server: &Container,
    data: &Path,
    (uid, gid): (u32, u32),
    superuser: Option<&str>,
) -> Result<Live> {
    let (relay, _) = server
        .pid
        .ok_or_else(|| "is not running".to_owned())
        .and_then(|pid| crate::relay::to_server(data, pid, uid, gid))
        .map_err(|why| WalError::Unfit(format!("the server in container {} {why}", server.name)))?;
    let user = match superuser {
        Some(user) => user.to_owned(),
        None => {
            let login = server
                .env
                .get("POSTGRES_USER")
                .map_or("postgres", String::as_str);
            pgclient::bootstrap_superuser(relay.dir(), login).await?
        }
    };
    let client = pgclient::connect(relay.dir(), &user, "template1").await?;
    Ok(Live {
        client,
        _relay: relay,
    })
}

/// Lets the slot go: dropped by the server running on `data` (in `server`'s container), or
/// removed from the cluster when no server runs on it. True when there was one.
pub async fn release(
    server: Option<&Container>,
    data: &Path,
    owner: (u32, u32),
    slot: &str,
) -> Result<bool> {
    let Some(server) = server else {
        return release_stopped(data, slot).map_err(|e| WalError::Unreadable(e.to_string()));
    };
    let live = connect(server, data, owner, None).await?;
    let dropped = live
        .client
        .execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(pgclient::query_err("template1"))?;
    Ok(dropped > 0)
}

/// Removes the slot from a cluster whose server is stopped (what dropping it does on disk);
/// true when it was there.
pub fn release_stopped(data: &Path, slot: &str) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(data.join("pg_replslot").join(slot)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A relation as the WAL names it: tablespace, database and file number.
type Rel = (u32, u32, u32);

/// What the WAL says changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The pages named, per relation, fork (0 main, 1 fsm, 2 vm, 3 init) and segment file:
    /// page indices within that file, ascending once read.
    pages: HashMap<(Rel, u8, u32), Vec<u32>>,
    /// Relations created or truncated since: every file of theirs is compared.
    whole: HashSet<Rel>,
    /// Databases created since (tablespace, database): compared as a whole.
    databases: HashSet<(u32, u32)>,
    /// The WAL segments written from the redo point to the shutdown checkpoint, and the
    /// segments' size. Each one before was whole before the checkpoint; each one after,
    /// recycled ahead under its name, is written only once the WAL reaches it: neither moved.
    written: (u64, u64),
    segment_bytes: u64,
}

/// Which tree a copied file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    Data,
    /// The directory of the tablespace of this oid.
    Tablespace(u32),
    /// A WAL directory outside PGDATA.
    Wal,
}

impl Changes {
    /// Reads pg_waldump's output of the WAL from `redo` to `end`, the shutdown checkpoint.
    /// `blocks_per_segment`: how many pages one file of a relation holds; `segment_bytes`, one
    /// file of WAL.
    pub fn parse(
        out: impl BufRead,
        (redo, end): (Lsn, Lsn),
        blocks_per_segment: u64,
        segment_bytes: u64,
    ) -> Result<Self> {
        let per_file = u32::try_from(blocks_per_segment)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| WalError::Unfit(format!("{blocks_per_segment} blocks per segment")))?;
        if segment_bytes == 0 {
            return Err(WalError::Unfit("WAL segments of 0 bytes".into()));
        }
        let mut changes = Self {
            // The checkpoint record may cross into the next segment.
            written: (
                redo.0 / segment_bytes,
                (end.0 + tree::PAGE as u64) / segment_bytes,
            ),
            segment_bytes,
            ..Self::default()
        };
        for line in out.lines() {
            let line = line.map_err(|e| WalError::Unreadable(e.to_string()))?;
            changes.record(&line, per_file)?;
        }
        for pages in changes.pages.values_mut() {
            pages.sort_unstable();
            pages.dedup();
        }
        Ok(changes)
    }

    fn record(&mut self, line: &str, per_file: u32) -> Result<()> {
        let unknown = || WalError::Unreadable(format!("a record pgup does not know: {line}"));
        let rmgr = line
            .strip_prefix("rmgr: ")
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(unknown)?;
        let desc = line.split_once("desc: ").map_or("", |(_, d)| d);
        match rmgr {
            "Storage" => {
                let path = desc
                    .strip_prefix("CREATE ")
                    .or_else(|| desc.strip_prefix("TRUNCATE "))
                    .and_then(|rest| rest.split_whitespace().next())
                    .ok_or_else(unknown)?;
                let (rel, _, _) = relation_file(Path::new(path), None).ok_or_else(unknown)?;
                self.whole.insert(rel);
            }
            "Database" => {
                // "copy dir 1663/1 to 1663/16395" (a FILE_COPY create), "create dir 1663/16394"
                // (WAL_LOG), "dir 1663/16394" (a drop: the files go).
                let (_, rest) = desc.split_once(' ').ok_or_else(unknown)?;
                let created = match rest.split_once(" to ") {
                    Some((_, to)) if rest.starts_with("copy dir ") => Some(to),
                    _ => rest.strip_prefix("create dir "),
                };
                match created {
                    Some(at) => {
                        let (spc, db) = at.trim().split_once('/').ok_or_else(unknown)?;
                        let db = db.split_whitespace().next().unwrap_or_default();
                        self.databases.insert((
                            spc.parse().map_err(|_| unknown())?,
                            db.parse().map_err(|_| unknown())?,
                        ));
                    }
                    None if rest.starts_with("dir ") => {}
                    None => return Err(unknown()),
                }
            }
            _ => {}
        }
        let mut refs = line.split("blkref #").skip(1);
        for r in refs.by_ref() {
            let (rel, fork, block) = block_ref(r).ok_or_else(unknown)?;
            self.pages
                .entry((rel, fork, block / per_file))
                .or_default()
                .push(block % per_file);
        }
        Ok(())
    }

    /// How to make the backup's file at `rel` (below `tree`) exact: the pages the WAL names,
    /// or a comparison where the WAL may not name them all. `unlogged`: whether the relation
    /// has an init fork.
    pub fn refresh(&self, rel: &Path, tree: Tree, unlogged: bool) -> Refresh {
        let segment = match tree {
            Tree::Data => rel.strip_prefix("pg_wal").ok(),
            Tree::Wal => Some(rel),
            Tree::Tablespace(_) => None,
        };
        if let Some(segment) = segment.and_then(|s| s.to_str()) {
            return match self.wal_segment(segment) {
                Some(n) if n < self.written.0 || n > self.written.1 => Refresh::Pages(Vec::new()),
                _ => Refresh::Compare,
            };
        }
        let tablespace = match tree {
            Tree::Tablespace(oid) => Some(oid),
            _ => None,
        };
        let Some((rel, fork, segment)) = relation_file(rel, tablespace) else {
            return Refresh::Compare;
        };
        let database = (rel.0, rel.1);
        // A change to a heap page clears its bit in the visibility map with no reference to
        // the map's page, and the free space map is hints: both small (a page of the map per
        // 256 MB of table), both compared.
        let followed = match fork {
            MAIN => !unlogged,
            INIT => true,
            _ => false,
        };
        if !followed || self.whole.contains(&rel) || self.databases.contains(&database) {
            return Refresh::Compare;
        }
        Refresh::Pages(
            self.pages
                .get(&(rel, fork, segment))
                .cloned()
                .unwrap_or_default(),
        )
    }

    /// The number of the WAL segment file named `name` (timeline, log, segment: 24 hex digits).
    fn wal_segment(&self, name: &str) -> Option<u64> {
        if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let log = u64::from_str_radix(&name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&name[16..], 16).ok()?;
        Some(log * (0x1_0000_0000 / self.segment_bytes) + seg)
    }

    /// Pages named, in all.
    pub fn page_count(&self) -> usize {
        self.pages.values().map(Vec::len).sum()
    }
}

const FORKS: [&str; 4] = ["main", "fsm", "vm", "init"];
const MAIN: u8 = 0;
const INIT: u8 = 3;
const DEFAULT_TABLESPACE: u32 = 1663;
const GLOBAL_TABLESPACE: u32 = 1664;

/// "0: rel 1663/5/16384 fork vm blk 0 FPW, ..." → the relation, fork and block.
fn block_ref(text: &str) -> Option<(Rel, u8, u32)> {
    let (_, rest) = text.split_once("rel ")?;
    let mut words = rest.split([' ', ',']).filter(|w| !w.is_empty());
    let mut ids = words.next()?.split('/').map(str::parse::<u32>);
    let rel = (ids.next()?.ok()?, ids.next()?.ok()?, ids.next()?.ok()?);
    let mut fork = 0;
    loop {
        match words.next()? {
            "fork" => {
                let name = words.next()?;
                fork = match FORKS.iter().position(|f| *f == name) {
                    Some(i) => i as u8,
                    None => name
                        .parse()
                        .ok()
                        .filter(|n| usize::from(*n) < FORKS.len())?,
                };
            }
            "blk" => return Some((rel, fork, words.next()?.parse().ok()?)),
            _ => return None,
        }
    }
}

/// The relation, fork and segment a file of a relation is, from its path below PGDATA
/// (`base/<db>/<file>`, `global/<file>`, `pg_tblspc/<spc>/PG_…/<db>/<file>`), or below
/// the directory of `tablespace` (`PG_…/<db>/<file>`). None for any other file.
fn relation_file(path: &Path, tablespace: Option<u32>) -> Option<(Rel, u8, u32)> {
    let parts: Vec<&str> = path
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let version = |v: &str| v.starts_with("PG_");
    let (spc, db, file) = match (tablespace, parts.as_slice()) {
        (None, ["base", db, file]) => (DEFAULT_TABLESPACE, db.parse().ok()?, *file),
        (None, ["global", file]) => (GLOBAL_TABLESPACE, 0, *file),
        (None, ["pg_tblspc", spc, v, db, file]) if version(v) => {
            (spc.parse().ok()?, db.parse().ok()?, *file)
        }
        (Some(spc), [v, db, file]) if version(v) => (spc, db.parse().ok()?, *file),
        _ => return None,
    };
    let (name, segment) = match file.split_once('.') {
        Some((name, seg)) => (name, seg.parse().ok()?),
        None => (file, 0),
    };
    let (number, fork) = match name.split_once('_') {
        Some((number, fork)) => (number, FORKS.iter().position(|f| *f == fork)? as u8),
        None => (name, 0),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(((spc, db, number.parse().ok()?), fork, segment))
}

/// Whether the relation of the file at `path` (a relation's file, by its name) has an init
/// fork beside it: an unlogged relation, whose other forks the WAL does not follow.
pub fn is_unlogged(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let number = name.split(['.', '_']).next().unwrap_or_default();
    path.with_file_name(format!("{number}_init")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/0181E480, prev 0/0181E448, desc: CHECKPOINT_ONLINE redo 0/181E448; tli 1
rmgr: Storage     len (rec/tot):     42/    42, tx:        485, lsn: 0/0181E548, prev 0/0181E518, desc: CREATE base/13445/16384
rmgr: Heap        len (rec/tot):     59/    59, tx:        500, lsn: 0/01656E28, prev 0/01656DF0, desc: INSERT off 2 flags 0x00, blkref #0: rel 1663/5/16400 blk 131073
rmgr: Heap2       len (rec/tot):     64/  8256, tx:          0, lsn: 0/0184EFB0, prev 0/0184EF38, desc: VISIBLE cutoff xid 486 flags 0x01, blkref #0: rel 1663/5/16400 fork vm blk 0 FPW, blkref #1: rel 1663/5/16400 blk 7
rmgr: XLOG        len (rec/tot):     49/  8241, tx:        485, lsn: 0/0182D8A0, prev 0/0182D860, desc: FPI_FOR_HINT , blkref #0: rel 1664/0/1262 fork fsm blk 2 FPW
rmgr: Heap        len (rec/tot):     59/    59, tx:        500, lsn: 0/01656E28, prev 0/01656DF0, desc: INSERT off: 2, flags: 0x00, blkref #0: rel 16385/5/16390 blk 3
rmgr: Heap        len (rec/tot):     59/    59, tx:        500, lsn: 0/01656E28, prev 0/01656DF0, desc: INSERT off: 2, flags: 0x00, blkref #0: rel 1663/5/16400 blk 7
rmgr: Storage     len (rec/tot):     46/    46, tx:        500, lsn: 0/0184F000, prev 0/0184EFB0, desc: TRUNCATE base/5/16395 to 1 blocks flags 7
rmgr: Database    len (rec/tot):     42/    42, tx:        501, lsn: 0/0184F100, prev 0/0184F000, desc: CREATE copy dir 1663/1 to 1663/16395
rmgr: Database    len (rec/tot):     42/    42, tx:        502, lsn: 0/0184F200, prev 0/0184F100, desc: CREATE_WAL_LOG create dir 1663/16396
rmgr: Database    len (rec/tot):     42/    42, tx:        503, lsn: 0/0184F300, prev 0/0184F200, desc: DROP dir 1663/16300
";

    fn changes() -> Changes {
        Changes::parse(
            DUMP.as_bytes(),
            (Lsn(0x1_0181_E448), Lsn(0x1_02FF_FF80)),
            131072,
            16 << 20,
        )
        .unwrap()
    }

    #[test]
    fn pages_are_found_per_file() {
        let c = changes();
        let pages = |path: &str| c.refresh(Path::new(path), Tree::Data, false);
        assert_eq!(pages("base/5/16400"), Refresh::Pages(vec![7]));
        assert_eq!(pages("base/5/16400.1"), Refresh::Pages(vec![1]));
        assert_eq!(pages("base/5/16401"), Refresh::Pages(vec![]));
        assert_eq!(pages("global/1262"), Refresh::Pages(vec![]));
        assert_eq!(
            c.refresh(
                Path::new("PG_13_202007201/5/16390"),
                Tree::Tablespace(16385),
                false
            ),
            Refresh::Pages(vec![3])
        );
        assert_eq!(
            pages("pg_tblspc/16385/PG_13_202007201/5/16390"),
            Refresh::Pages(vec![3])
        );
        assert_eq!(c.page_count(), 5, "the maps' pages too");
    }

    #[test]
    fn what_the_wal_does_not_follow_page_by_page_is_compared() {
        let c = changes();
        let pages = |path: &str| c.refresh(Path::new(path), Tree::Data, false);
        for compared in [
            "base/13445/16384", // created since
            "base/13445/16384_fsm",
            "base/5/16395.2",  // truncated since
            "base/5/16400_vm", // the maps
            "global/1262_fsm",
            "base/16395/1259", // in a database copied since
            "base/16396/1259", // in one created since
            "global/pg_control",
            "base/5/pg_filenode.map",
            "base/5/t3_16500",
            "pg_xact/0000",
            "base/5/PG_VERSION",
        ] {
            assert_eq!(pages(compared), Refresh::Compare, "{compared}");
        }
        // An unlogged relation's forks but its init fork.
        assert_eq!(
            c.refresh(Path::new("base/5/16400"), Tree::Data, true),
            Refresh::Compare
        );
        assert_eq!(
            c.refresh(Path::new("base/5/16400_init"), Tree::Data, true),
            Refresh::Pages(vec![])
        );
    }

    #[test]
    fn wal_segments_not_written_since_the_redo_point_are_kept() {
        let c = changes();
        // The redo point 1/181E448 is in segment 1/01 (16 MB segments), the shutdown
        // checkpoint's record at 1/2FFFF80 ends in 1/03.
        let keep = Refresh::Pages(vec![]);
        assert_eq!(
            c.refresh(
                Path::new("pg_wal/000000010000000100000000"),
                Tree::Data,
                false
            ),
            keep
        );
        assert_eq!(
            c.refresh(Path::new("000000010000000000000FF"), Tree::Wal, false),
            Refresh::Compare
        );
        assert_eq!(
            c.refresh(Path::new("0000000100000000000000FF"), Tree::Wal, false),
            keep
        );
        assert_eq!(
            c.refresh(
                Path::new("pg_wal/000000010000000100000004"),
                Tree::Data,
                false
            ),
            keep,
            "recycled ahead"
        );
        for compared in [
            "pg_wal/000000010000000100000001",
            "pg_wal/000000010000000100000002",
            "pg_wal/000000010000000100000003",
            "pg_wal/00000002.history",
            "pg_wal/archive_status/000000010000000100000000.done",
            "pg_wal/000000010000000100000000.partial",
        ] {
            assert_eq!(
                c.refresh(Path::new(compared), Tree::Data, false),
                Refresh::Compare,
                "{compared}"
            );
        }
    }

    #[test]
    fn records_pgup_does_not_know_stop_the_reading() {
        for odd in [
            "rmgr: Storage     len (rec/tot): 42/ 42, tx: 1, lsn: 0/1, prev 0/0, desc: MOVE base/5/1",
            "rmgr: Database    len (rec/tot): 42/ 42, tx: 1, lsn: 0/1, prev 0/0, desc: RENAME x",
            "rmgr: Heap        len (rec/tot): 42/ 42, tx: 1, lsn: 0/1, prev 0/0, desc: INSERT, blkref #0: rel 1663/5 blk 1",
            "pg_waldump: error: could not find file \"000000010000000000000001\"",
        ] {
            let parsed = Changes::parse(odd.as_bytes(), (Lsn(0), Lsn(0)), 131072, 16 << 20);
            assert!(parsed.is_err(), "{odd}");
        }
    }

    #[test]
    fn unlogged_relations_are_known_by_their_init_fork() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["16384", "16384_init", "16385"] {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        assert!(is_unlogged(&dir.path().join("16384")));
        assert!(is_unlogged(&dir.path().join("16384_fsm")));
        assert!(is_unlogged(&dir.path().join("16384.3")));
        assert!(!is_unlogged(&dir.path().join("16385")));
    }

    #[test]
    fn settings_that_leave_pages_out_of_the_wal() {
        assert!(fit("replica", true, false).is_ok());
        assert!(fit("logical", false, true).is_ok());
        assert!(
            fit("replica", false, false)
                .unwrap_err()
                .contains("hint bit")
        );
        assert!(fit("minimal", true, true).unwrap_err().contains("minimal"));
    }
}
