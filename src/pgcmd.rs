//! Typed command lines for PostgreSQL's programs as pgup runs them in the upgrade image
//! (`/usr/lib/postgresql/<major>/bin`). Rendering is pure, so each is tested by its argv.

use std::fmt::Write;

use crate::cluster::{InitSettings, LocaleProvider};

/// Where a major's programs live in upgrade images (Debian and apt.postgresql.org layout).
pub fn bindir(major: u32) -> String {
    format!("/usr/lib/postgresql/{major}/bin")
}

fn program(major: u32, name: &str) -> String {
    format!("{}/{name}", bindir(major))
}

/// Server options for every server pgup starts: reachable only through the private socket
/// directory, authenticated by a private hba file there, archiving nothing (a temporary
/// server must not ship WAL to the production archive), and vacuuming nothing, not even
/// against wraparound, as pg_upgrade starts its servers: a vacuum truncating a table would
/// change the files the verification proves are the old cluster's.
pub fn private_server_options(run_dir: &str) -> String {
    format!(
        "-c listen_addresses= -c unix_socket_directories={run_dir} -c unix_socket_permissions=0700 \
         -c hba_file={run_dir}/pg_hba.conf -c archive_mode=off \
         -c autovacuum=off -c autovacuum_freeze_max_age=2000000000"
    )
}

/// The hba file of temporary servers: trust, but only over the owner-only socket directory.
pub const PRIVATE_HBA: &str = "local all all trust\n";

pub fn controldata(major: u32, datadir: &str) -> Vec<String> {
    vec![
        program(major, "pg_controldata"),
        "-D".into(),
        datadir.into(),
    ]
}

/// `pg_waldump` of the records from `start` to `end` (the shutdown checkpoint, which names no
/// page) in `waldir`, its output written to `out` (it can be long: not kept in memory or in
/// the log).
pub fn waldump(
    major: u32,
    waldir: &str,
    start: crate::cluster::WalStart,
    end: &str,
    out: &str,
) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        r#"out="$1"; shift; exec "$@" > "$out""#.into(),
        "waldump".into(),
        out.into(),
        program(major, "pg_waldump"),
        "--path".into(),
        waldir.into(),
        "--timeline".into(),
        start.timeline.to_string(),
        "--start".into(),
        start.redo.to_string(),
        "--end".into(),
        end.into(),
    ]
}

/// `postgres --describe-config`: the settings a major accepts.
pub fn describe_config(major: u32) -> Vec<String> {
    vec![program(major, "postgres"), "--describe-config".into()]
}

/// Flushes a cluster's files (its WAL directory's through the `pg_wal` link) to disk.
pub fn sync_cluster(major: u32, datadir: &str) -> Vec<String> {
    vec![
        program(major, "initdb"),
        "--sync-only".into(),
        format!("--pgdata={datadir}"),
    ]
}

/// initdb with the old cluster's settings, so pg_upgrade finds the two compatible. Without
/// its flush to disk: pg_upgrade (15 and later, the only new majors) flushes the whole new
/// cluster when it ends. The WAL in `waldir` when given (the old cluster keeps its own apart).
pub fn initdb(major: u32, datadir: &str, s: &InitSettings, waldir: Option<&str>) -> Vec<String> {
    let mut argv = vec![
        program(major, "initdb"),
        format!("--pgdata={datadir}"),
        format!("--username={}", s.superuser),
        format!("--encoding={}", s.encoding),
        format!("--lc-collate={}", s.collate),
        format!("--lc-ctype={}", s.ctype),
        format!("--wal-segsize={}", s.wal_segment_bytes / (1024 * 1024)),
        "--auth=trust".into(),
        "--no-instructions".into(),
        "--no-sync".into(),
    ];
    argv.extend(waldir.map(|w| format!("--waldir={w}")));
    match &s.provider {
        LocaleProvider::Libc => {
            if major >= 15 {
                argv.push("--locale-provider=libc".into());
            }
        }
        LocaleProvider::Icu(locale) => {
            argv.push("--locale-provider=icu".into());
            argv.push(format!("--icu-locale={locale}"));
        }
        LocaleProvider::Builtin(locale) => {
            argv.push("--locale-provider=builtin".into());
            argv.push(format!("--builtin-locale={locale}"));
        }
    }
    if s.checksums {
        argv.push("--data-checksums".into());
    } else if major >= 18 {
        // 18 turns checksums on by default; pg_upgrade needs both clusters alike.
        argv.push("--no-data-checksums".into());
    }
    argv
}

