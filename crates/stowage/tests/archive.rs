//! Export and import end to end: archives that skopeo, umoci and
//! containerd's `ctr` accept, exact digests, dropped blobs re-fetched or
//! recompressed, and hostile archives refused.

mod common;
use common::containerd::Containerd;
use common::push::{push_image, sha, tarb::Tar};
use common::{registry, scratch, sh, stowage};
use std::path::Path;

fn registry_digest(reg: &str, image: &str) -> String {
    let (repo, tag) = image.rsplit_once(':').unwrap();
    let r = reqwest::blocking::Client::new()
        .head(format!("http://{reg}/v2/{repo}/manifests/{tag}"))
        .header("accept", stowage_oci_accept())
        .send()
        .unwrap();
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

fn stowage_oci_accept() -> &'static str {
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"
}

fn skopeo(args: &[&str]) -> String {
    String::from_utf8(sh("skopeo", args).stdout).unwrap()
}

fn config_of(reg: &str, image: &str) -> serde_json::Value {
    serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--config",
        &format!("docker://{reg}/{image}"),
    ]))
    .unwrap()
}

fn check_archive(reg: &str, image: &str, file: &Path, work: &Path, gzip: bool) {
    let f = file.to_str().unwrap();
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{f}")]);
    assert_eq!(
        sha(raw.as_bytes()),
        registry_digest(reg, image),
        "{image}: oci-archive manifest digest"
    );
    let cfg: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("docker-archive:{f}"),
    ]))
    .unwrap();
    assert_eq!(cfg, config_of(reg, image), "{image}: docker-archive config");
    if gzip {
        let layout = work.join(format!("layout-{}", image.replace(['/', ':'], "-")));
        skopeo(&[
            "copy",
            "-q",
            &format!("oci-archive:{f}"),
            &format!("oci:{}:t", layout.display()),
        ]);
        let bundle = work.join(format!("bundle-{}", image.replace(['/', ':'], "-")));
        sh(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:t", layout.display()),
                bundle.to_str().unwrap(),
            ],
        );
        assert!(bundle.join("rootfs/etc/os-release").exists());
    }
}

#[test]
fn exports_are_read_by_skopeo_umoci_and_ctr_with_registry_digests() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    for (image, gzip) in [
        ("corpus/debian-min:latest", true),
        ("corpus/debian-min:v2s2", true),
        ("corpus/debian-min:zstd", false),
        ("corpus/multi:latest", true),
    ] {
        let full = format!("{reg}/{image}");
        stowage(&root, &["pull", "--plain-http", "-q", &full]).ok();
        let file = work
            .path()
            .join(format!("{}.tar", image.replace(['/', ':'], "-")));
        stowage(&root, &["export", "-o", file.to_str().unwrap(), &full]).ok();
        check_archive(&reg, image, &file, work.path(), gzip);
    }
    // containerd imports it and lists the same digest.
    let ctd = Containerd::start(&work.path().join("containerd"));
    let file = work.path().join("corpus-debian-min-latest.tar");
    ctd.ctr(&[
        "images",
        "import",
        "--all-platforms",
        file.to_str().unwrap(),
    ]);
    let ls = String::from_utf8(ctd.ctr(&["images", "ls"]).stdout).unwrap();
    assert!(
        ls.contains(&registry_digest(&reg, "corpus/debian-min:latest")),
        "{ls}"
    );
    // Several images in one archive share blobs; -o - streams to stdout.
    let both = stowage(
        &root,
        &[
            "export",
            "-o",
            "-",
            &format!("{reg}/corpus/debian-min:latest"),
            &format!("{reg}/corpus/debian-min:v2s2"),
        ],
    )
    .ok();
    let names: Vec<String> = tar::Archive::new(&both.out.stdout[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    let mut dedup = names.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(names.len(), dedup.len(), "a blob was written twice");
}

#[test]
fn imports_what_ctr_and_skopeo_write_and_exports_identical_blobs() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let w = work.path();
    let src = format!("docker://{reg}/corpus/debian-min:latest");
    let oci = w.join("skopeo-oci.tar");
    let dock = w.join("skopeo-docker.tar");
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &src,
            &format!(
                "oci-archive:{}:{reg}/corpus/debian-min:latest",
                oci.display()
            ),
        ],
    );
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &src,
            &format!("docker-archive:{}:example.com/dm:docker", dock.display()),
        ],
    );
    let ctd = Containerd::start(&w.join("containerd"));
    ctd.ctr(&[
        "images",
        "pull",
        "--plain-http",
        &format!("{reg}/corpus/debian-min:latest"),
    ]);
    let ctr_tar = w.join("ctr.tar");
    ctd.ctr(&[
        "images",
        "export",
        ctr_tar.to_str().unwrap(),
        &format!("{reg}/corpus/debian-min:latest"),
    ]);

    let digest = registry_digest(&reg, "corpus/debian-min:latest");
    for (i, file) in [&oci, &ctr_tar].iter().enumerate() {
        let root = w.join(format!("store{i}"));
        let out = stowage(&root, &["import", file.to_str().unwrap()])
            .ok()
            .stdout();
        assert!(out.contains(&digest), "import of {file:?}: {out}");
        // Re-importing is idempotent.
        stowage(&root, &["import", file.to_str().unwrap()]).ok();
        assert_eq!(
            stowage(&root, &["images", "-q"])
                .ok()
                .stdout()
                .lines()
                .count(),
            1
        );
        let re = w.join(format!("re{i}.tar"));
        stowage(
            &root,
            &[
                "export",
                "-o",
                re.to_str().unwrap(),
                &format!("{reg}/corpus/debian-min:latest"),
            ],
        )
        .ok();
        assert_eq!(
            sha(skopeo(&["inspect", "--raw", &format!("oci-archive:{}", re.display())]).as_bytes()),
            digest
        );
        let rootfs = w.join(format!("rootfs{i}"));
        stowage(
            &root,
            &[
                "unpack",
                &format!("{reg}/corpus/debian-min:latest"),
                rootfs.to_str().unwrap(),
            ],
        )
        .ok();
        assert!(rootfs.join("usr/bin/python3").exists());
    }
    // docker-archive: uncompressed layers kept as they are, same config.
    let root = w.join("store-docker");
    stowage(&root, &["import", dock.to_str().unwrap()]).ok();
    let doc = stowage(
        &root,
        &["inspect", "--format", "json", "example.com/dm:docker"],
    )
    .ok()
    .json();
    assert_eq!(doc["config"], config_of(&reg, "corpus/debian-min:latest"));
    for l in doc["layers"].as_array().unwrap() {
        assert_eq!(
            l["digest"], l["diffID"],
            "uncompressed layer digest is its diffID"
        );
    }
    let again = stowage(
        &root,
        &["import", "--format", "json", dock.to_str().unwrap()],
    )
    .ok()
    .json();
    assert_eq!(
        again["images"][0]["digest"], doc["digest"],
        "synthesized manifest must be deterministic"
    );
}

