//! Indexes on text across a change of C library or ICU (our images sit on the Debian releases
//! the official ones do: 13 on bullseye's glibc 2.31 and ICU 67, 15 on bookworm's, 17 on
//! trixie's glibc 2.41 and ICU 76): found by `check`, rebuilt by `upgrade` before the server
//! is handed back, proven by amcheck; left and listed with `--reindex never`; a unique index
//! whose table holds duplicates stops the upgrade and puts the old cluster back. 18 and 19 share
//! sid's libraries: nothing is rebuilt.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::common::*;

/// Tables whose indexes depend on the database's libc default (en_US.utf8), on ICU
/// collations (one predefined, one the user made), on an expression and on a predicate; and
/// indexes that depend on no library (C, integers). Returns the names of the first kind.
async fn seed_words(c: &Client) -> Vec<&'static str> {
    c.batch_execute(
        "CREATE COLLATION german (provider = icu, locale = 'de-DE');
         CREATE TABLE words (id int PRIMARY KEY, w text NOT NULL, wi text COLLATE \"und-x-icu\", wg text COLLATE german, code text COLLATE \"C\");
         INSERT INTO words SELECT g, x, x, x, x FROM (SELECT g, (ARRAY['a', 'B', 'ä', 'Ä-x', 'co-op', 'coop', 'Zebra', 'zèbre', '1a', '_u'])[g % 10 + 1] || ' ' || md5(g::text) AS x FROM generate_series(1, 20000) g) s;
         CREATE INDEX words_w ON words (w);
         CREATE UNIQUE INDEX words_w_id ON words (w, id);
         CREATE INDEX words_wi ON words (wi);
         CREATE INDEX words_wg ON words (wg);
         CREATE INDEX words_lower ON words (lower(w));
         CREATE INDEX words_partial ON words (id) WHERE w > 'm';
         CREATE INDEX words_code ON words (code);
         CREATE INDEX words_id_code ON words (id, code);",
    )
    .await
    .expect("seeding words");
    vec![
        "words_w",
        "words_w_id",
        "words_wi",
        "words_wg",
        "words_lower",
        "words_partial",
    ]
}

