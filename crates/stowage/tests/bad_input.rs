//! Bad input from a real registry (through a fault-injecting proxy where the
//! registry itself would not misbehave): every failure names the image and
//! the blob, commits nothing, and leaves earlier images untouched.

mod common;
use common::proxy::{self, Fault};
use common::push::{push_image, tarb::Tar};
use common::{registry, scratch, stowage};
use std::path::Path;

fn small_image(reg: &str, repo: &str, marker: &str) -> common::push::Pushed {
    let l1 = Tar::new()
        .dir("etc", 0o755)
        .file("etc/marker", marker.as_bytes())
        .finish();
    let l2 = Tar::new()
        .dir("srv", 0o755)
        .file("srv/data", &vec![b'x'; 100_000])
        .finish();
    push_image(reg, repo, "v1", &[l1, l2], None)
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// State that a failed pull must not change.
fn snapshot_state(root: &Path) -> (String, usize, usize, usize) {
    let images = stowage(root, &["images", "-q"]).ok().stdout();
    (
        images,
        count(&root.join("blobs/sha256")),
        count(&root.join("snapshots")),
        count(&root.join("ingest")),
    )
}

/// Pull a good image, then `bad` through a proxy applying `rule`; check the
/// error mentions every string in `expect` and nothing changed.
fn fails_cleanly(
    tag: &str,
    rule: impl Fn(&str, &str) -> Fault + Send + Sync + 'static,
    expect: &[&str],
) {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let good = format!("{reg}/test/good-{tag}:v1");
    small_image(&reg, &format!("test/good-{tag}"), "good");
    stowage(&root, &["pull", "--plain-http", "-q", &good]).ok();
    let before = snapshot_state(&root);

    let pushed = small_image(&reg, &format!("test/bad-{tag}"), tag);
    let layer = pushed.layers[1].clone();
    let p = proxy::start(&reg, move |m, path| rule(m, &path.replace(&layer, "LAYER")));
    let bad = format!("{}/test/bad-{tag}:v1", p.addr);
    let r = stowage(&root, &["pull", "--plain-http", "-q", &bad]).fails();
    let err = r.stderr();
    assert!(
        err.contains(&format!("test/bad-{tag}")),
        "error should name the image: {err}"
    );
    for e in expect {
        let e = e.replace("LAYER", &pushed.layers[1]);
        assert!(err.contains(&e), "error should mention {e:?}: {err}");
    }
    assert_eq!(
        snapshot_state(&root),
        before,
        "a failed pull changed the store"
    );
    let out = work.path().join("rootfs");
    stowage(&root, &["unpack", &good, out.to_str().unwrap()]).ok();
    assert_eq!(
        std::fs::read_to_string(out.join("etc/marker")).unwrap(),
        "good"
    );
}

#[test]
fn corrupt_truncated_and_failing_layers_are_refused() {
    let Some(_) = registry() else { return };
    // Wrong bytes of the right length.
    fails_cleanly(
        "corrupt",
        |m, path| {
            if m == "GET" && path.ends_with("/blobs/LAYER") {
                Fault::Corrupt
            } else {
                Fault::Pass
            }
        },
        &["LAYER", "hash"],
    );
    fails_cleanly(
        "truncated",
        |m, path| {
            if m == "GET" && path.ends_with("/blobs/LAYER") {
                Fault::Short(100)
            } else {
                Fault::Pass
            }
        },
        &["LAYER"],
    );
    fails_cleanly(
        "status500",
        |m, path| {
            if m == "GET" && path.ends_with("/blobs/LAYER") {
                Fault::Status(500)
            } else {
                Fault::Pass
            }
        },
        &["500"],
    );
    fails_cleanly(
        "notjson",
        |m, path| {
            if m == "GET" && path.contains("/manifests/") {
                Fault::Body(b"<html>not a manifest</html>".to_vec())
            } else {
                Fault::Pass
            }
        },
        &["manifest", "JSON"],
    );
}

#[test]
fn diff_id_that_does_not_match_the_config_is_refused() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    let l1 = Tar::new().file("a", b"a").finish();
    let lie = common::push::sha(b"not the tar");
    let pushed = push_image(
        &reg,
        "test/bad-diffid",
        "v1",
        &[l1],
        Some(vec![lie.clone()]),
    );
    let r = stowage(
        &root,
        &[
            "pull",
            "--plain-http",
            "-q",
            &format!("{reg}/test/bad-diffid:v1"),
        ],
    )
    .fails();
    let err = r.stderr();
    assert!(
        err.contains(&pushed.layers[0]) && err.contains(&lie) && err.contains("diffID"),
        "{err}"
    );
    assert_eq!(stowage(&root, &["images", "-q"]).ok().stdout(), "");
    assert_eq!(
        count(&root.join("snapshots")),
        0,
        "no snapshot may be committed"
    );
    assert_eq!(
        count(&root.join("blobs/sha256")),
        0,
        "no blob may be committed"
    );
}

