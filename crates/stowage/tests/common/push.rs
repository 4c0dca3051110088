//! Push hand-made images to the real registry through its HTTP API, so
//! tests can pull exactly the bytes they mean (hostile tars, lying configs).

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use std::io::Write;

pub fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn push_blob(registry: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha(bytes);
    let c = http();
    let r = c
        .post(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "start upload: {:?}", r.text());
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let loc = if loc.starts_with("http") {
        loc
    } else {
        format!("http://{registry}{loc}")
    };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let r = c
        .put(format!("{loc}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "finish upload: {:?}", r.text());
    digest
}

pub fn push_manifest(
    registry: &str,
    repo: &str,
    tag: &str,
    bytes: &[u8],
    media_type: &str,
) -> String {
    let r = http()
        .put(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
        .header("content-type", media_type)
        .body(bytes.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "push manifest: {:?}", r.text());
    sha(bytes)
}

pub struct Pushed {
    pub manifest: String,
    pub layers: Vec<String>,
    pub diff_ids: Vec<String>,
    pub config: String,
}

pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

/// Push a one-layer image whose layer is `gz`, the compressed form of `tar`.
pub fn push_compressed(registry: &str, repo: &str, tag: &str, tar: &[u8], gz: &[u8]) -> Pushed {
    let d = push_blob(registry, repo, gz);
    let diff = sha(tar);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff]},
    }))
    .unwrap();
    let cd = push_blob(registry, repo, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": gz.len()}],
    }))
    .unwrap();
    let md = push_manifest(
        registry,
        repo,
        tag,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    );
    Pushed {
        manifest: md,
        layers: vec![d],
        diff_ids: vec![diff],
        config: cd,
    }
}

/// Push an image whose layers are the given tars (gzip-compressed here).
/// `diff_ids` overrides what the config claims.
pub fn push_image(
    registry: &str,
    repo: &str,
    tag: &str,
    tars: &[Vec<u8>],
    diff_ids: Option<Vec<String>>,
) -> Pushed {
    let mut layers = Vec::new();
    let mut descs = Vec::new();
    for t in tars {
        let gz = gzip(t);
        let d = push_blob(registry, repo, &gz);
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": gz.len()}));
        layers.push(d);
    }
    let diff_ids = diff_ids.unwrap_or_else(|| tars.iter().map(|t| sha(t)).collect());
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_arch(), "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "created": "2026-01-01T00:00:00Z",
    }))
    .unwrap();
    let cd = push_blob(registry, repo, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = push_manifest(
        registry,
        repo,
        tag,
        &manifest,
        "application/vnd.oci.image.manifest.v1+json",
    );
    Pushed {
        manifest: md,
        layers,
        diff_ids,
        config: cd,
    }
}

/// Tar building helpers with full control over headers.
pub mod tarb {
    pub struct Tar {
        b: tar::Builder<Vec<u8>>,
    }

    impl Default for Tar {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Tar {
        pub fn new() -> Tar {
            Tar {
                b: tar::Builder::new(Vec::new()),
            }
        }
        fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h
        }
        /// Set the name bytes directly, bypassing the builder's checks.
        fn raw(&mut self, mut h: tar::Header, name: &str, data: &[u8]) {
            {
                let old = h.as_old_mut();
                old.name = [0; 100];
                old.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            h.set_cksum();
            self.b.append(&h, data).unwrap();
        }
        pub fn dir(mut self, name: &str, mode: u32) -> Self {
            let h = Self::header(tar::EntryType::Directory, mode, 0);
            self.raw(h, name, &[]);
            self
        }
        pub fn file(mut self, name: &str, data: &[u8]) -> Self {
            let h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
            self.raw(h, name, data);
            self
        }
        pub fn file_owned(
            mut self,
            name: &str,
            data: &[u8],
            mode: u32,
            uid: u64,
            gid: u64,
        ) -> Self {
            let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
            h.set_uid(uid);
            h.set_gid(gid);
            self.raw(h, name, data);
            self
        }
        pub fn symlink(mut self, name: &str, target: &str) -> Self {
            let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
            h.set_link_name(target).unwrap();
            self.raw(h, name, &[]);
            self
        }
        pub fn hardlink(mut self, name: &str, target: &str) -> Self {
            let mut h = Self::header(tar::EntryType::Link, 0o644, 0);
            {
                let old = h.as_old_mut();
                old.linkname = [0; 100];
                old.linkname[..target.len()].copy_from_slice(target.as_bytes());
            }
            self.raw(h, name, &[]);
            self
        }
        /// A GNU long-name entry (`././@LongLink`) naming `name`.
        pub fn gnu_long_file(mut self, name: &str, data: &[u8]) -> Self {
            let mut ln = Self::header(tar::EntryType::GNULongName, 0o644, name.len() as u64 + 1);
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            self.raw_named(&mut ln, "././@LongLink", &n);
            let h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
            self.raw(h, "placeholder", data);
            self
        }
        /// A PAX `path` record naming `name`.
        pub fn pax_file(mut self, name: &str, data: &[u8]) -> Self {
            let rec = pax_record("path", name);
            let mut ph = Self::header(tar::EntryType::XHeader, 0o644, rec.len() as u64);
            self.raw_named(&mut ph, "PaxHeaders/x", &rec);
            let h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
            self.raw(h, "placeholder", data);
            self
        }
        fn raw_named(&mut self, h: &mut tar::Header, name: &str, data: &[u8]) {
            {
                let old = h.as_old_mut();
                old.name = [0; 100];
                old.name[..name.len()].copy_from_slice(name.as_bytes());
            }
            h.set_cksum();
            self.b.append(h, data).unwrap();
        }
        pub fn finish(self) -> Vec<u8> {
            self.b.into_inner().unwrap()
        }
    }

    fn pax_record(key: &str, value: &str) -> Vec<u8> {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        loop {
            let s = format!("{len}{body}");
            if s.len() == len {
                return s.into_bytes();
            }
            len = s.len();
        }
    }
}
