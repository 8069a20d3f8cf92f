//! The upgrade toolbox assembled from the two server images an upgrade is between: the new
//! image, plus the old major's programs, modules and share files, plus the shared libraries
//! those need that the new image lacks. The libraries go to a directory of their own on
//! `LD_LIBRARY_PATH`; it holds only sonames the new image does not have, so a program of the
//! new major never loads one of them. Built locally from a tar context (no network, nothing
//! downloaded), labelled with both majors and both source image ids so that later runs reuse
//! it, and smoke tested before use: a toolbox that does not work is removed again.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::collation;
use crate::docker::{Docker, DockerError, Image, TempContainer};
use crate::toolbox::{FROM_LABEL, MAJORS_LABEL, ToolError, Toolbox, ToolboxSpec};

/// Where the old major's libraries that the new image lacks are kept.
const LIB_DIR: &str = "/usr/lib/pgup";
/// The context directory whose content is copied onto the new image's root.
const ROOT: &str = "pgup-old";
/// Where pgup itself is in the toolbox, and the entrypoint that runs it first (see
/// `entrypoint`): every toolbox can upgrade in place, inside the container.
const PGUP: &str = "/usr/local/bin/pgup";
pub const ENTRYPOINT: [&str; 3] = [PGUP, "entrypoint", "--"];
/// The hash of the pgup binary a toolbox carries: one made by another build is not reused.
const BINARY_LABEL: &str = "org.pgup.binary";
/// Marks a smoke test's failure lines.
const FAILED: &str = "pgup-smoke: ";
/// The uid the smoke test runs as: any uid but root's.
const SMOKE_UID: u32 = 999;

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(
        "image {0} is not here; load it (`docker load`, or `pgup image load FILE`) or name another"
    )]
    NoImage(String),
    #[error(
        "image {0} names no PostgreSQL major (no org.pgup.pg-major label, no PG_MAJOR variable); name a PostgreSQL server image"
    )]
    NotAServer(String),
    #[error(
        "image {new} runs PostgreSQL {new_major}, not newer than {old}'s {old_major}; name the new major's server image"
    )]
    NotNewer {
        old: String,
        old_major: u32,
        new: String,
        new_major: u32,
    },
    #[error(
        "image {musl} is built on musl (Alpine) and {glibc} on glibc: one toolbox cannot run both majors; upgrade to a new image on the same C library"
    )]
    MixedLibc { musl: String, glibc: String },
    #[error(
        "images on musl (Alpine) cannot be assembled yet; name an upgrade image holding both majors with --image"
    )]
    Musl,
    #[error(
        "image {image} has no {path}: pgup assembles toolboxes from images in the Debian layout (the official postgres images and those built on them); name an upgrade image with --image"
    )]
    Layout { image: String, path: String },
    #[error(
        "image {image} holds PostgreSQL {major} already; name it as the upgrade image with --image"
    )]
    HoldsOld { image: String, major: u32 },
    #[error("the toolbox assembled from {old} and {new} does not work, so it was removed: {}", failures.join("; "))]
    Smoke {
        old: String,
        new: String,
        failures: Vec<String>,
    },
    #[error("cannot copy the libraries of image {image}: {output}")]
    Libraries { image: String, output: String },
    #[error("cannot lock {}: {err}", path.display())]
    Lock { path: PathBuf, err: io::Error },
    #[error("cannot repack the files of image {image}: {err}")]
    Repack { image: String, err: io::Error },
}

type Result<T, E = AssembleError> = std::result::Result<T, E>;

/// A server image an assembly starts from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    /// As the operator or the container named it.
    pub name: String,
    pub id: String,
    pub major: u32,
    /// The majors it holds when it is an upgrade image itself (assembled again with an older
    /// major, it keeps them all).
    #[serde(skip)]
    pub held: Vec<u32>,
    /// Its entrypoint (without pgup's own, when it is an upgrade image) and command.
    #[serde(skip)]
    pub entrypoint: Vec<String>,
    #[serde(skip)]
    pub cmd: Vec<String>,
}

