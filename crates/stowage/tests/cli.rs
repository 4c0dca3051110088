//! The everyday commands, end to end against the real registry: images,
//! inspect, tag, rm, policies, config files, repeat pulls, unpack and mount.

mod common;
use common::push::{push_image, tarb::Tar};
use common::{
    check_snapshot_against_tar, layer_paths, open_layer, registry, scratch, stowage, tree,
    umoci_rootfs,
};
use std::path::Path;

/// A three-layer image with deletions, a replaced directory, an opaque
/// directory, hard links (one into a lower layer), a device and setuid bits.
fn layered_image(reg: &str, repo: &str) -> common::push::Pushed {
    let l1 = Tar::new()
        .dir("etc", 0o755)
        .file("etc/keep", b"keep")
        .file("etc/gone", b"gone")
        .dir("opt", 0o755)
        .dir("opt/app", 0o755)
        .file("opt/app/old", b"old")
        .dir("var", 0o755)
        .file("var/was-a-file", b"file")
        .file_owned("usr-bin-su", b"#!/bin/sh\n", 0o4755, 0, 0)
        .file_owned("owned", b"owned", 0o640, 1000, 100)
        .symlink("link", "etc/keep")
        .finish();
    let l2 = Tar::new()
        .dir("etc", 0o755)
        .file("etc/.wh.gone", b"")
        .dir("opt/app", 0o700)
        .file("opt/app/.wh..wh..opq", b"")
        .file("opt/app/new", b"new")
        .dir("var", 0o755)
        .dir("var/was-a-file", 0o755)
        .file("var/was-a-file/child", b"child")
        .hardlink("hard-to-lower", "etc/keep")
        .finish();
    let l3 = Tar::new()
        .file("top", b"top")
        .hardlink("top-link", "top")
        .finish();
    push_image(reg, repo, "v1", &[l1, l2, l3], None)
}

#[test]
fn layered_image_snapshots_and_unpack_match_tars_and_umoci() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    layered_image(&reg, "test/layered");
    let img = format!("{reg}/test/layered:v1");
    stowage(&root, &["pull", "--plain-http", "-q", &img]).ok();
    for (blob, snapshot, mt) in layer_paths(&root, &img) {
        check_snapshot_against_tar(&snapshot, open_layer(&blob, &mt));
    }
    let ours = work.path().join("rootfs");
    stowage(&root, &["unpack", &img, ours.to_str().unwrap()]).ok();
    let theirs = umoci_rootfs(&reg, "test/layered:v1", work.path());
    tree::assert_same(&tree::list(&ours), &tree::list(&theirs), "layered");
    assert!(!ours.join("etc/gone").exists());
    assert!(!ours.join("opt/app/old").exists());
    assert_eq!(std::fs::read(ours.join("hard-to-lower")).unwrap(), b"keep");
}

