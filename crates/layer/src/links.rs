//! Hard links that point outside the layer that holds them.
//!
//! A layer tar may hard-link to a file that only exists in a lower layer.
//! Overlayfs cannot link across layers, so such a link becomes a copy of the
//! lower file (what overlayfs itself does on copy-up).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::apply::{ApplyOptions, DeferredLink};
use crate::error::{io_err, ApplyError};
use crate::node;
use crate::paths::{self, PathIssue};
use crate::tree::Tree;

/// Resolve hard links whose target was not in their own layer.
///
/// `root` is the layer's snapshot (as left by [`crate::apply_layer`]),
/// `lowers` the snapshots below it, top-most first. Each target is looked up
/// as overlayfs would (whiteouts and opaque directories, in `root` too, hide
/// what lies below them) and copied up into `root` at the link's path with
/// content, mode, owner, times and xattrs. Links are handled in order, so a
/// link to an earlier deferred link's path becomes a real hard link to that copy.
/// A target found in no layer, or whited out, is an error naming the entry.
pub fn resolve_deferred_links(
    root: &Path,
    lowers: &[&Path],
    links: &[DeferredLink],
    opts: &ApplyOptions,
) -> Result<(), ApplyError> {
    let mut tree = Tree::new(root);
    let layers: Vec<&Path> = std::iter::once(root)
        .chain(lowers.iter().copied())
        .collect();
    for link in links {
        let path = checked(&link.path, &link.path)?;
        let target = checked(&link.path, &link.target)?;
        if path.as_os_str().is_empty() {
            return Err(ApplyError::ReplacesRoot { path });
        }
        let not_found = || ApplyError::LinkTargetNotFound {
            path: path.clone(),
            target: target.clone(),
        };
        let (layer, found, md) = lookup(&layers, &target)
            .map_err(io_err(&path, "look up hard link target"))?
            .ok_or_else(not_found)?;
        if md.is_dir() {
            return Err(ApplyError::LinkTargetIsDir { path, target });
        }
        if layer == 0 && target == path {
            continue;
        }
        tree.ensure_parents(&path, &path)?;
        tree.remove(&path, &path)?;
        let dst = tree.full(&path);
        if layer == 0 {
            fs::hard_link(&found, &dst).map_err(io_err(&path, "create hard link"))?;
        } else {
            node::copy_node(&path, &found, &md, &dst, opts.same_owner)?;
        }
    }
    Ok(())
}

/// A link path from the caller, normalised; a `..` is refused like in a tar.
fn checked(entry: &Path, p: &Path) -> Result<PathBuf, ApplyError> {
    paths::normalize(paths::bytes(p)).map_err(|issue| match issue {
        PathIssue::DotDot if entry == p => ApplyError::PathEscape {
            path: entry.to_path_buf(),
        },
        PathIssue::DotDot => ApplyError::LinkTargetEscape {
            path: entry.to_path_buf(),
            target: p.to_path_buf(),
        },
        PathIssue::Nul => ApplyError::BadHeader {
            path: entry.to_path_buf(),
            what: "NUL byte in path".into(),
        },
    })
}

/// Find `rel` in a stack of overlay layers (top-most first) the way the
/// merged view would: the first layer that has it wins; a whiteout, or a
/// non-directory (symlinks included: they are never followed) on the way,
/// hides it in every layer below; an opaque directory on the way hides the
/// layers below it. Returns the layer index, full path and lstat.
pub(crate) fn lookup(
    layers: &[&Path],
    rel: &Path,
) -> io::Result<Option<(usize, PathBuf, fs::Metadata)>> {
    let comps: Vec<_> = rel.components().collect();
    if comps.is_empty() {
        return Ok(None);
    }
    for (i, layer) in layers.iter().enumerate() {
        let mut opaque = node::is_opaque(layer)?;
        let mut p = layer.to_path_buf();
        for (k, c) in comps.iter().enumerate() {
            p.push(c);
            let md = match fs::symlink_metadata(&p) {
                Ok(md) => md,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if opaque {
                        return Ok(None);
                    }
                    break;
                }
                Err(e) => return Err(e),
            };
            if node::is_whiteout(&md) {
                return Ok(None);
            }
            if k + 1 == comps.len() {
                return Ok(Some((i, p, md)));
            }
            if !md.is_dir() {
                return Ok(None);
            }
            opaque = opaque || node::is_opaque(&p)?;
        }
    }
    Ok(None)
}