/// An assembled toolbox.
#[derive(Debug, Clone, Serialize)]
pub struct Assembled {
    /// Its name: the tag asked for, else `pgup/toolbox:<old>-<new>-<hash>`.
    pub image: String,
    pub old: Source,
    pub new: Source,
    /// The old image's libraries it carries, by soname (empty when reused).
    pub libraries: Vec<String>,
    /// Found from an earlier run rather than built now.
    pub reused: bool,
}

impl std::fmt::Display for Assembled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.reused { "Reused" } else { "Assembled" };
        writeln!(
            f,
            "{verb} {}: PostgreSQL {} from {} and {} from {}.",
            self.image, self.old.major, self.old.name, self.new.major, self.new.name
        )?;
        if !self.libraries.is_empty() {
            writeln!(
                f,
                "It carries {} libraries of the old image that the new one lacks: {}.",
                self.libraries.len(),
                self.libraries.join(", ")
            )?;
        }
        Ok(())
    }
}

/// The toolbox for an upgrade from server image `old` to `new` (names or ids): one assembled
/// earlier from the very same images, else a new one named `tag` (default: derived from
/// both). `announce` is called before a build starts, which takes a while.
pub async fn toolbox(
    docker: &Docker,
    old: &str,
    new: &str,
    tag: Option<&str>,
    announce: impl FnOnce(&Source, &Source),
) -> Result<Assembled> {
    let (old, new) = tokio::join!(source(docker, old), source(docker, new));
    let (old, new) = (old?, new?);
    if new.major <= old.major {
        return Err(AssembleError::NotNewer {
            old: old.name,
            old_major: old.major,
            new: new.name,
            new_major: new.major,
        });
    }
    let from = format!("{} {}", old.id, new.id);
    let repack = |err| AssembleError::Repack {
        image: PGUP.to_owned(),
        err,
    };
    let digest = binary_digest().map_err(repack)?;
    // Runs that need the same toolbox wait for the one that builds it, then reuse it.
    let _building = pair_lock(&old, &new).await?;
    let earlier = docker
        .images_labelled(FROM_LABEL)
        .await?
        .into_iter()
        .find(|i| {
            i.labels.get(FROM_LABEL) == Some(&from) && i.labels.get(BINARY_LABEL) == Some(&digest)
        });
    if let Some(image) = earlier {
        let name = match tag {
            Some(tag) => {
                docker.tag(&image.id, tag).await?;
                tag.to_owned()
            }
            None => named(&image).unwrap_or(image.id),
        };
        return Ok(Assembled {
            image: name,
            old,
            new,
            libraries: Vec::new(),
            reused: true,
        });
    }
    let (old_musl, new_musl) =
        tokio::join!(docker.image_is_musl(&old.id), docker.image_is_musl(&new.id));
    match (old_musl?, new_musl?) {
        (false, false) => {}
        (true, true) => return Err(AssembleError::Musl),
        (true, false) => {
            return Err(AssembleError::MixedLibc {
                musl: old.name,
                glibc: new.name,
            });
        }
        (false, true) => {
            return Err(AssembleError::MixedLibc {
                musl: new.name,
                glibc: old.name,
            });
        }
    }
    announce(&old, &new);
    let tag = tag.map_or_else(|| default_tag(&old, &new), str::to_owned);
    let pgup = std::env::current_exe().map_err(repack)?;
    let libraries = build(docker, &old, &new, &tag, &pgup).await?;
    if let Err(e) = smoke(docker, &tag, &old, &new).await {
        docker.remove_image(&tag).await;
        return Err(e);
    }
    // Labelled only once it works: a run killed before this leaves nothing to be reused.
    let mut majors: BTreeSet<u32> = new.held.iter().copied().collect();
    majors.extend([old.major, new.major]);
    let majors: Vec<String> = majors.iter().map(ToString::to_string).collect();
    let labels = label_line(&[
        (MAJORS_LABEL, &majors.join(",")),
        (FROM_LABEL, &from),
        (BINARY_LABEL, &digest),
        ("org.pgup.old-image", &old.name),
        ("org.pgup.new-image", &new.name),
    ]);
    let context = dockerfile_context(&format!("FROM {tag}\n{labels}")).map_err(|err| {
        AssembleError::Repack {
            image: tag.clone(),
            err,
        }
    })?;
    docker.build(context, &tag).await?;
    Ok(Assembled {
        image: tag,
        old,
        new,
        libraries,
        reused: false,
    })
}

