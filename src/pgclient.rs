//! The client side of the temporary servers pgup starts: connecting over their private
//! socket, the databases to visit, and errors that carry the server's own words. Used by
//! the modules that read or change a cluster through PostgreSQL (verify, options, recreate).

use std::path::Path;

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
        .options("-c jit=off");
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

/// The bootstrap superuser's name (the role with OID 10), asked as `login`.
pub async fn bootstrap_superuser(socket_dir: &Path, login: &str) -> Result<String> {
    let client = connect(socket_dir, login, "template1").await?;
    let row = client
        .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
        .await
        .map_err(query_err("template1"))?;
    Ok(row.get(0))
}
