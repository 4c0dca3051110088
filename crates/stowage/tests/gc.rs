//! Garbage collection, disk usage, leases and crash safety, end to end.

mod common;
use common::{registry, scratch, sh, stowage};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn dir_count(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn gc_keeps_what_images_and_mounts_use_and_du_adds_up() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let dm = format!("{reg}/corpus/debian-min:latest");
    let ms = format!("{reg}/corpus/many-small:latest");
    stowage(&root, &["pull", "--plain-http", "-q", &dm]).ok();
    stowage(&root, &["pull", "--plain-http", "-q", &ms]).ok();

    let du = stowage(&root, &["du", "--format", "json"]).ok().json();
    let on_disk: u64 = std::fs::read_dir(root.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let t = &du["total"];
    assert_eq!(
        t["blobs"].as_u64().unwrap() + t["recipes"].as_u64().unwrap(),
        on_disk,
        "{du}"
    );
    let ms_usage = du["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == ms)
        .unwrap();
    assert!(
        ms_usage["shared"].as_u64().unwrap() > 50_000_000,
        "debian-min's layers are shared: {ms_usage}"
    );
    assert!(stowage(&root, &["du"]).ok().stdout().contains("SNAPSHOTS"));

    // Nothing is garbage yet.
    let r = stowage(&root, &["gc", "--format", "json"]).ok().json();
    assert_eq!(
        (r["blobs_removed"].as_u64(), r["snapshots_removed"].as_u64()),
        (Some(0), Some(0)),
        "{r}"
    );

    // A mount holds its snapshots even after the image is removed.
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    stowage(&root, &["mount", &ms, mnt.to_str().unwrap()]).ok();
    stowage(&root, &["rm", &ms]).ok();
    let snaps_before = dir_count(&root.join("snapshots"));
    let r = stowage(&root, &["gc", "--format", "json"]).ok().json();
    assert_eq!(
        r["snapshots_removed"], 0,
        "a mounted snapshot was collected: {r}"
    );
    assert!(
        r["blobs_removed"].as_u64().unwrap() >= 3,
        "many-small's own blobs go: {r}"
    );
    assert!(mnt.join("srv/small").exists());
    sh("umount", &[mnt.to_str().unwrap()]);
    let r = stowage(&root, &["gc", "--format", "json"]).ok().json();
    assert_eq!(r["snapshots_removed"], 1, "{r}");
    assert_eq!(dir_count(&root.join("snapshots")), snaps_before - 1);

    // debian-min is whole.
    let out = work.path().join("rootfs");
    stowage(&root, &["unpack", &dm, out.to_str().unwrap()]).ok();
    assert!(out.join("usr/bin/python3").exists());
    let again = stowage(&root, &["pull", "--plain-http", "--format", "json", &dm])
        .ok()
        .json();
    assert_eq!(again["layers_fetched"], 0);
}

#[test]
fn killed_pulls_leave_a_store_that_opens_and_repairs_itself() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let img = format!("{reg}/corpus/debian-min:latest");
    // Kill at spread-out moments: during manifest fetch, mid-layer, at commit.
    for i in 0..12u64 {
        let mut child = Command::new(common::bin())
            .args([
                "--root",
                root.to_str().unwrap(),
                "pull",
                "--plain-http",
                "-q",
                &img,
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + i * 110));
        let _ = child.kill();
        let _ = child.wait();
        // The store opens, lists, and a gc repairs what the kill left.
        stowage(&root, &["images"]).ok();
        stowage(&root, &["gc"]).ok();
        assert_eq!(dir_count(&root.join("ingest")), 0, "gc left ingest files");
        let names: Vec<String> = std::fs::read_dir(root.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with("tmp-")),
            "gc left temporary snapshots: {names:?}"
        );
        // An image that is listed is whole.
        if !stowage(&root, &["images", "-q"])
            .ok()
            .stdout()
            .trim()
            .is_empty()
        {
            let out = work.path().join(format!("rootfs{i}"));
            stowage(&root, &["unpack", &img, out.to_str().unwrap()]).ok();
        }
    }
    stowage(&root, &["pull", "--plain-http", "-q", &img]).ok();
    let out = work.path().join("final");
    stowage(&root, &["unpack", &img, out.to_str().unwrap()]).ok();
    assert!(out.join("usr/bin/python3").exists());
}