/// The new major's image an operator would name for `old_name` (an image running
/// `old_major`): the same repository, its tag with the leading major replaced
/// (`postgres:13` → `postgres:17`, `postgis:13-3.4` → `postgis:17-3.4`). None when the tag
/// does not start with the major.
pub fn sibling(old_name: &str, old_major: u32, new_major: u32) -> Option<String> {
    let (repo, tag) = old_name
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))?;
    let rest = tag.strip_prefix(&old_major.to_string())?;
    if rest.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(format!("{repo}:{new_major}{rest}"))
}

/// An exclusive lock on building the toolbox of this pair of images, held until dropped
/// (the kernel drops it with a killed process).
async fn pair_lock(old: &Source, new: &Source) -> Result<std::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "{}.lock",
        default_tag(old, new).replace(['/', ':'], "-")
    ));
    let open = path.clone();
    let locked = tokio::task::spawn_blocking(move || {
        // Not through a link someone else planted in the shared temporary directory.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&open)?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        std::io::Result::Ok(file)
    })
    .await
    .expect("the lock task does not panic");
    locked.map_err(|err| AssembleError::Lock { path, err })
}

/// A local image's name, id and major.
async fn source(docker: &Docker, reference: &str) -> Result<Source> {
    let (image, env) = docker
        .image(reference)
        .await?
        .ok_or_else(|| AssembleError::NoImage(reference.to_owned()))?;
    let name = if reference.starts_with("sha256:") {
        named(&image).unwrap_or_else(|| reference.to_owned())
    } else {
        reference.to_owned()
    };
    let major = image
        .pg_major(&env)
        .ok_or_else(|| AssembleError::NotAServer(name.clone()))?;
    let held = image
        .labels
        .get(MAJORS_LABEL)
        .map(|l| l.split(',').filter_map(|m| m.trim().parse().ok()).collect())
        .unwrap_or_default();
    let entrypoint = match image
        .entrypoint
        .strip_prefix(&ENTRYPOINT.map(str::to_owned)[..])
    {
        Some(server) => server.to_vec(),
        None => image.entrypoint,
    };
    Ok(Source {
        name,
        id: image.id,
        major,
        held,
        entrypoint,
        cmd: image.cmd,
    })
}

fn named(image: &Image) -> Option<String> {
    image.tags.iter().find(|t| !t.ends_with(":<none>")).cloned()
}

/// `pgup/toolbox:<old>-<new>-<12 hex digits of both ids>`: one name per pair of images.
fn default_tag(old: &Source, new: &Source) -> String {
    let hash = Sha256::digest(format!("{} {}", old.id, new.id));
    let hex: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("pgup/toolbox:{}-{}-{hex}", old.major, new.major)
}

/// Builds the toolbox image `tag`; returns the sonames of the libraries it took from the old
/// image.
async fn build(
    docker: &Docker,
    old: &Source,
    new: &Source,
    tag: &str,
    pgup: &Path,
) -> Result<Vec<String>> {
    let (old_files, have) = tokio::join!(
        in_temp(docker, &old.id, async |id| read_old(docker, id, old).await),
        in_temp(docker, &new.id, async |id| read_new(docker, id, old, new)
            .await),
    );
    let (files, (have, new_probe)) = (old_files?, have?);
    let record = files.probe.record_for(old.major, &new_probe);
    let lacking = lacking(&files.needed, &have, old.major);
    let libs = if lacking.is_empty() {
        None
    } else {
        Some(
            in_temp(docker, &old.id, async |id| {
                copy_libraries(docker, id, old, &lacking).await
            })
            .await?,
        )
    };
    let context = context(old, new, &files, libs.as_ref(), pgup, &record).map_err(|err| {
        AssembleError::Repack {
            image: old.name.clone(),
            err,
        }
    })?;
    docker.build(context, tag).await?;
    Ok(lacking.into_iter().map(|(soname, _)| soname).collect())
}

