//! A directory tree that is written without ever following a symlink.
//!
//! Every path handled here is relative to the tree's root and already
//! normalised (no `..`). Before anything is created, each ancestor is checked
//! to be a real directory; ancestors known good are cached so that a layer of
//! 50k files in a few thousand directories costs a hash lookup per file, not
//! an lstat per path component. The cache is only valid because this crate is
//! the sole writer of the tree while it works on it, and every removal of a
//! directory goes through [`Tree::remove`], which forgets it.

use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions, Permissions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::time::TimeSpec;

use crate::error::{io_err, nix_err, ApplyError};
use crate::node;
use crate::paths::is_within;

/// Mode and times of a directory, set once all its children are written
/// (writing a child changes a directory's mtime; a read-only mode would stop
/// an unprivileged writer from adding children).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirMeta {
    pub mode: u32,
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

/// What [`Tree::probe`] found at a path.
pub(crate) enum Probe {
    /// Something is there; its lstat.
    Found(fs::Metadata),
    /// Nothing is there (or an ancestor is missing).
    Missing,
    /// An ancestor (named) is a symlink.
    ViaSymlink(PathBuf),
    /// An ancestor is a file, device or other non-directory.
    UnderNonDir,
}

/// What [`Tree::remove`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    Nothing,
    NonDir,
    Dir,
}

pub(crate) struct Tree<'r> {
    root: &'r Path,
    known_dirs: HashSet<PathBuf>,
    dir_meta: HashMap<PathBuf, DirMeta>,
}

impl<'r> Tree<'r> {
    pub fn new(root: &'r Path) -> Self {
        Tree {
            root,
            known_dirs: HashSet::new(),
            dir_meta: HashMap::new(),
        }
    }

