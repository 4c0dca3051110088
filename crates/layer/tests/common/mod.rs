//! Helpers shared by the integration tests: building tars by hand (hostile
//! ones included) and applying them next to sentinels that must stay untouched.

#![allow(dead_code)]

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use stowage_layer::{apply_layer, ApplyError, ApplyOptions, ApplyReport};
use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;
pub const SECRET: &[u8] = b"outside content, must not change\n";

/// Builds a tar in memory. Every header is written as-is with `append`, so
/// names the safe `tar::Builder` API would refuse (`..`, absolute) go in too.
pub struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    pub fn new() -> Self {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// A GNU header with `name` written raw into the 100-byte name field.
    pub fn header(name: &[u8], et: EntryType, size: u64, mode: u32) -> Header {
        assert!(name.len() <= 100, "use long_name/pax for longer names");
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(et);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h
    }

    pub fn raw(&mut self, mut h: Header, data: &[u8]) -> &mut Self {
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_with(name, data, 0o644, 0, 0, MTIME)
    }

    pub fn file_with(
        &mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    ) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), EntryType::Regular, data.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.raw(h, data)
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.dir_with(name, 0o755, 0, 0, MTIME)
    }

    pub fn dir_with(&mut self, name: &str, mode: u32, uid: u64, gid: u64, mtime: u64) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), EntryType::Directory, 0, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(mtime);
        self.raw(h, b"")
    }

    fn link(&mut self, name: &str, target: &[u8], et: EntryType) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), et, 0, 0o777);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        self.raw(h, b"")
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(name, target.as_bytes(), EntryType::Symlink)
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.link(name, target.as_bytes(), EntryType::Link)
    }

    pub fn node(
        &mut self,
        name: &str,
        et: EntryType,
        major: u32,
        minor: u32,
        mode: u32,
    ) -> &mut Self {
        let mut h = Self::header(name.as_bytes(), et, 0, mode);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw(h, b"")
    }

    /// A GNU long-name (`L`) record for the next entry.
    pub fn long_name(&mut self, name: &[u8]) -> &mut Self {
        let mut data = name.to_vec();
        data.push(0);
        let h = Self::header(
            b"././@LongLink",
            EntryType::GNULongName,
            data.len() as u64,
            0o644,
        );
        self.raw(h, &data)
    }

    /// A PAX (`x`) record set for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.b
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    pub fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// A root to apply into, beside sentinels that must stay as they are.
pub struct Sandbox {
    pub parent: tempfile::TempDir,
    pub root: PathBuf,
    /// An empty directory next to the root.
    pub outside: PathBuf,
    /// A file next to the root, holding [`SECRET`].
    pub secret: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("root");
        let outside = parent.path().join("outside");
        let secret = parent.path().join("secret.txt");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(&secret, SECRET).unwrap();
        Sandbox {
            parent,
            root,
            outside,
            secret,
        }
    }

    /// Another directory beside the root (for lower snapshots).
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.parent.path().join(name);
        fs::create_dir(&p).unwrap();
        p
    }

    pub fn apply(&self, tar: &[u8]) -> Result<ApplyReport, ApplyError> {
        apply_layer(tar, &self.root, &opts())
    }

    pub fn apply_into(&self, root: &Path, tar: &[u8]) -> ApplyReport {
        apply_layer(tar, root, &opts()).unwrap()
    }

    /// Nothing was written outside the root.
    pub fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(self.parent.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let expected: Vec<String> = ["outside", "root", "secret.txt"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| expected.contains(n) || n.starts_with("lower")),
            "stray files: {names:?}"
        );
        assert_eq!(
            fs::read_dir(&self.outside).unwrap().count(),
            0,
            "something was written into the sentinel dir"
        );
        let md = fs::symlink_metadata(&self.secret).unwrap();
        assert!(md.is_file());
        assert_eq!(md.nlink(), 1, "the secret was hard-linked");
        assert_eq!(fs::read(&self.secret).unwrap(), SECRET);
    }
}

pub fn opts() -> ApplyOptions {
    ApplyOptions::default()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A reader that counts what it hands out.
pub struct Counting<R> {
    pub inner: R,
    pub n: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

pub fn err_string(r: Result<ApplyReport, ApplyError>) -> String {
    match r {
        Ok(rep) => panic!("expected an error, got {rep:?}"),
        Err(e) => e.to_string(),
    }
}