#[test]
fn discarded_blobs_are_refetched_refused_offline_or_recompressed() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let w = work.path();
    let root = w.join("store");
    let full = format!("{reg}/corpus/debian-min:latest");
    let digest = registry_digest(&reg, "corpus/debian-min:latest");
    stowage(
        &root,
        &["pull", "--plain-http", "-q", "--policy", "discard", &full],
    )
    .ok();

    let check = stowage(&root, &["check", "--format", "json", &full])
        .ok()
        .json();
    assert!(
        check[0]["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["status"] == "fetchable"),
        "{check}"
    );

    let fetched = w.join("fetched.tar");
    stowage(&root, &["export", "-o", fetched.to_str().unwrap(), &full]).ok();
    assert_eq!(
        sha(skopeo(&[
            "inspect",
            "--raw",
            &format!("oci-archive:{}", fetched.display())
        ])
        .as_bytes()),
        digest
    );

    let offline = w.join("offline.tar");
    let r = stowage(
        &root,
        &[
            "export",
            "--no-fetch",
            "-o",
            offline.to_str().unwrap(),
            &full,
        ],
    )
    .fails();
    let err = r.stderr();
    assert!(
        err.contains("discard")
            && err.contains("--recompress")
            && err.contains("corpus/debian-min"),
        "{err}"
    );
    assert!(!offline.exists(), "a failed export must not leave a file");
    assert_eq!(
        std::fs::read_dir(w)
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".offline"))
            .count(),
        0
    );
    let r = stowage(&root, &["check", "--no-fetch", &full]).fails();
    assert!(
        r.stdout().contains("rebuildable only under a new digest"),
        "{}",
        r.stdout()
    );

    let re = stowage(
        &root,
        &[
            "export",
            "--no-fetch",
            "--recompress",
            "--format",
            "json",
            "-o",
            offline.to_str().unwrap(),
            &full,
        ],
    )
    .ok();
    assert!(re.stderr().contains("NEW digest"), "{}", re.stderr());
    let report = re.json();
    let new_digest = report["images"][0]["digest"].as_str().unwrap().to_string();
    assert_ne!(new_digest, digest);
    assert_eq!(report["images"][0]["original_digest"], digest);
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}", offline.display()),
    ]);
    assert_eq!(sha(raw.as_bytes()), new_digest);
    let cfg: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--config",
        &format!("oci-archive:{}", offline.display()),
    ]))
    .unwrap();
    assert_eq!(
        cfg["rootfs"],
        config_of(&reg, "corpus/debian-min:latest")["rootfs"],
        "diffIDs must not change"
    );
    let ctd = Containerd::start(&w.join("containerd"));
    ctd.ctr(&["images", "import", offline.to_str().unwrap()]);
    let ls = String::from_utf8(ctd.ctr(&["images", "ls"]).stdout).unwrap();
    assert!(ls.contains(&new_digest), "{ls}");
}

