//! The only module that talks to Docker (through bollard): inspecting containers and volumes,
//! and finding which containers hold a data directory. Everything it returns is plain data,
//! so callers never see bollard's types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::errors::Error as ApiError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerUpdateBody, EndpointSettings,
    HostConfig, ImageConfig, Mount as ApiMount, MountType, NetworkConnectRequest, NetworkingConfig,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder,
    DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder, ListImagesOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    RenameContainerOptionsBuilder, StopContainerOptionsBuilder, TagImageOptionsBuilder,
};
use futures_util::StreamExt;

use crate::compose;
use crate::failpoint;

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
    #[error("building image {tag} failed: {message}")]
    Build { tag: String, message: String },
    #[error("cannot keep what was read from a container in a temporary file (is /tmp full?): {0}")]
    Scratch(#[from] std::io::Error),
}

pub type Result<T, E = DockerError> = std::result::Result<T, E>;

/// What pgup needs to know about a container.
#[derive(Debug, Clone)]
pub struct Container {
    pub name: String,
    /// The image as the container names it, e.g. `pgup/postgres:13`.
    pub image: String,
    /// The id of the image it was created from (a tag may have moved since).
    pub image_id: String,
    pub running: bool,
    /// The process id of its main process on this host, while it runs.
    pub pid: Option<i64>,
    pub env: HashMap<String, String>,
    pub labels: HashMap<String, String>,
    pub mounts: Vec<Mount>,
    /// The restart policy's name ("always", "unless-stopped", ...).
    pub restart_policy: Option<String>,
    /// Its command (what the image's entrypoint is given).
    pub cmd: Vec<String>,
}

impl Container {
    /// One of pgup's temporary containers (a toolbox, a throwaway view), this run's or a
    /// killed one's: never a server of the data.
    pub fn is_pgups(&self) -> bool {
        self.labels.contains_key(LABEL_ROLE)
    }

    /// One of this process's temporary containers.
    pub fn is_mine(&self) -> bool {
        self.labels.get(LABEL_PID) == Some(&std::process::id().to_string())
    }
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

/// A local image and the labels pgup reads.
#[derive(Debug, Clone)]
pub struct Image {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: HashMap<String, String>,
    /// Its entrypoint and command (read by [`Docker::image`] only).
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
}

impl Image {
    /// The PostgreSQL major a server image runs: pgup's label, else the official images' PG_MAJOR.
    pub fn pg_major(&self, env: &HashMap<String, String>) -> Option<u32> {
        self.labels
            .get("org.pgup.pg-major")
            .or_else(|| env.get("PG_MAJOR"))
            .and_then(|m| m.parse().ok())
    }
}

/// A temporary container for PostgreSQL's programs: no network, no capabilities, running as
/// the data owner, labelled so that `cleanup` can find it if pgup dies.
pub struct TempContainer<'a> {
    pub image: &'a str,
    /// What it is for: `org.pgup.role`.
    pub role: &'a str,
    /// The host data directory it works on: `org.pgup.data`.
    pub data: &'a Path,
    /// `uid:gid` every process in it runs as.
    pub user: String,
    /// Host directories mounted into it: (host path, container path, read-only).
    pub binds: Vec<(PathBuf, String, bool)>,
    /// Volumes mounted into it: (volume name, container path).
    pub volumes: Vec<(String, String)>,
}

/// The exit code and the combined output of a program run in a container.
pub struct ExecResult {
    pub code: i64,
    pub output: String,
}

pub const LABEL_ROLE: &str = "org.pgup.role";
pub const LABEL_PID: &str = "org.pgup.pid";
pub const LABEL_DATA: &str = "org.pgup.data";

/// The Docker engine, or none: inside an upgrade-capable image, with no engine to reach,
/// PostgreSQL's programs run as this machine's processes (see `toolbox`) and no container can
/// be using the data.
pub struct Docker {
    api: Option<bollard::Docker>,
}

/// Set (to anything) by `pgup entrypoint` for the upgrade it runs: no engine, whatever is there.
pub const NO_ENGINE: &str = "PGUP_NO_ENGINE";

impl Docker {
    /// Connects as the docker CLI would (DOCKER_HOST, else the local socket) and settles on
    /// the highest API version both sides speak: engines here may be far older than bollard.
    pub async fn connect() -> Result<Self> {
        let unreachable = |e: ApiError| DockerError::Unreachable(e.to_string());
        let api = bollard::Docker::connect_with_defaults().map_err(unreachable)?;
        let api = api.negotiate_version().await.map_err(unreachable)?;
        // bollard gives up on a request after 120 s; pg_upgrade of a large cluster and the
        // transfer of an image bundle take longer.
        Ok(Self {
            api: Some(api.with_timeout(std::time::Duration::from_secs(24 * 3600))),
        })
    }

    /// The engine, or for work on a data directory when there is none, no engine: the
    /// programs then run here (an upgrade-capable image run without the socket).
    pub async fn connect_for(data_dir: bool) -> Result<Self> {
        // The entrypoint's upgrade: the paths it has are the container's, even where a socket
        // is mounted in.
        if data_dir && std::env::var_os(NO_ENGINE).is_some() {
            return Ok(Self { api: None });
        }
        match Self::connect().await {
            // Only inside a container: on a host whose engine is down, containers may start
            // again in the middle of the work.
            Err(DockerError::Unreachable(_)) if data_dir && Path::new("/.dockerenv").exists() => {
                Ok(Self { api: None })
            }
            other => other,
        }
    }

    /// Whether an engine is there: without one, programs run as this machine's processes.
    pub fn has_engine(&self) -> bool {
        self.api.is_some()
    }

