//! `stowage push` against the real registry: the original digests, whatever
//! forms the store keeps, checked by the registry on upload and by skopeo
//! reading the result back.

mod common;
use common::{manifest_digest, pull_as_recipes, registry, scratch, sh, stowage};

#[test]
fn push_from_recipes_keeps_every_digest_and_skopeo_reads_it() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let src = format!("{reg}/corpus/debian-min:latest");
    let doc = pull_as_recipes(&root, &src);
    let repo = common::fresh_repo("test/push-recipe");
    let dest = format!("{reg}/{repo}:v1");
    let out = stowage(
        &root,
        &["push", "--plain-http", "--format", "json", &src, &dest],
    )
    .ok()
    .json();
    assert_eq!(out["rebuilt"], 2, "{out}");
    assert_eq!(out["refetched"], 0, "{out}");
    let want = manifest_digest(&reg, "corpus/debian-min", "latest").unwrap();
    assert_eq!(
        manifest_digest(&reg, &repo, "v1").as_deref(),
        Some(want.as_str())
    );
    // skopeo copies it (verifying every blob digest) into an OCI layout.
    let layout = work.path().join("layout");
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{dest}"),
            &format!("oci:{}:t", layout.display()),
        ],
    );
    for l in doc["layers"].as_array().unwrap() {
        let d = l["digest"].as_str().unwrap();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(&d[7..])).unwrap();
        assert_eq!(common::push::sha(&bytes), d);
    }
    // Again: nothing to upload, the registry has it all.
    let again = stowage(
        &root,
        &["push", "--plain-http", "--format", "json", &src, &dest],
    )
    .ok()
    .json();
    assert_eq!(again["blobs_uploaded"], 0, "{again}");
    assert_eq!(again["blobs_present"], 3, "{again}");
}

#[test]
fn push_of_a_discarded_image_refetches_or_fails_before_uploading() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let src = format!("{reg}/corpus/many-small:latest");
    stowage(
        &root,
        &["pull", "--plain-http", "-q", "--policy", "discard", &src],
    )
    .ok();
    let repo = common::fresh_repo("test/push-discard");
    let dest = format!("{reg}/{repo}:v1");
    let r = stowage(&root, &["push", "--plain-http", "--no-fetch", &src, &dest]).fails();
    assert!(r.stderr().contains("discard"), "{}", r.stderr());
    assert_eq!(manifest_digest(&reg, &repo, "v1"), None);
    let out = stowage(
        &root,
        &["push", "--plain-http", "--format", "json", &src, &dest],
    )
    .ok()
    .json();
    assert!(out["refetched"].as_u64().unwrap() >= 1, "{out}");
    assert_eq!(
        manifest_digest(&reg, &repo, "v1"),
        manifest_digest(&reg, "corpus/many-small", "latest")
    );
}
