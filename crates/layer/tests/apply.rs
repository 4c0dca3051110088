//! What a well-formed layer turns into: whiteouts, opaque directories, hard
//! links, metadata. Metadata checks need root (chown, mknod, trusted xattrs);
//! CI and the dev machines run as root, elsewhere they are skipped loudly.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use stowage_layer::{resolve_deferred_links, ApplyError, DeferredLink, OPAQUE_XATTR};
use tar::EntryType;

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipping: needs root");
            return;
        }
    };
}

#[test]
fn whiteout_becomes_char_device_0_0() {
    require_root!();
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("a/").file("a/.wh.b", b"").file(".wh.top", b"");
    sb.apply(&t.bytes()).unwrap();
    for p in ["a/b", "top"] {
        let md = fs::symlink_metadata(sb.root.join(p)).unwrap();
        assert!(md.file_type().is_char_device(), "{p}");
        assert_eq!(md.rdev(), 0, "{p}");
    }
    assert!(fs::symlink_metadata(sb.root.join("a/.wh.b")).is_err());
    assert!(fs::symlink_metadata(sb.root.join(".wh.top")).is_err());
}

#[test]
fn whiteout_replaces_what_the_layer_wrote_earlier() {
    require_root!();
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("d/").file("d/f", b"x").file(".wh.d", b"");
    sb.apply(&t.bytes()).unwrap();
    assert!(fs::symlink_metadata(sb.root.join("d"))
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn opaque_marker_sets_xattr_and_creates_dir() {
    require_root!();
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("a/")
        .file("a/.wh..wh..opq", b"")
        .file("b/c/.wh..wh..opq", b"")
        .file("a/.wh..wh.plnk", b"");
    sb.apply(&t.bytes()).unwrap();
    for d in ["a", "b/c"] {
        assert_eq!(
            xattr::get(sb.root.join(d), OPAQUE_XATTR)
                .unwrap()
                .as_deref(),
            Some(&b"y"[..]),
            "{d}"
        );
    }
    assert_eq!(fs::read_dir(sb.root.join("a")).unwrap().count(), 0);
}

#[test]
fn hard_links_within_layer() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("bin/")
        .file("bin/busybox", b"ELF...")
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("ls", "/bin/busybox");
    let rep = sb.apply(&t.bytes()).unwrap();
    assert!(rep.deferred_links.is_empty());
    let a = fs::metadata(sb.root.join("bin/busybox")).unwrap();
    for p in ["bin/sh", "ls"] {
        let b = fs::metadata(sb.root.join(p)).unwrap();
        assert_eq!(a.ino(), b.ino(), "{p}");
    }
    assert_eq!(a.nlink(), 3);
}

#[test]
fn hard_link_to_directory_or_whiteout_fails() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("d/").hardlink("h", "d");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(matches!(err, ApplyError::LinkTargetIsDir { .. }), "{err}");

    if is_root() {
        let sb = Sandbox::new();
        let mut t = Tar::new();
        t.file(".wh.gone", b"").hardlink("h", "gone");
        let err = sb.apply(&t.bytes()).unwrap_err();
        assert!(
            matches!(err, ApplyError::LinkTargetNotFound { ref path, .. } if path == Path::new("h")),
            "{err}"
        );
    }
}

