//! Creating single filesystem nodes and copying their metadata, never
//! following a symlink in the last path component. (Parents are the job of
//! [`crate::tree::Tree`].)

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use xattr::FileExt;

use crate::error::{io_err, nix_err, ApplyError};

/// The xattr overlayfs reads to hide lower directory contents.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Owner, mode and times to give a node.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attrs {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

impl Attrs {
    pub fn of(md: &Metadata) -> Attrs {
        Attrs {
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode() & 0o7777,
            atime: TimeSpec::new(md.atime(), md.atime_nsec()),
            mtime: TimeSpec::new(md.mtime(), md.mtime_nsec()),
        }
    }
}

/// Create a new regular file; fails if anything, even a dangling symlink, is there.
pub(crate) fn open_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Create a directory with `mode` (before umask).
pub(crate) fn mkdir(path: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new().mode(mode).create(path)
}

/// Create a device node, fifo or socket with no permissions yet.
pub(crate) fn mknod(path: &Path, kind: SFlag, rdev: u64) -> io::Result<()> {
    nix::sys::stat::mknod(path, kind, Mode::empty(), rdev).map_err(io::Error::from)
}

/// An overlayfs whiteout: a character device 0/0.
pub(crate) fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Whether the directory at `path` carries the overlay opaque mark.
pub(crate) fn is_opaque(path: &Path) -> io::Result<bool> {
    match xattr::get(path, OPAQUE_XATTR) {
        Ok(v) => Ok(v.as_deref() == Some(b"y")),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Overlayfs' own xattrs, which describe a snapshot rather than the file.
pub(crate) fn is_overlay_xattr(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.starts_with(b"trusted.overlay.") || b.starts_with(b"user.overlay.")
}

/// The xattrs of `path` (not following a symlink), minus overlay ones.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names.filter(|n| !is_overlay_xattr(n)) {
        if let Some(v) = xattr::get(path, &name)? {
            out.push((name, v));
        }
    }
    Ok(out)
}

/// Set xattrs on a path without following it. Failures only warn: the
/// filesystem under the store may not support a namespace (`user.*` on a
/// symlink, `security.*` under an LSM), and a layer is still usable without.
pub(crate) fn set_xattrs_path(entry: &Path, path: &Path, xattrs: &[(OsString, Vec<u8>)]) {
    for (name, value) in xattrs {
        if let Err(e) = xattr::set(path, name, value) {
            tracing::warn!(entry = ?entry, xattr = ?name, error = %e, "could not set xattr; skipping it");
        }
    }
}

/// [`set_xattrs_path`] through an open file.
pub(crate) fn set_xattrs_fd(entry: &Path, f: &File, xattrs: &[(OsString, Vec<u8>)]) {
    for (name, value) in xattrs {
        if let Err(e) = f.set_xattr(name, value) {
            tracing::warn!(entry = ?entry, xattr = ?name, error = %e, "could not set xattr; skipping it");
        }
    }
}

/// Owner, mode, xattrs and times on an open file, in the order that keeps
/// them all: chown clears setuid/setgid and `security.capability`, so both
/// mode and xattrs come after it; times come last.
pub(crate) fn finish_fd(
    entry: &Path,
    f: &File,
    a: &Attrs,
    xattrs: &[(OsString, Vec<u8>)],
    same_owner: bool,
) -> Result<(), ApplyError> {
    if same_owner {
        std::os::unix::fs::fchown(f, Some(a.uid), Some(a.gid))
            .map_err(io_err(entry, "set owner"))?;
    }
    f.set_permissions(Permissions::from_mode(a.mode))
        .map_err(io_err(entry, "set mode"))?;
    set_xattrs_fd(entry, f, xattrs);
    nix::sys::stat::futimens(f.as_raw_fd(), &a.atime, &a.mtime).map_err(nix_err(entry, "set times"))
}

/// [`finish_fd`] on a path, without following it; a symlink gets no mode
/// (Linux has none for it).
pub(crate) fn finish_path(
    entry: &Path,
    path: &Path,
    a: &Attrs,
    xattrs: &[(OsString, Vec<u8>)],
    same_owner: bool,
    symlink: bool,
) -> Result<(), ApplyError> {
    if same_owner {
        std::os::unix::fs::lchown(path, Some(a.uid), Some(a.gid))
            .map_err(io_err(entry, "set owner"))?;
    }
    if !symlink {
        // chmod follows symlinks, but callers only get here for a node they
        // have just created, which is not one.
        fs::set_permissions(path, Permissions::from_mode(a.mode))
            .map_err(io_err(entry, "set mode"))?;
    }
    set_xattrs_path(entry, path, xattrs);
    set_times_path(entry, path, a.atime, a.mtime)
}

/// utimensat without following a symlink.
pub(crate) fn set_times_path(
    entry: &Path,
    path: &Path,
    atime: TimeSpec,
    mtime: TimeSpec,
) -> Result<(), ApplyError> {
    nix::sys::stat::utimensat(None, path, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(nix_err(entry, "set times"))
}

/// The `mknod` kind for a non-directory, non-regular, non-symlink file type.
pub(crate) fn node_kind(md: &Metadata) -> Option<SFlag> {
    let ft = md.file_type();
    if ft.is_char_device() {
        Some(SFlag::S_IFCHR)
    } else if ft.is_block_device() {
        Some(SFlag::S_IFBLK)
    } else if ft.is_fifo() {
        Some(SFlag::S_IFIFO)
    } else if ft.is_socket() {
        Some(SFlag::S_IFSOCK)
    } else {
        None
    }
}

/// Copy one non-directory node from `src` (described by `md`) to `dst`,
/// which must not exist: content, owner, mode, times and xattrs (except
/// overlay ones). Returns the content bytes copied. `entry` names it in errors.
pub(crate) fn copy_node(
    entry: &Path,
    src: &Path,
    md: &Metadata,
    dst: &Path,
    same_owner: bool,
) -> Result<u64, ApplyError> {
    let attrs = Attrs::of(md);
    let xattrs = read_xattrs(src).map_err(io_err(entry, "read xattrs"))?;
    let ft = md.file_type();
    if ft.is_file() {
        let mut from = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(src)
            .map_err(io_err(entry, "open source file"))?;
        let mut to = open_new(dst).map_err(io_err(entry, "create file"))?;
        // std turns a File-to-File copy into copy_file_range, so the data
        // never passes through user space and can share extents (reflinks).
        let n = io::copy(&mut from, &mut to).map_err(io_err(entry, "copy file content"))?;
        finish_fd(entry, &to, &attrs, &xattrs, same_owner)?;
        return Ok(n);
    }
    if ft.is_symlink() {
        let target = fs::read_link(src).map_err(io_err(entry, "read symlink"))?;
        std::os::unix::fs::symlink(&target, dst).map_err(io_err(entry, "create symlink"))?;
        finish_path(entry, dst, &attrs, &xattrs, same_owner, true)?;
        return Ok(0);
    }
    let kind = node_kind(md).ok_or_else(|| ApplyError::Io {
        path: entry.to_path_buf(),
        op: "copy node",
        source: io::Error::other("a directory cannot be copied as a single node"),
    })?;
    mknod(dst, kind, md.rdev()).map_err(io_err(entry, "create device node"))?;
    finish_path(entry, dst, &attrs, &xattrs, same_owner, false)?;
    Ok(0)
}
