//! Reading archives member by member, treating them as hostile: member
//! names are checked before anything is done with them, links are refused
//! (except `docker save`'s `layer.tar` links between layer directories), and
//! small JSON members are size-bounded.

use std::io::{self, Read};
use stowage_oci::Digest;

/// JSON members (index.json, manifest.json, configs) larger than this are refused.
pub const MAX_JSON: u64 = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("archive member {name:?}: {why}")]
    Member { name: String, why: String },
    #[error("reading archive: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    OciLayout,
    IndexJson,
    ManifestJson,
    /// docker save's legacy `repositories` file.
    Repositories,
    /// `blobs/sha256/<hex>`.
    Blob(Digest),
    /// Any other regular file (docker-save `<id>/layer.tar`, `<id>.json`, ...), by normalized name.
    File(String),
    /// docker save's `<id>/layer.tar` → `../<other>/layer.tar`, as normalized names.
    LayerLink {
        target: String,
    },
    Dir,
}

pub struct Member {
    pub name: String,
    pub kind: MemberKind,
    pub size: u64,
}

/// Reduce a member name to a clean relative path, or say why not.
fn clean(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err("absolute member path".into());
    }
    let mut parts = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("member path climbs out with '..'".into()),
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

pub struct ArchiveReader<R: Read> {
    ar: tar::Archive<R>,
}

impl<R: Read> ArchiveReader<R> {
    pub fn new(r: R) -> Self {
        ArchiveReader {
            ar: tar::Archive::new(r),
        }
    }

    /// Call `f` with every member and a reader of its bytes.
    pub fn for_each<E: From<ReadError>>(
        &mut self,
        mut f: impl FnMut(&Member, &mut dyn Read) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut seen = 0usize;
        for entry in self.ar.entries().map_err(ReadError::from)? {
            let mut e = entry.map_err(ReadError::from)?;
            seen += 1;
            let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let bad = |why: String| ReadError::Member {
                name: raw.clone(),
                why,
            };
            let name = clean(&raw).map_err(bad)?;
            let size = e.header().size().map_err(ReadError::from)?;
            let et = e.header().entry_type();
            let kind = if et.is_dir() {
                MemberKind::Dir
            } else if et.is_symlink() || et.is_hard_link() {
                let target = e
                    .link_name()
                    .map_err(ReadError::from)?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // docker save links a repeated layer to the first copy.
                let base = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                let joined = if et.is_symlink() {
                    format!("{base}/{target}")
                } else {
                    target.clone()
                };
                let resolved = resolve(&joined);
                match resolved {
                    Some(t)
                        if name.ends_with("/layer.tar") && t.ends_with(".tar") && !t.is_empty() =>
                    {
                        MemberKind::LayerLink { target: t }
                    }
                    _ => {
                        return Err(bad(format!(
                            "link to {target:?} refused: archives must not contain links"
                        ))
                        .into())
                    }
                }
            } else if !(et.is_file() || et == tar::EntryType::Continuous) {
                return Err(bad(format!("unsupported member type {:?}", et)).into());
            } else {
                match name.as_str() {
                    "oci-layout" => MemberKind::OciLayout,
                    "index.json" => MemberKind::IndexJson,
                    "manifest.json" => MemberKind::ManifestJson,
                    "repositories" => MemberKind::Repositories,
                    n => match n.strip_prefix("blobs/sha256/") {
                        Some(hex) => MemberKind::Blob(
                            Digest::from_hex(hex)
                                .map_err(|_| bad("blob name is not a sha256 digest".into()))?,
                        ),
                        None if n.starts_with("blobs/") => {
                            return Err(bad("only sha256 blobs are supported".into()).into())
                        }
                        None => MemberKind::File(name.clone()),
                    },
                }
            };
            if matches!(
                kind,
                MemberKind::IndexJson | MemberKind::ManifestJson | MemberKind::OciLayout
            ) && size > MAX_JSON
            {
                return Err(bad(format!("{size} bytes is too large for a JSON member")).into());
            }
            let m = Member { name, kind, size };
            f(&m, &mut e)?;
            // Whatever the callback left unread is skipped by the tar reader.
        }
        if seen == 0 {
            return Err(ReadError::Member {
                name: String::new(),
                why: "archive is empty or not a tar".into(),
            }
            .into());
        }
        Ok(())
    }
}

fn resolve(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// Read a whole small member, bounded by [`MAX_JSON`].
pub fn read_small(r: &mut dyn Read, name: &str) -> Result<Vec<u8>, ReadError> {
    let mut v = Vec::new();
    r.take(MAX_JSON + 1).read_to_end(&mut v)?;
    if v.len() as u64 > MAX_JSON {
        return Err(ReadError::Member {
            name: name.to_string(),
            why: "too large".into(),
        });
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_and_refuses_member_names() {
        assert_eq!(clean("./blobs/sha256/x").unwrap(), "blobs/sha256/x");
        assert!(clean("../x").is_err());
        assert!(clean("a/../../x").is_err());
        assert!(clean("/etc/passwd").is_err());
        assert_eq!(resolve("a/../b/layer.tar").unwrap(), "b/layer.tar");
        assert!(resolve("../../x").is_none());
    }
}