    fn api(&self) -> Result<&bollard::Docker> {
        self.api.as_ref().ok_or_else(|| {
            DockerError::Unreachable("no Docker engine: pgup runs without one here".to_owned())
        })
    }

    /// Streams `images` as one `docker save` tarball.
    pub fn export(
        &self,
        images: &[&str],
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes>> + use<'_> {
        match self.api() {
            Ok(api) => api
                .export_images(images)
                .map(|r| r.map_err(DockerError::from))
                .left_stream(),
            Err(e) => futures_util::stream::once(std::future::ready(Err(e))).right_stream(),
        }
    }

    /// Loads a `docker save` tarball (plain or compressed) from a stream; returns the names
    /// of the images it loaded.
    pub async fn load<S>(&self, tarball: S) -> Result<Vec<String>>
    where
        S: futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    {
        let options = bollard::query_parameters::ImportImageOptionsBuilder::default().build();
        let mut progress = self.api()?.import_image_stream(options, tarball, None);
        let mut loaded = Vec::new();
        while let Some(info) = progress.next().await {
            let line = info?.stream.unwrap_or_default();
            for name in line.lines().filter_map(|l| {
                l.strip_prefix("Loaded image: ")
                    .or_else(|| l.strip_prefix("Loaded image ID: "))
            }) {
                loaded.push(name.trim().to_owned());
            }
        }
        Ok(loaded)
    }

    /// Removes an image (a tag, or an id); failures are ignored.
    pub async fn remove_image(&self, name: &str) {
        let Ok(api) = self.api() else { return };
        let _ = api
            .remove_image(
                name,
                None::<bollard::query_parameters::RemoveImageOptions>,
                None,
            )
            .await;
    }

    pub async fn container(&self, name: &str) -> Result<Container> {
        let c = self
            .api()?
            .inspect_container(name, None)
            .await
            .map_err(|e| not_found(e, || DockerError::NoSuchContainer(name.to_owned())))?;
        let config = c.config.unwrap_or_default();
        let env = env_map(config.env.unwrap_or_default());
        let host = c.host_config.unwrap_or_default();
        let restart_policy = host
            .restart_policy
            .and_then(|p| p.name)
            .map(|n| n.to_string())
            .filter(|n| !n.is_empty());
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
            .chain(host.tmpfs.into_iter().flat_map(|t| {
                // `--tmpfs` mounts are not listed with the others.
                t.into_keys().map(|dest| Mount {
                    kind: MountKind::Other("tmpfs".to_owned()),
                    source: PathBuf::new(),
                    destination: dest.into(),
                })
            }))
            .collect();
        Ok(Container {
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image: config.image.unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            running: c.state.as_ref().and_then(|s| s.running).unwrap_or(false),
            pid: c.state.and_then(|s| s.pid).filter(|p| *p > 0),
            env,
            labels: config.labels.unwrap_or_default(),
            mounts,
            restart_policy,
            cmd: config.cmd.unwrap_or_default(),
        })
    }

    pub async fn volume(&self, name: &str) -> Result<Volume> {
        let v = self
            .api()?
            .inspect_volume(name)
            .await
            .map_err(|e| not_found(e, || DockerError::NoSuchVolume(name.to_owned())))?;
        Ok(Volume {
            name: v.name,
            driver: v.driver,
            mountpoint: v.mountpoint.into(),
        })
    }

    /// The names of the running containers with a mount that holds `path` or lies in it,
    /// but this pgup's own temporary containers.
    pub async fn running_using(&self, path: &Path) -> Result<Vec<String>> {
        let all = self.containers_using(path).await?;
        Ok(all
            .into_iter()
            .filter(|c| c.running && !c.is_mine())
            .map(|c| c.name)
            .collect())
    }

