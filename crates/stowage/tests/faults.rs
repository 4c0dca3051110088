//! Faults between stowage and the real registry, injected by a proxy:
//! connection drops mid-blob (resumed with HTTP Range and verified as a
//! whole), drops that never stop, and redirect loops.

mod common;
use common::proxy::{self, Fault};
use common::push::{push_image, tarb::Tar};
use common::{registry, scratch, stowage};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn big_layer_image(reg: &str, repo: &str) -> common::push::Pushed {
    // Incompressible content so the blob is large enough to cut.
    let mut data = vec![0u8; 3 << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let l = Tar::new()
        .dir("data", 0o755)
        .file("data/blob", &data)
        .finish();
    push_image(reg, repo, "v1", &[l], None)
}

#[test]
fn a_dropped_connection_is_resumed_with_range_and_verified() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let pushed = big_layer_image(&reg, "test/fault-resume");
    let layer = pushed.layers[0].clone();
    let gets = Arc::new(AtomicUsize::new(0));
    let g = gets.clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" && path.ends_with(&layer) {
            // Drop the first two attempts part-way, then let it through.
            match g.fetch_add(1, Ordering::SeqCst) {
                0 => Fault::Truncate(1 << 20),
                1 => Fault::Truncate(100_000),
                _ => Fault::Pass,
            }
        } else {
            Fault::Pass
        }
    });
    let img = format!("{}/test/fault-resume:v1", p.addr);
    stowage(&root, &["pull", "--plain-http", "-q", &img]).ok();
    assert!(gets.load(Ordering::SeqCst) >= 3);
    let ranges: Vec<String> = p
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.to_ascii_lowercase().contains("range: bytes="))
        .cloned()
        .collect();
    assert!(ranges.len() >= 2, "resumes must use HTTP Range: {ranges:?}");
    let out = work.path().join("rootfs");
    stowage(&root, &["unpack", &img, out.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::metadata(out.join("data/blob")).unwrap().len(),
        3 << 20
    );
    let blob = root.join("blobs/sha256").join(&pushed.layers[0][7..]);
    assert_eq!(
        common::push::sha(&std::fs::read(blob).unwrap()),
        pushed.layers[0]
    );
}

#[test]
fn a_connection_that_always_drops_fails_clearly_and_commits_nothing() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let pushed = big_layer_image(&reg, "test/fault-always");
    let layer = pushed.layers[0].clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" && path.ends_with(&layer) {
            Fault::Truncate(50_000)
        } else {
            Fault::Pass
        }
    });
    let r = stowage(
        &root,
        &[
            "pull",
            "--plain-http",
            "-q",
            &format!("{}/test/fault-always:v1", p.addr),
        ],
    )
    .fails();
    assert!(r.stderr().contains(&pushed.layers[0]), "{}", r.stderr());
    assert!(r.stderr().contains("again to resume"), "{}", r.stderr());
    assert_eq!(stowage(&root, &["images", "-q"]).ok().stdout(), "");
    assert!(!root
        .join("blobs/sha256")
        .join(&pushed.layers[0][7..])
        .exists());
    assert_eq!(
        std::fs::read_dir(root.join("snapshots")).unwrap().count(),
        0
    );
    // What did arrive waits for the next pull to resume from; gc takes it.
    let kept: Vec<_> = std::fs::read_dir(root.join("ingest"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        kept[0].starts_with(&format!("{}.0.", &pushed.layers[0][7..])),
        "{kept:?}"
    );
    stowage(&root, &["gc"]).ok();
    assert_eq!(std::fs::read_dir(root.join("ingest")).unwrap().count(), 0);
}

#[test]
fn a_redirect_loop_is_a_clear_error() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let pushed = big_layer_image(&reg, "test/fault-redirect");
    let layer = pushed.layers[0].clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" && path.contains(&layer) {
            Fault::Redirect(format!("/v2/test/fault-redirect/blobs/{layer}?again"))
        } else {
            Fault::Pass
        }
    });
    let r = stowage(
        &root,
        &[
            "pull",
            "--plain-http",
            "-q",
            &format!("{}/test/fault-redirect:v1", p.addr),
        ],
    )
    .fails();
    assert!(
        r.stderr().to_lowercase().contains("redirect"),
        "{}",
        r.stderr()
    );
    assert_eq!(stowage(&root, &["images", "-q"]).ok().stdout(), "");
}

