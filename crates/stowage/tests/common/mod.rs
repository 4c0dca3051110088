//! Shared test harness: the real registry that `scripts/test` starts, the
//! stowage binary, a scratch filesystem, and tree comparison.
#![allow(dead_code)]

pub mod containerd;
pub mod proxy;
pub mod push;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The registry under test (`STOWAGE_TEST_REGISTRY=127.0.0.1:PORT`). When it
/// is not set the test is skipped, unless `STOWAGE_TEST_REQUIRED=1` (as
/// `scripts/test` sets), where a missing registry fails the test.
pub fn registry() -> Option<String> {
    match std::env::var("STOWAGE_TEST_REGISTRY") {
        Ok(r) if !r.is_empty() => Some(r),
        _ => {
            if std::env::var("STOWAGE_TEST_REQUIRED").as_deref() == Ok("1") {
                panic!("STOWAGE_TEST_REGISTRY is not set but STOWAGE_TEST_REQUIRED=1");
            }
            eprintln!(
                "skipped: set STOWAGE_TEST_REGISTRY (scripts/test does) to run end-to-end tests"
            );
            None
        }
    }
}

/// A scratch directory on the scratch filesystem when there is one.
pub fn scratch() -> tempfile::TempDir {
    let base = std::env::var_os("STOWAGE_TEST_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("stowage-test-")
        .tempdir_in(base)
        .expect("scratch dir")
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stowage")
}

pub struct Run {
    pub out: Output,
}

impl Run {
    pub fn ok(self) -> Run {
        assert!(
            self.out.status.success(),
            "stowage failed ({}):\nstdout: {}\nstderr: {}",
            self.out.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn fails(self) -> Run {
        assert!(
            !self.out.status.success(),
            "stowage succeeded but should have failed:\nstdout: {}\nstderr: {}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout()))
    }
}

/// Run `stowage --root ROOT ARGS...`.
pub fn stowage(root: &Path, args: &[&str]) -> Run {
    let out = Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("STOWAGE_ROOT")
        .output()
        .expect("run stowage");
    Run { out }
}

/// Run an external command, panicking with its output on failure.
pub fn sh(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Copy `REG/repo:tag` with skopeo into an OCI layout and unpack it with
/// umoci: the reference root filesystem to compare against.
pub fn umoci_rootfs(registry: &str, image: &str, work: &Path) -> PathBuf {
    let layout = work.join("layout");
    let tag = "t";
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{registry}/{image}"),
            &format!("oci:{}:{tag}", layout.display()),
        ],
    );
    let bundle = work.join("bundle");
    sh(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:{tag}", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    bundle.join("rootfs")
}

/// Compare a layer snapshot with the entries of its own tar: every entry is
/// there with its type, mode, owner, size, content, link target and mtime;
/// whiteouts are 0/0 char devices, opaque markers are xattrs; nothing else
/// is in the snapshot but the entries and their parent directories.
pub fn check_snapshot_against_tar(snapshot: &Path, tar_stream: impl std::io::Read) {
    use std::collections::{BTreeMap, BTreeSet};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    struct Want {
        header: tar::Header,
        link: Option<String>,
        sha: Option<String>,
    }
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut wants: BTreeMap<String, Want> = BTreeMap::new();
    let mut opaque = Vec::new();
    let mut whiteouts = Vec::new();
    let mut ar = tar::Archive::new(tar_stream);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if path.is_empty() || path == "." {
            continue;
        }
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (d.to_string(), b.to_string()),
            None => (String::new(), path.clone()),
        };
        let mut parent = dir.clone();
        while !parent.is_empty() {
            expected.insert(parent.clone());
            parent = parent
                .rsplit_once('/')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
        }
        if base == ".wh..wh..opq" {
            opaque.push(dir);
            continue;
        }
        if let Some(name) = base.strip_prefix(".wh.") {
            let rel = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            expected.insert(rel.clone());
            whiteouts.push(rel);
            continue;
        }
        expected.insert(path.clone());
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().trim_start_matches("./").to_string());
        let sha = if e.header().entry_type().is_file() {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&data)))
        } else {
            None
        };
        wants.insert(
            path,
            Want {
                header: e.header().clone(),
                link,
                sha,
            },
        );
    }
    for dir in &opaque {
        let v = xattr_get(&snapshot.join(dir), "trusted.overlay.opaque");
        assert_eq!(
            v.as_deref(),
            Some(&b"y"[..]),
            "opaque marker for {dir:?} missing"
        );
    }
    for rel in &whiteouts {
        let md = std::fs::symlink_metadata(snapshot.join(rel))
            .unwrap_or_else(|e| panic!("whiteout {rel}: {e}"));
        assert!(
            md.file_type().is_char_device() && md.rdev() == 0,
            "whiteout {rel} is not a 0/0 char device"
        );
    }
    assert!(
        !wants.is_empty() || !whiteouts.is_empty(),
        "tar had no entries"
    );
    for (path, w) in &wants {
        let p = snapshot.join(path);
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("entry {path}: {err}"));
        let h = &w.header;
        let kind = h.entry_type();
        match kind {
            tar::EntryType::Directory => assert!(md.is_dir(), "{path} should be a dir"),
            tar::EntryType::Symlink => {
                assert!(md.file_type().is_symlink(), "{path} should be a symlink");
                assert_eq!(
                    std::fs::read_link(&p).unwrap().to_string_lossy(),
                    *w.link.as_ref().unwrap(),
                    "{path} link target"
                );
            }
            tar::EntryType::Link => {
                let target = w.link.as_ref().unwrap();
                if let Ok(tmd) = std::fs::symlink_metadata(snapshot.join(target)) {
                    assert_eq!(
                        md.ino(),
                        tmd.ino(),
                        "{path} should be a hard link to {target}"
                    );
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                assert!(md.is_file(), "{path} should be a file");
                assert_eq!(md.len(), h.size().unwrap(), "{path} size");
                assert_eq!(Some(tree::hash_file(&p)), w.sha, "{path} content");
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                assert!(
                    md.file_type().is_char_device() || md.file_type().is_block_device(),
                    "{path} device"
                );
                assert_eq!(
                    md.rdev(),
                    libc::makedev(
                        h.device_major().unwrap().unwrap_or(0),
                        h.device_minor().unwrap().unwrap_or(0)
                    ),
                    "{path} device number"
                );
            }
            tar::EntryType::Fifo => assert!(md.file_type().is_fifo(), "{path} fifo"),
            _ => {}
        }
        if kind != tar::EntryType::Link {
            assert_eq!(md.uid() as u64, h.uid().unwrap(), "{path} uid");
            assert_eq!(md.gid() as u64, h.gid().unwrap(), "{path} gid");
            if kind != tar::EntryType::Symlink {
                assert_eq!(
                    md.mode() & 0o7777,
                    h.mode().unwrap() & 0o7777,
                    "{path} mode"
                );
            }
            assert_eq!(md.mtime() as u64, h.mtime().unwrap(), "{path} mtime");
        }
    }
    let on_disk = tree::list(snapshot);
    for k in on_disk.keys() {
        assert!(
            expected.contains(k),
            "snapshot has {k}, which its tar does not"
        );
    }
}

