//! The only module that talks to Docker (through bollard): inspecting containers and volumes,
//! and finding which containers hold a data directory. Everything it returns is plain data,
//! so callers never see bollard's types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::errors::Error as ApiError;
use bollard::query_parameters::ListContainersOptionsBuilder;

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker daemon ({0}); start Docker, or set DOCKER_HOST, and check that this user may use its socket"
    )]
    Unreachable(String),
    #[error("no container named {0:?}; `docker ps -a` lists the containers")]
    NoSuchContainer(String),
    #[error("no volume named {0:?}; `docker volume ls` lists the volumes")]
    NoSuchVolume(String),
    #[error("the Docker daemon refused a request: {0}")]
    Api(#[from] ApiError),
}

pub type Result<T, E = DockerError> = std::result::Result<T, E>;

/// What pgup needs to know about a container.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    /// The image as the container names it, e.g. `pgup/postgres:13`.
    pub image: String,
    pub running: bool,
    pub env: HashMap<String, String>,
    pub mounts: Vec<Mount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    Volume(String),
    Bind,
    Other(String),
}

#[derive(Debug, Clone)]
pub struct Mount {
    pub kind: MountKind,
    /// Where the mount's content lives on the Docker host.
    pub source: PathBuf,
    /// Where the container sees it.
    pub destination: PathBuf,
}

/// A named volume's driver and host mount point.
#[derive(Debug, Clone)]
pub struct Volume {
    pub name: String,
    pub driver: String,
    pub mountpoint: PathBuf,
}

pub struct Docker {
    api: bollard::Docker,
}

impl Docker {
    /// Connects as the docker CLI would (DOCKER_HOST, else the local socket) and settles on
    /// the highest API version both sides speak: engines here may be far older than bollard.
    pub async fn connect() -> Result<Self> {
        let unreachable = |e: ApiError| DockerError::Unreachable(e.to_string());
        let api = bollard::Docker::connect_with_defaults().map_err(unreachable)?;
        let api = api.negotiate_version().await.map_err(unreachable)?;
        Ok(Self { api })
    }

    pub async fn container(&self, name: &str) -> Result<Container> {
        let c = self
            .api
            .inspect_container(name, None)
            .await
            .map_err(|e| not_found(e, || DockerError::NoSuchContainer(name.to_owned())))?;
        let config = c.config.unwrap_or_default();
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let mounts = c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let kind = match m.typ.map(|t| t.to_string()).as_deref() {
                    Some("volume") => MountKind::Volume(m.name.unwrap_or_default()),
                    Some("bind") => MountKind::Bind,
                    other => MountKind::Other(other.unwrap_or("unknown").to_owned()),
                };
                Mount {
                    kind,
                    source: m.source.unwrap_or_default().into(),
                    destination: m.destination.unwrap_or_default().into(),
                }
            })
            .chain(
                c.host_config
                    .and_then(|h| h.tmpfs)
                    .into_iter()
                    .flat_map(|t| {
                        // `--tmpfs` mounts are not listed with the others.
                        t.into_keys().map(|dest| Mount {
                            kind: MountKind::Other("tmpfs".to_owned()),
                            source: PathBuf::new(),
                            destination: dest.into(),
                        })
                    }),
            )
            .collect();
        Ok(Container {
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: config.image.unwrap_or_default(),
            running: c.state.and_then(|s| s.running).unwrap_or(false),
            env,
            mounts,
        })
    }

    pub async fn volume(&self, name: &str) -> Result<Volume> {
        let v = self
            .api
            .inspect_volume(name)
            .await
            .map_err(|e| not_found(e, || DockerError::NoSuchVolume(name.to_owned())))?;
        Ok(Volume {
            name: v.name,
            driver: v.driver,
            mountpoint: v.mountpoint.into(),
        })
    }

    /// Every container, running or not, with a mount that holds `path` or lies inside it.
    pub async fn containers_using(&self, path: &Path) -> Result<Vec<Container>> {
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let mut found = Vec::new();
        for summary in self.api.list_containers(Some(options)).await? {
            let mounts = summary.mounts.unwrap_or_default();
            let uses = mounts.iter().any(|m| {
                let source = Path::new(m.source.as_deref().unwrap_or_default());
                !source.as_os_str().is_empty()
                    && (path.starts_with(source) || source.starts_with(path))
            });
            if let (true, Some(id)) = (uses, summary.id) {
                found.push(self.container(&id).await?);
            }
        }
        Ok(found)
    }
}

fn not_found(e: ApiError, missing: impl FnOnce() -> DockerError) -> DockerError {
    match e {
        ApiError::DockerResponseServerError {
            status_code: 404, ..
        } => missing(),
        e => DockerError::Api(e),
    }
}
