//! Upgrades with nothing but the operator's two server images, extensions included: pgup
//! assembles its toolbox from them (images on different Debian releases), checks that the new
//! image provides every installed extension, and updates them after pg_upgrade.

use tokio_postgres::Client;

use crate::common::*;

async fn one(c: &Client, sql: &str) -> String {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// The ids a query returns, in order, with sequential scans off so that the index answers;
/// and whether the plan used `index`.
async fn through_index(c: &Client, query: &str, index: &str) -> (String, bool) {
    c.batch_execute("SET enable_seqscan = off").await.unwrap();
    let plan: Vec<String> = column(c, &format!("EXPLAIN {query}")).await;
    let ids = one(
        c,
        &format!("SELECT coalesce(string_agg(id::text, ',' ORDER BY n), '') FROM (SELECT id, row_number() OVER () AS n FROM ({query}) q) t"),
    )
    .await;
    (ids, plan.iter().any(|l| l.contains(index)))
}

/// An extension's upgrade between two of its images, judged by a query answered through an
/// index before and after.
struct Case {
    old: &'static str,
    new: &'static str,
    to: &'static str,
    extension: &'static str,
    /// Creates the extension, a table and its index.
    setup: &'static str,
    query: &'static str,
    index: &'static str,
}

/// `column` ("installed_version", "default_version") of `extension`.
async fn extension_version(c: &Client, extension: &str, column: &str) -> String {
    let sql =
        format!("SELECT {column}::text FROM pg_available_extensions WHERE name = '{extension}'");
    one(c, &sql).await
}

/// Runs `case` on a fresh server: the query's answer, found through the index, is the same
/// after the upgrade, the extension is at the new image's default version and the report says
/// which version it came from (also when pg_upgrade's own script updated it), and every table
/// is as before. Returns a connection to the upgraded server for further checks.
async fn round_trip(case: &Case) -> (Server, Client) {
    let mut s = Server::start(ServerSpec::new(case.old)).await;
    let c = s.client("postgres").await;
    c.batch_execute(case.setup).await.unwrap();
    let (answer, indexed) = through_index(&c, case.query, case.index).await;
    assert!(indexed, "{} answers through {}", case.query, case.index);
    assert!(answer.split(',').count() > 5, "{answer}");
    let old_version = extension_version(&c, case.extension, "installed_version").await;
    let before = s.content().await;
    drop(c);

    let report = pgup_json(&upgrade_on(&s.name, case.to, case.new));
    s.refresh_port();
    let c = s.client("postgres").await;
    let new_version = extension_version(&c, case.extension, "default_version").await;
    assert_eq!(
        extension_version(&c, case.extension, "installed_version").await,
        new_version
    );
    let expected = if new_version == old_version {
        serde_json::json!([])
    } else {
        serde_json::json!([{"database": "postgres", "extension": case.extension, "from": old_version, "to": new_version}])
    };
    assert_eq!(report["extensions"], expected, "{report}");
    assert_eq!(
        through_index(&c, case.query, case.index).await,
        (answer, true),
        "the same answer, through the index"
    );
    assert_eq!(s.content().await, before);
    (s, c)
}

#[tokio::test]
async fn postgis_13_to_17_with_only_the_two_postgis_images() {
    let (_s, c) = round_trip(&Case {
        old: "pgup/postgis:13",
        new: "pgup/postgis:17",
        to: "17",
        extension: "postgis",
        setup: "CREATE EXTENSION postgis;
            CREATE TABLE places (id int PRIMARY KEY, geom geometry(Point, 4326));
            INSERT INTO places SELECT i, ST_SetSRID(ST_MakePoint((i % 360) - 180 + (i % 7) * 0.01, (i % 170) - 85), 4326)
              FROM generate_series(1, 20000) i;
            CREATE INDEX places_geom ON places USING gist (geom);
            ANALYZE places;",
        query: "SELECT id FROM places WHERE ST_DWithin(geom, ST_SetSRID(ST_MakePoint(10, 10), 4326), 15) ORDER BY id",
        index: "places_geom",
    })
    .await;
    let new_version = one(
        &c,
        "SELECT extversion FROM pg_extension WHERE extname = 'postgis'",
    )
    .await;
    let full = one(&c, "SELECT postgis_full_version()").await;
    assert!(
        full.starts_with(&format!("POSTGIS=\"{new_version}")),
        "{full}"
    );
}

#[tokio::test]
async fn pgvector_17_to_18_with_only_the_two_pgvector_images() {
    round_trip(&Case {
        old: "pgup/pgvector:17",
        new: "pgup/pgvector:18",
        to: "18",
        extension: "vector",
        setup: "CREATE EXTENSION vector;
            CREATE TABLE items (id int PRIMARY KEY, embedding vector(3));
            INSERT INTO items SELECT i, ARRAY[sin(i), cos(i), (i % 100) / 100.0]::vector FROM generate_series(1, 5000) i;
            CREATE INDEX items_embedding ON items USING hnsw (embedding vector_l2_ops);
            ANALYZE items;",
        query: "SELECT id FROM items ORDER BY embedding <-> '[0.5,0.5,0.5]' LIMIT 10",
        index: "items_embedding",
    })
    .await;
}

/// PostGIS in a database, and a new image without it: `check` and `upgrade` refuse with one
/// line naming it; the data tree stays byte-identical, and a running server runs again.
#[tokio::test]
async fn an_extension_the_new_image_lacks_is_refused_and_nothing_changes() {
    let s = Server::start(ServerSpec::new("pgup/postgis:13")).await;
    let c = s.client("postgres").await;
    c.batch_execute("CREATE DATABASE gis").await.unwrap();
    drop(c);
    let c = s.client("gis").await;
    c.batch_execute("CREATE EXTENSION postgis; CREATE TABLE t AS SELECT ST_MakePoint(1, 2) AS p")
        .await
        .unwrap();
    let version = extension_version(&c, "postgis", "installed_version").await;
    drop(c);
    let upgrade = upgrade_on(&s.name, "17", "pgup/postgres:17");
    let why = "extension postgis";

    // Running: the checks ask the running server, so the upgrade refuses before it stops it.
    let started = || docker(&["inspect", "--format", "{{.State.StartedAt}}", &s.name]);
    let was = started();
    pgup(&upgrade).assert_refused_after_steps(why);
    assert_eq!(started(), was, "the server was never stopped");

    s.stop();
    let root = s.mount_root();
    let hash = cluster_hash(&root);
    let check = pgup(&[&["check"], &upgrade[1..7], &["--json"]].concat());
    assert_eq!(check.code, 3, "{}", check.stderr);
    let check: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    let failed = items(&check, "extensions", "fail");
    assert_eq!(
        failed,
        [format!(
            "extension postgis {version} (in gis) is not in pgup/postgres:17: it has no postgis.control for PostgreSQL 17; use a new image that provides postgis"
        )],
        "names the extension, the database and the image: {check}"
    );
    pgup(&upgrade).assert_refused_after_steps(why);
    assert_eq!(cluster_hash(&root), hash, "the data tree is byte-identical");
}

/// A toolbox assembled once is reused: an upgrade of another cluster between the same two
/// images assembles nothing.
#[tokio::test]
async fn an_assembled_toolbox_is_reused() {
    let assembled = || {
        let run = assemble("pgup/postgres:15", "pgup/postgres:18", &["--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()
    };
    let first = assembled();
    let again = assembled();
    assert_eq!(again["reused"], true, "{again}");
    assert_eq!(again["image"], first["image"]);
    let mut s = Server::start(ServerSpec::new("pgup/postgres:15")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let run = pgup(&upgrade_on(&s.name, "18", "pgup/postgres:18"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("assembling"), "{}", run.stderr);
    s.refresh_port();
    assert_eq!(s.content().await, before);
}
