//! Offline image bundles: `docker save` tarballs (plain or gzip-compressed) with a sha256sum
//! file beside them and optionally a minisign signature, verified before anything is loaded;
//! the files a bundle carries beside its images (the fleet collection), extracted only from a
//! bundle that verifies; and the local upgrade images with the upgrades each can do. Bundles
//! are streamed in 1 MiB chunks, so memory stays flat whatever their size.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use minisign_verify::{PublicKey, Signature};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::assemble;
use crate::docker::Docker;
use crate::error::Status;
use crate::settings::Bundle;
use crate::toolbox::{UpgradeImage, upgrade_images};
use crate::ui::Printer;

const CHUNK: usize = 1 << 20;
/// Where in a bundle the files it carries beside its images are (`docker load` ignores them).
const CARRIED: &str = "pgup-files";

/// `pgup image verify`; with `extract`, the files the bundle carries are written there once
/// the bundle verifies.
pub fn check(bundle: &Bundle, extract: Option<&Path>, printer: &Printer) -> Result<Status> {
    let verified = verify(bundle, false, extract, printer)?;
    printer.report(&verified)?;
    Ok(Status::Done)
}

/// `pgup image list`.
pub async fn list(printer: &Printer) -> Result<Status> {
    let docker = Docker::connect().await?;
    printer.report(&UpgradeImages(upgrade_images(&docker).await?))?;
    Ok(Status::Done)
}

/// `pgup image assemble`.
pub async fn assemble(
    old: &str,
    new: &str,
    tag: Option<&str>,
    printer: &Printer,
) -> Result<Status> {
    let docker = Docker::connect().await?;
    let announce = |o: &assemble::Source, n: &assemble::Source| {
        printer.step(format_args!(
            "assembling from {} (PostgreSQL {}) and {} ({})",
            o.name, o.major, n.name, n.major
        ));
    };
    let assembled = assemble::toolbox(&docker, old, new, tag, announce).await?;
    printer.report(&assembled)?;
    Ok(Status::Done)
}

#[derive(Debug, Serialize)]
struct Saved {
    file: PathBuf,
    sha256: String,
    bytes: u64,
    images: Vec<String>,
}

impl fmt::Display for Saved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Saved {} to {} ({}).",
            self.images.join(", "),
            self.file.display(),
            indicatif::HumanBytes(self.bytes)
        )?;
        writeln!(
            f,
            "sha256 {}  (in {}.sha256)",
            self.sha256,
            self.file.display()
        )?;
        writeln!(
            f,
            "Sign it for offline hosts: minisign -Sm {}",
            self.file.display()
        )
    }
}

/// `pgup image save`.
pub async fn save(
    images: &[String],
    include: &[PathBuf],
    output: &Path,
    printer: &Printer,
) -> Result<Status> {
    let docker = Docker::connect().await?;
    for image in images {
        if docker.image(image).await?.is_none() {
            bail!(
                "there is no image {image} here; `docker images` lists them, `images/build.sh` builds pgup's"
            );
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for file in include {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
        if !std::fs::metadata(file).is_ok_and(|m| m.is_file()) {
            bail!(
                "{} is not a regular file; --include takes files to carry",
                file.display()
            );
        }
        if !name.is_some_and(|n| names.insert(n)) {
            bail!(
                "two files named {} to include; each is carried by its name",
                file.display()
            );
        }
    }
    if output == Path::new("-") {
        return save_to_stdout(&docker, images, include, printer).await;
    }
    // Written under a temporary name and renamed: a bundle with its final name is whole. The
    // names written are regular files or new: a device, directory or link named by mistake
    // stays as it is.
    let (partial, checksum) = (sibling(output, ".partial"), sibling(output, ".sha256"));
    for path in [output, &checksum] {
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_file()) {
            bail!(
                "{} exists and is not a regular file; give -o the path of a new or regular file, or - for standard output",
                path.display()
            );
        }
    }
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists: an interrupted save left it, or it is not pgup's; remove it and run again",
            partial.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot write {}: choose a writable place for -o",
                    output.display()
                )
            });
        }
    };
    let gzip = output.extension().is_some_and(|e| e == "gz" || e == "tgz");
    let (sha256, bytes) = match write_bundle(&docker, images, include, file, gzip, printer).await {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!(
                "saving to {} failed; nothing was left behind",
                output.display()
            )));
        }
    };
    std::fs::rename(&partial, output)?;
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(&checksum, format!("{sha256}  {name}\n"))?;
    printer.report(&Saved {
        file: output.to_owned(),
        sha256,
        bytes,
        images: images.to_vec(),
    })?;
    Ok(Status::Done)
}

