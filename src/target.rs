//! Resolves the target flags (--container, --volume, --data-dir) to where the cluster lives on
//! this host: the mount root (a volume's or bind mount's host directory, where backups are
//! kept), PGDATA below it, and the container that runs on it, if any.
//!
//! pgup works on the Docker host's files directly, so it must run on the Docker host with the
//! right to read them (as root, usually).

use std::io;
use std::path::{Path, PathBuf};

use crate::docker::{Container, Docker, DockerError, MountKind};
use crate::journal::Journal;
use crate::location::HostMount;
use crate::settings::{Place, TargetSpec};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("cannot read {} ({err}); {hint}", path.display())]
    Unreachable {
        path: PathBuf,
        err: io::Error,
        hint: &'static str,
    },
    #[error(
        "{what} holds no PostgreSQL data directory (no PG_VERSION in {path}); point pgup at the volume or directory holding PGDATA, or pass --pgdata-subdir"
    )]
    NotADataDir { what: String, path: PathBuf },
    #[error(
        "{what} holds several data directories ({}); pass --pgdata-subdir to choose one",
        .found.join(", ")
    )]
    Ambiguous { what: String, found: Vec<String> },
    #[error(
        "container {container} keeps PGDATA ({pgdata}) in its own filesystem, not in a volume or bind mount; pgup upgrades data kept in volumes: copy it into a volume first"
    )]
    NotMounted { container: String, pgdata: PathBuf },
    #[error(
        "container {container} mounts PGDATA ({pgdata}) from a {kind} mount; pgup upgrades data kept in volumes or bind mounts"
    )]
    UnsupportedMount {
        container: String,
        pgdata: PathBuf,
        kind: String,
    },
    #[error(
        "volume {name} uses the {driver:?} driver; pgup works on volumes of the \"local\" driver, whose files are on this host"
    )]
    RemoteVolume { name: String, driver: String },
    #[error(
        "--location {path}={given}: {given} is neither a directory on this host nor a volume; name the volume or host directory the server's container mounts at {path}"
    )]
    NoLocation { path: String, given: String },
}

const ON_DOCKER_HOST: &str =
    "run pgup on the Docker host, as a user that can read the data (root, usually)";

/// Where a cluster lives.
#[derive(Debug, Clone)]
pub struct Target {
    /// How the user named it, for messages: `container db`, `volume db_data`, `directory /srv/pg`.
    pub label: String,
    /// The host directory of the volume or bind mount: the unit pgup works in.
    pub mount_root: PathBuf,
    /// PGDATA on this host: the mount root or a directory below it.
    pub data_dir: PathBuf,
    /// The container named by --container.
    pub container: Option<Container>,
    /// The name of the volume holding the data, if it is a named volume.
    pub volume: Option<String>,
    /// The mounts of the server's container (or those --location names): where a
    /// tablespace or WAL directory outside PGDATA is on this host.
    pub mounts: Vec<HostMount>,
    /// Mounts of the container inside PGDATA (`-v wal:$PGDATA/pg_wal`), as it sees them.
    pub mounted_inside: Vec<PathBuf>,
}

impl Target {
    pub async fn resolve(spec: &TargetSpec, docker: &Docker) -> Result<Self, TargetError> {
        let subdir = spec.pgdata_subdir.as_deref();
        let (label, root, volume) = match &spec.place {
            Place::Container(name) => {
                return match docker.container(name).await {
                    Ok(c) => Self::from_container(c),
                    Err(DockerError::NoSuchContainer(_)) => Self::swapping(docker, name).await,
                    Err(e) => Err(e.into()),
                };
            }
            Place::Volume(name) => {
                let v = docker.volume(name).await?;
                if v.driver != "local" {
                    return Err(TargetError::RemoteVolume {
                        name: v.name,
                        driver: v.driver,
                    });
                }
                (format!("volume {}", v.name), v.mountpoint, Some(v.name))
            }
            Place::DataDir(dir) => {
                let dir = std::path::absolute(dir).unwrap_or(dir.clone());
                (format!("directory {}", dir.display()), dir, None)
            }
        };
        readable(&root)?;
        let data_dir = locate_pgdata(&label, &root, subdir)?;
        let mut mounts = Vec::new();
        if !docker.has_engine() && spec.locations.is_empty() {
            // pgup runs where the server runs: the links out of PGDATA resolve as they are.
            mounts.push(HostMount {
                destination: "/".into(),
                source: "/".into(),
            });
        }
        for (path, source) in &spec.locations {
            mounts.push(HostMount {
                destination: path.clone(),
                source: location_source(docker, path, source).await?,
            });
        }
        Ok(Self {
            label,
            mount_root: root,
            data_dir,
            container: None,
            volume,
            mounts,
            mounted_inside: Vec::new(),
        })
    }

