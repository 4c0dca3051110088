//! The one error type of this crate. Every variant names the tar entry (or,
//! for `flatten`, the snapshot path) it is about, because layers come from
//! untrusted registries and a bare "permission denied" helps nobody.

use std::io;
use std::path::{Path, PathBuf};

/// Why applying, resolving or flattening a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The tar stream itself could not be read or parsed.
    #[error("reading layer tar {}: {source}", position(after))]
    Read {
        /// The last entry that was read successfully, if any.
        after: Option<PathBuf>,
        #[source]
        source: io::Error,
    },
    /// GNU long-name or PAX headers before an entry exceed the metadata budget.
    #[error(
        "reading layer tar {}: extension headers of the next entry exceed {limit} bytes (oversized PAX or GNU long-name record)",
        position(after)
    )]
    MetadataTooLarge { after: Option<PathBuf>, limit: u64 },
    /// The entry path has a `..` component.
    #[error("entry {path:?}: path climbs out of the layer root with '..'")]
    PathEscape { path: PathBuf },
    /// The hard link target has a `..` component.
    #[error("entry {path:?}: hard link target {target:?} climbs out of the layer root with '..'")]
    LinkTargetEscape { path: PathBuf, target: PathBuf },
    /// A path or link target longer than the limit; `path` is shortened for display.
    #[error("entry {path:?}: {what} is {len} bytes long, more than the limit of {max}")]
    TooLong {
        path: PathBuf,
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// The PAX extension records of one entry are larger than the limit.
    #[error("entry {path:?}: PAX extension records are {len} bytes, more than the limit of {max}")]
    PaxTooLarge {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    /// A PAX record could not be parsed.
    #[error("entry {path:?}: malformed PAX extension record: {what}")]
    BadPax { path: PathBuf, what: String },
    /// A header field could not be decoded or is out of range.
    #[error("entry {path:?}: invalid tar header: {what}")]
    BadHeader { path: PathBuf, what: String },
    /// A parent directory of the entry is a symlink.
    #[error("entry {path:?}: parent {parent:?} is a symlink")]
    ParentSymlink { path: PathBuf, parent: PathBuf },
    /// A parent directory of the entry is a file, device or other non-directory.
    #[error("entry {path:?}: parent {parent:?} is not a directory")]
    ParentNotDir { path: PathBuf, parent: PathBuf },
    /// A non-directory entry names the layer root itself.
    #[error("entry {path:?}: a non-directory cannot replace the layer root")]
    ReplacesRoot { path: PathBuf },
    /// A whiteout whose name is empty, `.` or `..`.
    #[error("entry {path:?}: invalid whiteout name")]
    BadWhiteout { path: PathBuf },
    /// The hard link target exists nowhere (or was whited out).
    #[error(
        "entry {path:?}: hard link target {target:?} not found in this layer or any lower layer"
    )]
    LinkTargetNotFound { path: PathBuf, target: PathBuf },
    /// The hard link target is a directory.
    #[error("entry {path:?}: hard link target {target:?} is a directory")]
    LinkTargetIsDir { path: PathBuf, target: PathBuf },
    /// The hard link target is only reachable through a symlink.
    #[error("entry {path:?}: hard link target {target:?} is reached through symlink {via:?}")]
    LinkTargetViaSymlink {
        path: PathBuf,
        target: PathBuf,
        via: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("entry {path:?}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Where in the tar a stream error happened, for messages.
fn position(after: &Option<PathBuf>) -> String {
    match after {
        Some(p) => format!("after entry {p:?}"),
        None => "before the first entry".to_string(),
    }
}

/// `map_err` helper: an io error while doing `op` for `entry`.
pub(crate) fn io_err<'a>(
    entry: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> ApplyError + 'a {
    move |source| ApplyError::Io {
        path: entry.to_path_buf(),
        op,
        source,
    }
}

/// `map_err` helper for nix calls.
pub(crate) fn nix_err<'a>(
    entry: &'a Path,
    op: &'static str,
) -> impl FnOnce(nix::Error) -> ApplyError + 'a {
    move |errno| ApplyError::Io {
        path: entry.to_path_buf(),
        op,
        source: io::Error::from(errno),
    }
}