#[test]
fn deferred_link_is_copied_up_from_lower() {
    require_root!();
    let sb = Sandbox::new();
    let lower = sb.dir("lower1");
    let mut t = Tar::new();
    t.dir("usr/").dir("usr/bin/").file_with(
        "usr/bin/tool",
        b"#!/bin/sh\necho hi\n",
        0o4751,
        1000,
        1001,
        1_500_000_000,
    );
    sb.apply_into(&lower, &t.bytes());
    xattr::set(lower.join("usr/bin/tool"), "user.origin", b"lower").unwrap();

    let mut t = Tar::new();
    t.dir("usr/")
        .dir("usr/bin/")
        .hardlink("usr/bin/alias", "usr/bin/tool")
        .hardlink("usr/bin/alias2", "usr/bin/alias");
    let rep = sb.apply(&t.bytes()).unwrap();
    assert_eq!(rep.deferred_links.len(), 2);
    resolve_deferred_links(&sb.root, &[&lower], &rep.deferred_links, &opts()).unwrap();

    let md = fs::symlink_metadata(sb.root.join("usr/bin/alias")).unwrap();
    assert!(md.is_file());
    assert_eq!(
        fs::read(sb.root.join("usr/bin/alias")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(md.permissions().mode() & 0o7777, 0o4751);
    assert_eq!((md.uid(), md.gid()), (1000, 1001));
    assert_eq!(md.mtime(), 1_500_000_000);
    assert_eq!(
        xattr::get(sb.root.join("usr/bin/alias"), "user.origin")
            .unwrap()
            .as_deref(),
        Some(&b"lower"[..])
    );
    // The second link chained onto the first: one copy, two names.
    let md2 = fs::metadata(sb.root.join("usr/bin/alias2")).unwrap();
    assert_eq!(md.ino(), md2.ino());
    // The lower file is untouched.
    assert_eq!(fs::metadata(lower.join("usr/bin/tool")).unwrap().nlink(), 1);
    sb.assert_outside_untouched();
}

#[test]
fn deferred_link_honours_whiteouts_and_opaque_dirs_below() {
    require_root!();
    let sb = Sandbox::new();
    let bottom = sb.dir("lower-bottom");
    let middle = sb.dir("lower-middle");
    let mut t = Tar::new();
    t.file("gone", b"x")
        .file("hidden/f", b"y")
        .file("kept/f", b"z");
    sb.apply_into(&bottom, &t.bytes());
    let mut t = Tar::new();
    t.file(".wh.gone", b"")
        .file("hidden/.wh..wh..opq", b"")
        .file("kept/other", b"o");
    sb.apply_into(&middle, &t.bytes());

    for target in ["gone", "hidden/f"] {
        let links = vec![DeferredLink {
            path: "l".into(),
            target: target.into(),
        }];
        let err =
            resolve_deferred_links(&sb.root, &[&middle, &bottom], &links, &opts()).unwrap_err();
        assert!(
            matches!(err, ApplyError::LinkTargetNotFound { ref path, .. } if path == Path::new("l")),
            "{err}"
        );
        assert!(!sb.root.join("l").exists());
    }
    let links = vec![DeferredLink {
        path: "l".into(),
        target: "kept/f".into(),
    }];
    resolve_deferred_links(&sb.root, &[&middle, &bottom], &links, &opts()).unwrap();
    assert_eq!(fs::read(sb.root.join("l")).unwrap(), b"z");

    // Caller-supplied paths get the same `..` check as tar entries.
    let links = vec![DeferredLink {
        path: "../evil".into(),
        target: "kept/f".into(),
    }];
    assert!(matches!(
        resolve_deferred_links(&sb.root, &[&bottom], &links, &opts()),
        Err(ApplyError::PathEscape { .. })
    ));
    sb.assert_outside_untouched();
}

#[test]
fn later_entry_cancels_deferred_link() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.hardlink("a", "elsewhere")
        .file("a", b"real")
        .dir("d/")
        .hardlink("d/x", "nowhere")
        .file("d", b"file now");
    let rep = sb.apply(&t.bytes()).unwrap();
    assert!(rep.deferred_links.is_empty(), "{:?}", rep.deferred_links);
    assert_eq!(fs::read(sb.root.join("a")).unwrap(), b"real");
}

#[test]
fn modes_owners_and_times_are_kept() {
    require_root!();
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir_with("./", 0o751, 0, 0, 1_000_000_001)
        .dir_with("etc/", 0o750, 12, 34, 1_000_000_000)
        .file_with("etc/shadow", b"secret", 0o640, 0, 42, 1_234_567_890)
        .file_with("etc/suid", b"x", 0o4755, 0, 0, 1_100_000_000)
        .file_with("etc/sgid", b"x", 0o2711, 1000, 1000, 1_100_000_000)
        .dir_with("tmp/", 0o1777, 0, 0, 1_100_000_000)
        .file(
            "etc/zzz-written-after-dir",
            b"changes etc's mtime unless deferred",
        );
    let mut h = Tar::header(b"etc/link", EntryType::Symlink, 0, 0o777);
    h.set_link_name("shadow").unwrap();
    h.set_uid(55);
    h.set_gid(66);
    h.set_mtime(1_300_000_000);
    t.raw(h, b"");
    sb.apply(&t.bytes()).unwrap();

    let md = |p: &str| fs::symlink_metadata(sb.root.join(p)).unwrap();
    let root = fs::symlink_metadata(&sb.root).unwrap();
    assert_eq!((root.mode() & 0o7777, root.mtime()), (0o751, 1_000_000_001));
    let etc = md("etc");
    assert_eq!(
        (etc.mode() & 0o7777, etc.uid(), etc.gid(), etc.mtime()),
        (0o750, 12, 34, 1_000_000_000)
    );
    let shadow = md("etc/shadow");
    assert_eq!(
        (shadow.mode() & 0o7777, shadow.uid(), shadow.gid()),
        (0o640, 0, 42)
    );
    assert_eq!(
        (shadow.mtime(), shadow.atime()),
        (1_234_567_890, 1_234_567_890)
    );
    assert_eq!(md("etc/suid").mode() & 0o7777, 0o4755);
    let sgid = md("etc/sgid");
    assert_eq!(
        (sgid.mode() & 0o7777, sgid.uid(), sgid.gid()),
        (0o2711, 1000, 1000)
    );
    assert_eq!(md("tmp").mode() & 0o7777, 0o1777);
    let link = md("etc/link");
    assert!(link.file_type().is_symlink());
    assert_eq!(
        fs::read_link(sb.root.join("etc/link")).unwrap(),
        Path::new("shadow")
    );
    assert_eq!(
        (link.uid(), link.gid(), link.mtime()),
        (55, 66, 1_300_000_000)
    );
}

#[test]
fn pax_metadata_with_binary_xattr() {
    require_root!();
    let sb = Sandbox::new();
    let mut t = Tar::new();
    // A value with newlines and '=' breaks naive line-based PAX parsing, which
    // would then also lose the uid record after it.
    t.pax(&[
        (
            "SCHILY.xattr.user.bin",
            b"\x01\n\x00=\n23 path=../../escape\n",
        ),
        ("SCHILY.xattr.trusted.note", b"t"),
        ("mtime", b"1700000000.25"),
        ("uid", b"3000000"),
    ])
    .file("f", b"data");
    sb.apply(&t.bytes()).unwrap();
    let f = sb.root.join("f");
    assert_eq!(
        xattr::get(&f, "user.bin").unwrap().as_deref(),
        Some(&b"\x01\n\x00=\n23 path=../../escape\n"[..])
    );
    assert_eq!(
        xattr::get(&f, "trusted.note").unwrap().as_deref(),
        Some(&b"t"[..])
    );
    let md = fs::metadata(&f).unwrap();
    assert_eq!(md.uid(), 3_000_000);
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 250_000_000));
    sb.assert_outside_untouched();
}

