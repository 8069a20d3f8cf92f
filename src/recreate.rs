//! Moving a container to the new major's image once its data is upgraded: the same name and
//! configuration, PGDATA pointing where the data is (so a volume at /var/lib/postgresql/data
//! keeps working on the 18 images), the old container kept stopped and renamed for rollback,
//! and the running server's version checked through its own socket.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::compose;
use crate::docker::Docker;

pub struct Moved {
    pub server_version_num: i32,
    /// For a Compose-managed container: the change to make in the compose file.
    pub compose_hint: Option<String>,
}

/// The name the old container is kept under.
pub fn kept_name(name: &str, stamp: &str) -> String {
    format!("{name}-pgup-{stamp}")
}

/// A container to move to another image, with its data.
pub struct Move<'a> {
    pub name: &'a str,
    pub image: &'a str,
    /// The mount root and PGDATA on the host.
    pub root: &'a Path,
    pub data: &'a Path,
    /// The name the container it replaces is kept under.
    pub keep_as: String,
    pub superuser: &'a str,
    /// The major the image must run.
    pub major: u32,
    /// The command to give it instead of the old container's (settings the new major refuses
    /// dropped or replaced).
    pub command: Option<&'a [String]>,
}

pub async fn recreate(docker: &Docker, to: &Move<'_>) -> Result<Moved> {
    let name = to.name;
    // Resumed after the rename: the kept container holds the configuration.
    let source = if docker.exists(&to.keep_as).await? {
        to.keep_as.as_str()
    } else {
        name
    };
    let old = docker.container(source).await?;
    let mount = old
        .mounts
        .iter()
        .find(|m| m.source == to.root)
        .with_context(|| format!("container {source} no longer mounts {}", to.root.display()))?;
    let pgdata = mount
        .destination
        .join(to.data.strip_prefix(to.root).unwrap_or(Path::new("")));
    docker
        .recreate_on(
            name,
            to.image,
            &pgdata.display().to_string(),
            to.command,
            &to.keep_as,
        )
        .await?;
    let version = server_version(docker, name, to.superuser).await?;
    if version / 10000 != to.major as i32 {
        bail!(
            "container {name} runs server_version_num {version}, not PostgreSQL {}",
            to.major
        );
    }
    let hint = match compose::Service::of(&old.labels) {
        Some(service) => {
            // PGDATA only where the new image would look elsewhere for the data.
            let default = docker
                .image(to.image)
                .await?
                .and_then(|(_, env)| env.get("PGDATA").map(PathBuf::from));
            let pgdata = (default.as_deref() != Some(pgdata.as_path())).then_some(pgdata.as_path());
            Some(service.upgrade_hint(to.image, pgdata, to.command))
        }
        None => None,
    };
    Ok(Moved {
        server_version_num: version,
        compose_hint: hint,
    })
}

/// server_version_num of the server in a running container, through its Unix socket seen
/// from the host: no network and no password needed. Waits for it to answer.
pub async fn server_version(docker: &Docker, name: &str, superuser: &str) -> Result<i32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let attempt = async {
            let socket = served_socket(docker, name).await?;
            let client = crate::pgclient::connect(&socket, superuser, "template1").await?;
            let row = client
                .query_one("SELECT current_setting('server_version_num')::int", &[])
                .await?;
            anyhow::Ok(row.get::<_, i32>(0))
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e).context(format!(
                    "container {name} on the new image did not answer; see `docker logs {name}`"
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The directory of the server socket in a running container, as this host sees it
/// (/proc/<pid>/root).
pub async fn served_socket(docker: &Docker, name: &str) -> Result<PathBuf> {
    let c = docker.container(name).await?;
    let pid = c.pid.context("the container is not running")?;
    // /var/run is an absolute link to /run in Debian images, which /proc/<pid>/root would
    // resolve on the host: look in the real directory first.
    let root = Path::new("/proc").join(pid.to_string()).join("root");
    ["run/postgresql", "var/run/postgresql"]
        .iter()
        .map(|d| root.join(d))
        .find(|d| d.join(".s.PGSQL.5432").exists())
        .with_context(|| format!("container {name} has no server socket"))
}