/// A hostile archive is refused with a message naming what is wrong, and
/// the store is unchanged.
fn refused(archive: Vec<u8>, expect: &str) {
    let work = scratch();
    let root = work.path().join("store");
    let good = Tar::new().file("etc/x", b"x").finish();
    let _ = good;
    let before = (
        stowage(&root, &["images", "-q"]).ok().stdout(),
        count(&root.join("blobs/sha256")),
    );
    let f = work.path().join("bad.tar");
    std::fs::write(&f, archive).unwrap();
    let r = stowage(&root, &["import", f.to_str().unwrap()]).fails();
    assert!(
        r.stderr().contains(expect),
        "expected {expect:?} in: {}",
        r.stderr()
    );
    assert_eq!(
        (
            stowage(&root, &["images", "-q"]).ok().stdout(),
            count(&root.join("blobs/sha256"))
        ),
        before
    );
    assert_eq!(count(&root.join("ingest")), 0, "ingest files left behind");
}

fn count(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

/// An OCI layout with one single-layer image, as raw members.
fn layout(mutate: impl Fn(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let layer = common::push::gzip(&Tar::new().file("hello", b"world").finish());
    let diff = sha(&Tar::new().file("hello", b"world").finish());
    let config = serde_json::to_vec(&serde_json::json!({"architecture": common::push::host_arch(), "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff]}})).unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha(&layer), "size": layer.len()}]})).unwrap();
    let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&manifest), "size": manifest.len(), "annotations": {"io.containerd.image.name": "example.com/hostile:v1"}}]})).unwrap();
    let blob = |b: &[u8]| (format!("blobs/sha256/{}", &sha(b)[7..]), b.to_vec());
    let mut members = vec![
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        blob(&layer),
        blob(&config),
        blob(&manifest),
        ("index.json".into(), index),
    ];
    mutate(&mut members);
    let mut t = Tar::new();
    for (name, data) in members {
        t = t.file(&name, &data);
    }
    t.finish()
}

#[test]
fn hostile_archives_are_refused_and_change_nothing() {
    // The well-formed one imports (so the cases below fail for their reason).
    let work = scratch();
    let f = work.path().join("ok.tar");
    std::fs::write(&f, layout(|_| {})).unwrap();
    stowage(&work.path().join("s"), &["import", f.to_str().unwrap()]).ok();

    refused(
        layout(|m| m.push(("../escape".into(), b"x".to_vec()))),
        "climbs out",
    );
    refused(
        layout(|m| m.push(("/etc/evil".into(), b"x".to_vec()))),
        "absolute",
    );
    refused(layout(|m| m[1].1[20] ^= 0xff), "does not match its name");
    refused(
        layout(|m| {
            m.remove(1);
        }),
        "does not contain",
    );
    refused(
        layout(|m| {
            let mut v: serde_json::Value = serde_json::from_slice(&m[3].1).unwrap();
            v["layers"][0]["size"] = serde_json::json!(5);
            let bytes = serde_json::to_vec(&v).unwrap();
            let d = sha(&bytes);
            m[3] = (format!("blobs/sha256/{}", &d[7..]), bytes.clone());
            let mut idx: serde_json::Value = serde_json::from_slice(&m[4].1).unwrap();
            idx["manifests"][0]["digest"] = serde_json::json!(d);
            idx["manifests"][0]["size"] = serde_json::json!(bytes.len());
            m[4].1 = serde_json::to_vec(&idx).unwrap();
        }),
        "bytes",
    );
    let full = layout(|_| {});
    refused(full[..full.len() / 2].to_vec(), "archive");
    let linked = {
        let mut t = Tar::new().symlink("index.json", "/etc/passwd");
        t = t.file("oci-layout", b"{}");
        t.finish()
    };
    refused(linked, "link");
    let _ = push_image;
}