/// How pg_upgrade moves relation files into the new cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    Copy,
    #[default]
    Link,
    /// Moves the old cluster's directories (18 and later): the old cluster is used up.
    Swap,
}

impl Transfer {
    /// pg_upgrade's flag for it.
    pub fn flag(self) -> &'static str {
        match self {
            Transfer::Copy => "--copy",
            Transfer::Link => "--link",
            Transfer::Swap => "--swap",
        }
    }
}

pub struct PgUpgrade<'a> {
    pub old_major: u32,
    pub new_major: u32,
    pub old_datadir: &'a str,
    pub new_datadir: &'a str,
    pub superuser: &'a str,
    pub run_dir: &'a str,
    pub transfer: Transfer,
    pub jobs: u32,
    pub check_only: bool,
}

impl PgUpgrade<'_> {
    pub fn argv(&self) -> Vec<String> {
        let options = private_server_options(self.run_dir);
        let mut argv = vec![
            program(self.new_major, "pg_upgrade"),
            format!("--old-bindir={}", bindir(self.old_major)),
            format!("--new-bindir={}", bindir(self.new_major)),
            format!("--old-datadir={}", self.old_datadir),
            format!("--new-datadir={}", self.new_datadir),
            format!("--username={}", self.superuser),
            format!("--socketdir={}", self.run_dir),
            format!("--jobs={}", self.jobs),
            format!("--old-options={options}"),
            format!("--new-options={options}"),
        ];
        match self.transfer {
            // Copying is the default; the flag itself only exists from 16 on.
            Transfer::Copy if self.new_major < 16 => {}
            t => argv.push(t.flag().into()),
        }
        if self.transfer == Transfer::Swap {
            // As pg_upgrade's documentation advises for --swap: syncfs would also write out
            // the many files swap leaves behind in the old cluster.
            argv.push("--sync-method=fsync".into());
        }
        if self.check_only {
            argv.push("--check".into());
        }
        argv
    }
}

/// pg_ctl start of a private server (see [`private_server_options`]), waiting until it runs.
pub fn start_server(major: u32, datadir: &str, run_dir: &str) -> Vec<String> {
    vec![
        program(major, "pg_ctl"),
        "start".into(),
        "--wait".into(),
        "--timeout=600".into(),
        format!("--pgdata={datadir}"),
        format!("--log={run_dir}/server.log"),
        format!("--options={}", private_server_options(run_dir)),
    ]
}

/// Removes the `postmaster.pid` a killed server left. Only when no server runs on the data:
/// the pid it names (often 1, the container's first process) may well live in the toolbox,
/// and PostgreSQL would then refuse to start, taking it for another postmaster.
pub fn remove_stale_lock(datadir: &str) -> Vec<String> {
    vec![
        "rm".into(),
        "-f".into(),
        format!("{datadir}/postmaster.pid"),
    ]
}

pub fn stop_server(major: u32, datadir: &str) -> Vec<String> {
    vec![
        program(major, "pg_ctl"),
        "stop".into(),
        "--wait".into(),
        "--timeout=600".into(),
        "--mode=fast".into(),
        format!("--pgdata={datadir}"),
    ]
}

/// psql running a file as the superuser over the private socket, stopping at the first error.
pub fn psql_file(major: u32, run_dir: &str, superuser: &str, file: &str) -> Vec<String> {
    vec![
        program(major, "psql"),
        "--no-psqlrc".into(),
        "--set=ON_ERROR_STOP=1".into(),
        format!("--host={run_dir}"),
        format!("--username={superuser}"),
        "--dbname=postgres".into(),
        format!("--file={file}"),
    ]
}

