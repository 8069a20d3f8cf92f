//! The client side of the temporary servers pgup starts: connecting over their private
//! socket, the databases to visit, and errors that carry the server's own words. Used by
//! the modules that read or change a cluster through PostgreSQL (verify, options, recreate).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio_postgres::{Client, NoTls};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the temporary server as {user} (database {db}): {}",
        message(err)
    )]
    Connect {
        user: String,
        db: String,
        err: tokio_postgres::Error,
    },
    #[error("query on database {db} failed: {}", message(err))]
    Query {
        db: String,
        err: tokio_postgres::Error,
    },
}

/// The server's own words when it sent an error ("db error" alone says nothing).
pub fn message(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => err.to_string(),
    }
}

type Result<T> = std::result::Result<T, ClientError>;

pub async fn connect(socket_dir: &Path, user: &str, db: &str) -> Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(5432)
        .user(user)
        .dbname(db)
        // Counting a big table crosses jit_above_cost; compiling costs more than it saves.
        // Literals are standard whatever the cluster's settings say (19 knows no other).
        .options("-c jit=off -c standard_conforming_strings=on");
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|err| ClientError::Connect {
            user: user.to_owned(),
            db: db.to_owned(),
            err,
        })?;
    tokio::spawn(connection);
    Ok(client)
}

pub fn query_err(db: &str) -> impl Fn(tokio_postgres::Error) -> ClientError + '_ {
    move |err| ClientError::Query {
        db: db.to_owned(),
        err,
    }
}

/// The databases a client can connect to: all but template0 (pg_upgrade refuses others
/// that do not allow connections).
pub async fn connectable_databases(socket_dir: &Path, superuser: &str) -> Result<Vec<String>> {
    databases(&connect(socket_dir, superuser, "template1").await?).await
}

pub async fn databases(client: &Client) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_err("template1"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Runs `work` on each `(database, item)` in `items`, in their order, over `jobs` connections
/// at once; each connection runs `setup` (SQL, maybe empty) when it connects. `done` is told
/// each time one more item is finished. The first failure stops the others taking more.
/// Keep each database's items together: a connection that moves to another database
/// reconnects.
pub async fn each_in_parallel<T, E: From<ClientError>>(
    socket_dir: &Path,
    superuser: &str,
    items: Vec<(String, T)>,
    jobs: usize,
    setup: &str,
    work: impl AsyncFn(&Client, &str, &T) -> std::result::Result<(), E>,
    done: &(dyn Fn(usize) + Sync),
) -> std::result::Result<(), E> {
    let workers = jobs.clamp(1, items.len().max(1));
    let queue = Mutex::new(VecDeque::from(items));
    let (count, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
    let worker = async || -> std::result::Result<(), E> {
        let mut client: Option<(String, Client)> = None;
        loop {
            if failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            let Some((db, item)) = queue.lock().expect("not poisoned").pop_front() else {
                return Ok(());
            };
            if client.as_ref().is_none_or(|(at, _)| *at != db) {
                let c = connect(socket_dir, superuser, &db).await?;
                if !setup.is_empty() {
                    c.batch_execute(setup).await.map_err(query_err(&db))?;
                }
                client = Some((db.clone(), c));
            }
            let (_, c) = client.as_ref().expect("connected");
            if let Err(e) = work(c, &db, &item).await {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            done(count.fetch_add(1, Ordering::Relaxed) + 1);
        }
    };
    let running: Vec<_> = (0..workers).map(|_| worker()).collect();
    for result in futures_util::future::join_all(running).await {
        result?;
    }
    Ok(())
}

/// The bootstrap superuser's name (the role with OID 10), asked as `login`.
pub async fn bootstrap_superuser(socket_dir: &Path, login: &str) -> Result<String> {
    let client = connect(socket_dir, login, "template1").await?;
    let row = client
        .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
        .await
        .map_err(query_err("template1"))?;
    Ok(row.get(0))
}