pub fn xattr_get(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    let n = unsafe {
        libc::lgetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_void,
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// Layers of a pulled image, from `stowage inspect --format json`: (blob path, snapshot path, media type).
pub fn layer_paths(root: &Path, image: &str) -> Vec<(PathBuf, PathBuf, String)> {
    let doc = stowage(root, &["inspect", "--format", "json", image])
        .ok()
        .json();
    doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let d = l["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string();
            let c = l["chainID"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string();
            (
                root.join("blobs/sha256").join(d),
                root.join("snapshots").join(c).join("fs"),
                l["mediaType"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The uncompressed tar stream of a stored layer blob.
pub fn open_layer(blob: &Path, media_type: &str) -> Box<dyn std::io::Read> {
    let f = std::fs::File::open(blob).unwrap_or_else(|e| panic!("{blob:?}: {e}"));
    if media_type.ends_with("gzip") {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            f,
        )))
    } else if media_type.ends_with("zstd") {
        Box::new(zstd::stream::read::Decoder::new(f).unwrap())
    } else {
        Box::new(f)
    }
}

/// The manifest digest the registry serves for `repo:tag`; `None` when it has none.
pub fn manifest_digest(reg: &str, repo: &str, tag: &str) -> Option<String> {
    let r = reqwest::blocking::Client::new()
        .head(format!("http://{reg}/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    if r.status() == 404 {
        return None;
    }
    Some(
        r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string(),
    )
}

/// Pull `img` under `--policy recipe --settle now`, check every layer is
/// kept as snapshot + recipe, and return `inspect --format json`.
pub fn pull_as_recipes(root: &Path, img: &str) -> serde_json::Value {
    stowage(
        root,
        &[
            "pull",
            "--plain-http",
            "-q",
            "--policy",
            "recipe",
            "--settle",
            "now",
            img,
        ],
    )
    .ok();
    let doc = stowage(root, &["inspect", "--format", "json", img])
        .ok()
        .json();
    for l in doc["layers"].as_array().unwrap() {
        assert_eq!(l["forms"], serde_json::json!(["snapshot", "recipe"]), "{l}");
    }
    doc
}

/// A repository name no earlier run used (the test registry keeps its data).
pub fn fresh_repo(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
