//! Free space on the filesystem that holds a path, as `df` reports it for unprivileged users.

use std::io;
use std::path::Path;

/// Bytes available on the filesystem holding `path` (statvfs on the path itself, so bind
/// mounts and volumes on their own filesystems are measured where they really are).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail * st.f_frsize)
}
