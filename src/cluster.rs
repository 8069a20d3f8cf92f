//! Facts about a PostgreSQL data directory that its files tell without a server: the major
//! version (PG_VERSION), the owner, and whether `postmaster.pid` is present; what
//! `pg_controldata` says; the settings a new cluster must share with it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot read {path}: {err}; run pgup as a user that can read the data directory (root, usually)"
    )]
    Read { path: PathBuf, err: io::Error },
    #[error(
        "{path} does not hold a PostgreSQL major version ({content:?}); is this a PostgreSQL data directory?"
    )]
    BadVersion { path: PathBuf, content: String },
}

/// A data directory as found on disk.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The major version as PG_VERSION writes it: "13", "18", or "9.6".
    pub major: String,
    pub uid: u32,
    pub gid: u32,
    /// postmaster.pid exists: a server runs, or did not shut down cleanly.
    pub postmaster_pid: bool,
    /// The file that makes it a standby (or a server in targeted recovery), if any.
    pub standby: Option<&'static str>,
    /// Parts kept outside PGDATA through links: a separate WAL directory (`pg_wal`) and
    /// tablespaces (`pg_tblspc/<oid>`), each with where its link points.
    pub outside: Vec<(String, PathBuf)>,
}

impl Cluster {
    pub fn open(dir: &Path) -> Result<Self, ClusterError> {
        let read_err = |path: PathBuf| move |err| ClusterError::Read { path, err };
        let version_file = dir.join("PG_VERSION");
        let content =
            std::fs::read_to_string(&version_file).map_err(read_err(version_file.clone()))?;
        let major = content.trim().to_owned();
        if !is_major(&major) {
            return Err(ClusterError::BadVersion {
                path: version_file,
                content,
            });
        }
        let meta = std::fs::metadata(dir).map_err(read_err(dir.to_owned()))?;
        Ok(Self {
            major,
            uid: meta.uid(),
            gid: meta.gid(),
            postmaster_pid: dir.join("postmaster.pid").exists(),
            standby: ["standby.signal", "recovery.signal", "recovery.conf"]
                .into_iter()
                .find(|f| dir.join(f).exists()),
            outside: outside(dir),
        })
    }
}

/// Whether a process on this host (in any container) has `dir` as its working directory, as
/// a running postmaster has its PGDATA: what tells a live server from a stale lock file.
pub fn server_holds(dir: &Path) -> bool {
    let Ok(want) = std::fs::metadata(dir) else {
        return false;
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::metadata(e.path().join("cwd")).ok())
        .any(|m| m.dev() == want.dev() && m.ino() == want.ino())
}

/// Where a running server listens, as its `postmaster.pid` says (lines 4 and 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub port: u16,
    /// Its first Unix socket directory, as the server sees it; None with none.
    pub socket_dir: Option<PathBuf>,
}

impl Listening {
    pub fn parse(postmaster_pid: &str) -> Option<Self> {
        let mut lines = postmaster_pid.lines().skip(3);
        let port = lines.next()?.trim().parse().ok()?;
        let socket_dir = lines
            .next()
            .map(str::trim)
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from);
        Some(Self { port, socket_dir })
    }
}

/// `pg_wal` when it is a link, and every link in `pg_tblspc`, with their targets (as the
/// server sees them: paths inside its container).
fn outside(dir: &Path) -> Vec<(String, PathBuf)> {
    let link = |entry: &str| {
        std::fs::read_link(dir.join(entry))
            .ok()
            .map(|to| (entry.to_owned(), to))
    };
    let mut out: Vec<_> = link("pg_wal").into_iter().collect();
    let mut tablespaces: Vec<_> = std::fs::read_dir(dir.join("pg_tblspc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| link(&format!("pg_tblspc/{}", e.file_name().to_string_lossy())))
        .collect();
    tablespaces.sort();
    out.extend(tablespaces);
    out
}

/// What `pg_controldata` tells that pg_upgrade needs to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// "shut down", "shut down in recovery", "in production", ...
    pub state: String,
    pub checksums: bool,
    pub wal_segment_bytes: u64,
    pub block_size: u64,
    /// The latest checkpoint's location: it moves whenever the server runs.
    pub checkpoint: String,
    /// The latest checkpoint's timeline.
    pub timeline: u32,
    pub blocks_per_segment: u64,
    /// The settings the server last started with that say what its WAL records.
    pub wal_level: String,
    pub wal_log_hints: bool,
}

impl ControlData {
    /// Parses `pg_controldata` output (run with LC_ALL=C).
    pub fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
        };
        Some(Self {
            state: field("Database cluster state")?.to_owned(),
            checksums: field("Data page checksum version")?.parse::<u32>().ok()? != 0,
            wal_segment_bytes: field("Bytes per WAL segment")?.parse().ok()?,
            block_size: field("Database block size")?.parse().ok()?,
            checkpoint: field("Latest checkpoint location")?.to_owned(),
            timeline: field("Latest checkpoint's TimeLineID")?.parse().ok()?,
            blocks_per_segment: field("Blocks per segment of large relation")?
                .parse()
                .ok()?,
            wal_level: field("wal_level setting")?.to_owned(),
            wal_log_hints: field("wal_log_hints setting")? == "on",
        })
    }

    pub fn shut_down_cleanly(&self) -> bool {
        self.state == "shut down"
    }
}

