//! Hostile layer tars: every case must fail naming the entry, or land inside
//! the root, and never write outside it.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use stowage_layer::{resolve_deferred_links, ApplyError, DeferredLink};
use tar::EntryType;

#[test]
fn dotdot_paths_are_rejected() {
    for name in [
        "../escape",
        "a/../../escape",
        "./../secret.txt",
        "/../secret.txt",
        "a/b/../../../outside/x",
    ] {
        let sb = Sandbox::new();
        let mut t = Tar::new();
        t.dir("a/").raw(
            Tar::header(name.as_bytes(), EntryType::Regular, 4, 0o644),
            b"evil",
        );
        let err = sb.apply(&t.bytes()).unwrap_err();
        assert!(
            matches!(err, ApplyError::PathEscape { ref path } if path == Path::new(name)),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
        sb.assert_outside_untouched();
    }
}

#[test]
fn absolute_paths_land_inside_root() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.file("/etc/x", b"inside").file("///./usr//./bin/y", b"y");
    let rep = sb.apply(&t.bytes()).unwrap();
    assert_eq!(fs::read(sb.root.join("etc/x")).unwrap(), b"inside");
    assert_eq!(fs::read(sb.root.join("usr/bin/y")).unwrap(), b"y");
    assert_eq!(rep.entries, 2);
    assert_eq!(rep.bytes, 7);
    sb.assert_outside_untouched();
}

#[test]
fn file_through_symlink_is_rejected() {
    for target in [
        "ABS",
        "../outside",
        "../../../../../../../../tmp/../outside",
    ] {
        let sb = Sandbox::new();
        let target = if target == "ABS" {
            sb.outside.to_str().unwrap().to_string()
        } else {
            target.to_string()
        };
        let mut t = Tar::new();
        t.symlink("evil", &target)
            .file("evil/passwd", b"root::0:0::/:/bin/sh\n");
        let err = sb.apply(&t.bytes()).unwrap_err();
        match &err {
            ApplyError::ParentSymlink { path, parent } => {
                assert_eq!(path, Path::new("evil/passwd"));
                assert_eq!(parent, Path::new("evil"));
            }
            other => panic!("{target}: unexpected {other}"),
        }
        assert_eq!(
            err.to_string(),
            "entry \"evil/passwd\": parent \"evil\" is a symlink"
        );
        sb.assert_outside_untouched();
    }
}

#[test]
fn symlink_chains_are_not_followed() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.symlink("a", "b")
        .symlink("b", sb.outside.to_str().unwrap())
        .file("a/x", b"evil");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::ParentSymlink { ref path, .. } if path == Path::new("a/x")),
        "{err}"
    );
    sb.assert_outside_untouched();

    // A symlink deeper down, pointing up and out, then a directory under it.
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("c/")
        .symlink("c/d", "../../outside")
        .dir("c/d/e/")
        .file("c/d/e/f", b"evil");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::ParentSymlink { ref path, ref parent } if path == Path::new("c/d/e/") && parent == Path::new("c/d")),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn regular_file_replaces_symlink_instead_of_writing_through() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.symlink("f", "../secret.txt").file("f", b"new content");
    let abs = format!("{}", sb.secret.display());
    t.symlink("g", &abs).file("g", b"other");
    sb.apply(&t.bytes()).unwrap();
    for (name, content) in [("f", &b"new content"[..]), ("g", b"other")] {
        let md = fs::symlink_metadata(sb.root.join(name)).unwrap();
        assert!(md.is_file(), "{name} should be a regular file");
        assert_eq!(fs::read(sb.root.join(name)).unwrap(), content);
    }
    sb.assert_outside_untouched();
}

#[test]
fn symlink_replaced_by_directory_then_file_lands_inside() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.symlink("d", sb.outside.to_str().unwrap())
        .dir("d/")
        .file("d/f", b"inside");
    sb.apply(&t.bytes()).unwrap();
    let md = fs::symlink_metadata(sb.root.join("d")).unwrap();
    assert!(md.is_dir() && !md.file_type().is_symlink());
    assert_eq!(fs::read(sb.root.join("d/f")).unwrap(), b"inside");
    sb.assert_outside_untouched();
}