/// Each user index's file number: REINDEX gives an index a new one, pg_upgrade keeps them.
async fn filenodes(c: &Client) -> BTreeMap<String, String> {
    let rows = c
        .query(
            "SELECT c.relname::text, pg_relation_filenode(c.oid)::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'i' AND n.nspname = 'public'",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// amcheck's strictest B-tree check on each of `indexes`: order, and every heap tuple found.
async fn amcheck(c: &Client, indexes: &[&str]) {
    c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .await
        .unwrap();
    for index in indexes {
        c.query_one(
            "SELECT bt_index_check($1::text::regclass, heapallindexed => true)",
            &[index],
        )
        .await
        .unwrap_or_else(|e| panic!("amcheck on {index}: {e:?}"));
    }
}

/// The report names `change` among what changed of the libraries that order text.
fn assert_change(report: &serde_json::Value, change: &str) {
    assert!(
        report["libraries"]
            .as_str()
            .is_some_and(|l| l.contains(change)),
        "{report}"
    );
}

fn rebuilt(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> Vec<String> {
    after
        .iter()
        .filter(|(name, node)| before.get(*name) != Some(*node))
        .map(|(name, _)| name.clone())
        .collect()
}

#[tokio::test]
async fn text_indexes_are_rebuilt_when_glibc_and_icu_change() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    let c = s.client("postgres").await;
    let mut expected = seed_words(&c).await;
    expected.sort_unstable();
    let before = filenodes(&c).await;
    let content = s.content().await;
    drop(c);

    let upgrade = upgrade_on(&s.name, "17", "pgup/postgres:17");
    // The same arguments but --yes.
    let check = pgup_json(&[&["check"], &upgrade[1..7]].concat());
    let libraries = items(&check, "libraries", "warn");
    assert_mentioned(&libraries, "glibc 2.31 → glibc 2.41");
    assert_mentioned(&libraries, "ICU 67.1 → ICU 76.1");
    let indexes = items(&check, "indexes", "ok");
    assert_mentioned(&indexes, &format!("{} index(es) (", expected.len()));
    assert_mentioned(&indexes, "the upgrade rebuilds them");

    let report = pgup_json(&upgrade);
    assert_eq!(
        report["verified"]["indexes_rebuilt"],
        expected.len(),
        "{report}"
    );
    assert_eq!(report["reindex_pending"], 0, "{report}");
    assert_change(&report, "glibc 2.31 → glibc 2.41");

    s.refresh_port();
    assert_eq!(s.content().await, content);
    let c = s.client("postgres").await;
    let after = filenodes(&c).await;
    assert_eq!(
        rebuilt(&before, &after),
        expected,
        "exactly the indexes on libc and ICU collations were rebuilt"
    );
    amcheck(&c, &expected).await;
    // Each collation in use, in a new session: a stale recorded version would warn now.
    let probe = s.client("postgres").await;
    probe
        .batch_execute(
            "SELECT count(*) FROM words WHERE wg > 'm' AND wi > 'm' AND w > 'm';
             SELECT 'a' < 'b' COLLATE german;",
        )
        .await
        .unwrap();
    let logs = s.logs();
    assert!(
        !logs.contains("version mismatch"),
        "no collation version mismatch: {logs}"
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    assert!(status["reindex_pending"].is_null(), "{status}");
}

/// 15 with ICU as the database's default provider: every index on text depends on ICU
/// (72 on bookworm, 76 on trixie), and so do the database's recorded collation version.
#[tokio::test]
async fn an_icu_default_database_is_rebuilt_and_its_version_refreshed() {
    let mut spec = ServerSpec::new("pgup/postgres:15");
    spec.options = vec![
        "-e".into(),
        "POSTGRES_INITDB_ARGS=--locale-provider=icu --icu-locale=en-US".into(),
    ];
    let mut s = Server::start(spec).await;
    let c = s.client("postgres").await;
    c.batch_execute(
        "CREATE TABLE names (id int PRIMARY KEY, n text UNIQUE);
         INSERT INTO names SELECT g, 'name ' || md5(g::text) FROM generate_series(1, 5000) g;",
    )
    .await
    .unwrap();
    let before = filenodes(&c).await;
    drop(c);

    let report = pgup_json(&upgrade_on(&s.name, "17", "pgup/postgres:17"));
    assert_eq!(report["verified"]["indexes_rebuilt"], 1, "{report}");
    assert_change(&report, "ICU 72.1 → ICU 76.1");
    s.refresh_port();
    let c = s.client("postgres").await;
    assert_eq!(
        rebuilt(&before, &filenodes(&c).await),
        ["names_n_key"],
        "the text index, not the integer key"
    );
    amcheck(&c, &["names_n_key"]).await;
    let stale: bool = c
        .query_one(
            "SELECT datcollversion IS DISTINCT FROM pg_database_collation_actual_version(oid) FROM pg_database WHERE datname = 'postgres'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stale, "the database's collation version is ICU 76's");
    assert!(!s.logs().contains("version mismatch"), "{}", s.logs());
}

/// `--reindex never`: nothing rebuilt, the report and `status` say so with the commands, and
/// once those ran, `status` says nothing more.
#[tokio::test]
async fn reindex_never_leaves_them_listed_until_rebuilt() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    let c = s.client("postgres").await;
    let expected = seed_words(&c).await;
    let before = filenodes(&c).await;
    drop(c);
    let args = [
        &upgrade_on(&s.name, "17", "pgup/postgres:17")[..],
        &["--reindex", "never"],
    ]
    .concat();
    let run = pgup(&args);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "Warning: {} index(es) on text were left as built under the old library",
            expected.len()
        )),
        "{}",
        run.stdout
    );
    s.refresh_port();
    let c = s.client("postgres").await;
    assert!(
        rebuilt(&before, &filenodes(&c).await).is_empty(),
        "nothing rebuilt"
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    let pending = &status["reindex_pending"];
    assert_eq!(
        pending["indexes"].as_array().unwrap().len(),
        expected.len(),
        "{status}"
    );
    let text = pgup(&["status", "--container", &s.name]);
    assert!(text.stdout.contains("REINDEX"), "{}", text.stdout);
    for command in pending["commands"].as_array().unwrap() {
        let command = command.as_str().unwrap();
        docker(&["exec", "-u", "postgres", &s.name, "sh", "-c", command]);
    }
    // The old files go at a checkpoint; until then they are empty.
    c.batch_execute("CHECKPOINT").await.unwrap();
    let status = pgup_json(&["status", "--container", &s.name]);
    assert!(status["reindex_pending"].is_null(), "{status}");
}

/// A unique index that a change of sort order broke lets duplicates into its table; the
/// rebuild finds them. Made here by marking a plain index unique in the old catalog over a
/// table that holds a duplicate, as a broken index would have let in.
#[tokio::test]
async fn duplicates_under_a_unique_index_stop_the_upgrade_and_keep_the_old_cluster() {
    let s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    let c = s.client("postgres").await;
    c.batch_execute(
        "CREATE TABLE accounts (id int PRIMARY KEY, email text NOT NULL);
         INSERT INTO accounts SELECT g, 'user' || g || '@example.org' FROM generate_series(1, 3000) g;
         INSERT INTO accounts VALUES (3001, 'user7@example.org'), (3002, 'user7@example.org'), (3003, 'user9@example.org');
         CREATE INDEX accounts_email ON accounts (email);
         UPDATE pg_index SET indisunique = true WHERE indexrelid = 'accounts_email'::regclass;",
    )
    .await
    .unwrap();
    drop(c);
    let content = s.content().await;
    let run = pgup(&upgrade_on(&s.name, "17", "pgup/postgres:17"));
    run.assert_refused_after_steps("unique index public.accounts_email of table public.accounts");
    assert!(
        run.stderr.contains("(user7@example.org) ×3")
            && run.stderr.contains("(user9@example.org) ×2"),
        "the duplicate keys are named: {}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("the old cluster was put back from the backup"),
        "{}",
        run.stderr
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(status["pg_version"], "13", "{status}");
    docker(&["start", &s.name]);
    let mut s = s;
    s.refresh_port();
    assert_eq!(s.content().await, content, "the old cluster as it was");
}

/// 18 and 19 both sit on sid (glibc 2.43 and ICU 78 today): nothing that orders text changes, so
/// nothing is rebuilt, and `check` says why.
#[tokio::test]
async fn the_same_libraries_rebuild_nothing() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:18")).await;
    let c = s.client("postgres").await;
    seed_words(&c).await;
    let before = filenodes(&c).await;
    let content = s.content().await;
    drop(c);
    let upgrade = upgrade_on(&s.name, "19", "pgup/postgres:19");
    let check = pgup_json(&[&["check"], &upgrade[1..7]].concat());
    assert_mentioned(
        &items(&check, "libraries", "ok"),
        "pgup/postgres:18 and pgup/postgres:19 sort text alike: glibc ",
    );
    assert_mentioned(
        &items(&check, "indexes", "ok"),
        "no library that orders text changed",
    );
    let report = pgup_json(&upgrade);
    assert_eq!(report["verified"]["indexes_rebuilt"], 0, "{report}");
    assert!(report["libraries"].is_null(), "{report}");
    s.refresh_port();
    assert_eq!(s.content().await, content);
    let c = s.client("postgres").await;
    assert!(
        rebuilt(&before, &filenodes(&c).await).is_empty(),
        "no index rebuilt"
    );
}