/// `-o -`: the bundle on standard output (uncompressed, for a pipe), its sha256 on stderr.
async fn save_to_stdout(
    docker: &Docker,
    images: &[String],
    include: &[PathBuf],
    printer: &Printer,
) -> Result<Status> {
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let (sha256, bytes) = write_bundle(docker, images, include, stdout, false, printer)
        .await
        .context("saving to standard output failed")?;
    printer.step(format!(
        "wrote {} to standard output, sha256 {sha256}",
        indicatif::HumanBytes(bytes)
    ));
    Ok(Status::Done)
}

/// `docker save` of `images` into `file`, gzip-compressed or not, with the files `include`
/// first, under [`CARRIED`] (docker's archive ends the tar stream); its sha256 and size.
async fn write_bundle(
    docker: &Docker,
    images: &[String],
    include: &[PathBuf],
    file: std::fs::File,
    gzip: bool,
    printer: &Printer,
) -> Result<(String, u64)> {
    let mut sink = Sink::new(file, gzip);
    for path in include {
        carry(&mut sink, path).with_context(|| format!("cannot include {}", path.display()))?;
    }
    let bar = printer.bytes_bar(0);
    let names: Vec<&str> = images.iter().map(String::as_str).collect();
    let mut tar = docker.export(&names);
    while let Some(chunk) = tar.next().await {
        let chunk = chunk?;
        bar.inc(chunk.len() as u64);
        sink.write_all(&chunk)?;
    }
    bar.finish_and_clear();
    sink.finish()
}

/// `path` with `suffix` appended to its file name.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// A file being written, and the sha256 and size of what lands in it.
struct Hashed {
    file: std::fs::File,
    hasher: Sha256,
    bytes: u64,
}

impl Write for Hashed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Where a bundle is written: as it comes, or gzip-compressed.
enum Sink {
    Plain(Hashed),
    Gzip(flate2::write::GzEncoder<Hashed>),
}

impl Sink {
    fn new(file: std::fs::File, gzip: bool) -> Self {
        let hashed = Hashed {
            file,
            hasher: Sha256::new(),
            bytes: 0,
        };
        if gzip {
            Sink::Gzip(flate2::write::GzEncoder::new(
                hashed,
                flate2::Compression::fast(),
            ))
        } else {
            Sink::Plain(hashed)
        }
    }

    /// Finishes the file, syncs it, and returns its sha256 and size.
    fn finish(self) -> Result<(String, u64)> {
        let hashed = match self {
            Sink::Plain(h) => h,
            Sink::Gzip(g) => g.finish()?,
        };
        // A pipe (standard output) cannot be synced, and needs not be.
        match hashed.file.sync_all() {
            Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => return Err(e.into()),
            _ => {}
        }
        Ok((hex(&hashed.hasher.finalize()), hashed.bytes))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(h) => h.write(buf),
            Sink::Gzip(g) => g.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(h) => h.flush(),
            Sink::Gzip(g) => g.flush(),
        }
    }
}

/// Writes `path` as a tar entry under [`CARRIED`], with no end-of-archive after it.
fn carry(sink: &mut Sink, path: &Path) -> std::io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut header = tar::Header::new_ustar();
    header.set_path(format!("{CARRIED}/{name}"))?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    sink.write_all(header.as_bytes())?;
    if std::io::copy(&mut (&mut file).take(size), sink)? != size {
        return Err(std::io::Error::other("the file shrank while it was read"));
    }
    let pad = (512 - size % 512) % 512;
    sink.write_all(&vec![0u8; pad as usize])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Serialize)]