    /// PGDATA's path below the mount root ("" when it is the root).
    pub fn pgdata_below_root(&self) -> PathBuf {
        self.data_dir
            .strip_prefix(&self.mount_root)
            .unwrap_or(Path::new(""))
            .to_owned()
    }

    /// The target of a container that is gone because an upgrade or rollback was killed while
    /// it swapped containers (`<name>-pgup-<stamp>` renamed, the new one not made yet): the
    /// one it kept mounts the same data, where the journal says how to go on.
    async fn swapping(docker: &Docker, name: &str) -> Result<Self, TargetError> {
        let gone = || TargetError::Docker(DockerError::NoSuchContainer(name.to_owned()));
        for kept in docker.named_like(&format!("{name}-pgup-")).await? {
            let Ok(mut target) = Self::from_container(kept) else {
                continue;
            };
            if Journal::read(&target.mount_root).is_ok_and(|j| j.is_some()) {
                target.label = format!("container {name}");
                return Ok(target);
            }
        }
        Err(gone())
    }

    fn from_container(c: Container) -> Result<Self, TargetError> {
        let label = format!("container {}", c.name);
        let pgdata = container_pgdata(&c);
        let mount = c
            .mounts
            .iter()
            .filter(|m| pgdata.starts_with(&m.destination))
            .max_by_key(|m| m.destination.components().count())
            .ok_or_else(|| TargetError::NotMounted {
                container: c.name.clone(),
                pgdata: pgdata.clone(),
            })?;
        let volume = match &mount.kind {
            MountKind::Volume(name) => Some(name.clone()),
            MountKind::Bind => None,
            MountKind::Other(kind) => {
                return Err(TargetError::UnsupportedMount {
                    container: c.name.clone(),
                    pgdata,
                    kind: kind.clone(),
                });
            }
        };
        let below = pgdata
            .strip_prefix(&mount.destination)
            .expect("filtered by prefix");
        let mount_root = mount.source.clone();
        readable(&mount_root)?;
        let data_dir = locate_pgdata(&label, &mount_root, Some(below))?;
        let mounts = c
            .mounts
            .iter()
            .filter(|m| matches!(m.kind, MountKind::Volume(_) | MountKind::Bind))
            .map(|m| HostMount {
                destination: m.destination.clone(),
                source: m.source.clone(),
            })
            .collect();
        let mounted_inside = c
            .mounts
            .iter()
            .filter(|m| m.destination.starts_with(&pgdata) && m.destination != pgdata)
            .map(|m| m.destination.clone())
            .collect();
        Ok(Self {
            label,
            mount_root,
            data_dir,
            volume,
            container: Some(c),
            mounts,
            mounted_inside,
        })
    }
}

/// The host directory of --location's source: an absolute host directory, or a local volume.
async fn location_source(
    docker: &Docker,
    path: &Path,
    source: &str,
) -> Result<PathBuf, TargetError> {
    if source.starts_with('/') && Path::new(source).is_dir() {
        return Ok(PathBuf::from(source));
    }
    let missing = || TargetError::NoLocation {
        path: path.display().to_string(),
        given: source.to_owned(),
    };
    if source.starts_with('/') {
        return Err(missing());
    }
    match docker.volume(source).await {
        Ok(v) if v.driver != "local" => Err(TargetError::RemoteVolume {
            name: v.name,
            driver: v.driver,
        }),
        Ok(v) => Ok(v.mountpoint),
        Err(DockerError::NoSuchVolume(_)) => Err(missing()),
        Err(e) => Err(e.into()),
    }
}

/// The owner (uid, gid) of PGDATA: pgup runs PostgreSQL's programs as it.
pub fn owner(data_dir: &Path) -> std::io::Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(data_dir)?;
    Ok((meta.uid(), meta.gid()))
}