#[test]
fn hard_link_out_of_root_is_rejected() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.hardlink("h", "../secret.txt");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::LinkTargetEscape { ref path, ref target }
        if path == Path::new("h") && target == Path::new("../secret.txt")),
        "{err}"
    );
    assert!(!sb.root.join("h").exists());
    sb.assert_outside_untouched();
}

#[test]
fn absolute_hard_link_is_deferred_and_fails_without_lower() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("bin/").hardlink("bin/pw", "/etc/passwd");
    let rep = sb.apply(&t.bytes()).unwrap();
    assert_eq!(
        rep.deferred_links,
        vec![DeferredLink {
            path: "bin/pw".into(),
            target: "etc/passwd".into()
        }]
    );
    assert!(!sb.root.join("bin/pw").exists());
    let err = resolve_deferred_links(&sb.root, &[], &rep.deferred_links, &opts()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "entry \"bin/pw\": hard link target \"etc/passwd\" not found in this layer or any lower layer"
    );
    assert!(!sb.root.join("bin/pw").exists());
    sb.assert_outside_untouched();
}

#[test]
fn hard_link_through_symlink_is_rejected() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.symlink("s", sb.parent.path().to_str().unwrap())
        .hardlink("h", "s/secret.txt");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::LinkTargetViaSymlink { ref path, ref via, .. }
        if path == Path::new("h") && via == Path::new("s")),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn pax_long_name_climbing_out_is_rejected() {
    let sb = Sandbox::new();
    let name = format!("{}{}", "a/".repeat(30), "../".repeat(40) + "escape");
    let mut t = Tar::new();
    t.pax(&[("path", name.as_bytes())]).raw(
        Tar::header(b"harmless", EntryType::Regular, 4, 0o644),
        b"evil",
    );
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::PathEscape { ref path } if path == Path::new(&name)),
        "{err}"
    );
    sb.assert_outside_untouched();
    assert!(!sb.root.join("harmless").exists());
}

#[test]
fn gnu_long_name_climbing_out_is_rejected() {
    let sb = Sandbox::new();
    let name = "../".repeat(40) + "escape";
    let mut t = Tar::new();
    t.long_name(name.as_bytes()).raw(
        Tar::header(b"harmless", EntryType::Regular, 4, 0o644),
        b"evil",
    );
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::PathEscape { ref path } if path == Path::new(&name)),
        "{err}"
    );
    sb.assert_outside_untouched();

    // And a GNU long link name for a hard link.
    let sb = Sandbox::new();
    let mut t = Tar::new();
    let mut data = name.clone().into_bytes();
    data.push(0);
    t.raw(
        Tar::header(
            b"././@LongLink",
            EntryType::GNULongLink,
            data.len() as u64,
            0o644,
        ),
        &data,
    );
    t.raw(Tar::header(b"h", EntryType::Link, 0, 0o644), b"");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(matches!(err, ApplyError::LinkTargetEscape { .. }), "{err}");
    sb.assert_outside_untouched();
}

#[test]
fn long_names_inside_root_work() {
    let sb = Sandbox::new();
    let deep = "d".repeat(200) + "/" + &"e".repeat(200);
    let mut t = Tar::new();
    t.long_name(format!("{deep}/gnu").as_bytes())
        .raw(Tar::header(b"x", EntryType::Regular, 3, 0o644), b"gnu");
    t.pax(&[("path", format!("{deep}/pax").as_bytes())])
        .raw(Tar::header(b"y", EntryType::Regular, 3, 0o644), b"pax");
    sb.apply(&t.bytes()).unwrap();
    assert_eq!(fs::read(sb.root.join(&deep).join("gnu")).unwrap(), b"gnu");
    assert_eq!(fs::read(sb.root.join(&deep).join("pax")).unwrap(), b"pax");
}