/// A build context being written to an unnamed temporary file.
fn new_context() -> io::Result<tar::Builder<File>> {
    Ok(tar::Builder::new(tempfile::tempfile()?))
}

/// The context written, read from its start.
fn finish_context(out: tar::Builder<File>) -> io::Result<File> {
    let mut file = out.into_inner()?;
    file.rewind()?;
    Ok(file)
}

/// A build context holding only `dockerfile`.
fn dockerfile_context(dockerfile: &str) -> io::Result<File> {
    let mut out = new_context()?;
    append_dockerfile(&mut out, dockerfile)?;
    finish_context(out)
}

fn append_dockerfile<W: Write>(out: &mut tar::Builder<W>, dockerfile: &str) -> io::Result<()> {
    let content = dockerfile.as_bytes();
    append_file(out, "Dockerfile", content, content.len() as u64, 0o644)
}

fn append_file<W: Write>(
    out: &mut tar::Builder<W>,
    path: &str,
    content: impl Read,
    size: u64,
    mode: u32,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(mode);
    out.append_data(&mut header, path, content)
}

/// The hex digest that names this pgup's executable, read as a stream (it is tens of MB).
fn binary_digest() -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(
        &mut std::fs::File::open(std::env::current_exe()?)?,
        &mut hasher,
    )?;
    let hash = hasher.finalize();
    Ok(hash[..8].iter().map(|b| format!("{b:02x}")).collect())
}

/// What the old image gives: its major's directories as tar archives, and every shared
/// library its programs and modules load (soname → path).
struct OldFiles {
    lib: File,
    share: File,
    needed: BTreeMap<String, String>,
    /// What the image sorts text with (see [`collation::PROBE`]).
    probe: collation::Probe,
}

/// Runs `work` with a temporary container of `image` (as root, no network), removed after.
async fn in_temp<T>(
    docker: &Docker,
    image: &str,
    work: impl AsyncFnOnce(&str) -> Result<T>,
) -> Result<T> {
    let id = docker
        .start_temp(&TempContainer {
            image,
            role: "assemble",
            data: Path::new("/"),
            user: "0:0".to_owned(),
            binds: Vec::new(),
            volumes: Vec::new(),
        })
        .await?;
    let done = work(&id).await;
    docker.remove(&id).await;
    done
}

/// Runs a shell script in a temporary container; its output, whatever its exit code.
async fn sh(docker: &Docker, id: &str, script: &str, args: &[String]) -> Result<(i64, String)> {
    let mut argv = vec![
        "sh".to_owned(),
        "-c".to_owned(),
        script.to_owned(),
        "sh".to_owned(),
    ];
    argv.extend_from_slice(args);
    let done = docker.exec(id, &argv).await?;
    Ok((done.code, done.output))
}

fn lib_dir(major: u32) -> String {
    format!("/usr/lib/postgresql/{major}")
}

fn share_dir(major: u32) -> String {
    format!("/usr/share/postgresql/{major}")
}

async fn read_old(docker: &Docker, id: &str, old: &Source) -> Result<OldFiles> {
    // ldd of the programs and modules (not of the thousands of JIT bitcode files).
    let script = r#"[ -x "$1/bin/postgres" ] || exit 3
find "$1" -type f \( -name '*.so*' -o -perm -u+x \) | while read -r f; do ldd "$f" 2>/dev/null || true; done"#;
    let (code, out) = sh(docker, id, script, &[lib_dir(old.major)]).await?;
    if code != 0 {
        return Err(AssembleError::Layout {
            image: old.name.clone(),
            path: format!("{}/bin/postgres", lib_dir(old.major)),
        });
    }
    let needed = parse_ldd(&out);
    let lib = docker.download(id, &lib_dir(old.major)).await?;
    let share = docker.download(id, &share_dir(old.major)).await?;
    let probe = collation::Probe::parse(&sh(docker, id, collation::PROBE, &[]).await?.1);
    Ok(OldFiles {
        lib,
        share,
        needed,
        probe,
    })
}