/// A position in the WAL, written as PostgreSQL writes it ("0/181E448").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Lsn(pub u64);

impl From<Lsn> for String {
    fn from(lsn: Lsn) -> Self {
        lsn.to_string()
    }
}

impl TryFrom<String> for Lsn {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("not a WAL position: {text:?}");
        let (hi, lo) = text.trim().split_once('/').ok_or_else(bad)?;
        let half = |h: &str| {
            u64::from_str_radix(h, 16)
                .ok()
                .filter(|v| *v <= 0xFFFF_FFFF)
        };
        Ok(Self(
            (half(hi).ok_or_else(bad)? << 32) | half(lo).ok_or_else(bad)?,
        ))
    }
}

/// Where the WAL naming every page changed since a checkpoint starts: that checkpoint's redo
/// point, and its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalStart {
    pub redo: Lsn,
    pub timeline: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "provider", content = "locale", rename_all = "lowercase")]
pub enum LocaleProvider {
    Libc,
    Icu(String),
    Builtin(String),
}

/// The old cluster's settings a new cluster must be initialised with for pg_upgrade.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InitSettings {
    /// The bootstrap superuser (the role with OID 10): POSTGRES_USER in Docker.
    pub superuser: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub provider: LocaleProvider,
    pub checksums: bool,
    pub wal_segment_bytes: u64,
}

fn is_major(s: &str) -> bool {
    let mut parts = s.split('.');
    let whole =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match (parts.next(), parts.next(), parts.next()) {
        (a, None, None) => whole(a),
        (a, b, None) => whole(a) && whole(b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn where_a_server_listens() {
        let pid = "1\n/var/lib/postgresql/data\n1764806400\n5433\n/var/run/postgresql\n*\n  5432001         0\nready   \n";
        assert_eq!(
            Listening::parse(pid),
            Some(Listening {
                port: 5433,
                socket_dir: Some("/var/run/postgresql".into())
            })
        );
        let no_socket = "1\n/d\n1\n5432\n\n*\n";
        assert_eq!(Listening::parse(no_socket).unwrap().socket_dir, None);
        assert_eq!(Listening::parse("1\n/d\n"), None);
    }

    use super::*;

    const CONTROLDATA: &str = "pg_control version number:            1300
Catalog version number:               202007201
Latest checkpoint location:           0/1663F70
Latest checkpoint's TimeLineID:       1
Database cluster state:               shut down
wal_level setting:                    replica
wal_log_hints setting:                off
Blocks per segment of large relation: 131072
pg_control last modified:             Sat Nov 21 10:26:20 2026
Database block size:                  8192
Bytes per WAL segment:                16777216
Data page checksum version:           0
";

    #[test]
    fn controldata() {
        let c = ControlData::parse(CONTROLDATA).unwrap();
        assert!(c.shut_down_cleanly());
        assert!(!c.checksums);
        assert_eq!(c.wal_segment_bytes, 16 * 1024 * 1024);
        assert_eq!(c.block_size, 8192);
        assert_eq!((c.timeline, c.blocks_per_segment), (1, 131072));
        assert_eq!((c.wal_level.as_str(), c.wal_log_hints), ("replica", false));
        let running = CONTROLDATA
            .replace("shut down", "in production")
            .replace("version:           0", "version:           1");
        let c = ControlData::parse(&running).unwrap();
        assert!(!c.shut_down_cleanly());
        assert!(c.checksums);
        assert!(ControlData::parse("garbage").is_none());
    }

    #[test]
    fn lsns() {
        assert_eq!("0/181E448".parse(), Ok(Lsn(0x181E448)));
        assert_eq!("1A/0".parse(), Ok(Lsn(0x1A_0000_0000)));
        assert_eq!(Lsn(0x1A_0181_E448).to_string(), "1A/181E448");
        assert!("x".parse::<Lsn>().is_err());
        assert!("1/100000000".parse::<Lsn>().is_err());
        let start = WalStart {
            redo: Lsn(0x181E448),
            timeline: 2,
        };
        let json = serde_json::to_string(&start).unwrap();
        assert_eq!(json, r#"{"redo":"0/181E448","timeline":2}"#);
        assert_eq!(serde_json::from_str::<WalStart>(&json).unwrap(), start);
    }

    #[test]
    fn a_process_working_in_a_directory_holds_it() {
        assert!(server_holds(&std::env::current_dir().unwrap()));
        let nobody = tempfile::tempdir().unwrap();
        assert!(!server_holds(nobody.path()));
    }

    #[test]
    fn majors() {
        for ok in ["13", "18", "9.6"] {
            assert!(is_major(ok), "{ok}");
        }
        for bad in ["", "x", "9.", "9.6.1", "13\n14"] {
            assert!(!is_major(bad), "{bad}");
        }
    }
}