#[test]
fn whiteouts_climbing_out_are_rejected() {
    for name in [
        "../.wh.secret.txt",
        "a/../../.wh.secret.txt",
        "../outside/.wh..wh..opq",
    ] {
        let sb = Sandbox::new();
        let mut t = Tar::new();
        t.dir("a/").raw(
            Tar::header(name.as_bytes(), EntryType::Regular, 0, 0o644),
            b"",
        );
        let err = sb.apply(&t.bytes()).unwrap_err();
        assert!(
            matches!(err, ApplyError::PathEscape { ref path } if path == Path::new(name)),
            "{name}: {err}"
        );
        sb.assert_outside_untouched();
    }
    // `.wh...` would white out `..`.
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("a/")
        .raw(Tar::header(b"a/.wh...", EntryType::Regular, 0, 0o644), b"");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::BadWhiteout { ref path } if path == Path::new("a/.wh...")),
        "{err}"
    );
    sb.assert_outside_untouched();
}

#[test]
fn parent_that_is_a_file_is_rejected() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.file("f", b"x").file("f/g", b"y");
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::ParentNotDir { ref path, ref parent }
        if path == Path::new("f/g") && parent == Path::new("f")),
        "{err}"
    );
}

#[test]
fn oversized_metadata_is_rejected() {
    // A PAX record set larger than the whole budget is stopped while it is read.
    let big = vec![b'a'; 2 << 20];
    let mut t = Tar::new();
    t.file("first", b"1")
        .pax(&[("comment", &big)])
        .file("second", b"2");
    let sb = Sandbox::new();
    let err = sb.apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::MetadataTooLarge { ref after, .. } if after.as_deref() == Some(Path::new("first"))),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("reading layer tar after entry \"first\": extension headers"),
        "{err}"
    );

    // Just over 1 MiB fits the read budget but not the PAX limit.
    let big = vec![b'a'; (1 << 20) + 10];
    let mut t = Tar::new();
    t.pax(&[("comment", &big)]).file("second", b"2");
    let err = Sandbox::new().apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::PaxTooLarge { ref path, .. } if path == Path::new("second")),
        "{err}"
    );

    // Paths longer than PATH_MAX.
    let long = "a/".repeat(3000);
    let mut t = Tar::new();
    t.long_name(long.as_bytes())
        .raw(Tar::header(b"x", EntryType::Regular, 0, 0o644), b"");
    let err = Sandbox::new().apply(&t.bytes()).unwrap_err();
    assert!(
        matches!(err, ApplyError::TooLong { len: 6000, .. }),
        "{err}"
    );
    assert!(
        err.to_string().len() < 600,
        "error message not bounded: {err}"
    );
}

#[test]
fn whole_stream_is_consumed() {
    let mut t = Tar::new();
    t.dir("d/").file("d/f", &[7u8; 1000]).symlink("d/s", "f");
    let mut bytes = t.bytes();
    // Pad to a full 10 KiB record plus some, as GNU tar and Go do.
    bytes.resize(bytes.len().next_multiple_of(10240) + 4096, 0);
    let sb = Sandbox::new();
    let mut r = Counting {
        inner: &bytes[..],
        n: 0,
    };
    stowage_layer::apply_layer(&mut r, &sb.root, &opts()).unwrap();
    assert_eq!(r.n, bytes.len() as u64);
}

#[test]
fn nothing_escapes_with_a_mix_of_tricks() {
    let sb = Sandbox::new();
    let mut t = Tar::new();
    t.dir("x/")
        .symlink("x/up", "../..")
        .symlink("x/abs", sb.parent.path().to_str().unwrap())
        .file("x/up", b"replaced")
        .dir("x/abs/")
        .file("x/abs/secret.txt", b"not the secret");
    sb.apply(&t.bytes()).unwrap();
    assert_eq!(fs::read(sb.root.join("x/up")).unwrap(), b"replaced");
    assert_eq!(
        fs::read(sb.root.join("x/abs/secret.txt")).unwrap(),
        b"not the secret"
    );
    sb.assert_outside_untouched();
}