/// The sonames the new image's dynamic linker finds by itself (its cache), and what it
/// records of the images its own old majors came from.
async fn read_new(
    docker: &Docker,
    id: &str,
    old: &Source,
    new: &Source,
) -> Result<(BTreeSet<String>, collation::Probe)> {
    let pg_upgrade = format!("{}/bin/pg_upgrade", lib_dir(new.major));
    let (code, _) = sh(
        docker,
        id,
        r#"[ -x "$1" ]"#,
        std::slice::from_ref(&pg_upgrade),
    )
    .await?;
    if code != 0 {
        return Err(AssembleError::Layout {
            image: new.name.clone(),
            path: pg_upgrade,
        });
    }
    // An image holding the old major already would have its files replaced: not ours to do.
    let (code, _) = sh(docker, id, r#"[ ! -e "$1" ]"#, &[lib_dir(old.major)]).await?;
    if code != 0 {
        return Err(AssembleError::HoldsOld {
            image: new.name.clone(),
            major: old.major,
        });
    }
    let (code, out) = sh(docker, id, "ldconfig -p", &[]).await?;
    let have = parse_ldconfig(&out);
    // Without the cache every library would count as lacking, libc too.
    if code != 0 || have.is_empty() {
        return Err(AssembleError::Layout {
            image: new.name.clone(),
            path: "a dynamic linker cache (`ldconfig -p` lists nothing)".to_owned(),
        });
    }
    let probe = collation::Probe::parse(&sh(docker, id, collation::PROBE, &[]).await?.1);
    Ok((have, probe))
}

/// The libraries in `lacking` (soname, path), dereferenced, as a tar archive of a directory.
async fn copy_libraries(
    docker: &Docker,
    id: &str,
    old: &Source,
    lacking: &[(String, String)],
) -> Result<File> {
    let script = r#"set -e
mkdir /tmp/pgup-libs
while [ $# -gt 1 ]; do cp -L "$1" "/tmp/pgup-libs/$2"; shift 2; done"#;
    let args: Vec<String> = lacking
        .iter()
        .flat_map(|(soname, path)| [path.clone(), soname.clone()])
        .collect();
    let (code, out) = sh(docker, id, script, &args).await?;
    if code != 0 {
        return Err(AssembleError::Libraries {
            image: old.name.clone(),
            output: out.trim().to_owned(),
        });
    }
    Ok(docker.download(id, "/tmp/pgup-libs").await?)
}

/// The build context: a Dockerfile and under `pgup-old/` the old major's files, pgup, and
/// the `record` of what the old majors' images sort text with ([`collation::RECORD`]).
fn context(
    old: &Source,
    new: &Source,
    files: &OldFiles,
    libs: Option<&File>,
    pgup: &Path,
    record: &str,
) -> io::Result<File> {
    let mut out = new_context()?;
    append_dockerfile(&mut out, &dockerfile(new, old.major, libs.is_some()))?;
    let binary = File::open(pgup)?;
    let size = binary.metadata()?.len();
    append_file(&mut out, &format!("{ROOT}{PGUP}"), binary, size, 0o755)?;
    append_file(
        &mut out,
        &format!("{ROOT}{}", collation::RECORD),
        record.as_bytes(),
        record.len() as u64,
        0o644,
    )?;
    reroot(
        &files.lib,
        &format!("{ROOT}{}", lib_dir(old.major)),
        &mut out,
    )?;
    reroot(
        &files.share,
        &format!("{ROOT}{}", share_dir(old.major)),
        &mut out,
    )?;
    if let Some(libs) = libs {
        reroot(
            libs,
            &format!("{ROOT}{}", old_libraries(old.major)),
            &mut out,
        )?;
    }
    finish_context(out)
}

fn old_libraries(major: u32) -> String {
    format!("{LIB_DIR}/old-{major}")
}

/// `FROM` the new image, its files copied on, the old libraries' directory on the library
/// path when there is one, and pgup's entrypoint before the new image's own.
fn dockerfile(new: &Source, old_major: u32, with_libs: bool) -> String {
    let mut text = format!("FROM {}\nCOPY {ROOT}/ /\n", new.id);
    if with_libs {
        text.push_str(&format!(
            "ENV LD_LIBRARY_PATH={}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n",
            old_libraries(old_major)
        ));
    }
    let entrypoint: Vec<&str> = ENTRYPOINT
        .into_iter()
        .chain(new.entrypoint.iter().map(String::as_str))
        .collect();
    // Setting the entrypoint empties the inherited command: given again.
    text.push_str(&format!(
        "ENTRYPOINT {}\nCMD {}\n",
        serde_json::to_string(&entrypoint).expect("strings serialize"),
        serde_json::to_string(&new.cmd).expect("strings serialize")
    ));
    // Unlabelled until it works; and not taken for the toolbox it is built on, whose labels it
    // would inherit.
    text.push_str(&label_line(&[
        (MAJORS_LABEL, ""),
        (FROM_LABEL, ""),
        (BINARY_LABEL, ""),
    ]));
    text
}

/// One `LABEL` instruction for all of `labels`: the engine makes a layer per instruction,
/// each a second or two on a slow storage driver, and per label when they come as build
/// options.
fn label_line(labels: &[(&str, &str)]) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("LABEL {}\n", pairs.join(" "))
}

/// Copies the entries of archive `tar` into `out`, their first path component replaced by
/// `to` (hard links' targets too).
fn reroot<W: Write>(tar: impl Read, to: &str, out: &mut tar::Builder<W>) -> io::Result<()> {
    let moved = |path: &Path| -> PathBuf {
        let rest: PathBuf = path
            .components()
            .skip_while(|c| matches!(c, Component::CurDir))
            .skip(1)
            .collect();
        Path::new(to).join(rest)
    };
    for entry in tar::Archive::new(tar).entries()? {
        let mut entry = entry?;
        let path = moved(&entry.path()?);
        let mut header = entry.header().clone();
        match header.entry_type() {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other("a link without a target"))?
                    .into_owned();
                let target = if header.entry_type() == tar::EntryType::Link {
                    moved(&target)
                } else {
                    target
                };
                out.append_link(&mut header, &path, &target)?;
            }
            _ => out.append_data(&mut header, &path, &mut entry)?,
        }
    }
    Ok(())
}