pub struct Verified {
    pub file: PathBuf,
    pub sha256: String,
    /// What the bundle was checked against: "sha256", "signature".
    pub checked: Vec<&'static str>,
    /// The signature's trusted comment (who signed, when), when signed.
    pub trusted_comment: Option<String>,
    /// The files the bundle carried, written out (--extract).
    pub extracted: Vec<PathBuf>,
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.checked.is_empty() {
            return writeln!(
                f,
                "{} was NOT verified (--allow-unverified).",
                self.file.display()
            );
        }
        writeln!(
            f,
            "{} verifies: {}.",
            self.file.display(),
            self.checked.join(" and ")
        )?;
        if let Some(c) = &self.trusted_comment {
            writeln!(f, "Signed: {c}")?;
        }
        for file in &self.extracted {
            writeln!(f, "Extracted {}.", file.display())?;
        }
        Ok(())
    }
}

/// Reads the bundle once, checking its sha256 and its minisign signature, whichever are
/// given or found beside it. Without either, refuses unless `allow_unverified`. With
/// `extract`, the files it carries are read in the same pass, and put in that directory
/// only once the whole bundle verified.
fn verify(
    args: &Bundle,
    allow_unverified: bool,
    extract: Option<&Path>,
    printer: &Printer,
) -> Result<Verified> {
    let file = &args.file;
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let expected = expected_sha256(args)?;
    let key = args.public_key.as_deref().map(public_key).transpose()?;
    let signature = match &key {
        Some(_) => {
            let path = args
                .signature
                .clone()
                .unwrap_or_else(|| sibling(file, ".minisig"));
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read the signature {}: pass it with --signature",
                    path.display()
                )
            })?;
            Some(Signature::decode(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a minisign signature ({e}); get the bundle's .minisig again",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    if expected.is_none() && signature.is_none() {
        if allow_unverified {
            return Ok(Verified {
                file: file.clone(),
                sha256: String::new(),
                checked: vec![],
                trusted_comment: None,
                extracted: vec![],
            });
        }
        bail!(
            "nothing to verify {} against: {} is missing and no --public-key was given; pass --sha256 or --public-key (or --allow-unverified to load it anyway)",
            file.display(),
            sibling(file, ".sha256").display()
        );
    }
    let stream = match (&key, &signature) {
        (Some(k), Some(s)) => Some(k.verify_stream(s).map_err(|e| match e {
            minisign_verify::Error::UnexpectedKeyId => {
                anyhow::anyhow!(
                    "{} was signed with another key than the one given",
                    file.display()
                )
            }
            e => anyhow::anyhow!("cannot check the signature of {}: {e}", file.display()),
        })?),
        _ => None,
    };
    let reader =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let bar = printer.bytes_bar(size);
    let mut tee = Tee {
        inner: reader,
        hasher: Sha256::new(),
        stream,
        bar: &bar,
    };
    let staged = match extract {
        Some(dir) => Some(
            carried(&mut tee, file, dir)
                .with_context(|| format!("cannot read the files {} carries", file.display()))?,
        ),
        None => None,
    };
    std::io::copy(&mut tee, &mut std::io::sink())?;
    bar.finish_and_clear();
    let sha256 = hex(&tee.hasher.finalize());
    let stream = tee.stream;
    let mut checked = Vec::new();
    if let Some(expected) = expected {
        if sha256 != expected {
            bail!(
                "{} does not match its sha256 (expected {expected}, got {sha256}): it is damaged or was changed; nothing was loaded, get it again",
                file.display()
            );
        }
        checked.push("sha256");
    }
    if let Some(mut s) = stream {
        s.finalize().map_err(|e| {
            anyhow::anyhow!(
                "the signature of {} does not verify ({e}): the bundle was changed, or the signature is of another file; nothing was loaded",
                file.display()
            )
        })?;
        checked.push("signature");
    }
    let extracted = match (staged, extract) {
        (Some(staged), Some(dir)) => staged.put_in(dir)?,
        _ => Vec::new(),
    };
    Ok(Verified {
        file: file.clone(),
        sha256,
        checked,
        trusted_comment: signature.map(|s| s.trusted_comment().to_owned()),
        extracted,
    })
}

