//! A way into a running server's Unix socket for a temporary container, which cannot see the
//! server container's filesystem: a private directory (mode 0700, the data owner's) holding
//! sockets named as the server's, each connection forwarded by pgup, on the Docker host, to the
//! server's own socket through `/proc/<pid>/root` of the server container's first process. The
//! server sees a local connection, as `docker exec … psql` would make one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct Relay {
    dir: TempDir,
    listeners: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Listens as `.s.PGSQL.<port>` for each of `ports` in a new private directory owned by
    /// `uid`:`gid`, forwarding to the socket at `target`.
    pub fn start(target: &Path, ports: &[u16], uid: u32, gid: u32) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("pgup-relay-").tempdir()?;
        let mut listeners = Vec::new();
        for port in ports {
            let path = dir.path().join(format!(".s.PGSQL.{port}"));
            if path.exists() {
                continue;
            }
            let listener = UnixListener::bind(&path)?;
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
            listeners.push(tokio::spawn(serve(listener, target.to_owned())));
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        Ok(Self { dir, listeners })
    }

    /// The directory holding the sockets, on this host.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Relay {
    /// Stops listening; the connections forwarded go with their tasks.
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
    }
}

/// A relay to the server running on `data` in the container whose first process is `pid`
/// (its socket found from `postmaster.pid`), with the directory the server's socket is in
/// as the server sees it; else why there is none, as a phrase.
pub fn to_server(data: &Path, pid: i64, uid: u32, gid: u32) -> Result<(Relay, PathBuf), String> {
    let listening = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|t| crate::cluster::Listening::parse(&t));
    let Some(crate::cluster::Listening {
        port,
        socket_dir: Some(socket_dir),
    }) = listening
    else {
        return Err("listens on no Unix socket pgup can reach".into());
    };
    let host_dir = resolve_in(&PathBuf::from(format!("/proc/{pid}/root")), &socket_dir)
        .map_err(|_| format!("has no socket directory {}", socket_dir.display()))?;
    let target = host_dir.join(format!(".s.PGSQL.{port}"));
    // pgup's own clients connect as to its private servers, on 5432.
    let relay = Relay::start(&target, &[port, 5432], uid, gid)
        .map_err(|e| format!("cannot be given a socket pgup can reach ({e})"))?;
    Ok((relay, socket_dir))
}

/// `path` as a process whose root directory is `root` sees it: each symlink on the way
/// followed inside `root` (an absolute one from `root`, as the kernel would for that process;
/// through `/proc/<pid>/root` it would restart from this process's root instead).
pub fn resolve_in(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    use std::collections::VecDeque;
    use std::path::Component;
    let mut pending: VecDeque<std::ffi::OsString> = VecDeque::new();
    let push_front = |pending: &mut VecDeque<_>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push_front(n.to_owned()),
                Component::ParentDir => pending.push_front("..".into()),
                _ => {}
            }
        }
    };
    push_front(&mut pending, path);
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let next = resolved.join(&name);
        let meta = std::fs::symlink_metadata(root.join(&next))?;
        if !meta.file_type().is_symlink() {
            resolved = next;
            continue;
        }
        hops += 1;
        if hops > 40 {
            return Err(std::io::Error::other(format!(
                "too many symbolic links in {}",
                path.display()
            )));
        }
        let target = std::fs::read_link(root.join(&next))?;
        if target.is_absolute() {
            resolved = PathBuf::new();
        }
        push_front(&mut pending, &target);
    }
    Ok(root.join(resolved))
}

async fn serve(listener: UnixListener, target: PathBuf) {
    let mut connections = JoinSet::new();
    while let Ok((mut client, _)) = listener.accept().await {
        let target = target.clone();
        connections.spawn(async move {
            // A failed connect closes the client's: it reports the refusal itself.
            if let Ok(mut server) = UnixStream::connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("run/postgresql")).unwrap();
        std::fs::create_dir_all(r.join("var/lib")).unwrap();
        std::os::unix::fs::symlink("/run", r.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../run/postgresql", r.join("var/lib/sock")).unwrap();
        let want = r.join("run/postgresql");
        assert_eq!(
            resolve_in(r, Path::new("/var/run/postgresql")).unwrap(),
            want
        );
        assert_eq!(resolve_in(r, Path::new("/var/lib/sock")).unwrap(), want);
        assert_eq!(
            resolve_in(r, Path::new("/../../run/postgresql")).unwrap(),
            want
        );
        std::os::unix::fs::symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in(r, Path::new("/loop")).is_err());
        assert!(resolve_in(r, Path::new("/missing/dir")).is_err());
    }
}