#[test]
fn a_stalled_download_is_noticed_and_resumed() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let pushed = big_layer_image(&reg, "test/fault-stall");
    let layer = pushed.layers[0].clone();
    let gets = Arc::new(AtomicUsize::new(0));
    let g = gets.clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" && path.ends_with(&layer) && g.fetch_add(1, Ordering::SeqCst) == 0 {
            Fault::Stall(500_000)
        } else {
            Fault::Pass
        }
    });
    let out = std::process::Command::new(common::bin())
        .args([
            "--root",
            root.to_str().unwrap(),
            "pull",
            "--plain-http",
            "-q",
            &format!("{}/test/fault-stall:v1", p.addr),
        ])
        .env("STOWAGE_STALL_TIMEOUT", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        gets.load(Ordering::SeqCst) >= 2,
        "the stalled download should have been resumed"
    );
    assert!(p
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.to_ascii_lowercase().contains("range: bytes=")));
}

/// Start a pull whose layer download stalls after `cut` bytes, wait until
/// the partial is on disk, and kill it (-9): the crash a reboot causes.
fn killed_mid_layer(root: &std::path::Path, img: &str, hex: &str) -> std::path::PathBuf {
    let mut child = std::process::Command::new(common::bin())
        .args([
            "--root",
            root.to_str().unwrap(),
            "pull",
            "--plain-http",
            "-q",
            img,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ingest = root.join("ingest");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let partial = loop {
        let found = std::fs::read_dir(&ingest).ok().and_then(|d| {
            d.flatten()
                .find(|e| {
                    e.file_name().to_string_lossy().starts_with(hex)
                        && e.metadata().map(|m| m.len() >= 1_000_000).unwrap_or(false)
                })
                .map(|e| e.file_name())
        });
        if let Some(f) = found {
            break f;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no partial download appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // The kill left the file under the dead writer's name.
    let left: Vec<_> = std::fs::read_dir(&ingest)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.contains(&partial), "{left:?}");
    ingest.join(partial)
}

#[test]
fn a_killed_pull_resumes_from_its_partial_download_and_a_bad_partial_is_refetched() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let pushed = big_layer_image(&reg, "test/fault-killed");
    let layer = pushed.layers[0].clone();
    let hex = layer[7..].to_string();
    let gets = Arc::new(AtomicUsize::new(0));
    let g = gets.clone();
    let l = layer.clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" && path.ends_with(&l) {
            match g.fetch_add(1, Ordering::SeqCst) {
                0 | 2 => Fault::Stall(1_500_000),
                _ => Fault::Pass,
            }
        } else {
            Fault::Pass
        }
    });
    let img = format!("{}/test/fault-killed:v1", p.addr);
    // A: resumed with Range from where the killed pull stopped.
    let root = work.path().join("store-a");
    killed_mid_layer(&root, &img, &hex);
    let out = stowage(&root, &["pull", "--plain-http", "--format", "json", &img])
        .ok()
        .json();
    let ranges: Vec<u64> = p
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|h| {
            let h = h.to_ascii_lowercase();
            let at = h.find("range: bytes=")? + "range: bytes=".len();
            h[at..].split('-').next()?.trim().parse().ok()
        })
        .collect();
    assert!(
        ranges.iter().any(|&r| r >= 1_000_000),
        "the second pull must ask for the rest only: {ranges:?}"
    );
    let fetched = out["bytes_fetched"].as_u64().unwrap();
    assert!(
        fetched + 1_000_000 <= 3 << 20,
        "fetched {fetched} bytes again: {out}"
    );
    let blob = root.join("blobs/sha256").join(&hex);
    assert_eq!(common::push::sha(&std::fs::read(&blob).unwrap()), layer);
    let rootfs = work.path().join("rootfs-a");
    stowage(&root, &["unpack", &img, rootfs.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::metadata(rootfs.join("data/blob")).unwrap().len(),
        3 << 20
    );

    // B: a partial that was damaged (a torn write) is noticed by the digest
    // check, and the layer is fetched again from the start.
    let root = work.path().join("store-b");
    let partial = killed_mid_layer(&root, &img, &hex);
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[500_000] ^= 0x55;
    std::fs::write(&partial, &bytes).unwrap();
    stowage(&root, &["pull", "--plain-http", "-q", &img]).ok();
    let blob = root.join("blobs/sha256").join(&hex);
    assert_eq!(common::push::sha(&std::fs::read(&blob).unwrap()), layer);
    assert!(gets.load(Ordering::SeqCst) >= 5, "refetched from the start");
    let rootfs = work.path().join("rootfs-b");
    stowage(&root, &["unpack", &img, rootfs.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::metadata(rootfs.join("data/blob")).unwrap().len(),
        3 << 20
    );
    assert_eq!(
        std::fs::read_dir(root.join("ingest")).unwrap().count(),
        0,
        "the bad partial is gone"
    );
}
