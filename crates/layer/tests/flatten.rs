//! Flattening a stack of snapshots into one root filesystem.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use stowage_layer::flatten;
use tar::EntryType;

fn walk(dir: &Path, out: &mut Vec<(String, fs::Metadata)>, base: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let md = fs::symlink_metadata(e.path()).unwrap();
        let rel = e
            .path()
            .strip_prefix(base)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if md.is_dir() {
            walk(&e.path(), out, base);
        }
        out.push((rel, md));
    }
}

#[test]
fn three_layers_merge_like_overlayfs() {
    if !is_root() {
        eprintln!("skipping: needs root (whiteouts are device nodes)");
        return;
    }
    let sb = Sandbox::new();
    let (l1, l2, l3) = (sb.dir("lower1"), sb.dir("lower2"), sb.dir("lower3"));

    let mut t = Tar::new();
    t.dir("etc/")
        .file("etc/conf", b"v1")
        .dir("etc/dir/")
        .dir("etc/dir/sub/")
        .file("etc/dir/sub/deep", b"deep")
        .file("gone.txt", b"bye")
        .dir("opq/")
        .file("opq/old1", b"o1")
        .file("opq/old2", b"o2")
        .file("rep", b"I am a file")
        .dir("was-dir/")
        .file("was-dir/child", b"c")
        .file_with("hl1", b"linked", 0o755, 7, 8, 1_200_000_000)
        .hardlink("hl2", "hl1")
        .symlink("lnk", "etc/conf")
        .symlink("sl", sb.outside.to_str().unwrap())
        .node("null", EntryType::Char, 1, 3, 0o666);
    sb.apply_into(&l1, &t.bytes());
    xattr::set(l1.join("etc/conf"), "user.tag", b"one").unwrap();

    let mut t = Tar::new();
    t.file(".wh.gone.txt", b"")
        .dir("opq/")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/new", b"n")
        .dir("rep/")
        .file("rep/inner", b"now a dir")
        .file("was-dir", b"now a file")
        .dir("etc/")
        .file("etc/.wh.dir", b"")
        .dir("sl/")
        .file("sl/f", b"inside");
    sb.apply_into(&l2, &t.bytes());

    let mut t = Tar::new();
    t.dir_with("etc/", 0o700, 0, 0, 1_444_444_444)
        .file("etc/conf", b"v3")
        .file("a", b"shared")
        .hardlink("b", "a")
        .symlink("dangling", "/nonexistent");
    sb.apply_into(&l3, &t.bytes());

    let dst = sb.dir("lower-dst");
    let rep = flatten(&[&l1, &l2, &l3], &dst, &opts()).unwrap();

    let read = |p: &str| fs::read(dst.join(p)).unwrap();
    let exists = |p: &str| fs::symlink_metadata(dst.join(p)).is_ok();
    assert!(!exists("gone.txt"));
    assert!(!exists("etc/dir"));
    let mut opq: Vec<_> = fs::read_dir(dst.join("opq"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    opq.sort();
    assert_eq!(opq, vec!["new"]);
    assert!(fs::symlink_metadata(dst.join("rep")).unwrap().is_dir());
    assert_eq!(read("rep/inner"), b"now a dir");
    assert_eq!(read("was-dir"), b"now a file");
    assert_eq!(read("etc/conf"), b"v3");
    // The upper copy replaced the file, xattrs and all.
    assert_eq!(xattr::get(dst.join("etc/conf"), "user.tag").unwrap(), None);
    let etc = fs::symlink_metadata(dst.join("etc")).unwrap();
    assert_eq!((etc.mode() & 0o7777, etc.mtime()), (0o700, 1_444_444_444));

    let (h1, h2) = (
        fs::metadata(dst.join("hl1")).unwrap(),
        fs::metadata(dst.join("hl2")).unwrap(),
    );
    assert_eq!(h1.ino(), h2.ino());
    assert_eq!(
        (h1.mode() & 0o7777, h1.uid(), h1.gid(), h1.mtime()),
        (0o755, 7, 8, 1_200_000_000)
    );
    let (a, b) = (
        fs::metadata(dst.join("a")).unwrap(),
        fs::metadata(dst.join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_ne!(
        a.ino(),
        fs::metadata(l3.join("a")).unwrap().ino(),
        "must copy, not link into the snapshot"
    );

    assert_eq!(
        fs::read_link(dst.join("lnk")).unwrap(),
        Path::new("etc/conf")
    );
    assert_eq!(
        fs::read_link(dst.join("dangling")).unwrap(),
        Path::new("/nonexistent")
    );
    let null = fs::symlink_metadata(dst.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    // The symlink from layer 1 was replaced by layer 2's directory, not written through.
    assert!(fs::symlink_metadata(dst.join("sl")).unwrap().is_dir());
    assert_eq!(read("sl/f"), b"inside");

    let mut all = Vec::new();
    walk(&dst, &mut all, &dst);
    for (p, md) in &all {
        assert!(
            !(md.file_type().is_char_device() && md.rdev() == 0),
            "whiteout leaked into {p}"
        );
        assert!(!p.contains(".wh."), "whiteout file leaked: {p}");
        assert_eq!(
            xattr::get(dst.join(p), "trusted.overlay.opaque").unwrap(),
            None,
            "{p}"
        );
    }
    assert!(rep.bytes > 0 && rep.files > 10 && rep.dirs > 5, "{rep:?}");
    sb.assert_outside_untouched();
}

#[test]
fn flatten_single_layer_without_root_features() {
    let sb = Sandbox::new();
    let l1 = sb.dir("lower1");
    let mut t = Tar::new();
    t.dir("a/")
        .file("a/f", &[1u8; 300_000])
        .symlink("a/s", "f")
        .dir("a/b/")
        .file("a/b/g", b"g");
    sb.apply_into(&l1, &t.bytes());
    let dst = sb.dir("lower-dst");
    let rep = flatten(&[&l1], &dst, &opts()).unwrap();
    assert_eq!(rep.bytes, 300_001);
    assert_eq!(rep.files, 3);
    assert_eq!(rep.dirs, 3); // root, a, a/b
    assert_eq!(fs::read(dst.join("a/f")).unwrap(), vec![1u8; 300_000]);
    let mtime = fs::metadata(dst.join("a")).unwrap().mtime();
    assert_eq!(mtime, MTIME as i64);
}