#[test]
fn images_inspect_tag_rm() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let pushed = layered_image(&reg, "test/cli");
    let img = format!("{reg}/test/cli:v1");
    let out = stowage(&root, &["pull", "--plain-http", "-q", &img]).ok();
    assert_eq!(out.stdout().trim(), pushed.manifest);

    let table = stowage(&root, &["images"]).ok().stdout();
    let header = table.lines().next().unwrap();
    for col in ["REPOSITORY", "TAG", "DIGEST", "SIZE", "CREATED"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table.contains(&format!("{reg}/test/cli")) && table.contains("v1"),
        "{table}"
    );

    let list = stowage(&root, &["images", "--format", "json"]).ok().json();
    assert_eq!(list[0]["name"], img);
    assert_eq!(list[0]["digest"], pushed.manifest);

    let doc = stowage(&root, &["inspect", "--format", "json", &img])
        .ok()
        .json();
    let layers = doc["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    for (i, l) in layers.iter().enumerate() {
        assert_eq!(l["digest"], pushed.layers[i]);
        assert_eq!(l["diffID"], pushed.diff_ids[i]);
        assert_eq!(
            l["forms"],
            serde_json::json!(["blob", "snapshot", "tar-split"])
        );
    }
    assert_eq!(doc["configDigest"], pushed.config);
    assert_eq!(doc["origin"]["repository"], "test/cli");
    let human = stowage(&root, &["inspect", &img]).ok().stdout();
    assert!(human.contains("blob+snapshot+tar-split"), "{human}");

    stowage(&root, &["tag", &img, "example.com/renamed:v2"]).ok();
    let names = stowage(&root, &["images", "-q"]).ok().stdout();
    assert!(
        names.contains("example.com/renamed:v2") && names.contains(&img),
        "{names}"
    );
    // Short digest prefixes name images, as image ids do in docker.
    let short = &pushed.manifest["sha256:".len()..][..12];
    stowage(&root, &["inspect", short]).ok(); // two names, one digest: one image
    stowage(&root, &["rm", &img]).ok();
    let names = stowage(&root, &["images", "-q"]).ok().stdout();
    assert_eq!(names.trim(), "example.com/renamed:v2");
    stowage(&root, &["inspect", short]).ok();
    let r = stowage(&root, &["rm", "nope/nothing:here"]).fails();
    assert!(r.stderr().contains("not found"), "{}", r.stderr());
}

#[test]
fn second_pull_fetches_nothing_and_shared_layers_are_stored_once() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let img = format!("{reg}/corpus/debian-min:latest");
    let first = stowage(&root, &["pull", "--plain-http", "--format", "json", &img])
        .ok()
        .json();
    assert_eq!(first["layers_fetched"], 2);
    let again = stowage(&root, &["pull", "--plain-http", "--format", "json", &img])
        .ok()
        .json();
    assert_eq!(again["layers_fetched"], 0);
    assert_eq!(again["layers_present"], 2);
    // many-small is debian-min plus one layer: only that one is fetched.
    let ms = stowage(
        &root,
        &[
            "pull",
            "--plain-http",
            "--format",
            "json",
            &format!("{reg}/corpus/many-small:latest"),
        ],
    )
    .ok()
    .json();
    assert_eq!(
        (ms["layers_fetched"].as_u64(), ms["layers_present"].as_u64()),
        (Some(1), Some(2)),
        "{ms}"
    );
    assert_eq!(
        std::fs::read_dir(root.join("snapshots")).unwrap().count(),
        3
    );
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn discard_policy_keeps_snapshots_only_from_flag_and_config_files() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let pushed = layered_image(&reg, "test/discard");
    let img = format!("{reg}/test/discard:v1");

    let check = |root: &Path| {
        let doc = stowage(root, &["inspect", "--format", "json", &img])
            .ok()
            .json();
        assert_eq!(doc["policy"], "discard");
        for (i, l) in doc["layers"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                l["forms"],
                serde_json::json!(["snapshot", "tar-split"]),
                "{l}"
            );
            assert!(
                l["blobDropped"].as_str().unwrap().contains("discard"),
                "{l}"
            );
            assert!(!root
                .join("blobs/sha256")
                .join(&pushed.layers[i][7..])
                .exists());
        }
        // index/manifest + config stay (they are what makes it an image),
        // and one small tar-split per layer.
        assert_eq!(blob_count(root), 2 + pushed.layers.len());
        let out = root.with_extension("rootfs");
        stowage(root, &["unpack", &img, out.to_str().unwrap()]).ok();
        assert_eq!(std::fs::read(out.join("top")).unwrap(), b"top");
    };

    let r1 = work.path().join("flag");
    stowage(
        &r1,
        &["pull", "--plain-http", "-q", "--policy", "discard", &img],
    )
    .ok();
    check(&r1);

    let cfg = work.path().join("stowage.toml");
    std::fs::write(&cfg, "[store]\npolicy = \"discard\"\n").unwrap();
    let r2 = work.path().join("config");
    stowage(
        &r2,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "pull",
            "--plain-http",
            "-q",
            &img,
        ],
    )
    .ok();
    check(&r2);

    let ctd = work.path().join("containerd.toml");
    std::fs::write(&ctd, "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  discard_unpacked_layers = true\n").unwrap();
    let r3 = work.path().join("containerd");
    stowage(
        &r3,
        &[
            "--containerd-config",
            ctd.to_str().unwrap(),
            "pull",
            "--plain-http",
            "-q",
            &img,
        ],
    )
    .ok();
    check(&r3);

    // Pulling again with keep brings the blobs back.
    stowage(
        &r3,
        &["pull", "--plain-http", "-q", "--policy", "keep", &img],
    )
    .ok();
    // Layer blobs come back; the tar-splits were kept all along.
    assert_eq!(blob_count(&r3), 2 + 2 * pushed.layers.len());
}

