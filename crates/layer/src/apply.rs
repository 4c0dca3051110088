//! Applying one layer tar into a fresh directory, overlay-style.
//!
//! The tar comes from an untrusted registry. The `tar` crate only parses it;
//! all filesystem work happens here, through [`Tree`], which never follows a
//! symlink and refuses to create anything under a parent that is not a real
//! directory. Whiteouts become what overlayfs reads: `.wh.NAME` a 0/0
//! character device at `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque`
//! xattr on its directory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use nix::sys::stat::SFlag;
use nix::sys::time::TimeSpec;
use tar::EntryType;

use crate::error::{io_err, ApplyError};
use crate::node::{self, Attrs, OPAQUE_XATTR};
use crate::paths::{self, is_within, PathIssue, MAX_PATH_LEN};
use crate::pax::{self, Guarded, Pax, Recorder, MAX_PAX_LEN, META_BUDGET};
use crate::tree::{DirMeta, Probe, Removed, Tree};

/// Size of the one buffer file content is copied through.
const BUF_SIZE: usize = 128 * 1024;

/// How to apply layers.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Give entries the uid/gid from the archive. Needs root (CAP_CHOWN), so
    /// the default is true exactly when running as root.
    pub same_owner: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            same_owner: nix::unistd::geteuid().is_root(),
        }
    }
}

/// What [`apply_layer`] did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Tar entries processed (whiteouts and directories included).
    pub entries: u64,
    /// File content bytes written.
    pub bytes: u64,
    /// Hard links whose target is not in this layer; see
    /// [`crate::resolve_deferred_links`].
    pub deferred_links: Vec<DeferredLink>,
}

/// A hard link whose target was not in the layer being applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferredLink {
    /// Where the link goes, relative to the layer root.
    pub path: PathBuf,
    /// What it links to, relative to the layer root (normalised).
    pub target: PathBuf,
}

/// Apply one layer tar into `root`, a fresh, empty directory that becomes
/// this layer's overlay-style snapshot.
///
/// The tar stream is read to its very end, trailing zero blocks and padding
/// included, so a caller hashing the stream underneath sees every byte.
pub fn apply_layer<R: Read>(
    tar: R,
    root: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let rec = Rc::new(RefCell::new(Recorder::default()));
    let mut archive = tar::Archive::new(Guarded {
        inner: tar,
        rec: rec.clone(),
    });
    let mut ap = Applier {
        tree: Tree::new(root),
        same_owner: opts.same_owner,
        buf: vec![0; BUF_SIZE],
        report: ApplyReport::default(),
        deferred: Vec::new(),
        deferred_at: HashMap::new(),
    };
    let mut last: Option<PathBuf> = None;
    {
        let mut entries = archive.entries().map_err(|source| ApplyError::Read {
            after: None,
            source,
        })?;
        loop {
            rec.borrow_mut().start();
            let next = entries.next();
            let tripped = rec.borrow_mut().stop();
            let mut entry = match next {
                None => break,
                Some(Ok(e)) => e,
                Some(Err(_)) if tripped => {
                    return Err(ApplyError::MetadataTooLarge {
                        after: last,
                        limit: META_BUDGET,
                    })
                }
                Some(Err(source)) => {
                    return Err(ApplyError::Read {
                        after: last,
                        source,
                    })
                }
            };
            let pax = {
                let r = rec.borrow();
                match r.pax_data(entry.raw_header_position()) {
                    Ok(Some(data)) if data.len() > MAX_PAX_LEN => Err((data.len(), String::new())),
                    Ok(Some(data)) => pax::parse(data).map_err(|e| (0, e)),
                    Ok(None) => Ok(Pax::default()),
                    Err(e) => Err((0, e)),
                }
            };
            let pax = pax.map_err(|(len, what)| {
                let path = paths::display(&entry.path_bytes());
                match len {
                    0 => ApplyError::BadPax { path, what },
                    len => ApplyError::PaxTooLarge {
                        path,
                        len,
                        max: MAX_PAX_LEN,
                    },
                }
            })?;
            let name = ap.entry(&mut entry, pax)?;
            // Skip content we did not use, so the parser's next header read
            // starts at the next header and never counts against the budget.
            io::copy(&mut entry, &mut io::sink()).map_err(io_err(&name, "read entry content"))?;
            last = Some(name);
        }
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|source| ApplyError::Read {
        after: last,
        source,
    })?;
    ap.tree.finish()?;
    let mut report = ap.report;
    report.deferred_links = ap.deferred.into_iter().flatten().collect();
    Ok(report)
}

