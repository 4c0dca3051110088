//! `ImageFsInfo`: the bytes and inodes the store's unpacked layers
//! (`snapshots/`) and blobs (`blobs/`) take, one `FilesystemUsage` per
//! filesystem they live on.

use crate::proto;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Usage of one directory tree, counted as `du` does: allocated blocks
/// (`st_blocks * 512`), every inode once (hard links are not counted twice),
/// the top directory included; nothing outside its filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

pub fn usage(top: &Path) -> Usage {
    let mut u = Usage::default();
    let Ok(md) = std::fs::symlink_metadata(top) else {
        return u;
    };
    let dev = md.dev();
    let mut seen: HashSet<u64> = HashSet::new();
    let mut stack: Vec<(PathBuf, std::fs::Metadata)> = vec![(top.to_path_buf(), md)];
    while let Some((path, md)) = stack.pop() {
        if md.dev() != dev || !seen.insert(md.ino()) {
            continue;
        }
        u.bytes += md.blocks() * 512;
        u.inodes += 1;
        if md.is_dir() {
            // Entries can vanish while we walk (a pull or gc at work): skip them.
            let Ok(rd) = std::fs::read_dir(&path) else {
                continue;
            };
            for ent in rd.flatten() {
                if let Ok(m) = ent.metadata() {
                    stack.push((ent.path(), m));
                }
            }
        }
    }
    u
}

/// The `image_filesystems` answer for store `root`: `snapshots/` and
/// `blobs/` summed per filesystem (device). When both share one, the entry's
/// mountpoint is the store root; otherwise each names its own directory.
pub fn image_filesystems(root: &Path) -> Vec<proto::FilesystemUsage> {
    let root = &std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(1)
        .max(1);
    let mut groups: Vec<(u64, PathBuf, Usage)> = Vec::new();
    for dir in ["snapshots", "blobs"] {
        let path = root.join(dir);
        let dev = std::fs::metadata(&path)
            .or_else(|_| std::fs::metadata(root))
            .map(|m| m.dev())
            .unwrap_or(0);
        let u = usage(&path);
        match groups.iter_mut().find(|g| g.0 == dev) {
            Some(g) => {
                g.1 = root.to_path_buf();
                g.2.bytes += u.bytes;
                g.2.inodes += u.inodes;
            }
            None => groups.push((dev, path, u)),
        }
    }
    groups
        .into_iter()
        .map(|(_, mountpoint, u)| proto::FilesystemUsage {
            timestamp,
            fs_id: Some(proto::FilesystemIdentifier {
                mountpoint: mountpoint.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(proto::UInt64Value { value: u.bytes }),
            inodes_used: Some(proto::UInt64Value { value: u.inodes }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_blocks_and_inodes_once() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        std::fs::create_dir_all(d.path().join("snapshots/a/fs")).unwrap();
        std::fs::write(d.path().join("blobs/sha256/x"), vec![7u8; 10000]).unwrap();
        std::fs::write(d.path().join("snapshots/a/fs/f"), vec![1u8; 5000]).unwrap();
        std::fs::hard_link(
            d.path().join("snapshots/a/fs/f"),
            d.path().join("snapshots/a/fs/g"),
        )
        .unwrap();
        let s = usage(&d.path().join("snapshots"));
        assert_eq!(s.inodes, 4, "snapshots, a, fs, f (g is the same inode)");
        assert!(s.bytes >= 5000);
        let fs = image_filesystems(d.path());
        assert_eq!(fs.len(), 1);
        let want = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(
            fs[0].fs_id.as_ref().unwrap().mountpoint,
            want.to_string_lossy()
        );
        assert_eq!(fs[0].inodes_used.as_ref().unwrap().value, 4 + 3);
        assert!(fs[0].used_bytes.as_ref().unwrap().value >= 15000);
        assert!(fs[0].timestamp > 0);
    }
}