#[test]
fn bad_config_is_an_error_naming_key_and_file() {
    let work = scratch();
    let cfg = work.path().join("stowage.toml");
    std::fs::write(&cfg, "[store]\npolicy = 3\n").unwrap();
    let r = stowage(
        &work.path().join("s"),
        &["--config", cfg.to_str().unwrap(), "images"],
    )
    .fails();
    assert!(
        r.stderr().contains("store.policy") && r.stderr().contains("stowage.toml"),
        "{}",
        r.stderr()
    );
    let r = stowage(&work.path().join("s"), &["pull", "NOT A REFERENCE"]).fails();
    assert!(
        r.stderr().contains("invalid image reference"),
        "{}",
        r.stderr()
    );
}

#[test]
fn mount_shows_the_same_tree_as_unpack() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let img = format!("{reg}/corpus/debian-min:latest");
    stowage(&root, &["pull", "--plain-http", "-q", &img]).ok();
    let unpacked = work.path().join("rootfs");
    stowage(&root, &["unpack", &img, unpacked.to_str().unwrap()]).ok();
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    stowage(&root, &["mount", &img, mnt.to_str().unwrap()]).ok();
    let result = std::panic::catch_unwind(|| {
        let mounted = tree::list(&mnt);
        tree::assert_same(&mounted, &tree::list(&unpacked), "mount vs unpack");
        assert!(
            std::fs::write(mnt.join("etc/x"), b"x").is_err(),
            "mount must be read-only"
        );
    });
    common::sh("umount", &[mnt.to_str().unwrap()]);
    result.unwrap();
}

#[test]
fn compressed_policy_keeps_blobs_and_unpacks_on_demand() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    layered_image(&reg, "test/compressed");
    let img = format!("{reg}/test/compressed:v1");
    stowage(
        &root,
        &["pull", "--plain-http", "-q", "--policy", "compressed", &img],
    )
    .ok();
    let doc = stowage(&root, &["inspect", "--format", "json", &img])
        .ok()
        .json();
    for l in doc["layers"].as_array().unwrap() {
        assert_eq!(l["forms"], serde_json::json!(["blob"]), "{l}");
    }
    assert_eq!(
        std::fs::read_dir(root.join("snapshots")).unwrap().count(),
        0
    );
    let out = work.path().join("rootfs");
    stowage(&root, &["unpack", &img, out.to_str().unwrap()]).ok();
    assert_eq!(std::fs::read(out.join("hard-to-lower")).unwrap(), b"keep");
    assert_eq!(
        std::fs::read_dir(root.join("snapshots")).unwrap().count(),
        3
    );
    // Not in use: gc takes the snapshots back, the blobs stay.
    let r = stowage(&root, &["gc", "--format", "json"]).ok().json();
    assert_eq!(r["snapshots_removed"], 3, "{r}");
    assert_eq!(r["blobs_removed"], 0, "{r}");
    let again = work.path().join("rootfs2");
    stowage(&root, &["unpack", &img, again.to_str().unwrap()]).ok();
    assert!(again.join("top").exists());
}