/// PGDATA as the container sees it: its environment, else the image family's default layout.
fn container_pgdata(c: &Container) -> PathBuf {
    if let Some(p) = c.env.get("PGDATA") {
        return PathBuf::from(p);
    }
    match c.env.get("PG_MAJOR").and_then(|m| m.parse::<u32>().ok()) {
        Some(major) if major >= 18 => format!("/var/lib/postgresql/{major}/docker").into(),
        _ => "/var/lib/postgresql/data".into(),
    }
}

fn readable(root: &Path) -> Result<(), TargetError> {
    let unreachable = |err: io::Error| TargetError::Unreachable {
        path: root.to_owned(),
        hint: match err.kind() {
            io::ErrorKind::NotADirectory => {
                "it is not a directory: name the volume or host directory that holds PGDATA"
            }
            io::ErrorKind::NotFound => {
                "name an existing volume or host directory (on the Docker host, where pgup runs)"
            }
            _ => ON_DOCKER_HOST,
        },
        err,
    };
    std::fs::read_dir(root).map(drop).map_err(unreachable)
}

/// PGDATA below a mount root: the given subdirectory, the root itself, or the one
/// `<major>/docker` directory that the official 18+ images use.
fn locate_pgdata(label: &str, root: &Path, subdir: Option<&Path>) -> Result<PathBuf, TargetError> {
    let is_cluster = |dir: &Path| dir.join("PG_VERSION").is_file();
    let not_a_cluster = |path: PathBuf| TargetError::NotADataDir {
        what: label.to_owned(),
        path,
    };
    let interrupted = || Journal::read(root).is_ok_and(|j| j.is_some());
    if let Some(sub) = subdir.filter(|s| !s.as_os_str().is_empty()) {
        let dir = root.join(sub);
        return if is_cluster(&dir) || (dir.is_dir() && interrupted()) {
            Ok(dir)
        } else {
            Err(not_a_cluster(dir))
        };
    }
    if is_cluster(root) {
        return Ok(root.to_owned());
    }
    // Mid-swap, PGDATA may hold no cluster for a moment: the journal says where it is.
    if let Ok(Some(journal)) = Journal::read(root) {
        return Ok(root.join(journal.pgdata));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path().join("docker"))
        .filter(|d| is_cluster(d))
        .collect();
    match found.len() {
        0 => Err(not_a_cluster(root.to_owned())),
        1 => Ok(found.remove(0)),
        _ => Err(TargetError::Ambiguous {
            what: label.to_owned(),
            found: found
                .iter()
                .filter_map(|d| d.strip_prefix(root).ok())
                .map(|d| d.display().to_string())
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn container(env: &[(&str, &str)]) -> Container {
        Container {
            name: "db".into(),
            image: "img".into(),
            image_id: "sha256:1".into(),
            running: false,
            pid: None,
            labels: HashMap::new(),
            restart_policy: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            mounts: vec![],
            cmd: vec![],
        }
    }

    #[test]
    fn pgdata_from_env_then_layout() {
        assert_eq!(
            container_pgdata(&container(&[("PGDATA", "/x")])),
            Path::new("/x")
        );
        assert_eq!(
            container_pgdata(&container(&[("PG_MAJOR", "18")])),
            Path::new("/var/lib/postgresql/18/docker")
        );
        assert_eq!(
            container_pgdata(&container(&[("PG_MAJOR", "13")])),
            Path::new("/var/lib/postgresql/data")
        );
    }

    #[test]
    fn finds_the_18_layout() {
        let root = tempfile::tempdir().unwrap();
        let label = "volume v";
        assert!(matches!(
            locate_pgdata(label, root.path(), None),
            Err(TargetError::NotADataDir { .. })
        ));
        std::fs::create_dir_all(root.path().join("18/docker")).unwrap();
        std::fs::write(root.path().join("18/docker/PG_VERSION"), "18\n").unwrap();
        assert_eq!(
            locate_pgdata(label, root.path(), None).unwrap(),
            root.path().join("18/docker")
        );
        std::fs::create_dir_all(root.path().join("19/docker")).unwrap();
        std::fs::write(root.path().join("19/docker/PG_VERSION"), "19\n").unwrap();
        assert!(matches!(
            locate_pgdata(label, root.path(), None),
            Err(TargetError::Ambiguous { .. })
        ));
        assert_eq!(
            locate_pgdata(label, root.path(), Some(Path::new("19/docker"))).unwrap(),
            root.path().join("19/docker")
        );
    }
}