/// A hostile layer with a correct digest: the pull fails naming the entry and
/// nothing is written outside the snapshot.
fn hostile(tag: &str, tar: Vec<u8>, entry: &str, outside: &Path) {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let root = work.path().join("store");
    push_image(&reg, &format!("test/hostile-{tag}"), "v1", &[tar], None);
    let r = stowage(
        &root,
        &[
            "pull",
            "--plain-http",
            "-q",
            &format!("{reg}/test/hostile-{tag}:v1"),
        ],
    )
    .fails();
    assert!(
        r.stderr().contains(entry),
        "error should name entry {entry:?}: {}",
        r.stderr()
    );
    assert_eq!(
        count(outside),
        0,
        "something was written outside the snapshot: {:?}",
        std::fs::read_dir(outside).unwrap().collect::<Vec<_>>()
    );
    assert_eq!(stowage(&root, &["images", "-q"]).ok().stdout(), "");
}

#[test]
fn hostile_layers_never_write_outside() {
    let Some(_) = registry() else { return };
    let outside_dir = scratch();
    let outside = outside_dir.path();
    let o = outside.to_str().unwrap().trim_start_matches('/');
    let climb = format!("../../../../../../../../../../{o}/pwned");
    hostile(
        "dotdot",
        Tar::new().file(&climb, b"x").finish(),
        "pwned",
        outside,
    );
    hostile(
        "symlink-out",
        Tar::new()
            .symlink("evil", outside.to_str().unwrap())
            .file("evil/pwned", b"x")
            .finish(),
        "evil/pwned",
        outside,
    );
    hostile(
        "symlink-chain",
        Tar::new()
            .symlink("a", "b")
            .symlink("b", outside.to_str().unwrap())
            .file("a/pwned", b"x")
            .finish(),
        "a/pwned",
        outside,
    );
    hostile(
        "hardlink-out",
        Tar::new()
            .hardlink("hlink-evil", &format!("../../../../../../../{o}/x"))
            .finish(),
        "hlink-evil",
        outside,
    );
    hostile(
        "gnu-long",
        Tar::new()
            .gnu_long_file(&format!("{}{climb}", "d/".repeat(60)), b"x")
            .finish(),
        "pwned",
        outside,
    );
    hostile(
        "pax",
        Tar::new().pax_file(&climb, b"x").finish(),
        "pwned",
        outside,
    );
    hostile(
        "whiteout-out",
        Tar::new()
            .file(&format!("../../../../../../../../{o}/.wh.victim"), b"")
            .finish(),
        "victim",
        outside,
    );
}

#[test]
fn symlink_replaced_by_directory_stays_inside() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let root = work.path().join("store");
    let tar = Tar::new()
        .symlink("d", outside.to_str().unwrap())
        .dir("d", 0o755)
        .file("d/inside", b"safe")
        .finish();
    push_image(&reg, "test/symlink-to-dir", "v1", &[tar], None);
    let img = format!("{reg}/test/symlink-to-dir:v1");
    stowage(&root, &["pull", "--plain-http", "-q", &img]).ok();
    assert_eq!(count(&outside), 0);
    let out = work.path().join("rootfs");
    stowage(&root, &["unpack", &img, out.to_str().unwrap()]).ok();
    assert!(std::fs::symlink_metadata(out.join("d")).unwrap().is_dir());
    assert_eq!(
        std::fs::read_to_string(out.join("d/inside")).unwrap(),
        "safe"
    );
}
