//! Pull every corpus image from the real registry and compare stowage's
//! result with umoci's unpack of the same image, and each layer snapshot
//! with the entries of its own tar.

mod common;
use common::{
    check_snapshot_against_tar, layer_paths, open_layer, registry, scratch, stowage, tree,
    umoci_rootfs,
};

/// Pull `image`, unpack it, compare with umoci's unpack of `reference`
/// (the same content; differs from `image` only for zstd, which umoci
/// 0.4.7 cannot read), and check every snapshot against its tar.
fn pull_and_compare(image: &str, reference: &str) {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let full = format!("{reg}/{image}");
    stowage(&root, &["pull", "--plain-http", "-q", &full]).ok();
    let ours = work.path().join("rootfs");
    stowage(&root, &["unpack", &full, ours.to_str().unwrap()]).ok();
    let theirs = umoci_rootfs(&reg, reference, work.path());
    tree::assert_same(&tree::list(&ours), &tree::list(&theirs), image);
    for (blob, snapshot, mt) in layer_paths(&root, &full) {
        check_snapshot_against_tar(&snapshot, open_layer(&blob, &mt));
    }
}

#[test]
fn debian_min_oci_matches_umoci() {
    pull_and_compare("corpus/debian-min:latest", "corpus/debian-min:latest");
}

#[test]
fn debian_min_docker_v2s2_matches_umoci() {
    pull_and_compare("corpus/debian-min:v2s2", "corpus/debian-min:v2s2");
}

#[test]
fn debian_min_zstd_matches_gzip_unpacked_by_umoci() {
    pull_and_compare("corpus/debian-min:zstd", "corpus/debian-min:latest");
}

#[test]
fn many_small_matches_umoci() {
    pull_and_compare("corpus/many-small:latest", "corpus/many-small:latest");
}

#[test]
fn big_blobs_matches_umoci() {
    pull_and_compare("corpus/big-blobs:latest", "corpus/big-blobs:latest");
}

#[test]
fn multi_picks_the_host_platform_and_can_keep_all() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let full = format!("{reg}/corpus/multi:latest");
    stowage(&root, &["pull", "--plain-http", "-q", &full]).ok();
    let doc = stowage(&root, &["inspect", "--format", "json", &full])
        .ok()
        .json();
    assert_eq!(doc["config"]["architecture"], common::push::host_arch());
    assert_eq!(doc["mediaType"], "application/vnd.oci.image.index.v1+json");
    let ours = work.path().join("rootfs");
    stowage(&root, &["unpack", &full, ours.to_str().unwrap()]).ok();
    assert!(
        ours.join("usr/bin/python3").exists(),
        "host platform should be debian-min"
    );
    // The other platform was not pulled, so it cannot be resolved...
    let other = if common::push::host_arch() == "amd64" {
        "linux/arm64"
    } else {
        "linux/amd64"
    };
    let r = stowage(&root, &["inspect", "--platform", other, &full]).fails();
    assert!(
        r.stderr().contains("no manifest for platform"),
        "{}",
        r.stderr()
    );
    // ...until it is asked for.
    stowage(
        &root,
        &["pull", "--plain-http", "-q", "--platform", other, &full],
    )
    .ok();
    let stub = work.path().join("stub");
    stowage(
        &root,
        &["unpack", "--platform", other, &full, stub.to_str().unwrap()],
    )
    .ok();
    let text = std::fs::read_to_string(stub.join("etc/stub-arch")).unwrap();
    assert!(text.contains(other.trim_start_matches("linux/")), "{text}");
    // --all-platforms brings both in one pull.
    let root2 = work.path().join("store2");
    let r = stowage(
        &root2,
        &[
            "pull",
            "--plain-http",
            "--all-platforms",
            "--format",
            "json",
            &full,
        ],
    )
    .ok()
    .json();
    assert_eq!(r["manifests"].as_array().unwrap().len(), 2, "{r}");
}