    /// Every container, running or not, with a mount that holds `path` or lies inside it.
    /// Without an engine, none: no container runs here.
    pub async fn containers_using(&self, path: &Path) -> Result<Vec<Container>> {
        if !self.has_engine() {
            return Ok(Vec::new());
        }
        let options = ListContainersOptionsBuilder::default().all(true).build();
        let mut found = Vec::new();
        for summary in self.api()?.list_containers(Some(options)).await? {
            let mut uses = false;
            for m in summary.mounts.unwrap_or_default() {
                let mut source = PathBuf::from(m.source.unwrap_or_default());
                // The listing leaves out where an anonymous volume (an image's VOLUME) is.
                if let (true, Some(name)) = (source.as_os_str().is_empty(), m.name) {
                    match self.volume(&name).await {
                        Ok(v) => source = v.mountpoint,
                        Err(DockerError::NoSuchVolume(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                uses |= !source.as_os_str().is_empty()
                    && (path.starts_with(&source) || source.starts_with(path));
            }
            if let (true, Some(id)) = (uses, summary.id) {
                match self.container(&id).await {
                    Ok(c) => found.push(c),
                    // Removed since the listing (a temporary container that ended).
                    Err(DockerError::NoSuchContainer(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(found)
    }
}

impl Docker {
    /// Local images carrying `label` (any value).
    pub async fn images_labelled(&self, label: &str) -> Result<Vec<Image>> {
        let filters = HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        Ok(self
            .api()?
            .list_images(Some(options))
            .await?
            .into_iter()
            .map(|i| Image {
                id: i.id,
                tags: i.repo_tags,
                labels: i.labels,
                entrypoint: Vec::new(),
                cmd: Vec::new(),
            })
            .collect())
    }

    /// The image named `name` and its environment, or None when there is no such local image.
    pub async fn image(&self, name: &str) -> Result<Option<(Image, HashMap<String, String>)>> {
        match self.api()?.inspect_image(name).await {
            Ok(i) => {
                let config = i.config.unwrap_or_default();
                let env = env_map(config.env.unwrap_or_default());
                let image = Image {
                    id: i.id.unwrap_or_default(),
                    tags: i.repo_tags.unwrap_or_default(),
                    labels: config.labels.unwrap_or_default(),
                    entrypoint: config.entrypoint.unwrap_or_default(),
                    cmd: config.cmd.unwrap_or_default(),
                };
                Ok(Some((image, env)))
            }
            Err(ApiError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What is at `path` in a container (running or not), as a tar archive whose entries are
    /// named from `path`'s last component, in an unnamed temporary file (a major's library
    /// directory is tens of MB: not held in memory), read from its start.
    pub async fn download(&self, id: &str, path: &str) -> Result<std::fs::File> {
        use std::io::{Seek, Write};
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let mut stream = self.api()?.download_from_container(id, Some(options));
        let mut tar = tempfile::tempfile()?;
        while let Some(chunk) = stream.next().await {
            tar.write_all(&chunk?)?;
        }
        tar.rewind()?;
        Ok(tar)
    }

    /// Builds image `tag` from a context tarball with no network; returns its id.
    pub async fn build(&self, context: std::fs::File, tag: &str) -> Result<String> {
        let options = BuildImageOptionsBuilder::default()
            .t(tag)
            .rm(true)
            .forcerm(true)
            .networkmode("none")
            .build();
        let failed = |message: String| DockerError::Build {
            tag: tag.to_owned(),
            message,
        };
        // Streamed from the file: a toolbox's context holds pgup and a major's files.
        let body = tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(context),
            1 << 20,
        );
        let mut progress =
            self.api()?
                .build_image(options, None, Some(bollard::body_try_stream(body)));
        while let Some(info) = progress.next().await {
            let info = info.map_err(|e| failed(e.to_string()))?;
            if let Some(message) = info.error_detail.and_then(|d| d.message) {
                return Err(failed(message));
            }
        }
        match self.image(tag).await? {
            Some((image, _)) => Ok(image.id),
            None => Err(failed("the engine reported no image".to_owned())),
        }
    }

    /// Gives image `id` the name `tag` (repository:tag) too.
    pub async fn tag(&self, id: &str, tag: &str) -> Result<()> {
        let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(version)
            .build();
        Ok(self.api()?.tag_image(id, Some(options)).await?)
    }

    /// Creates and starts a temporary container that idles until removed; programs run in it
    /// through [`Docker::exec`].
    pub async fn start_temp(&self, spec: &TempContainer<'_>) -> Result<String> {
        let mount = |source: String, target: &str, typ, read_only| ApiMount {
            source: Some(source),
            target: Some(target.to_owned()),
            typ: Some(typ),
            read_only: Some(read_only),
            ..Default::default()
        };
        let mut mounts: Vec<ApiMount> = spec
            .binds
            .iter()
            .map(|(host, inside, ro)| {
                mount(host.display().to_string(), inside, MountType::BIND, *ro)
            })
            .collect();
        mounts.extend(
            spec.volumes
                .iter()
                .map(|(name, inside)| mount(name.clone(), inside, MountType::VOLUME, false)),
        );
        let labels = HashMap::from([
            (LABEL_ROLE.to_owned(), spec.role.to_owned()),
            (LABEL_PID.to_owned(), std::process::id().to_string()),
            (LABEL_DATA.to_owned(), spec.data.display().to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.to_owned()),
            entrypoint: Some(vec!["sleep".to_owned()]),
            cmd: Some(vec!["infinity".to_owned()]),
            user: Some(spec.user.clone()),
            env: Some(vec!["HOME=/tmp".to_owned(), "LC_ALL=C.UTF-8".to_owned()]),
            labels: Some(labels),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                mounts: Some(mounts),
                init: Some(true),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self.create(body).await?;
        if let Err(e) = self.api()?.start_container(&id, None).await {
            self.remove(&id).await;
            return Err(e.into());
        }
        Ok(id)
    }

    /// Runs `argv` in a running container and collects its output (stdout and stderr).
    pub async fn exec(&self, container: &str, argv: &[String]) -> Result<ExecResult> {
        let options = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            // Writable for any uid; pg_upgrade writes its scripts into its working directory.
            working_dir: Some("/tmp".to_owned()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = self.api()?.create_exec(container, options).await?.id;
        let mut bytes = Vec::new();
        if let StartExecResults::Attached {
            output: mut stream, ..
        } = self.api()?.start_exec(&exec, None).await?
        {
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?.into_bytes());
            }
        }
        let output = String::from_utf8_lossy(&bytes).into_owned();
        let code = self
            .api()?
            .inspect_exec(&exec)
            .await?
            .exit_code
            .unwrap_or(-1);
        Ok(ExecResult { code, output })
    }

    /// Creates an unnamed container.
    async fn create(&self, body: ContainerCreateBody) -> Result<String> {
        let options = CreateContainerOptionsBuilder::default().build();
        Ok(self.api()?.create_container(Some(options), body).await?.id)
    }

    /// Removes one of pgup's temporary containers. A PostgreSQL server still running in it (its
    /// pgup was killed, or interrupted) is shut down first, fast and waited for: a kill would
    /// cost crash recovery, and empty every unlogged table.
    pub async fn remove_temp(&self, id: &str) {
        // Fails when the container does not run: then no server runs in it either.
        let _ = self.exec(id, &stop_servers_argv()).await;
        self.remove(id).await;
    }

    /// Removes a container and its anonymous volumes, whatever its state. Failures are
    /// ignored: this runs on every exit path, and `cleanup` catches what it leaves.
    pub async fn remove(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Ok(api) = self.api() {
            let _ = api.remove_container(id, Some(options)).await;
        }
    }

    /// Stops a container, giving the server `timeout` seconds to shut down.
    pub async fn stop(&self, id: &str, timeout: i32) -> Result<()> {
        let options = StopContainerOptionsBuilder::default().t(timeout).build();
        already(self.api()?.stop_container(id, Some(options)).await)
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        already(self.api()?.start_container(id, None).await)
    }

    /// pgup's temporary containers and volumes whose pgup process is gone: (kind, name);
    /// with `data`, only containers working on that data directory.
    pub async fn strays(
        &self,
        data: Option<&Path>,
        alive: impl Fn(u32) -> bool,
    ) -> Result<Vec<(&'static str, String)>> {
        if !self.has_engine() {
            return Ok(Vec::new());
        }
        let owner_gone = |labels: &HashMap<String, String>| {
            labels
                .get(LABEL_PID)
                .and_then(|p| p.parse().ok())
                .is_some_and(|pid| !alive(pid))
        };
        let filters = HashMap::from([("label".to_owned(), vec![LABEL_PID.to_owned()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let mut found = Vec::new();
        for c in self.api()?.list_containers(Some(options)).await? {
            let labels = c.labels.unwrap_or_default();
            let for_data =
                data.is_none_or(|d| labels.get(LABEL_DATA).is_some_and(|l| Path::new(l) == d));
            if for_data && owner_gone(&labels) {
                let name = c
                    .names
                    .unwrap_or_default()
                    .first()
                    .cloned()
                    .unwrap_or_default();
                found.push(("container", name.trim_start_matches('/').to_owned()));
            }
        }
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        for v in self
            .api()?
            .list_volumes(Some(options))
            .await?
            .volumes
            .unwrap_or_default()
        {
            if owner_gone(&v.labels) {
                found.push(("volume", v.name));
            }
        }
        Ok(found)
    }

    /// Removes the temporary containers and volumes left by a pgup that died working on `data`.
    pub async fn remove_strays(&self, data: &Path, alive: impl Fn(u32) -> bool) -> Result<()> {
        for (kind, name) in self.strays(Some(data), alive).await? {
            match kind {
                "container" => self.remove_temp(&name).await,
                _ => self.remove_volume(&name).await,
            }
        }
        Ok(())
    }

    /// Removes the temporary containers and volumes this process made (after Ctrl-C).
    pub async fn remove_mine(&self) {
        let Ok(api) = self.api() else { return };
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_PID}={}", std::process::id())],
        )]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        for c in api.list_containers(Some(options)).await.unwrap_or_default() {
            if let Some(id) = c.id {
                self.remove_temp(&id).await;
            }
        }
        let options = ListVolumesOptionsBuilder::default()
            .filters(&filters)
            .build();
        if let Ok(list) = api.list_volumes(Some(options)).await {
            for v in list.volumes.unwrap_or_default() {
                self.remove_volume(&v.name).await;
            }
        }
    }

    /// An overlay volume: `lower` read-only below, writes going to `upper` (with `work`, on
    /// one filesystem). Programs can then change what they see without changing `lower`.
    pub async fn create_overlay(
        &self,
        name: &str,
        lower: &Path,
        upper: &Path,
        work: &Path,
    ) -> Result<()> {
        let o = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let request = VolumeCreateRequest {
            name: Some(name.to_owned()),
            driver: Some("local".to_owned()),
            driver_opts: Some(HashMap::from([
                ("type".to_owned(), "overlay".to_owned()),
                ("device".to_owned(), "overlay".to_owned()),
                ("o".to_owned(), o),
            ])),
            labels: Some(HashMap::from([(
                LABEL_PID.to_owned(),
                std::process::id().to_string(),
            )])),
            ..Default::default()
        };
        self.api()?.create_volume(request).await?;
        Ok(())
    }

    /// Removes a volume; failures are ignored, as for [`Docker::remove`].
    pub async fn remove_volume(&self, name: &str) {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        if let Ok(api) = self.api() {
            let _ = api.remove_volume(name, Some(options)).await;
        }
    }
}

impl Docker {
    /// The output of the shell `script` run in a temporary container of `image` (as root, no
    /// network, no capabilities, nothing mounted), whatever its exit code.
    pub async fn script_in(&self, image: &str, role: &str, script: &str) -> Result<String> {
        let id = self
            .start_temp(&TempContainer {
                image,
                role,
                data: Path::new("/"),
                user: "0:0".to_owned(),
                binds: Vec::new(),
                volumes: Vec::new(),
            })
            .await?;
        let argv = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let done = self.exec(&id, &argv).await;
        self.remove(&id).await;
        Ok(done?.output)
    }

    /// Whether an image's C library is musl (Alpine) rather than glibc: text indexes built
    /// under one sort differently under the other. Looks into a container that never starts.
    pub async fn image_is_musl(&self, image: &str) -> Result<bool> {
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: Some(vec!["true".to_owned()]),
            network_disabled: Some(true),
            labels: Some(HashMap::from([(
                LABEL_PID.to_owned(),
                std::process::id().to_string(),
            )])),
            ..Default::default()
        };
        let id = self.create(body).await?;
        let mut musl = false;
        for path in [
            "/etc/alpine-release",
            "/lib/ld-musl-x86_64.so.1",
            "/lib/ld-musl-aarch64.so.1",
        ] {
            let options = ContainerArchiveInfoOptionsBuilder::default()
                .path(path)
                .build();
            if self
                .api()?
                .get_container_archive_info(&id, Some(options))
                .await
                .is_ok()
            {
                musl = true;
                break;
            }
        }
        self.remove(&id).await;
        Ok(musl)
    }
}

impl Docker {
    /// Re-creates container `name` on `image` with the same configuration (environment,
    /// mounts, ports, networks, restart policy, labels, command), PGDATA set to `pgdata`, and
    /// starts it. The old container is kept, stopped and renamed `keep_old_as`, with its
    /// restart policy cleared so a daemon restart cannot start it on the new data.
    pub async fn recreate_on(
        &self,
        name: &str,
        image: &str,
        pgdata: &str,
        command: Option<&[String]>,
        keep_old_as: &str,
    ) -> Result<()> {
        // Resumable: the rename, the hiding, the creation and the start may each be done.
        self.settle_relabel(keep_old_as).await?;
        let renamed = self.exists(keep_old_as).await?;
        let source = if renamed { keep_old_as } else { name };
        let (old, old_image) = self.inspect_with_image(source).await?;
        let Recreation {
            body,
            connect_after,
        } = recreation(
            &old,
            &old_image.config.unwrap_or_default(),
            image,
            Some(pgdata),
            command,
            compose::reveal,
        );
        if !renamed {
            let options = RenameContainerOptionsBuilder::default()
                .name(keep_old_as)
                .build();
            self.api()?.rename_container(name, options).await?;
            let never = ContainerUpdateBody {
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            };
            self.api()?.update_container(keep_old_as, never).await?;
        }
        // Compose adopts every container labelled with its project and service: the kept one
        // must not be (`up` would start it on the upgraded data).
        let kept = self.container(keep_old_as).await?;
        if compose::is_visible(&kept.labels) {
            self.relabel(keep_old_as, compose::hide).await?;
        }
        if !self.exists(name).await? {
            self.create_named(
                name,
                Recreation {
                    body,
                    connect_after,
                },
            )
            .await?;
        }
        self.start(name).await
    }

    async fn create_named(&self, name: &str, r: Recreation) -> Result<()> {
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        self.api()?.create_container(Some(options), r.body).await?;
        for (network, endpoint) in r.connect_after {
            let request = NetworkConnectRequest {
                container: name.to_owned(),
                endpoint_config: Some(endpoint),
            };
            self.api()?.connect_network(&network, request).await?;
        }
        Ok(())
    }

    /// A container's whole configuration, and its image's (what it took from the image).
    async fn inspect_with_image(
        &self,
        name: &str,
    ) -> Result<(ContainerInspectResponse, bollard::models::ImageInspect)> {
        let c = self
            .api()?
            .inspect_container(name, None)
            .await
            .map_err(|e| not_found(e, || DockerError::NoSuchContainer(name.to_owned())))?;
        let image = self
            .api()?
            .inspect_image(c.image.as_deref().unwrap_or_default())
            .await?;
        Ok((c, image))
    }

    /// Gives container `name` (stopped) the labels `map` makes of its own. Labels cannot change
    /// in place: a copy is made under a temporary name, then replaces it. A run cut short is
    /// finished by [`Docker::settle_relabel`].
    async fn relabel(
        &self,
        name: &str,
        map: fn(&HashMap<String, String>) -> HashMap<String, String>,
    ) -> Result<()> {
        let tmp = relabel_tmp(name);
        if !self.exists(&tmp).await? {
            let (old, old_image) = self.inspect_with_image(name).await?;
            let image = old
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let copy = recreation(
                &old,
                &old_image.config.unwrap_or_default(),
                &image,
                None,
                None,
                map,
            );
            self.create_named(&tmp, copy).await?;
            failpoint::hit("relabel-copied");
        }
        self.settle_relabel(name).await
    }

    /// Finishes a [`Docker::relabel`] of `name` cut short: the copy replaces the original.
    pub async fn settle_relabel(&self, name: &str) -> Result<()> {
        let tmp = relabel_tmp(name);
        if !self.exists(&tmp).await? {
            return Ok(());
        }
        if self.exists(name).await? {
            self.discard(name).await?;
        }
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        Ok(self.api()?.rename_container(&tmp, options).await?)
    }

    /// Removes a container pgup replaces, never a volume: the container replacing it mounts
    /// the same ones, anonymous volumes included.
    pub async fn discard(&self, name: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        Ok(self.api()?.remove_container(name, Some(options)).await?)
    }

    /// The containers whose name starts with `prefix`, newest first.
    pub async fn named_like(&self, prefix: &str) -> Result<Vec<Container>> {
        if !self.has_engine() {
            return Ok(Vec::new());
        }
        let filters = HashMap::from([("name".to_owned(), vec![format!("^/{prefix}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let mut listed = self.api()?.list_containers(Some(options)).await?;
        listed.sort_by_key(|c| std::cmp::Reverse(c.created));
        let mut found = Vec::new();
        for c in listed {
            match self.container(&c.id.unwrap_or_default()).await {
                Ok(c) if c.name.starts_with(prefix) => found.push(c),
                Ok(_) | Err(DockerError::NoSuchContainer(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(found)
    }

    /// Whether a container of that name or id exists.
    pub async fn exists(&self, name: &str) -> Result<bool> {
        match self.api()?.inspect_container(name, None).await {
            Ok(_) => Ok(true),
            Err(ApiError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts a kept container back under its name, with its restart policy and the Compose
    /// labels it had (rollback): whatever runs under the name now (pgup's upgraded container,
    /// or the one Compose re-created since) goes.
    pub async fn restore_container(
        &self,
        kept: &str,
        name: &str,
        restart_policy: Option<&str>,
    ) -> Result<()> {
        self.settle_relabel(kept).await?;
        if compose::is_hidden(&self.container(kept).await?.labels) {
            self.relabel(kept, compose::reveal).await?;
        }
        if self.exists(name).await? {
            self.discard(name).await?;
        }
        let options = RenameContainerOptionsBuilder::default().name(name).build();
        self.api()?.rename_container(kept, options).await?;
        let policy = match restart_policy {
            Some("always") => RestartPolicyNameEnum::ALWAYS,
            Some("unless-stopped") => RestartPolicyNameEnum::UNLESS_STOPPED,
            Some("on-failure") => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        };
        let update = ContainerUpdateBody {
            restart_policy: Some(RestartPolicy {
                name: Some(policy),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        Ok(self.api()?.update_container(name, update).await?)
    }
}

/// The temporary name of a container being relabelled.
fn relabel_tmp(name: &str) -> String {
    format!("{name}-relabel")
}

/// What re-creating a container on another image asks of the engine.
struct Recreation {
    body: ContainerCreateBody,
    /// Networks to connect the new container to once created: older engines take only one at
    /// creation.
    connect_after: Vec<(String, EndpointSettings)>,
}

/// A container made from `old`'s configuration on `image`: with PGDATA set to `pgdata` when
/// given, `command` instead of its own when given, its labels as `labels` maps them (Compose's
/// given back for the upgraded container, hidden for the one kept aside). Whatever `old` took
/// from its image (`old_image`) is left for the image to give.
fn recreation(
    old: &ContainerInspectResponse,
    old_image: &ImageConfig,
    image: &str,
    pgdata: Option<&str>,
    command: Option<&[String]>,
    labels: fn(&HashMap<String, String>) -> HashMap<String, String>,
) -> Recreation {
    fn own<T: PartialEq>(value: Option<T>, from_image: &Option<T>) -> Option<T> {
        value.filter(|v| Some(v) != from_image.as_ref())
    }
    let config = old.config.clone().unwrap_or_default();
    let image_env = old_image.env.clone().unwrap_or_default();
    let mut env: Vec<String> = config
        .env
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !image_env.contains(e) && (pgdata.is_none() || !e.starts_with("PGDATA=")))
        .collect();
    env.extend(pgdata.map(|p| format!("PGDATA={p}")));
    let image_labels = old_image.labels.clone().unwrap_or_default();
    let own_labels: HashMap<String, String> = config
        .labels
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| image_labels.get(k) != Some(v))
        .collect();
    let labels = labels(&own_labels);
    // Mounts as they are, anonymous volumes included, so the data stays attached.
    let mounts: Vec<ApiMount> = old
        .mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| {
            let (typ, source) = match m.typ.as_deref() {
                Some("volume") => (MountType::VOLUME, m.name),
                Some("bind") => (MountType::BIND, m.source),
                _ => return None,
            };
            Some(ApiMount {
                source,
                target: m.destination,
                typ: Some(typ),
                read_only: m.rw.map(|rw| !rw),
                ..Default::default()
            })
        })
        .collect();
    let mut host_config = old.host_config.clone().unwrap_or_default();
    host_config.binds = None;
    host_config.mounts = Some(mounts);
    // The rest (addresses, ids) belongs to the old container's endpoints.
    let endpoint = |e: EndpointSettings| EndpointSettings {
        aliases: e.aliases,
        links: e.links,
        ipam_config: e.ipam_config,
        driver_opts: e.driver_opts,
        ..Default::default()
    };
    let mode = host_config.network_mode.clone().unwrap_or_default();
    let (first, connect_after): (Vec<_>, Vec<_>) = old
        .network_settings
        .clone()
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, e)| (n, endpoint(e)))
        .partition(|(n, _)| *n == mode);
    let body = ContainerCreateBody {
        hostname: config.hostname,
        domainname: config.domainname,
        user: config.user,
        exposed_ports: config.exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        env: Some(env),
        cmd: command
            .map(<[String]>::to_vec)
            .or_else(|| own(config.cmd, &old_image.cmd)),
        entrypoint: own(config.entrypoint, &old_image.entrypoint),
        healthcheck: config.healthcheck,
        working_dir: own(config.working_dir, &old_image.working_dir),
        image: Some(image.to_owned()),
        labels: Some(labels),
        stop_signal: own(config.stop_signal, &old_image.stop_signal),
        stop_timeout: config.stop_timeout,
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(first.into_iter().collect()),
        }),
        ..Default::default()
    };
    Recreation {
        body,
        connect_after,
    }
}

/// "Not modified" (already started, already stopped) is what was asked for.
fn already(result: std::result::Result<(), ApiError>) -> Result<()> {
    match result {
        Err(ApiError::DockerResponseServerError {
            status_code: 304, ..
        }) => Ok(()),
        other => Ok(other?),
    }
}

fn env_map(env: Vec<String>) -> HashMap<String, String> {
    env.into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// A shell command that asks every postmaster in a container for a fast shutdown (SIGINT)
/// and waits up to 60 s for all PostgreSQL processes to end. A postmaster is a `postgres`
/// process whose parent is not one; the images may lack procps, so /proc is read directly.
fn stop_servers_argv() -> Vec<String> {
    let script = r#"comm() { cat "/proc/$1/comm" 2>/dev/null; }
for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [ "$(comm "$p")" = postgres ] || continue
    parent=$(sed -n 's/^PPid:[[:space:]]*//p' "$d/status" 2>/dev/null)
    [ "$(comm "$parent")" = postgres ] || kill -INT "$p" 2>/dev/null
done
i=0
while [ $i -lt 600 ]; do
    left=
    for d in /proc/[0-9]*; do [ "$(comm "${d#/proc/}")" = postgres ] && left=1 && break; done
    [ -z "$left" ] && exit 0
    sleep 0.1
    i=$((i + 1))
done
exit 1"#;
    vec!["sh".into(), "-c".into(), script.into()]
}

fn not_found(e: ApiError, missing: impl FnOnce() -> DockerError) -> DockerError {
    match e {
        ApiError::DockerResponseServerError {
            status_code: 404, ..
        } => missing(),
        e => DockerError::Api(e),
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        ContainerConfig, EndpointIpamConfig, HealthConfig, MountPoint, NetworkSettings,
    };

    use super::*;

    fn strings(s: &[&str]) -> Option<Vec<String>> {
        Some(s.iter().map(|s| (*s).to_owned()).collect())
    }

    fn map(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The config of an official postgres image.
    fn old_image() -> ImageConfig {
        ImageConfig {
            env: strings(&[
                "PATH=/usr/local/bin:/usr/bin",
                "PG_MAJOR=13",
                "PGDATA=/var/lib/postgresql/data",
            ]),
            cmd: strings(&["postgres"]),
            entrypoint: strings(&["docker-entrypoint.sh"]),
            working_dir: Some("/".to_owned()),
            stop_signal: Some("SIGINT".to_owned()),
            labels: map(&[("maintainer", "pg"), ("version", "13")]),
            ..Default::default()
        }
    }

    fn with_config(config: ContainerConfig) -> ContainerInspectResponse {
        ContainerInspectResponse {
            config: Some(config),
            ..Default::default()
        }
    }

    fn recreate(old: &ContainerInspectResponse) -> Recreation {
        recreation(
            old,
            &old_image(),
            "pgup/postgres:17",
            Some("/data/17"),
            None,
            compose::reveal,
        )
    }

    #[test]
    fn an_adjusted_command_replaces_the_old_one() {
        let old = with_config(ContainerConfig {
            cmd: strings(&["postgres", "-c", "stats_temp_directory=/tmp"]),
            ..Default::default()
        });
        let command = strings(&["postgres"]).unwrap();
        let r = recreation(
            &old,
            &old_image(),
            "img",
            Some("/d"),
            Some(&command),
            compose::reveal,
        );
        assert_eq!(r.body.cmd, Some(command));
        assert_eq!(
            recreate(&old).body.cmd,
            strings(&["postgres", "-c", "stats_temp_directory=/tmp"])
        );
    }

    #[test]
    fn environment_keeps_the_users_own_variables_and_sets_pgdata() {
        let cases = [
            (
                strings(&[
                    "POSTGRES_PASSWORD=secret",
                    "PATH=/usr/local/bin:/usr/bin",
                    "TZ=UTC",
                    "PG_MAJOR=13",
                ]),
                strings(&["POSTGRES_PASSWORD=secret", "TZ=UTC", "PGDATA=/data/17"]),
            ),
            // The image's PGDATA and the user's own are both replaced.
            (
                strings(&["PGDATA=/var/lib/postgresql/data", "A=1"]),
                strings(&["A=1", "PGDATA=/data/17"]),
            ),
            (
                strings(&["PGDATA=/pg", "B=2"]),
                strings(&["B=2", "PGDATA=/data/17"]),
            ),
            // A variable the user changed from the image's value is the user's.
            (
                strings(&["PATH=/opt/bin"]),
                strings(&["PATH=/opt/bin", "PGDATA=/data/17"]),
            ),
            (None, strings(&["PGDATA=/data/17"])),
        ];
        for (env, expected) in cases {
            let old = with_config(ContainerConfig {
                env: env.clone(),
                ..Default::default()
            });
            assert_eq!(recreate(&old).body.env, expected, "{env:?}");
        }
    }

    #[test]
    fn labels_keep_only_the_containers_own() {
        let cases = [
            (
                map(&[
                    ("maintainer", "pg"),
                    ("version", "12"),
                    ("com.docker.compose.project", "app"),
                ]),
                map(&[("version", "12"), ("com.docker.compose.project", "app")]),
            ),
            (map(&[("maintainer", "pg"), ("version", "13")]), map(&[])),
            (None, map(&[])),
        ];
        for (labels, expected) in cases {
            let old = with_config(ContainerConfig {
                labels: labels.clone(),
                ..Default::default()
            });
            assert_eq!(recreate(&old).body.labels, expected, "{labels:?}");
        }
    }

    #[test]
    fn command_and_the_like_are_kept_only_when_not_the_old_images() {
        type Fields = (
            Option<Vec<String>>,
            Option<Vec<String>>,
            Option<String>,
            Option<String>,
        );
        let from_image: Fields = (
            strings(&["postgres"]),
            strings(&["docker-entrypoint.sh"]),
            Some("/".to_owned()),
            Some("SIGINT".to_owned()),
        );
        let own: Fields = (
            strings(&["postgres", "-c", "max_connections=200"]),
            strings(&["/custom-entrypoint.sh"]),
            Some("/srv".to_owned()),
            Some("SIGTERM".to_owned()),
        );
        let cases = [
            (from_image, (None, None, None, None)),
            (own.clone(), own),
            ((None, None, None, None), (None, None, None, None)),
        ];
        for ((cmd, entrypoint, working_dir, stop_signal), expected) in cases {
            let old = with_config(ContainerConfig {
                cmd,
                entrypoint,
                working_dir,
                stop_signal,
                ..Default::default()
            });
            let body = recreate(&old).body;
            assert_eq!(
                (
                    body.cmd,
                    body.entrypoint,
                    body.working_dir,
                    body.stop_signal
                ),
                expected
            );
        }
    }

    #[test]
    fn mounts_are_volumes_by_name_and_binds_by_path() {
        let mount =
            |typ: &str, name: Option<&str>, source: &str, destination: &str, rw| MountPoint {
                typ: Some(typ.to_owned()),
                name: name.map(str::to_owned),
                source: Some(source.to_owned()),
                destination: Some(destination.to_owned()),
                rw,
                ..Default::default()
            };
        let restart_policy = Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::ALWAYS),
            maximum_retry_count: None,
        });
        let old = ContainerInspectResponse {
            mounts: Some(vec![
                mount(
                    "volume",
                    Some("pgdata"),
                    "/var/lib/docker/volumes/pgdata/_data",
                    "/var/lib/postgresql/data",
                    Some(true),
                ),
                mount(
                    "bind",
                    None,
                    "/etc/pg/pg_hba.conf",
                    "/etc/pg_hba.conf",
                    Some(false),
                ),
                mount("tmpfs", None, "", "/run", Some(true)),
                mount(
                    "volume",
                    Some("0123abcd"),
                    "/var/lib/docker/volumes/0123abcd/_data",
                    "/backup",
                    None,
                ),
            ]),
            host_config: Some(HostConfig {
                binds: strings(&["pgdata:/var/lib/postgresql/data"]),
                restart_policy: restart_policy.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let expected = |typ, source: &str, target: &str, read_only| ApiMount {
            typ: Some(typ),
            source: Some(source.to_owned()),
            target: Some(target.to_owned()),
            read_only,
            ..Default::default()
        };
        let host = recreate(&old).body.host_config.unwrap();
        assert_eq!(host.binds, None);
        assert_eq!(
            host.mounts,
            Some(vec![
                expected(
                    MountType::VOLUME,
                    "pgdata",
                    "/var/lib/postgresql/data",
                    Some(false)
                ),
                expected(
                    MountType::BIND,
                    "/etc/pg/pg_hba.conf",
                    "/etc/pg_hba.conf",
                    Some(true)
                ),
                expected(MountType::VOLUME, "0123abcd", "/backup", None),
            ])
        );
        // The rest of the host configuration is carried over.
        assert_eq!(host.restart_policy, restart_policy);
    }

    #[test]
    fn the_network_mode_is_joined_at_creation_the_others_after() {
        let full = |alias: &str| EndpointSettings {
            aliases: strings(&[alias]),
            links: strings(&["cache:redis"]),
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some("172.20.0.5".to_owned()),
                ..Default::default()
            }),
            driver_opts: map(&[("opt", "1")]),
            mac_address: Some("02:42:ac:14:00:05".to_owned()),
            network_id: Some("n1".to_owned()),
            endpoint_id: Some("e1".to_owned()),
            ip_address: Some("172.20.0.5".to_owned()),
            gateway: Some("172.20.0.1".to_owned()),
            dns_names: strings(&["db"]),
            ..Default::default()
        };
        let kept = |alias: &str| EndpointSettings {
            aliases: strings(&[alias]),
            links: strings(&["cache:redis"]),
            ipam_config: Some(EndpointIpamConfig {
                ipv4_address: Some("172.20.0.5".to_owned()),
                ..Default::default()
            }),
            driver_opts: map(&[("opt", "1")]),
            ..Default::default()
        };
        type Names = &'static [&'static str];
        let all: Names = &["app_default", "backend", "metrics"];
        // (network mode, the container's networks, joined at creation, connected after)
        let cases: [(Option<&str>, Names, Names, Names); 4] = [
            (
                Some("app_default"),
                all,
                &["app_default"],
                &["backend", "metrics"],
            ),
            (Some("bridge"), &["bridge"], &["bridge"], &[]),
            (None, all, &[], all),
            (Some("bridge"), &[], &[], &[]),
        ];
        for (mode, networks, at_creation, after) in cases {
            let old = ContainerInspectResponse {
                host_config: Some(HostConfig {
                    network_mode: mode.map(str::to_owned),
                    ..Default::default()
                }),
                network_settings: Some(NetworkSettings {
                    networks: Some(networks.iter().map(|n| (n.to_string(), full(n))).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let Recreation {
                body,
                mut connect_after,
            } = recreate(&old);
            let endpoints = body.networking_config.unwrap().endpoints_config;
            let at_creation = at_creation.iter().map(|n| (n.to_string(), kept(n)));
            assert_eq!(endpoints, Some(at_creation.collect()), "{mode:?}");
            connect_after.sort_by(|a, b| a.0.cmp(&b.0));
            let after: Vec<_> = after.iter().map(|n| (n.to_string(), kept(n))).collect();
            assert_eq!(connect_after, after, "{mode:?}");
        }
    }

    #[test]
    fn the_rest_is_carried_over_onto_the_new_image() {
        let healthcheck = Some(HealthConfig {
            test: strings(&["CMD", "pg_isready"]),
            interval: Some(10_000_000_000),
            ..Default::default()
        });
        let old = ContainerInspectResponse {
            image: Some("sha256:old".to_owned()),
            config: Some(ContainerConfig {
                image: Some("postgres:13".to_owned()),
                hostname: Some("db".to_owned()),
                domainname: Some("example.org".to_owned()),
                user: Some("999:999".to_owned()),
                exposed_ports: strings(&["5432/tcp"]),
                healthcheck: healthcheck.clone(),
                tty: Some(true),
                open_stdin: Some(true),
                stop_timeout: Some(60),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body = recreate(&old).body;
        assert_eq!(body.image.as_deref(), Some("pgup/postgres:17"));
        assert_eq!(body.hostname.as_deref(), Some("db"));
        assert_eq!(body.domainname.as_deref(), Some("example.org"));
        assert_eq!(body.user.as_deref(), Some("999:999"));
        assert_eq!(body.exposed_ports, strings(&["5432/tcp"]));
        assert_eq!(body.healthcheck, healthcheck);
        assert_eq!(body.tty, Some(true));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.stop_timeout, Some(60));
    }
}