    /// The absolute path of `rel`.
    pub fn full(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(rel)
        }
    }

    /// Make every ancestor of `rel` a real directory: missing ones are created
    /// (0755), an existing symlink or non-directory is an error naming `entry`.
    pub fn ensure_parents(&mut self, entry: &Path, rel: &Path) -> Result<(), ApplyError> {
        let unknown = self.unknown_ancestors(rel);
        for p in unknown.into_iter().rev() {
            let full = self.root.join(&p);
            match node::mkdir(&full, 0o755) {
                // Set the mode again: the umask may have taken bits away.
                Ok(()) => fs::set_permissions(&full, Permissions::from_mode(0o755))
                    .map_err(io_err(entry, "set mode of created parent directory"))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let md = fs::symlink_metadata(&full)
                        .map_err(io_err(entry, "inspect parent directory"))?;
                    if md.file_type().is_symlink() {
                        return Err(ApplyError::ParentSymlink {
                            path: entry.to_path_buf(),
                            parent: p,
                        });
                    }
                    if !md.is_dir() {
                        return Err(ApplyError::ParentNotDir {
                            path: entry.to_path_buf(),
                            parent: p,
                        });
                    }
                }
                Err(e) => return Err(io_err(entry, "create parent directory")(e)),
            }
            self.known_dirs.insert(p);
        }
        Ok(())
    }

    /// Ancestors of `rel` not known to be directories, nearest first.
    fn unknown_ancestors(&self, rel: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut cur = rel.parent();
        while let Some(p) = cur {
            if p.as_os_str().is_empty() || self.known_dirs.contains(p) {
                break;
            }
            out.push(p.to_path_buf());
            cur = p.parent();
        }
        out
    }

    /// Look at `rel` without creating or following anything.
    pub fn probe(&mut self, entry: &Path, rel: &Path) -> Result<Probe, ApplyError> {
        for p in self.unknown_ancestors(rel).into_iter().rev() {
            match fs::symlink_metadata(self.root.join(&p)) {
                Ok(md) if md.is_dir() => {
                    self.known_dirs.insert(p);
                }
                Ok(md) if md.file_type().is_symlink() => return Ok(Probe::ViaSymlink(p)),
                Ok(_) => return Ok(Probe::UnderNonDir),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
                Err(e) => return Err(io_err(entry, "inspect path")(e)),
            }
        }
        match fs::symlink_metadata(self.full(rel)) {
            Ok(md) => Ok(Probe::Found(md)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Probe::Missing),
            Err(e) => Err(io_err(entry, "inspect path")(e)),
        }
    }

    /// Remove whatever is at `rel` (a directory with all it holds), without
    /// following a symlink. The parents must already be known good.
    pub fn remove(&mut self, entry: &Path, rel: &Path) -> Result<Removed, ApplyError> {
        if rel.as_os_str().is_empty() {
            return Err(ApplyError::ReplacesRoot {
                path: entry.to_path_buf(),
            });
        }
        let full = self.root.join(rel);
        let md = match fs::symlink_metadata(&full) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removed::Nothing),
            Err(e) => return Err(io_err(entry, "inspect existing path")(e)),
        };
        if md.is_dir() {
            // std's remove_dir_all works with openat/unlinkat and does not
            // follow symlinks found inside.
            fs::remove_dir_all(&full).map_err(io_err(entry, "remove existing directory"))?;
            self.forget_under(rel, true);
            Ok(Removed::Dir)
        } else {
            fs::remove_file(&full).map_err(io_err(entry, "remove existing file"))?;
            Ok(Removed::NonDir)
        }
    }

    /// Remove everything inside the directory `rel`, keeping `rel` itself.
    pub fn empty_dir(&mut self, entry: &Path, rel: &Path) -> Result<(), ApplyError> {
        let full = self.full(rel);
        for child in fs::read_dir(&full).map_err(io_err(entry, "list directory to empty it"))? {
            let child = child.map_err(io_err(entry, "list directory to empty it"))?;
            let ft = child
                .file_type()
                .map_err(io_err(entry, "inspect existing path"))?;
            if ft.is_dir() {
                fs::remove_dir_all(child.path())
                    .map_err(io_err(entry, "remove existing directory"))?;
            } else {
                fs::remove_file(child.path()).map_err(io_err(entry, "remove existing file"))?;
            }
        }
        self.forget_under(rel, false);
        Ok(())
    }

    /// Forget cached knowledge about the directories beneath `rel` (and `rel`
    /// itself when `itself`). O(cache size), but only runs when a directory
    /// is removed, which real layers rarely do.
    fn forget_under(&mut self, rel: &Path, itself: bool) {
        let gone = |p: &Path| is_within(p, rel) && (itself || p != rel);
        self.known_dirs.retain(|p| !gone(p));
        self.dir_meta.retain(|p, _| !gone(p));
    }

    /// Create something at `rel` with `make`; if something is already there,
    /// remove it (later entries win, as with tar) and try once more.
    pub fn create<T>(
        &mut self,
        entry: &Path,
        rel: &Path,
        op: &'static str,
        mut make: impl FnMut(&Path) -> io::Result<T>,
    ) -> Result<(T, Removed), ApplyError> {
        if rel.as_os_str().is_empty() {
            return Err(ApplyError::ReplacesRoot {
                path: entry.to_path_buf(),
            });
        }
        let full = self.root.join(rel);
        match make(&full) {
            Ok(t) => Ok((t, Removed::Nothing)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let removed = self.remove(entry, rel)?;
                let t = make(&full).map_err(io_err(entry, op))?;
                Ok((t, removed))
            }
            Err(e) => Err(io_err(entry, op)(e)),
        }
    }

    /// Make `rel` a directory, keeping an existing one (and its children) and
    /// replacing anything else. Returns what was removed.
    pub fn make_dir(&mut self, entry: &Path, rel: &Path) -> Result<Removed, ApplyError> {
        if rel.as_os_str().is_empty() {
            return Ok(Removed::Nothing);
        }
        let full = self.root.join(rel);
        let removed = match node::mkdir(&full, 0o700) {
            Ok(()) => Removed::Nothing,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let md =
                    fs::symlink_metadata(&full).map_err(io_err(entry, "inspect existing path"))?;
                if md.is_dir() {
                    Removed::Nothing
                } else {
                    fs::remove_file(&full).map_err(io_err(entry, "remove existing file"))?;
                    node::mkdir(&full, 0o700).map_err(io_err(entry, "create directory"))?;
                    Removed::NonDir
                }
            }
            Err(e) => return Err(io_err(entry, "create directory")(e)),
        };
        self.known_dirs.insert(rel.to_path_buf());
        Ok(removed)
    }

    /// Set mode and times of directory `rel` at [`Tree::finish`].
    pub fn defer_dir_meta(&mut self, rel: &Path, meta: DirMeta) {
        self.dir_meta.insert(rel.to_path_buf(), meta);
    }

    /// Apply the deferred directory metadata, deepest directories first (so
    /// a parent's mode never stops us reaching a child).
    pub fn finish(&mut self) -> Result<(), ApplyError> {
        let mut metas: Vec<(PathBuf, DirMeta)> = self.dir_meta.drain().collect();
        metas.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        for (rel, meta) in metas {
            let full = self.full(&rel);
            // The root was handed to us; anything below it must not be a symlink.
            let flags = if rel.as_os_str().is_empty() {
                0
            } else {
                libc::O_NOFOLLOW
            };
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC | flags)
                .open(&full)
                .map_err(io_err(&rel, "open directory to set its metadata"))?;
            dir.set_permissions(Permissions::from_mode(meta.mode))
                .map_err(io_err(&rel, "set directory mode"))?;
            nix::sys::stat::futimens(dir.as_raw_fd(), &meta.atime, &meta.mtime)
                .map_err(nix_err(&rel, "set directory times"))?;
        }
        Ok(())
    }
}
