//! The unix socket: created with mode 0660 (owner root when run as root)
//! in a parent directory created 0711 if missing. A socket file left by a
//! server that died is replaced; one that still answers, or a path that is
//! not a socket, is refused. A lock file beside the socket keeps two
//! starting servers from replacing each other's socket.

use crate::ServeError;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// A bound listening socket; dropping it removes the socket file (when it is
/// still the one we created).
pub struct BoundSocket {
    pub(crate) listener: Option<UnixListener>,
    path: PathBuf,
    id: (u64, u64),
    _lock: File,
}

impl BoundSocket {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the socket file if it is still ours.
    pub fn remove(&self) {
        if let Ok(md) = std::fs::symlink_metadata(&self.path) {
            if (md.dev(), md.ino()) == self.id {
                match std::fs::remove_file(&self.path) {
                    Ok(()) => tracing::debug!(socket = %self.path.display(), "removed the socket"),
                    Err(e) => {
                        tracing::warn!(socket = %self.path.display(), "cannot remove the socket: {e}")
                    }
                }
            }
        }
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        self.remove();
    }
}

fn err(path: &Path, detail: impl Into<String>) -> ServeError {
    ServeError::Socket {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Create and bind the socket at `path` (see the module doc).
pub fn bind_socket(path: &Path) -> Result<BoundSocket, ServeError> {
    if path.as_os_str().is_empty() {
        return Err(err(path, "empty socket path"));
    }
    if path.as_os_str().len() >= 108 {
        return Err(err(
            path,
            "path is too long for a unix socket (107 bytes at most)",
        ));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(|e| {
                err(
                    path,
                    format!("cannot create its directory {}: {e}", parent.display()),
                )
            })?;
    }

    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| {
            err(
                path,
                format!(
                    "cannot open lock file {}: {e}",
                    Path::new(&lock_path).display()
                ),
            )
        })?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == ErrorKind::WouldBlock {
            err(path, "another stowage serve holds this socket (its lock file is locked); stop it or use another --cri-socket")
        } else {
            err(
                path,
                format!("cannot lock {}: {e}", Path::new(&lock_path).display()),
            )
        });
    }

    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(err(
                    path,
                    "something is listening on this socket already; stop it or use another --cri-socket",
                ))
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "replacing a stale socket (nothing listens on it)");
                std::fs::remove_file(path).map_err(|e| err(path, format!("cannot remove the stale socket: {e}")))?;
            }
            Err(e) => return Err(err(path, format!("exists, and connecting to it to see whether it is stale failed: {e}"))),
        },
        Ok(md) => {
            let kind = if md.is_dir() { "a directory" } else { "not a socket" };
            return Err(err(path, format!("exists and is {kind}; refusing to replace it")));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(err(path, e.to_string())),
    }

    // Bind with a umask that leaves 0660, so the socket is never more open
    // than that, not even for an instant; then set the mode explicitly.
    // SAFETY: umask only swaps the process mask; no other thread creates
    // files while the server starts.
    let old = unsafe { libc::umask(0o117) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    let listener = bound.map_err(|e| err(path, format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| err(path, format!("cannot set mode 0660: {e}")))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(0), Some(0))
            .map_err(|e| err(path, format!("cannot chown to root: {e}")))?;
    }
    let md = std::fs::symlink_metadata(path).map_err(|e| err(path, e.to_string()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| err(path, e.to_string()))?;
    Ok(BoundSocket {
        listener: Some(listener),
        path: path.to_path_buf(),
        id: (md.dev(), md.ino()),
        _lock: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_stale_and_live_sockets() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/dir/cri.sock");
        let s = bind_socket(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o660
        );
        // A second server on the same path is refused (lock held).
        assert!(bind_socket(&p).is_err());
        drop(s);
        assert!(!p.exists(), "dropping removes the socket");

        // A stale socket (bound, then its listener closed without removal).
        let stale = UnixListener::bind(&p).unwrap();
        drop(stale);
        assert!(p.exists());
        let s = bind_socket(&p).unwrap();
        drop(s);

        // Something else answering on it: refused, and left alone.
        let other = UnixListener::bind(&p).unwrap();
        let e = bind_socket(&p).err().unwrap().to_string();
        assert!(e.contains("listening"), "{e}");
        assert!(p.exists());
        drop(other);
        std::fs::remove_file(&p).unwrap();

        // Not a socket: refused.
        std::fs::write(&p, b"x").unwrap();
        let e = bind_socket(&p).err().unwrap().to_string();
        assert!(e.contains("not a socket"), "{e}");
    }
}