#[test]
fn device_nodes_and_fifos() {
    require_root!();
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("dev/")
        .node("dev/null", EntryType::Char, 1, 3, 0o666)
        .node("dev/loop0", EntryType::Block, 7, 0, 0o660)
        .node("dev/fifo", EntryType::Fifo, 0, 0, 0o600);
    sb.apply(&t.bytes()).unwrap();
    let md = |p: &str| fs::symlink_metadata(sb.root.join(p)).unwrap();
    let null = md("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (null.rdev(), null.mode() & 0o7777),
        (nix::sys::stat::makedev(1, 3), 0o666)
    );
    let lp = md("dev/loop0");
    assert!(lp.file_type().is_block_device());
    assert_eq!(
        (lp.rdev(), lp.mode() & 0o7777),
        (nix::sys::stat::makedev(7, 0), 0o660)
    );
    assert!(md("dev/fifo").file_type().is_fifo());
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("a/")
        .file("a/b", b"1")
        .file("a", b"file replaces dir")
        .file("x", b"dir replaces file")
        .dir("x/")
        .file("x/y", b"2")
        .dir("keep/")
        .file("keep/child", b"3")
        .dir_with("keep/", 0o700, 0, 0, MTIME)
        .file("dup", b"first")
        .file("dup", b"second");
    let rep = sb.apply(&t.bytes()).unwrap();
    assert_eq!(fs::read(sb.root.join("a")).unwrap(), b"file replaces dir");
    assert_eq!(fs::read(sb.root.join("x/y")).unwrap(), b"2");
    assert_eq!(fs::read(sb.root.join("keep/child")).unwrap(), b"3");
    assert_eq!(
        fs::metadata(sb.root.join("keep")).unwrap().mode() & 0o777,
        0o700
    );
    assert_eq!(fs::read(sb.root.join("dup")).unwrap(), b"second");
    assert_eq!(rep.entries, 11);
}

#[test]
fn non_directory_cannot_replace_root() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.symlink("./", "/etc");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(matches!(err, ApplyError::ReplacesRoot { .. }), "{err}");
    assert!(fs::symlink_metadata(&sb.root).unwrap().is_dir());
}

#[test]
fn applies_compressed_layers_and_hashes_them() {
    use std::io::Write;
    use stowage_layer::{decompress, HashingReader};
    let mut t = Tar::new();
    for i in 0..50 {
        t.file(
            &format!("d{}/f{i}", i % 5),
            format!("content {i}").as_bytes(),
        );
    }
    let tar = t.bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let sb = Sandbox::new();
    let outer = HashingReader::new(&gz[..]);
    let mut inner = HashingReader::new(decompress(stowage_oci::Compression::Gzip, outer).unwrap());
    let rep = stowage_layer::apply_layer(&mut inner, &sb.root, &opts()).unwrap();
    assert_eq!(rep.entries, 50);
    assert_eq!(inner.digest(), stowage_oci::Digest::of(&tar));
    assert_eq!(inner.len(), tar.len() as u64);
    assert_eq!(fs::read(sb.root.join("d3/f13")).unwrap(), b"content 13");
}

/// The shape of the `many-small` image: ~50k small files. Run with
/// `--ignored --nocapture` to see the time; it asserts only correctness.
#[test]
#[ignore]
fn many_small_files() {
    let mut t = Tar::new();
    for d in 0..500 {
        t.dir(&format!("d{d}/"));
        for f in 0..100 {
            t.file(&format!("d{d}/f{f}"), format!("file {d}/{f}").as_bytes());
        }
    }
    let tar = t.bytes();
    let sb = Sandbox::new();
    let start = std::time::Instant::now();
    let rep = sb.apply(&tar).unwrap();
    eprintln!("applied {} entries in {:?}", rep.entries, start.elapsed());
    assert_eq!(rep.entries, 50_500);
    let dst = sb.dir("lower-flat");
    let start = std::time::Instant::now();
    let fr = stowage_layer::flatten(&[&sb.root], &dst, &opts()).unwrap();
    eprintln!("flattened {} files in {:?}", fr.files, start.elapsed());
    assert_eq!(fr.files, 50_000);
}
