//! What PostgreSQL 19 removed, in use in an 18 cluster: `check` names each use (the
//! `pg_hba.conf` line, the setting and where it is set, the database, role or index) with its
//! fix, and `upgrade` refuses with one line before it changes anything.

use std::path::Path;

use crate::common::*;

const TO_19: [&str; 4] = ["--to", "19", "--new-image", "pgup/postgres:19"];

/// Appends `line` to the file `name` in `data`, keeping its owner; returns its line number.
fn append(data: &Path, name: &str, line: &str) -> usize {
    use std::io::Write;
    let path = data.join(name);
    let lines = std::fs::read_to_string(&path).unwrap().lines().count();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(f, "{line}").unwrap();
    lines + 1
}

/// Every "removed" failure of `pgup check` on `target` (which must refuse, exit 3).
fn refused_by_check(target: &[&str]) -> Vec<String> {
    let r = pgup(&[&["check"], target, &TO_19[..2], &["--json"]].concat());
    assert_eq!(r.code, 3, "{}{}", r.stdout, r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    items(&report, "removed", "fail")
}

/// The uses of 19's removals, each found by both commands and nothing changed: first those
/// in the files (with the server stopped), then those in the catalogs, on the stopped cluster
/// and through the running server.
#[tokio::test]
async fn uses_of_what_19_removed_are_refused_and_change_nothing() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:18")).await;
    s.seed("postgres").await;
    let c = s.client("postgres").await;
    c.batch_execute(
        "ALTER DATABASE postgres SET escape_string_warning = off;
         CREATE ROLE legacy LOGIN;
         ALTER ROLE legacy SET standard_conforming_strings = false;
         CREATE ROLE owner_role;
         -- Only a catalog holds this one: no refusal.
         ALTER ROLE legacy SET role = 'owner_role';
         CREATE FUNCTION old_style() RETURNS text LANGUAGE sql
           SET standard_conforming_strings = off AS $$ SELECT 'x' $$;
         CREATE EXTENSION btree_gist;
         CREATE TABLE hosts (id int, addr inet);
         CREATE INDEX hosts_addr ON hosts USING gist (addr);
         DO $$ BEGIN EXECUTE format('CREATE ROLE %I', E'two\\nlines'); END $$;",
    )
    .await
    .unwrap();
    // Not in a transaction, which a batch is.
    c.batch_execute(
        "CREATE DATABASE mule ENCODING 'MULE_INTERNAL' LOCALE_PROVIDER libc
           LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    )
    .await
    .unwrap();
    let status = pgup_json(&["status", "--container", &s.name]);
    let data = std::path::PathBuf::from(status["data_dir"].as_str().unwrap());
    let name = s.name.clone();
    let container = ["--container", name.as_str()];
    let catalogs = [
        "ALTER DATABASE postgres SET escape_string_warning: PostgreSQL 19 removed the setting escape_string_warning",
        "ALTER ROLE legacy SET standard_conforming_strings: standard_conforming_strings = false, which PostgreSQL 19 no longer takes",
        "ALTER FUNCTION old_style() SET standard_conforming_strings: standard_conforming_strings = off, which PostgreSQL 19 no longer takes",
        "database mule: encoding MULE_INTERNAL, which PostgreSQL 19 removed",
        "index hosts_addr in database postgres: operator class gist_inet_ops of btree_gist, which pg_upgrade 19 refuses",
        "role \"two\\nlines\": a line break in its name, which pg_upgrade 19 refuses",
    ];

    // Through the running server: the upgrade refuses before it stops it.
    let upgrade = [&["upgrade"], &container[..], &TO_19[..], &["--yes"]].concat();
    let r = pgup(&upgrade);
    r.assert_refused("the upgrade cannot start: removed: ");
    for line in catalogs {
        assert!(r.stderr.contains(line), "{line:?} not in {}", r.stderr);
    }
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &s.name]),
        "true",
        "the server still runs"
    );
    let found = refused_by_check(&container);
    assert_eq!(found.len(), catalogs.len(), "{found:?}");

    // Stopped, with the files' uses too: check names them all at once, the upgrade refuses
    // at the files.
    s.stop();
    let hba = append(
        &data,
        "pg_hba.conf",
        "host all all 10.0.0.0/8 radius radiusservers=127.0.0.1 radiussecrets=x",
    );
    let conf = append(
        &data,
        "postgresql.conf",
        "standard_conforming_strings = off",
    );
    let auto = append(
        &data,
        "postgresql.auto.conf",
        "standard_conforming_strings = 'no'",
    );
    let files = [
        format!(
            "pg_hba.conf line {hba}: authentication method radius, which PostgreSQL 19 removed"
        ),
        format!("postgresql.conf line {conf}: standard_conforming_strings = off"),
        format!("postgresql.auto.conf line {auto}: standard_conforming_strings = 'no'"),
    ];
    let root = s.mount_root();
    let hash = tree_hash(&root);
    let found = refused_by_check(&container);
    for line in files.iter().map(String::as_str).chain(catalogs) {
        assert_mentioned(&found, line);
    }
    assert_eq!(found.len(), files.len() + catalogs.len(), "{found:?}");
    assert_eq!(tree_hash(&root), hash, "check changed the data");
    let r = pgup(&upgrade);
    r.assert_refused("the upgrade cannot start: removed: ");
    for line in &files {
        assert!(r.stderr.contains(line), "{line:?} not in {}", r.stderr);
    }
    assert_eq!(tree_hash(&root), hash, "a refused upgrade changed the data");

    // The files fixed, the stopped cluster's catalogs refuse the upgrade after its stop step,
    // which found the server already stopped.
    for (name, line) in [
        ("pg_hba.conf", hba),
        ("postgresql.conf", conf),
        ("postgresql.auto.conf", auto),
    ] {
        let path = data.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        let kept: Vec<&str> = text.lines().take(line - 1).collect();
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    }
    let hash = cluster_hash(&root);
    let r = pgup(&upgrade);
    r.assert_refused_after_steps("the upgrade cannot start: removed: ");
    for line in catalogs {
        assert!(r.stderr.contains(line), "{line:?} not in {}", r.stderr);
    }
    assert_eq!(
        cluster_hash(&root),
        hash,
        "a refused upgrade changed the data"
    );
    // Of pgup's own, only the lock it took is left: no journal, no backup.
    let mut entries = names_in(&root.join(".pgup"));
    entries.extend(
        names_in(&root)
            .into_iter()
            .filter(|n| n.starts_with("upgrade_backup_")),
    );
    assert_eq!(entries, ["lock"]);

    // Fixed as the lines say, the same cluster upgrades.
    docker(&["start", &s.name]);
    s.refresh_port();
    let c = s.client("postgres").await;
    c.batch_execute(
        "ALTER DATABASE postgres RESET escape_string_warning;
         ALTER ROLE legacy RESET standard_conforming_strings;
         ALTER FUNCTION old_style() RESET standard_conforming_strings;
         DROP INDEX hosts_addr;
         CREATE INDEX hosts_addr ON hosts USING gist (addr inet_ops);
         DO $$ BEGIN EXECUTE format('ALTER ROLE %I RENAME TO one_line', E'two\\nlines'); END $$;",
    )
    .await
    .unwrap();
    c.batch_execute("DROP DATABASE mule").await.unwrap();
    let before = s.content().await;
    let report = pgup_json(&upgrade);
    assert_eq!(report["to"], 19, "{report}");
    s.refresh_port();
    assert_eq!(s.content().await, before);
}

/// `-c standard_conforming_strings=off` in the container's command: found there.
#[tokio::test]
async fn standard_conforming_strings_off_on_the_command_line_is_refused() {
    let mut spec = ServerSpec::new("pgup/postgres:18");
    spec.command = &["postgres", "-c", "standard_conforming_strings=off"];
    let s = Server::start(spec).await;
    let container = ["--container", s.name.as_str()];
    let line = "the container's command (argument 2): standard_conforming_strings = off, which PostgreSQL 19 no longer takes";
    assert_mentioned(&refused_by_check(&container), line);
    let r = pgup(&[&["upgrade"], &container[..], &TO_19[..], &["--yes"]].concat());
    r.assert_refused(line);
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &s.name]),
        "true",
        "the server still runs"
    );
}
