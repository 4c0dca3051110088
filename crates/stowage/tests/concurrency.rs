//! Several processes on one root: two pulls of the same image download
//! each layer once; rm and gc while a pull runs leave a consistent store.

mod common;
use common::proxy::{self, Fault};
use common::push::{push_image, tarb::Tar};
use common::{registry, scratch, stowage};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

fn image(reg: &str, repo: &str) -> common::push::Pushed {
    let tars: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            Tar::new()
                .dir("d", 0o755)
                .file(&format!("d/f{i}"), &vec![i as u8; 200_000 + i])
                .finish()
        })
        .collect();
    push_image(reg, repo, "v1", &tars, None)
}

fn spawn_pull(root: &std::path::Path, img: &str) -> std::process::Child {
    Command::new(common::bin())
        .args([
            "--root",
            root.to_str().unwrap(),
            "pull",
            "--plain-http",
            "-q",
            img,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_pulls_of_one_image_fetch_each_layer_once() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let pushed = image(&reg, "test/concurrent");
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let c = counts.clone();
    let layers = pushed.layers.clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" {
            if let Some(l) = layers.iter().find(|l| path.ends_with(l.as_str())) {
                *c.lock().unwrap().entry(l.clone()).or_default() += 1;
                return Fault::Delay(300);
            }
        }
        Fault::Pass
    });
    let img = format!("{}/test/concurrent:v1", p.addr);
    let a = spawn_pull(&root, &img);
    let b = spawn_pull(&root, &img);
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let counts = counts.lock().unwrap();
    for l in &pushed.layers {
        assert_eq!(
            counts.get(l),
            Some(&1),
            "layer {l} fetched {:?} times",
            counts.get(l)
        );
    }
    let out = work.path().join("rootfs");
    stowage(&root, &["unpack", &img, out.to_str().unwrap()]).ok();
    assert!(out.join("d/f2").exists());
}

#[test]
fn rm_and_gc_during_a_pull_leave_a_consistent_store() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let pushed = image(&reg, "test/concurrent-gc");
    let layers = pushed.layers.clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" && layers.iter().any(|l| path.ends_with(l.as_str())) {
            Fault::Delay(400)
        } else {
            Fault::Pass
        }
    });
    let img = format!("{}/test/concurrent-gc:v1", p.addr);
    // An image that exists before, and is removed during the pull.
    stowage(
        &root,
        &[
            "pull",
            "--plain-http",
            "-q",
            &format!("{reg}/test/concurrent:v1"),
        ],
    )
    .ok();
    let child = spawn_pull(&root, &img);
    for _ in 0..5 {
        let _ = stowage(&root, &["rm", &format!("{reg}/test/concurrent:v1")]);
        stowage(&root, &["gc"]).ok();
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stowage(&root, &["gc"]).ok();
    let names = stowage(&root, &["images", "-q"]).ok().stdout();
    assert_eq!(names.trim(), img);
    let rootfs = work.path().join("rootfs");
    stowage(&root, &["unpack", &img, rootfs.to_str().unwrap()]).ok();
    stowage(&root, &["check", "--no-fetch", &img]).ok();
}