struct Applier<'r> {
    tree: Tree<'r>,
    same_owner: bool,
    buf: Vec<u8>,
    report: ApplyReport,
    /// Deferred links in entry order; `None` once a later entry replaced one.
    deferred: Vec<Option<DeferredLink>>,
    deferred_at: HashMap<PathBuf, usize>,
}

impl Applier<'_> {
    /// Apply one entry; returns its name for error messages.
    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        mut pax: Pax,
    ) -> Result<PathBuf, ApplyError> {
        let raw = pax
            .path
            .take()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let name = paths::display(&raw);
        if raw.len() > MAX_PATH_LEN {
            return Err(ApplyError::TooLong {
                path: name,
                what: "path",
                len: raw.len(),
                max: MAX_PATH_LEN,
            });
        }
        let rel = paths::normalize(&raw).map_err(|issue| match issue {
            PathIssue::DotDot => ApplyError::PathEscape { path: name.clone() },
            PathIssue::Nul => ApplyError::BadHeader {
                path: name.clone(),
                what: "NUL byte in path".into(),
            },
        })?;
        if let Some(size) = pax.size {
            // The tar crate stops reading PAX records at the first one it
            // cannot parse; if that hid the size record, it framed this entry
            // wrongly and everything after it would be garbage.
            if size != entry.size() {
                return Err(ApplyError::BadPax {
                    path: name,
                    what: "size record the tar parser missed".into(),
                });
            }
        }
        let hdr = entry.header();
        let mut et = hdr.entry_type();
        if et.is_pax_global_extensions() {
            return Ok(name);
        }
        // Pre-POSIX archives mark directories with a trailing slash only.
        if et == EntryType::Regular && hdr.as_old().linkflag[0] == 0 && raw.ends_with(b"/") {
            et = EntryType::Directory;
        }
        self.report.entries += 1;
        if let Some(fname) = rel.file_name() {
            if fname.as_bytes().starts_with(b".wh.") {
                return self.whiteout(&name, &rel, fname).map(|()| name);
            }
        }
        let attrs = attrs_of(&name, hdr, &pax)?;
        let xattrs = std::mem::take(&mut pax.xattrs);
        match et {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.file(entry, &name, &rel, &attrs, &xattrs)?
            }
            EntryType::Directory => self.dir(&name, &rel, &attrs, &xattrs)?,
            EntryType::Symlink => {
                let target = link_target(&name, entry, pax.linkpath.take(), "symlink")?;
                self.symlink(&name, &rel, &target, &attrs, &xattrs)?
            }
            EntryType::Link => {
                let target = link_target(&name, entry, pax.linkpath.take(), "hard link")?;
                self.hard_link(&name, &rel, &target)?
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let hdr = entry.header();
                let bad = |e: io::Error| ApplyError::BadHeader {
                    path: name.clone(),
                    what: e.to_string(),
                };
                let major = hdr.device_major().map_err(bad)?.unwrap_or(0);
                let minor = hdr.device_minor().map_err(bad)?.unwrap_or(0);
                let kind = match et {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let rdev = nix::sys::stat::makedev(major.into(), minor.into());
                self.node(&name, &rel, kind, rdev, &attrs, &xattrs)?
            }
            other => {
                tracing::warn!(entry = ?name, kind = ?other, "skipping tar entry of unsupported type");
            }
        }
        Ok(name)
    }

    fn file(
        &mut self,
        content: &mut impl Read,
        name: &Path,
        rel: &Path,
        attrs: &Attrs,
        xattrs: &[(OsString, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        self.tree.ensure_parents(name, rel)?;
        self.forget_deferred(rel);
        let (mut f, removed) = self.tree.create(name, rel, "create file", node::open_new)?;
        self.removed(rel, removed);
        loop {
            let n = match content.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(name, "read file content from the tar")(e)),
            };
            f.write_all(&self.buf[..n])
                .map_err(io_err(name, "write file content"))?;
            self.report.bytes += n as u64;
        }
        node::finish_fd(name, &f, attrs, xattrs, self.same_owner)
    }

    fn dir(
        &mut self,
        name: &Path,
        rel: &Path,
        attrs: &Attrs,
        xattrs: &[(OsString, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        self.tree.ensure_parents(name, rel)?;
        self.forget_deferred(rel);
        let removed = self.tree.make_dir(name, rel)?;
        self.removed(rel, removed);
        let full = self.tree.full(rel);
        if self.same_owner {
            std::os::unix::fs::lchown(&full, Some(attrs.uid), Some(attrs.gid))
                .map_err(io_err(name, "set owner"))?;
        }
        node::set_xattrs_path(name, &full, xattrs);
        self.tree.defer_dir_meta(
            rel,
            DirMeta {
                mode: attrs.mode,
                atime: attrs.atime,
                mtime: attrs.mtime,
            },
        );
        Ok(())
    }

    fn symlink(
        &mut self,
        name: &Path,
        rel: &Path,
        target: &[u8],
        attrs: &Attrs,
        xattrs: &[(OsString, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        self.tree.ensure_parents(name, rel)?;
        self.forget_deferred(rel);
        // The target is stored as it is and never followed, so it may point anywhere.
        let target = OsStr::from_bytes(target);
        let ((), removed) = self.tree.create(name, rel, "create symlink", |p| {
            std::os::unix::fs::symlink(target, p)
        })?;
        self.removed(rel, removed);
        node::finish_path(
            name,
            &self.tree.full(rel),
            attrs,
            xattrs,
            self.same_owner,
            true,
        )
    }

    fn node(
        &mut self,
        name: &Path,
        rel: &Path,
        kind: SFlag,
        rdev: u64,
        attrs: &Attrs,
        xattrs: &[(OsString, Vec<u8>)],
    ) -> Result<(), ApplyError> {
        self.tree.ensure_parents(name, rel)?;
        self.forget_deferred(rel);
        let ((), removed) = self.tree.create(name, rel, "create device node", |p| {
            node::mknod(p, kind, rdev)
        })?;
        self.removed(rel, removed);
        node::finish_path(
            name,
            &self.tree.full(rel),
            attrs,
            xattrs,
            self.same_owner,
            false,
        )
    }

    fn hard_link(&mut self, name: &Path, rel: &Path, target_raw: &[u8]) -> Result<(), ApplyError> {
        let target = paths::normalize(target_raw).map_err(|issue| match issue {
            PathIssue::DotDot => ApplyError::LinkTargetEscape {
                path: name.to_path_buf(),
                target: paths::display(target_raw),
            },
            PathIssue::Nul => ApplyError::BadHeader {
                path: name.to_path_buf(),
                what: "NUL byte in link target".into(),
            },
        })?;
        if rel.as_os_str().is_empty() {
            return Err(ApplyError::ReplacesRoot {
                path: name.to_path_buf(),
            });
        }
        if target.as_os_str().is_empty() {
            return Err(ApplyError::LinkTargetIsDir {
                path: name.to_path_buf(),
                target,
            });
        }
        self.tree.ensure_parents(name, rel)?;
        match self.tree.probe(name, &target)? {
            Probe::Found(md) if md.is_dir() => Err(ApplyError::LinkTargetIsDir {
                path: name.to_path_buf(),
                target,
            }),
            Probe::Found(md) if node::is_whiteout(&md) => Err(ApplyError::LinkTargetNotFound {
                path: name.to_path_buf(),
                target,
            }),
            Probe::UnderNonDir => Err(ApplyError::LinkTargetNotFound {
                path: name.to_path_buf(),
                target,
            }),
            Probe::ViaSymlink(via) => Err(ApplyError::LinkTargetViaSymlink {
                path: name.to_path_buf(),
                target,
                via,
            }),
            Probe::Found(_) if target == rel => Ok(()),
            Probe::Found(_) => {
                self.forget_deferred(rel);
                let src = self.tree.full(&target);
                // std's hard_link is linkat without AT_SYMLINK_FOLLOW: a
                // symlink target is linked as the symlink itself.
                let ((), removed) = self.tree.create(name, rel, "create hard link", |p| {
                    std::fs::hard_link(&src, p)
                })?;
                self.removed(rel, removed);
                Ok(())
            }
            Probe::Missing => {
                let removed = self.tree.remove(name, rel)?;
                self.removed(rel, removed);
                self.forget_deferred(rel);
                self.deferred_at
                    .insert(rel.to_path_buf(), self.deferred.len());
                self.deferred.push(Some(DeferredLink {
                    path: rel.to_path_buf(),
                    target,
                }));
                Ok(())
            }
        }
    }

    fn whiteout(&mut self, name: &Path, rel: &Path, fname: &OsStr) -> Result<(), ApplyError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let fname = fname.as_bytes();
        if fname == b".wh..wh..opq" {
            // ensure_parents makes the directory itself, as it is rel's parent.
            self.tree.ensure_parents(name, rel)?;
            let dir = self.tree.full(parent);
            return xattr::set(&dir, OPAQUE_XATTR, b"y")
                .map_err(io_err(name, "mark directory opaque"));
        }
        if fname.starts_with(b".wh..wh.") {
            tracing::debug!(entry = ?name, "ignoring overlay metadata entry");
            return Ok(());
        }
        let victim = &fname[4..];
        if matches!(victim, b"" | b"." | b"..") {
            return Err(ApplyError::BadWhiteout {
                path: name.to_path_buf(),
            });
        }
        let target = parent.join(OsStr::from_bytes(victim));
        self.tree.ensure_parents(name, rel)?;
        self.forget_deferred(&target);
        let ((), removed) = self.tree.create(name, &target, "create whiteout", |p| {
            node::mknod(p, SFlag::S_IFCHR, 0)
        })?;
        self.removed(&target, removed);
        Ok(())
    }

    /// A later entry at `rel` wins over a pending deferred link there.
    fn forget_deferred(&mut self, rel: &Path) {
        if self.deferred_at.is_empty() {
            return;
        }
        if let Some(i) = self.deferred_at.remove(rel) {
            self.deferred[i] = None;
        }
    }

    /// A directory at `rel` was removed: deferred links inside it go too.
    fn removed(&mut self, rel: &Path, removed: Removed) {
        if removed != Removed::Dir || self.deferred_at.is_empty() {
            return;
        }
        let deferred = &mut self.deferred;
        self.deferred_at.retain(|p, i| {
            let keep = !is_within(p, rel);
            if !keep {
                deferred[*i] = None;
            }
            keep
        });
    }
}

/// Owner, mode and times of an entry, PAX records winning over the header.
fn attrs_of(name: &Path, hdr: &tar::Header, pax: &Pax) -> Result<Attrs, ApplyError> {
    let bad = |what: String| ApplyError::BadHeader {
        path: name.to_path_buf(),
        what,
    };
    let mode = hdr.mode().map_err(|e| bad(format!("mode: {e}")))? & 0o7777;
    let id = |v: Option<u64>, h: io::Result<u64>, what: &str| -> Result<u32, ApplyError> {
        let v = match v {
            Some(v) => v,
            None => h.map_err(|e| bad(format!("{what}: {e}")))?,
        };
        u32::try_from(v).map_err(|_| bad(format!("{what} {v} is out of range")))
    };
    let uid = id(pax.uid, hdr.uid(), "uid")?;
    let gid = id(pax.gid, hdr.gid(), "gid")?;
    let (sec, nsec) = match pax.mtime {
        Some(t) => t,
        None => {
            let m = hdr.mtime().map_err(|e| bad(format!("mtime: {e}")))?;
            (
                i64::try_from(m).map_err(|_| bad(format!("mtime {m} is out of range")))?,
                0,
            )
        }
    };
    // atime follows mtime so that a snapshot does not depend on when it was made.
    let t = TimeSpec::new(sec, nsec);
    Ok(Attrs {
        uid,
        gid,
        mode,
        atime: t,
        mtime: t,
    })
}

/// The link target of a symlink or hard link entry, PAX `linkpath` first.
fn link_target<R: Read>(
    name: &Path,
    entry: &tar::Entry<'_, R>,
    pax: Option<Vec<u8>>,
    what: &'static str,
) -> Result<Vec<u8>, ApplyError> {
    let target = match pax {
        Some(t) => t,
        None => entry
            .link_name_bytes()
            .map(|c| c.into_owned())
            .unwrap_or_default(),
    };
    if target.is_empty() {
        return Err(ApplyError::BadHeader {
            path: name.to_path_buf(),
            what: format!("{what} without a target"),
        });
    }
    if target.len() > MAX_PATH_LEN {
        return Err(ApplyError::TooLong {
            path: name.to_path_buf(),
            what: "link target",
            len: target.len(),
            max: MAX_PATH_LEN,
        });
    }
    if target.contains(&0) {
        return Err(ApplyError::BadHeader {
            path: name.to_path_buf(),
            what: format!("NUL byte in {what} target"),
        });
    }
    Ok(target)
}
