//! A comparable listing of a directory tree: type, mode, owner, size,
//! content hash, link target and device number of every entry.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha256: Option<String>,
    pub link: Option<String>,
    pub rdev: u64,
}

pub type Tree = BTreeMap<String, Entry>;

pub fn list(root: &Path) -> Tree {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Tree) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let md = fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let sha256 = ft.is_file().then(|| hash_file(&p));
        let link = ft
            .is_symlink()
            .then(|| fs::read_link(&p).unwrap().to_string_lossy().into_owned());
        out.insert(
            rel,
            Entry {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if ft.is_file() { md.len() } else { 0 },
                sha256,
                link,
                rdev: if ft.is_char_device() || ft.is_block_device() {
                    md.rdev()
                } else {
                    0
                },
            },
        );
        if ft.is_dir() {
            walk(root, &p, out);
        }
    }
}

pub fn hash_file(p: &Path) -> String {
    let mut f = fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Assert two trees are equal, printing the first differences.
pub fn assert_same(ours: &Tree, theirs: &Tree, what: &str) {
    let mut diffs = Vec::new();
    for (k, v) in theirs {
        match ours.get(k) {
            None => diffs.push(format!("missing in stowage: {k} ({})", v.kind)),
            Some(o) if o != v => diffs.push(format!(
                "differs: {k}\n  stowage: {o:?}\n  reference: {v:?}"
            )),
            _ => {}
        }
    }
    for k in ours.keys() {
        if !theirs.contains_key(k) {
            diffs.push(format!("only in stowage: {k}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences ({} vs {} entries), first ones:\n{}",
        diffs.len(),
        ours.len(),
        theirs.len(),
        diffs
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