/// Renders an argv for logs: shell-quoted where needed. Never holds a password: pgup puts none
/// on a command line.
pub fn display(argv: &[String]) -> String {
    let mut out = String::new();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=/.,:".contains(c))
        {
            out.push_str(arg);
        } else {
            let _ = write!(out, "'{}'", arg.replace('\'', r"'\''"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(provider: LocaleProvider, checksums: bool) -> InitSettings {
        InitSettings {
            superuser: "app".into(),
            encoding: "UTF8".into(),
            collate: "en_US.utf8".into(),
            ctype: "en_US.utf8".into(),
            provider,
            checksums,
            wal_segment_bytes: 16 * 1024 * 1024,
        }
    }

    #[test]
    fn initdb_copies_the_old_settings() {
        let argv = initdb(17, "/d", &settings(LocaleProvider::Libc, true), None);
        assert_eq!(
            display(&argv),
            "/usr/lib/postgresql/17/bin/initdb --pgdata=/d --username=app --encoding=UTF8 \
             --lc-collate=en_US.utf8 --lc-ctype=en_US.utf8 --wal-segsize=16 --auth=trust \
             --no-instructions --no-sync --locale-provider=libc --data-checksums"
        );
    }

    #[test]
    fn initdb_18_turns_default_checksums_off_when_the_old_had_none() {
        let argv = initdb(18, "/d", &settings(LocaleProvider::Libc, false), None);
        assert!(argv.contains(&"--no-data-checksums".to_owned()));
        let argv = initdb(
            17,
            "/d",
            &settings(LocaleProvider::Libc, false),
            Some("/w/.pgup/new"),
        );
        assert!(argv.contains(&"--waldir=/w/.pgup/new".to_owned()));
        assert!(!argv.iter().any(|a| a.contains("checksums")));
    }

    #[test]
    fn initdb_icu_and_builtin() {
        let argv = initdb(
            17,
            "/d",
            &settings(LocaleProvider::Icu("und".into()), false),
            None,
        );
        assert!(argv.ends_with(&["--locale-provider=icu".into(), "--icu-locale=und".into()]));
        let argv = initdb(
            18,
            "/d",
            &settings(LocaleProvider::Builtin("C.UTF-8".into()), true),
            None,
        );
        assert!(argv.contains(&"--builtin-locale=C.UTF-8".to_owned()));
    }

    #[test]
    fn pg_upgrade_argv() {
        let up = PgUpgrade {
            old_major: 13,
            new_major: 17,
            old_datadir: "/pgup/vol",
            new_datadir: "/pgup/vol/.pgup/new",
            superuser: "app",
            run_dir: "/pgup/run",
            transfer: Transfer::Link,
            jobs: 2,
            check_only: true,
        };
        let argv = up.argv();
        assert_eq!(argv[0], "/usr/lib/postgresql/17/bin/pg_upgrade");
        assert!(argv.contains(&"--old-bindir=/usr/lib/postgresql/13/bin".to_owned()));
        assert!(argv.contains(&"--link".to_owned()));
        assert!(argv.contains(&"--check".to_owned()));
        assert!(argv.contains(&"--jobs=2".to_owned()));
        let old = argv
            .iter()
            .find(|a| a.starts_with("--old-options="))
            .unwrap();
        assert!(old.contains("hba_file=/pgup/run/pg_hba.conf") && old.contains("archive_mode=off"));
    }

    #[test]
    fn transfer_flags() {
        let up = |new_major, transfer| {
            PgUpgrade {
                old_major: 13,
                new_major,
                old_datadir: "/o",
                new_datadir: "/n",
                superuser: "postgres",
                run_dir: "/r",
                transfer,
                jobs: 1,
                check_only: true,
            }
            .argv()
        };
        let has = |argv: Vec<String>, flag: &str| argv.iter().any(|a| a == flag);
        // --copy only from 16 on.
        assert!(!has(up(15, Transfer::Copy), "--copy"));
        assert!(has(up(17, Transfer::Copy), "--copy"));
        let swap = up(19, Transfer::Swap);
        assert!(has(swap.clone(), "--swap") && has(swap, "--sync-method=fsync"));
        assert!(!has(up(19, Transfer::Link), "--sync-method=fsync"));
    }

    #[test]
    fn display_quotes() {
        let argv = vec!["a".to_owned(), "-c x=''".to_owned(), "it's".to_owned()];
        assert_eq!(display(&argv), r#"a '-c x='\'''\''' 'it'\''s'"#);
    }

    #[test]
    fn a_stale_lock_is_removed_from_the_data_directory() {
        assert_eq!(
            remove_stale_lock("/pgup/old"),
            ["rm", "-f", "/pgup/old/postmaster.pid"]
        );
    }
}