/// soname → path of every library `ldd` resolved.
fn parse_ldd(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let (soname, rest) = l.trim().split_once(" => ")?;
            let path = rest.split_whitespace().next()?;
            path.starts_with('/')
                .then(|| (soname.to_owned(), path.to_owned()))
        })
        .collect()
}

/// The sonames in `ldconfig -p`'s cache listing.
fn parse_ldconfig(out: &str) -> BTreeSet<String> {
    out.lines()
        .filter(|l| l.contains(" => "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// The libraries the old major needs that the new image does not have, apart from those
/// in the old major's own directory (copied anyway).
fn lacking(
    needed: &BTreeMap<String, String>,
    have: &BTreeSet<String>,
    old_major: u32,
) -> Vec<(String, String)> {
    let own = format!("{}/", lib_dir(old_major));
    needed
        .iter()
        .filter(|(soname, path)| !have.contains(*soname) && !path.starts_with(&own))
        .map(|(s, p)| (s.clone(), p.clone()))
        .collect()
}

/// Runs every old program, and a server of the old major loading every old module, in the
/// toolbox; fails naming what does not work.
async fn smoke(docker: &Docker, image: &str, old: &Source, new: &Source) -> Result<()> {
    let script = r#"old=/usr/lib/postgresql/$1 new=/usr/lib/postgresql/$2/bin
for b in "$old"/bin/*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    "$b" --version >/dev/null 2>/tmp/err || echo "pgup-smoke: ${b##*/} $1 does not run: $(head -n1 /tmp/err)"
done
"$old/bin/initdb" -D /tmp/smoke -U postgres -A trust -E UTF8 --locale=C >/tmp/log 2>&1 ||
    { echo "pgup-smoke: initdb $1 failed: $(tail -n1 /tmp/log)"; exit 0; }
"$old/bin/pg_ctl" -D /tmp/smoke -l /tmp/server.log -o "-c listen_addresses='' -k /tmp" -w start >/dev/null 2>&1 ||
    { echo "pgup-smoke: PostgreSQL $1 does not start: $(tail -n1 /tmp/server.log)"; exit 0; }
loaded=$(for m in "$old"/lib/*.so; do echo "LOAD '$m';"; done |
    "$new/psql" -X -q -h /tmp -U postgres -d postgres 2>&1) ||
    echo "pgup-smoke: psql $2 cannot reach the PostgreSQL $1 server: $(printf '%s' "$loaded" | tail -n1)"
printf '%s\n' "$loaded" | grep 'could not load library' | sed 's/^/pgup-smoke: /'
"$old/bin/pg_ctl" -D /tmp/smoke -m fast -w stop >/dev/null 2>&1 || echo "pgup-smoke: PostgreSQL $1 does not stop"
exit 0"#;
    let spec = ToolboxSpec {
        image,
        role: "assemble",
        data: Path::new("/"),
        uid: SMOKE_UID,
        gid: SMOKE_UID,
        mounts: Vec::new(),
    };
    let tb = Toolbox::start(docker, spec).await?;
    let argv: Vec<String> = ["sh", "-c", script, "sh"]
        .into_iter()
        .map(str::to_owned)
        .chain([old.major.to_string(), new.major.to_string()])
        .collect();
    let out = tb.run(&argv).await;
    tb.close().await;
    let failures = smoke_failures(&out?);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(AssembleError::Smoke {
            old: old.name.clone(),
            new: new.name.clone(),
            failures,
        })
    }
}

fn smoke_failures(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix(FAILED))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_resolved_libraries() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibicuuc.so.67 => /lib/x86_64-linux-gnu/libicuuc.so.67 (0x00007f1)\n\
                   \tlibssl.so.1.1 => /usr/lib/x86_64-linux-gnu/libssl.so.1.1 (0x00007f2)\n\
                   \tlibmissing.so.3 => not found\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f3)\n\
                   \tnot a dynamic executable\n";
        let got = parse_ldd(out);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            vec![
                (
                    "libicuuc.so.67".to_owned(),
                    "/lib/x86_64-linux-gnu/libicuuc.so.67".to_owned()
                ),
                (
                    "libssl.so.1.1".to_owned(),
                    "/usr/lib/x86_64-linux-gnu/libssl.so.1.1".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn ldconfig_listing_gives_sonames() {
        let out = "412 libs found in cache `/etc/ld.so.cache'\n\
                   \tlibicuuc.so.76 (libc6,x86-64) => /lib/x86_64-linux-gnu/libicuuc.so.76\n\
                   \tlibc.so.6 (libc6,x86-64, OS ABI: Linux 3.2.0) => /lib/x86_64-linux-gnu/libc.so.6\n";
        let got: Vec<String> = parse_ldconfig(out).into_iter().collect();
        assert_eq!(got, vec!["libc.so.6", "libicuuc.so.76"]);
    }

    #[test]
    fn only_sonames_the_new_image_lacks_are_taken() {
        let needed = BTreeMap::from([
            (
                "libc.so.6".to_owned(),
                "/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
            ),
            (
                "libicuuc.so.67".to_owned(),
                "/lib/x86_64-linux-gnu/libicuuc.so.67".to_owned(),
            ),
            (
                "libpq.so.5".to_owned(),
                "/usr/lib/x86_64-linux-gnu/libpq.so.5".to_owned(),
            ),
            (
                "libown.so".to_owned(),
                "/usr/lib/postgresql/13/lib/libown.so".to_owned(),
            ),
        ]);
        let have = BTreeSet::from(["libc.so.6".to_owned(), "libpq.so.5".to_owned()]);
        assert_eq!(
            lacking(&needed, &have, 13),
            vec![(
                "libicuuc.so.67".to_owned(),
                "/lib/x86_64-linux-gnu/libicuuc.so.67".to_owned()
            )]
        );
        assert!(lacking(&needed, &needed.keys().cloned().collect(), 13).is_empty());
    }

    #[test]
    fn the_dockerfile_copies_and_adds_the_library_path_only_when_needed() {
        let new = Source {
            name: "pgup/postgres:17".into(),
            id: "sha256:abc".into(),
            major: 17,
            held: Vec::new(),
            entrypoint: vec!["docker-entrypoint.sh".into()],
            cmd: vec!["postgres".into()],
        };
        let tail = "ENTRYPOINT [\"/usr/local/bin/pgup\",\"entrypoint\",\"--\",\"docker-entrypoint.sh\"]\nCMD [\"postgres\"]\n\
                    LABEL \"org.pgup.majors\"=\"\" \"org.pgup.assembled-from\"=\"\" \"org.pgup.binary\"=\"\"\n";
        assert_eq!(
            dockerfile(&new, 13, false),
            format!("FROM sha256:abc\nCOPY pgup-old/ /\n{tail}")
        );
        assert_eq!(
            dockerfile(&new, 13, true),
            format!(
                "FROM sha256:abc\nCOPY pgup-old/ /\nENV LD_LIBRARY_PATH=/usr/lib/pgup/old-13${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}\n{tail}"
            )
        );
    }

    #[test]
    fn default_tags_differ_per_pair_of_images() {
        let s = |id: &str, major| Source {
            name: String::new(),
            id: id.to_owned(),
            major,
            held: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
        };
        let a = default_tag(&s("sha256:1", 13), &s("sha256:2", 17));
        assert!(a.starts_with("pgup/toolbox:13-17-"), "{a}");
        assert_eq!(a.len(), "pgup/toolbox:13-17-".len() + 12);
        assert_ne!(a, default_tag(&s("sha256:3", 13), &s("sha256:2", 17)));
    }

    #[test]
    fn siblings_swap_the_leading_major() {
        assert_eq!(
            sibling("postgres:13", 13, 17).as_deref(),
            Some("postgres:17")
        );
        assert_eq!(
            sibling("pgup/postgres:15-uid70", 15, 17).as_deref(),
            Some("pgup/postgres:17-uid70")
        );
        assert_eq!(
            sibling("localhost:5000/postgis/postgis:13-3.4", 13, 17).as_deref(),
            Some("localhost:5000/postgis/postgis:17-3.4")
        );
        assert_eq!(sibling("postgres:130", 13, 17), None);
        assert_eq!(sibling("postgres:latest", 13, 17), None);
        assert_eq!(sibling("postgres", 13, 17), None);
        assert_eq!(sibling("localhost:5000/postgres", 13, 17), None);
    }

    #[test]
    fn smoke_failures_are_the_marked_lines() {
        let out =
            "noise\npgup-smoke: postgres 13 does not run: libicuuc.so.67: cannot open\nmore\n";
        assert_eq!(
            smoke_failures(out),
            vec!["postgres 13 does not run: libicuuc.so.67: cannot open"]
        );
        assert!(smoke_failures("all fine\n").is_empty());
    }

    fn archive(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o755);
            match kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    b.append_link(&mut h, path, data).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn reroot_moves_entries_and_hard_link_targets() {
        use tar::EntryType::*;
        let src = archive(&[
            ("13/", Directory, ""),
            ("13/bin/postgres", Regular, "elf"),
            ("13/bin/postmaster", Symlink, "postgres"),
            ("13/bin/hard", Link, "13/bin/postgres"),
        ]);
        let mut out = tar::Builder::new(Vec::new());
        reroot(&src[..], "pgup-old/usr/lib/postgresql/13", &mut out).unwrap();
        let bytes = out.into_inner().unwrap();
        let mut got = Vec::new();
        for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
            let e = e.unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            got.push((
                e.path().unwrap().display().to_string(),
                link,
                e.header().mode().unwrap(),
            ));
        }
        assert_eq!(
            got,
            vec![
                ("pgup-old/usr/lib/postgresql/13/".to_owned(), None, 0o755),
                (
                    "pgup-old/usr/lib/postgresql/13/bin/postgres".to_owned(),
                    None,
                    0o755
                ),
                (
                    "pgup-old/usr/lib/postgresql/13/bin/postmaster".to_owned(),
                    Some("postgres".to_owned()),
                    0o755
                ),
                (
                    "pgup-old/usr/lib/postgresql/13/bin/hard".to_owned(),
                    Some("pgup-old/usr/lib/postgresql/13/bin/postgres".to_owned()),
                    0o755
                ),
            ]
        );
    }
}
