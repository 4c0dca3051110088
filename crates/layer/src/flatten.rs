//! Merging overlay-style snapshots into one plain directory tree, as a
//! container would see the root filesystem (for `unpack`, export and for
//! runtimes without overlayfs).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::apply::ApplyOptions;
use crate::error::{io_err, ApplyError};
use crate::node::{self, Attrs};
use crate::tree::{DirMeta, Probe, Tree};

/// What [`flatten`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlattenReport {
    /// Non-directories written (regular files, symlinks, nodes, hard links),
    /// counting a path again when an upper layer replaces it.
    pub files: u64,
    /// Directories created or updated.
    pub dirs: u64,
    /// File content bytes copied.
    pub bytes: u64,
}

/// Flatten `snapshots` (bottom-most first) into `dst`, an existing and
/// ideally empty directory.
///
/// Whiteouts (0/0 character devices) delete the path below them; opaque
/// directories (`trusted.overlay.opaque=y`) hide what lower snapshots put in
/// them; everything else is copied with owner (when `opts.same_owner`), mode,
/// times and xattrs (minus overlay ones). Files hard-linked to each other
/// within one snapshot stay hard-linked. Nothing in `dst` is ever followed:
/// a symlink from a lower snapshot that an upper one puts a directory under
/// is replaced, not written through.
pub fn flatten(
    snapshots: &[&Path],
    dst: &Path,
    opts: &ApplyOptions,
) -> Result<FlattenReport, ApplyError> {
    let mut f = Flattener {
        tree: Tree::new(dst),
        same_owner: opts.same_owner,
        report: FlattenReport::default(),
    };
    for snap in snapshots {
        f.snapshot(snap)?;
    }
    f.tree.finish()?;
    Ok(f.report)
}

struct Flattener<'d> {
    tree: Tree<'d>,
    same_owner: bool,
    report: FlattenReport,
}

impl Flattener<'_> {
    fn snapshot(&mut self, snap: &Path) -> Result<(), ApplyError> {
        // (dev, ino) of multiply-linked files already copied, and where to.
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let md = fs::symlink_metadata(snap).map_err(io_err(snap, "inspect snapshot"))?;
        self.dir(snap, Path::new(""), &md)?;
        // Depth-first with an explicit stack: a hostile layer can nest
        // directories far deeper than the call stack would allow.
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            let src_dir = snap.join(&dir);
            let mut names: Vec<OsString> = fs::read_dir(&src_dir)
                .and_then(|rd| rd.map(|e| e.map(|e| e.file_name())).collect())
                .map_err(io_err(&src_dir, "list snapshot directory"))?;
            // Sorted so the result (hard link choice, error order) is deterministic.
            names.sort_unstable();
            for name in names {
                let rel = dir.join(&name);
                let src = snap.join(&rel);
                let md =
                    fs::symlink_metadata(&src).map_err(io_err(&src, "inspect snapshot entry"))?;
                if node::is_whiteout(&md) {
                    self.whiteout(&src, &rel)?;
                } else if md.is_dir() {
                    self.dir(&src, &rel, &md)?;
                    stack.push(rel);
                } else {
                    self.non_dir(&src, &rel, &md, &mut links)?;
                }
            }
        }
        Ok(())
    }

    /// Delete `rel` from `dst`, if it is there below real directories.
    fn whiteout(&mut self, src: &Path, rel: &Path) -> Result<(), ApplyError> {
        if let Probe::Found(_) = self.tree.probe(src, rel)? {
            self.tree.remove(src, rel)?;
        }
        Ok(())
    }

    fn dir(&mut self, src: &Path, rel: &Path, md: &fs::Metadata) -> Result<(), ApplyError> {
        self.tree.ensure_parents(src, rel)?;
        let full = self.tree.full(rel);
        let existed = fs::symlink_metadata(&full)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        self.tree.make_dir(src, rel)?;
        let opaque = node::is_opaque(src).map_err(io_err(src, "read opaque xattr"))?;
        if existed && opaque {
            self.tree.empty_dir(src, rel)?;
        }
        let attrs = Attrs::of(md);
        if self.same_owner {
            std::os::unix::fs::lchown(&full, Some(attrs.uid), Some(attrs.gid))
                .map_err(io_err(src, "set owner"))?;
        }
        let xattrs = node::read_xattrs(src).map_err(io_err(src, "read xattrs"))?;
        if existed {
            // The upper directory's xattrs replace the lower one's, as in the merged view.
            for (old, _) in node::read_xattrs(&full).map_err(io_err(src, "read xattrs"))? {
                if !xattrs.iter().any(|(n, _)| *n == old) {
                    if let Err(e) = xattr::remove(&full, &old) {
                        tracing::warn!(entry = ?src, xattr = ?old, error = %e, "could not remove lower xattr");
                    }
                }
            }
        }
        node::set_xattrs_path(src, &full, &xattrs);
        self.tree.defer_dir_meta(
            rel,
            DirMeta {
                mode: attrs.mode,
                atime: attrs.atime,
                mtime: attrs.mtime,
            },
        );
        self.report.dirs += 1;
        Ok(())
    }

    fn non_dir(
        &mut self,
        src: &Path,
        rel: &Path,
        md: &fs::Metadata,
        links: &mut HashMap<(u64, u64), PathBuf>,
    ) -> Result<(), ApplyError> {
        self.tree.ensure_parents(src, rel)?;
        self.tree.remove(src, rel)?;
        let dst = self.tree.full(rel);
        self.report.files += 1;
        if md.nlink() > 1 {
            let key = (md.dev(), md.ino());
            if let Some(first) = links.get(&key) {
                let first = self.tree.full(first);
                return fs::hard_link(&first, &dst).map_err(io_err(src, "create hard link"));
            }
            links.insert(key, rel.to_path_buf());
        }
        self.report.bytes += node::copy_node(src, src, md, &dst, self.same_owner)?;
        Ok(())
    }
}