/// The bundle as it is read: hashed, checked against its signature, counted on the bar.
struct Tee<'a, 'k> {
    inner: std::fs::File,
    hasher: Sha256,
    stream: Option<minisign_verify::StreamVerifier<'k>>,
    bar: &'a indicatif::ProgressBar,
}

impl Read for Tee<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if let Some(s) = self.stream.as_mut() {
            s.update(&buf[..n]);
        }
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// The files a bundle carries, read into a directory of their own in the destination; put
/// in place once the bundle verified, removed if it does not.
struct Staged {
    dir: tempfile::TempDir,
    names: Vec<String>,
}

/// Reads the entries under [`CARRIED`] of the bundle `tee` reads (gzip-compressed or not), up
/// to the end of its tar archive; the rest is left to read.
fn carried(tee: &mut Tee<'_, '_>, file: &Path, dest: &Path) -> Result<Staged> {
    std::fs::create_dir_all(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    let dir = tempfile::Builder::new()
        .prefix(".pgup-extract-")
        .tempdir_in(dest)
        .with_context(|| format!("cannot write in {}", dest.display()))?;
    let mut magic = [0u8; 2];
    std::fs::File::open(file)?.read_exact(&mut magic)?;
    let reader: Box<dyn Read + '_> = if magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(tee))
    } else {
        Box::new(tee)
    };
    let mut archive = tar::Archive::new(reader);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        // They come first (`write_bundle`): docker's entries follow.
        let Ok(name) = path.strip_prefix(CARRIED) else {
            break;
        };
        let name = name.to_string_lossy().into_owned();
        if !entry.header().entry_type().is_file() || !is_plain_name(&name) {
            bail!(
                "it holds {} under {CARRIED}, which is not a plain file name",
                path.display()
            );
        }
        let mut out = std::fs::File::create_new(dir.path().join(&name))?;
        std::io::copy(&mut entry, &mut out)?;
        names.push(name);
    }
    if names.is_empty() {
        bail!("it carries no files (pgup image save --include puts them in)");
    }
    Ok(Staged { dir, names })
}

impl Staged {
    /// Moves the files into `dest`, replacing regular files of the same name only.
    fn put_in(self, dest: &Path) -> Result<Vec<PathBuf>> {
        let mut put = Vec::new();
        for name in &self.names {
            let to = dest.join(name);
            if std::fs::symlink_metadata(&to).is_ok_and(|m| !m.file_type().is_file()) {
                bail!(
                    "{} exists and is not a regular file; extract into another directory",
                    to.display()
                );
            }
            std::fs::rename(self.dir.path().join(name), &to)?;
            put.push(to);
        }
        Ok(put)
    }
}

/// A file name with no directory in it.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && name != "." && name != ".."
}

/// The expected digest: `--sha256` as hex or as a sha256sum file, else FILE.sha256 if present.
fn expected_sha256(args: &Bundle) -> Result<Option<String>> {
    let is_hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let from_file = |path: &Path| -> Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let name = args
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lines: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.split_once(char::is_whitespace))
            .map(|(h, n)| (h, n.trim_start().trim_start_matches('*')))
            .collect();
        let found = match lines.as_slice() {
            [(h, _)] => Some(*h),
            many => many
                .iter()
                .find(|(_, n)| Path::new(n).file_name().is_some_and(|f| f == name.as_str()))
                .map(|(h, _)| *h),
        };
        match found {
            Some(h) if is_hex(h) => Ok(h.to_lowercase()),
            _ => bail!(
                "{} holds no sha256 for {name} (sha256sum format: `<hex>  <name>`)",
                path.display()
            ),
        }
    };
    match &args.sha256 {
        Some(v) if is_hex(v) => Ok(Some(v.to_lowercase())),
        Some(v) => from_file(Path::new(v)).map(Some),
        None => {
            let beside = sibling(&args.file, ".sha256");
            if beside.exists() {
                from_file(&beside).map(Some)
            } else {
                Ok(None)
            }
        }
    }
}

