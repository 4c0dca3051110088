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

/// After a kill: the store opens, `images` works, gc repairs, no blob has
/// wrong bytes, and every listed image is whole.
fn consistent(root: &Path, work: &Path, tag: &str) {
    stowage(root, &["images"]).ok();
    stowage(root, &["gc"]).ok();
    assert_eq!(dir_count(&root.join("ingest")), 0, "gc left ingest files");
    let names: Vec<String> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("tmp-")),
        "gc left temporary snapshots: {names:?}"
    );
    for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let p = e.unwrap().path();
        let want = p.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            common::tree::hash_file(&p),
            want,
            "blob {p:?} has wrong bytes"
        );
    }
    for name in stowage(root, &["images", "-q"]).ok().stdout().lines() {
        let out = work.join(format!("rootfs-{tag}-{}", name.len()));
        let _ = std::fs::remove_dir_all(&out);
        stowage(root, &["unpack", name, out.to_str().unwrap()]).ok();
        std::fs::remove_dir_all(&out).unwrap();
    }
}

fn kill_after(args: &[&str], root: &Path, ms: u64) {
    let mut child = Command::new(common::bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    let _ = child.kill();
    let _ = child.wait();
}

/// 58 kill -9 runs across pull, import, gc and settle, at moments spread over each
/// command's life; re-running completes and reuses what was verified.
#[test]
fn killed_pulls_imports_and_gcs_leave_a_store_that_opens_and_repairs_itself() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let img = format!("{reg}/corpus/debian-min:latest");
    let mut seed: u64 = 0x2545F4914F6CDD1D;
    let mut rand = move |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max
    };
    for i in 0..25 {
        kill_after(
            &["pull", "--plain-http", "-q", &img],
            &root,
            10 + rand(1500),
        );
        consistent(&root, work.path(), &format!("pull{i}"));
    }
    let done = stowage(&root, &["pull", "--plain-http", "--format", "json", &img])
        .ok()
        .json();
    eprintln!("after the killed pulls: {done}");

    // An archive to import, into a second root.
    let archive = work.path().join("dm.tar");
    stowage(&root, &["export", "-o", archive.to_str().unwrap(), &img]).ok();
    let root2 = work.path().join("store2");
    for i in 0..15 {
        kill_after(
            &["import", archive.to_str().unwrap()],
            &root2,
            10 + rand(1200),
        );
        consistent(&root2, work.path(), &format!("import{i}"));
    }
    stowage(&root2, &["import", archive.to_str().unwrap()]).ok();
    consistent(&root2, work.path(), "import-final");

    // gc with something to collect each time.
    for i in 0..10 {
        stowage(
            &root,
            &[
                "pull",
                "--plain-http",
                "-q",
                &format!("{reg}/corpus/many-small:latest"),
            ],
        )
        .ok();
        stowage(&root, &["rm", &format!("{reg}/corpus/many-small:latest")]).ok();
        kill_after(&["gc"], &root, rand(400));
        consistent(&root, work.path(), &format!("gc{i}"));
    }
    let again = stowage(&root, &["pull", "--plain-http", "--format", "json", &img])
        .ok()
        .json();
    assert_eq!(
        again["layers_fetched"], 0,
        "verified layers are reused: {again}"
    );

    // A settle killed anywhere (analysing, proving, committing, dropping)
    // leaves every layer exportable from a blob or a proven recipe.
    let root3 = work.path().join("store3");
    stowage(
        &root3,
        &[
            "pull",
            "--plain-http",
            "-q",
            "--policy",
            "recipe",
            "--settle",
            "later",
            &img,
        ],
    )
    .ok();
    for i in 0..8 {
        kill_after(&["settle"], &root3, 50 + rand(2500));
        consistent(&root3, work.path(), &format!("settle{i}"));
        stowage(&root3, &["check", "--no-fetch", &img]).ok();
    }
    stowage(&root3, &["settle"]).ok();
    let doc = stowage(&root3, &["inspect", "--format", "json", &img])
        .ok()
        .json();
    for l in doc["layers"].as_array().unwrap() {
        assert_eq!(l["forms"], serde_json::json!(["snapshot", "recipe"]), "{l}");
    }
    let archive3 = work.path().join("dm3.tar");
    stowage(
        &root3,
        &[
            "export",
            "--no-fetch",
            "-o",
            archive3.to_str().unwrap(),
            &img,
        ],
    )
    .ok();
    assert_eq!(
        common::tree::hash_file(&archive),
        common::tree::hash_file(&archive3),
        "the export from recipes differs from the export from blobs"
    );
}
