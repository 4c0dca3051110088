//! The `recipe` policy end to end: blobs dropped only after a proven
//! rebuild, and exported offline bit-for-bit with the registry's digests.

mod common;
use common::push::sha;
use common::{registry, scratch, sh, stowage};

fn registry_manifest_digest(reg: &str, repo: &str, tag: &str) -> String {
    let r = reqwest::blocking::Client::new()
        .head(format!("http://{reg}/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .unwrap();
    r.headers()["docker-content-digest"]
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn recipe_policy_drops_blobs_and_exports_them_exactly_offline() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    for repo in ["corpus/debian-min", "corpus/many-small"] {
        let img = format!("{reg}/{repo}:latest");
        let pulled = stowage(
            &root,
            &[
                "pull",
                "--plain-http",
                "--policy",
                "recipe",
                "--format",
                "json",
                &img,
            ],
        )
        .ok()
        .json();
        for r in pulled["recipes"].as_array().unwrap() {
            assert_eq!(r["dropped"], true, "{r}");
            // Within the default recipe_max_ratio (10%); the numbers go in the notes.
            assert!(
                r["recipe_bytes"].as_u64().unwrap() * 10 < r["blob_bytes"].as_u64().unwrap(),
                "recipe over 10%: {r}"
            );
        }
        let doc = stowage(&root, &["inspect", "--format", "json", &img])
            .ok()
            .json();
        for l in doc["layers"].as_array().unwrap() {
            assert_eq!(l["forms"], serde_json::json!(["snapshot", "recipe"]), "{l}");
            assert!(!root
                .join("blobs/sha256")
                .join(&l["digest"].as_str().unwrap()[7..])
                .exists());
        }
        stowage(&root, &["check", "--no-fetch", &img]).ok();
        let file = work.path().join(format!("{}.tar", repo.replace('/', "-")));
        let out = stowage(
            &root,
            &[
                "export",
                "--no-fetch",
                "--format",
                "json",
                "-o",
                file.to_str().unwrap(),
                &img,
            ],
        )
        .ok()
        .json();
        assert!(
            out["images"][0]["original_digest"].is_null(),
            "digest must not change: {out}"
        );
        let raw = sh(
            "skopeo",
            &[
                "inspect",
                "--raw",
                &format!("oci-archive:{}", file.display()),
            ],
        )
        .stdout;
        assert_eq!(sha(&raw), registry_manifest_digest(&reg, repo, "latest"));
        // Every layer blob in the archive is the registry's, byte for byte.
        let layout = work
            .path()
            .join(format!("layout-{}", repo.replace('/', "-")));
        sh(
            "skopeo",
            &[
                "copy",
                "-q",
                &format!("oci-archive:{}", file.display()),
                &format!("oci:{}:t", layout.display()),
            ],
        );
        for l in doc["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap();
            let bytes = std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
            assert_eq!(sha(&bytes), d);
        }
    }
    let du = stowage(&root, &["du", "--format", "json"]).ok().json();
    assert!(
        du["total"]["saved_vs_keep"].as_u64().unwrap() > 60_000_000,
        "{du}"
    );
    assert!(du["total"]["recipes"].as_u64().unwrap() < 2_000_000, "{du}");
}

#[test]
fn zstd_layers_keep_their_blob_and_say_why() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let img = format!("{reg}/corpus/debian-min:zstd");
    let pulled = stowage(
        &root,
        &[
            "pull",
            "--plain-http",
            "--policy",
            "recipe",
            "--format",
            "json",
            &img,
        ],
    )
    .ok()
    .json();
    for r in pulled["recipes"].as_array().unwrap() {
        assert_eq!(r["dropped"], false);
        assert!(r["detail"].as_str().unwrap().contains("zstd"), "{r}");
    }
    let doc = stowage(&root, &["inspect", "--format", "json", &img])
        .ok()
        .json();
    for l in doc["layers"].as_array().unwrap() {
        assert!(
            l["forms"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!("blob")),
            "{l}"
        );
    }
}

#[test]
fn a_changed_snapshot_is_caught_not_exported() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let img = format!("{reg}/corpus/debian-min:latest");
    stowage(
        &root,
        &["pull", "--plain-http", "-q", "--policy", "recipe", &img],
    )
    .ok();
    let doc = stowage(&root, &["inspect", "--format", "json", &img])
        .ok()
        .json();
    let chain = doc["layers"][1]["chainID"].as_str().unwrap()[7..].to_string();
    let snap = root.join("snapshots").join(chain).join("fs");
    // Same size, other bytes: only the digest check can notice.
    let target = snap.join("usr/bin/python3.11");
    let mut data = std::fs::read(&target).unwrap();
    data[1000] ^= 0xff;
    std::fs::write(&target, &data).unwrap();
    let file = work.path().join("x.tar");
    let r = stowage(
        &root,
        &["export", "--no-fetch", "-o", file.to_str().unwrap(), &img],
    )
    .fails();
    assert!(
        r.stderr()
            .contains(&doc["layers"][1]["digest"].as_str().unwrap()[..20]),
        "{}",
        r.stderr()
    );
    assert!(!file.exists(), "a wrong archive must not be left behind");
}