/// A minisign public key, given as itself (`RW…`) or as a file (minisign.pub).
fn public_key(value: &str) -> Result<PublicKey> {
    let bad = |e: minisign_verify::Error| {
        anyhow::anyhow!(
            "{value} is not a minisign public key ({e}); pass the key (RW…) or the .pub file"
        )
    };
    if Path::new(value).is_file() {
        let text = std::fs::read_to_string(value)?;
        PublicKey::decode(&text).map_err(bad)
    } else {
        PublicKey::from_base64(value).map_err(bad)
    }
}

#[derive(Debug, Serialize)]
struct Loaded {
    file: PathBuf,
    verified: Vec<&'static str>,
    images: Vec<String>,
    /// For each loaded upgrade image, the upgrades it enables ("13→17").
    upgrades: Vec<(String, Vec<String>)>,
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.verified.is_empty() {
            "unverified".to_owned()
        } else {
            self.verified.join(" and ") + " verified"
        };
        writeln!(f, "Loaded from {} ({how}):", self.file.display())?;
        for image in &self.images {
            writeln!(f, "  {image}")?;
        }
        for (image, pairs) in &self.upgrades {
            writeln!(f, "{image} can upgrade {}", pairs.join(", "))?;
        }
        Ok(())
    }
}

/// `pgup image load`: verified first, hashed again while it streams into Docker.
pub async fn load(args: &Bundle, allow_unverified: bool, printer: &Printer) -> Result<Status> {
    let verified = verify(args, allow_unverified, None, printer)?;
    if verified.checked.is_empty() {
        printer.step(format!(
            "loading {} WITHOUT verification (--allow-unverified)",
            args.file.display()
        ));
    }
    let docker = Docker::connect().await?;
    let size = std::fs::metadata(&args.file)?.len();
    let bar = printer.bytes_bar(size);
    // Hashed again while it streams: a bundle changed since it was verified is caught.
    let file = tokio::fs::File::open(&args.file).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let hasher = std::sync::Arc::new(std::sync::Mutex::new(Some((Sha256::new(), tx))));
    let tap = hasher.clone();
    let progress = bar.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK)
        .map(move |chunk| {
            if let Ok(bytes) = &chunk {
                progress.inc(bytes.len() as u64);
                if let Some((h, _)) = tap.lock().expect("never poisoned").as_mut() {
                    h.update(bytes);
                }
            }
            chunk
        })
        .chain(futures_util::stream::once(async move {
            if let Some((h, tx)) = hasher.lock().expect("never poisoned").take() {
                let _ = tx.send(hex(&h.finalize()));
            }
            Ok(bytes::Bytes::new())
        }))
        .filter(|c| std::future::ready(!matches!(c, Ok(b) if b.is_empty())));
    let images = docker
        .load(stream)
        .await
        .with_context(|| format!("docker refused {} as an image bundle", args.file.display()))?;
    bar.finish_and_clear();
    let rehash = rx.await.unwrap_or_default();
    if !verified.checked.is_empty() && rehash != verified.sha256 {
        for image in &images {
            docker.remove_image(image).await;
        }
        bail!(
            "{} changed while it was being loaded; what it loaded was removed: verify and load it again",
            args.file.display()
        );
    }
    let upgrades = upgrade_images(&docker)
        .await?
        .into_iter()
        .filter(|u| images.contains(&u.image))
        .map(|u| (u.image, u.upgrades))
        .collect();
    printer.report(&Loaded {
        file: args.file.clone(),
        verified: verified.checked,
        images,
        upgrades,
    })?;
    Ok(Status::Done)
}

struct UpgradeImages(Vec<UpgradeImage>);

impl Serialize for UpgradeImages {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl fmt::Display for UpgradeImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(
                f,
                "No upgrade images here: build them with images/build.sh or load a bundle with `pgup image load`."
            );
        }
        for u in &self.0 {
            writeln!(f, "{:<32} {}", u.image, u.upgrades.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_names() {
        assert_eq!(
            sibling(Path::new("/x/b.tar.gz"), ".sha256"),
            Path::new("/x/b.tar.gz.sha256")
        );
    }
}
