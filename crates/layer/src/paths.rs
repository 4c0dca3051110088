//! Normalising the paths that tar entries and hard links name.
//!
//! Layer tars come from untrusted registries, so every name is reduced to a
//! plain relative path before it touches the filesystem: leading `/` and `./`
//! go, `.` components collapse, and any `..` is refused rather than resolved
//! (resolving `a/../b` lexically would be harmless, but real producers never
//! write it, so a `..` is a sign of a hostile archive).

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Longest entry path or link target accepted, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathIssue {
    /// A `..` component.
    DotDot,
    /// A NUL byte, which no filesystem path can hold.
    Nul,
}

/// Reduce raw tar path bytes to a relative path inside the layer root.
/// An empty result means the root itself.
pub(crate) fn normalize(raw: &[u8]) -> Result<PathBuf, PathIssue> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(PathIssue::DotDot),
            c if c.contains(&0) => return Err(PathIssue::Nul),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(PathBuf::from(OsString::from_vec(out)))
}

/// The form of a raw name used in error messages: the bytes as they were in
/// the archive, cut at 256 bytes so a hostile 1 MiB name cannot flood logs.
pub(crate) fn display(raw: &[u8]) -> PathBuf {
    const SHOWN: usize = 256;
    if raw.len() <= SHOWN {
        return PathBuf::from(OsString::from_vec(raw.to_vec()));
    }
    let mut v = raw[..SHOWN].to_vec();
    v.extend_from_slice(b"...");
    PathBuf::from(OsString::from_vec(v))
}

/// Whether `p` is `prefix` or lies beneath it (component-wise).
pub(crate) fn is_within(p: &Path, prefix: &Path) -> bool {
    prefix.as_os_str().is_empty() || p.starts_with(prefix)
}

/// The raw bytes of a path.
pub(crate) fn bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Result<PathBuf, PathIssue> {
        normalize(s.as_bytes())
    }

    #[test]
    fn strips_and_collapses() {
        assert_eq!(n("/etc/x").unwrap(), PathBuf::from("etc/x"));
        assert_eq!(n("./a/./b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(n("//a//b").unwrap(), PathBuf::from("a/b"));
        assert_eq!(n("./").unwrap(), PathBuf::new());
        assert_eq!(n("/").unwrap(), PathBuf::new());
        assert_eq!(n("a/..b/c..").unwrap(), PathBuf::from("a/..b/c.."));
    }

    #[test]
    fn refuses_dotdot_and_nul() {
        assert_eq!(n("../x"), Err(PathIssue::DotDot));
        assert_eq!(n("a/../../x"), Err(PathIssue::DotDot));
        assert_eq!(n("a/.."), Err(PathIssue::DotDot));
        assert_eq!(n("/.."), Err(PathIssue::DotDot));
        assert_eq!(normalize(b"a\0b"), Err(PathIssue::Nul));
    }

    #[test]
    fn display_is_bounded() {
        let long = vec![b'a'; 10_000];
        assert_eq!(display(&long).as_os_str().len(), 259);
        assert!(is_within(Path::new("a/b"), Path::new("a")));
        assert!(!is_within(Path::new("ab"), Path::new("a")));
        assert!(is_within(Path::new("ab"), Path::new("")));
    }
}
