//! Planner statistics for a new cluster, as PostgreSQL's documentation advises after
//! pg_upgrade for the target major: ANALYZE over `jobs` connections. On a server that already
//! serves it goes in stages, rough statistics first so that queries plan sensibly soon; from
//! 18 on, pg_upgrade carries most statistics over, so the stages gather only what is missing
//! and a last full pass refreshes the counters that trigger autovacuum. On a private server
//! nobody queries yet, one pass does.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::pgclient::{ClientError, connect, databases, each_in_parallel, query_err};

/// Which relations a stage analyzes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Those with a column, an expression index or extended statistics lacking statistics.
    Missing,
}

/// One pass of ANALYZE over every database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// default_statistics_target for this pass; None: the server's own.
    pub target: Option<u32>,
    pub scope: Scope,
}

/// The passes for a new cluster of `major`: staged when it already `serves`.
pub fn stages(major: u32, serves: bool) -> Vec<Stage> {
    let scope = if major >= 18 {
        Scope::Missing
    } else {
        Scope::All
    };
    let stage = |target, scope| Stage { target, scope };
    if serves {
        vec![
            stage(Some(1), scope),
            stage(Some(10), scope),
            stage(None, Scope::All),
        ]
    } else {
        vec![stage(None, scope)]
    }
}

/// What was gathered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Gathered {
    /// ANALYZE commands run, over all stages.
    pub analyzed: usize,
}

/// The rule `stages` follow, as the vacuumdb commands that do the same.
pub fn rule(stages: &[Stage]) -> &'static str {
    let missing = stages.first().is_some_and(|s| s.scope == Scope::Missing);
    match (stages.len() > 1, missing) {
        (true, true) => {
            "kept what pg_upgrade carried; vacuumdb --all --analyze-in-stages --missing-stats-only, then --analyze-only"
        }
        (true, false) => "vacuumdb --all --analyze-in-stages",
        (false, true) => {
            "kept what pg_upgrade carried; vacuumdb --all --analyze-only --missing-stats-only"
        }
        (false, false) => "vacuumdb --all --analyze-only",
    }
}

/// Statistics still being gathered on a container that serves the new cluster: written before
/// the hand-over, removed once they are complete, so that `status` can tell and a later
/// `pgup upgrade` finish them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub major: u32,
    pub container: String,
    pub superuser: String,
    pub jobs: u32,
    pub since: DateTime<Utc>,
}

impl Pending {
    /// The record in `path`, if any (a damaged one is as good as none).
    pub fn read(path: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}

/// The relations ANALYZE can take (tables, materialized views, partitioned tables), as
/// quoted names, catalogs included as vacuumdb includes them.
const RELATIONS: &str = "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't' \
     AND n.nspname !~ '^pg_(toast_)?temp_'";

/// The condition of [`Scope::Missing`] on `c`, after vacuumdb's --missing-stats-only: a column
/// that would have statistics has none, or an expression index's column, or an extended
/// statistics object has no data.
const MISSING: &str = " AND c.reltuples <> 0 AND ( \
     EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
       AND NOT a.attisdropped AND a.attstattarget IS DISTINCT FROM 0 \
       AND NOT EXISTS (SELECT FROM pg_statistic s WHERE s.starelid = a.attrelid \
         AND s.staattnum = a.attnum AND s.stainherit = (c.relkind = 'p'))) \
     OR EXISTS (SELECT FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indexrelid \
       WHERE i.indrelid = c.oid AND i.indexprs IS NOT NULL AND a.attnum > 0 \
       AND NOT EXISTS (SELECT FROM pg_statistic s WHERE s.starelid = a.attrelid \
         AND s.staattnum = a.attnum)) \
     OR EXISTS (SELECT FROM pg_statistic_ext e WHERE e.stxrelid = c.oid \
       AND NOT EXISTS (SELECT FROM pg_statistic_ext_data d WHERE d.stxoid = e.oid)))";

/// Runs `stages` on the server listening in `socket_dir`; `progress` is told (stage number
/// from 1, relations done, relations in the stage) as it goes.
pub async fn gather(
    socket_dir: &Path,
    superuser: &str,
    stages: &[Stage],
    jobs: usize,
    progress: &(dyn Fn(usize, usize, usize) + Sync),
) -> Result<Gathered, ClientError> {
    let names = databases(&connect(socket_dir, superuser, "template1").await?).await?;
    let mut gathered = Gathered::default();
    // Each scope's list is read once, before its first stage: the rough first stage gives
    // the missing relations statistics, and the later stages must refine the same ones (as
    // vacuumdb reuses its list).
    let mut lists: Vec<(Scope, Vec<(String, String)>)> = Vec::new();
    for (n, stage) in (1..).zip(stages) {
        if !lists.iter().any(|(scope, _)| *scope == stage.scope) {
            let mut list = Vec::new();
            for db in &names {
                let c = connect(socket_dir, superuser, db).await?;
                list.extend(relations(&c, db, stage.scope).await?);
            }
            lists.push((stage.scope, list));
        }
        let items = lists
            .iter()
            .find(|(scope, _)| *scope == stage.scope)
            .map(|(_, list)| list.clone())
            .unwrap_or_default();
        let total = items.len();
        progress(n, 0, total);
        // Statistics are what a fresh upgrade waits for: no cost-based delay.
        let setup = match stage.target {
            Some(t) => format!("SET vacuum_cost_delay = 0; SET default_statistics_target = {t}"),
            None => "SET vacuum_cost_delay = 0".to_owned(),
        };
        let analyze = async |c: &Client, db: &str, name: &String| {
            c.batch_execute(&format!("ANALYZE {name}"))
                .await
                .map_err(query_err(db))
        };
        let done = |k: usize| progress(n, k, total);
        each_in_parallel(socket_dir, superuser, items, jobs, &setup, analyze, &done).await?;
        gathered.analyzed += total;
    }
    Ok(gathered)
}

async fn relations(
    c: &Client,
    db: &str,
    scope: Scope,
) -> Result<Vec<(String, String)>, ClientError> {
    let sql = match scope {
        Scope::All => format!("{RELATIONS} ORDER BY c.relpages DESC"),
        Scope::Missing => format!("{RELATIONS}{MISSING} ORDER BY c.relpages DESC"),
    };
    Ok(c.query(&sql, &[])
        .await
        .map_err(query_err(db))?
        .iter()
        .map(|r| (db.to_owned(), r.get(0)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_follow_the_target_major() {
        let s = stages(17, true);
        assert_eq!(
            s.iter().map(|s| s.target).collect::<Vec<_>>(),
            [Some(1), Some(10), None]
        );
        assert!(s.iter().all(|s| s.scope == Scope::All));
        // 18 carried most statistics over: the quick stages fill only the gaps, and the
        // last pass refreshes what triggers autovacuum.
        let s = stages(18, true);
        assert_eq!(
            s.iter().map(|s| s.scope).collect::<Vec<_>>(),
            [Scope::Missing, Scope::Missing, Scope::All]
        );
        assert_eq!(
            stages(18, false),
            [Stage {
                target: None,
                scope: Scope::Missing
            }]
        );
        assert_eq!(stages(15, false).len(), 1);
        assert_eq!(
            rule(&stages(19, true)),
            "kept what pg_upgrade carried; vacuumdb --all --analyze-in-stages --missing-stats-only, then --analyze-only"
        );
        assert_eq!(
            rule(&stages(17, true)),
            "vacuumdb --all --analyze-in-stages"
        );
        assert_eq!(rule(&stages(17, false)), "vacuumdb --all --analyze-only");
    }
}
