//! Tar-split round trips: apply a tar while recording, replay it from the
//! snapshot, and get the very same bytes back.

use std::io::Read;
use stowage_layer::{apply_layer, replay_tar, ApplyOptions, TarSplitRecorder};

fn roundtrip(tar: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fs");
    std::fs::create_dir(&root).unwrap();
    let mut rec = TarSplitRecorder::new(tar).unwrap();
    apply_layer(&mut rec, &root, &ApplyOptions::default()).unwrap();
    let mut rest = Vec::new();
    rec.read_to_end(&mut rest).unwrap();
    let (split, size) = rec.finish().unwrap();
    assert_eq!(size as usize, tar.len());
    let mut out = Vec::new();
    let n = replay_tar(&split, &root, &mut out).unwrap();
    assert_eq!(n as usize, tar.len());
    assert!(out == tar, "replayed tar differs from the original");
    assert!(
        split.len() < tar.len(),
        "tar-split should not hold the bodies"
    );
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[test]
fn plain_gnu_pax_and_links_round_trip() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o755),
        "dir/",
        &[][..],
    )
    .unwrap();
    let body = vec![7u8; 10_000];
    b.append_data(
        &mut header(tar::EntryType::Regular, body.len() as u64, 0o644),
        "dir/file",
        &body[..],
    )
    .unwrap();
    let long = format!("dir/{}", "n".repeat(150));
    b.append_data(
        &mut header(tar::EntryType::Regular, 3, 0o600),
        &long,
        &b"abc"[..],
    )
    .unwrap();
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut h, "dir/link", "file").unwrap();
    let mut h = header(tar::EntryType::Link, 0, 0o644);
    b.append_link(&mut h, "dir/hard", "dir/file").unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0, 0o644),
        "dir/.wh.gone",
        &[][..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 512, 0o644),
        "exact-block",
        &[1u8; 512][..],
    )
    .unwrap();
    // PAX: a path record and an xattr.
    let mut b2 = b;
    b2.append_pax_extensions([
        ("path", &b"pax/named/file"[..]),
        ("SCHILY.xattr.user.k", &b"v"[..]),
    ])
    .unwrap();
    b2.append_data(
        &mut header(tar::EntryType::Regular, 5, 0o644),
        "placeholder",
        &b"hello"[..],
    )
    .unwrap();
    let mut tar = b2.into_inner().unwrap();
    tar.extend_from_slice(&[0u8; 1024]); // extra trailing zeros, as some producers write
    roundtrip(&tar);
}

#[test]
fn garbage_after_the_archive_is_kept() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 4, 0o644),
        "f",
        &b"data"[..],
    )
    .unwrap();
    let mut tar = b.into_inner().unwrap();
    tar.extend_from_slice(b"trailing bytes that are not a tar");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fs");
    std::fs::create_dir(&root).unwrap();
    let mut rec = TarSplitRecorder::new(&tar[..]).unwrap();
    // The apply may or may not accept trailing garbage; the record must keep it either way.
    let _ = apply_layer(&mut rec, &root, &ApplyOptions::default());
    let mut rest = Vec::new();
    rec.read_to_end(&mut rest).unwrap();
    let (split, _) = rec.finish().unwrap();
    let mut out = Vec::new();
    if replay_tar(&split, &root, &mut out).is_ok() {
        assert_eq!(out, tar);
    }
}

#[test]
fn replay_refuses_a_changed_file() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Regular, 4, 0o644),
        "f",
        &b"data"[..],
    )
    .unwrap();
    let tar = b.into_inner().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("fs");
    std::fs::create_dir(&root).unwrap();
    let mut rec = TarSplitRecorder::new(&tar[..]).unwrap();
    apply_layer(&mut rec, &root, &ApplyOptions::default()).unwrap();
    let (split, _) = rec.finish().unwrap();
    std::fs::write(root.join("f"), b"longer data").unwrap();
    let err = replay_tar(&split, &root, &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("longer"), "{err}");
}

/// Random trees: long names, PAX records, hard links, symlinks, empty
/// files and odd permissions all round-trip byte-exactly.
#[test]
fn random_trees_round_trip() {
    let mut seed: u64 = 0x9E3779B97F4A7C15;
    let mut rand = move |max: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % max.max(1)
    };
    for round in 0..40 {
        let mut b = tar::Builder::new(Vec::new());
        let mut files: Vec<String> = Vec::new();
        let mut dirs: Vec<String> = vec![String::new()];
        for i in 0..(5 + rand(40)) {
            let parent = dirs[rand(dirs.len() as u64) as usize].clone();
            let long = rand(5) == 0;
            let base = if long {
                format!("{}-{i}", "L".repeat(90 + rand(120) as usize))
            } else {
                format!("e{i}")
            };
            let path = if parent.is_empty() {
                base
            } else {
                format!("{parent}/{base}")
            };
            match rand(6) {
                0 => {
                    let mut h = header(tar::EntryType::Directory, 0, 0o700 | rand(0o7777) as u32);
                    b.append_data(&mut h, format!("{path}/"), &[][..]).unwrap();
                    dirs.push(path);
                }
                1 if !files.is_empty() => {
                    let target = files[rand(files.len() as u64) as usize].clone();
                    let mut h = header(tar::EntryType::Link, 0, 0o644);
                    b.append_link(&mut h, &path, &target).unwrap();
                }
                2 => {
                    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
                    b.append_link(
                        &mut h,
                        &path,
                        format!("../nowhere/{}", "x".repeat(rand(200) as usize)),
                    )
                    .unwrap();
                }
                3 => {
                    b.append_pax_extensions([(
                        "SCHILY.xattr.user.r",
                        format!("{round}-{i}").as_bytes(),
                    )])
                    .unwrap();
                    let body = vec![rand(256) as u8; rand(2000) as usize];
                    let mut h = header(
                        tar::EntryType::Regular,
                        body.len() as u64,
                        rand(0o7777) as u32,
                    );
                    b.append_data(&mut h, &path, &body[..]).unwrap();
                    files.push(path);
                }
                _ => {
                    let len = [0, 1, 511, 512, 513, 4096, rand(70_000)][rand(7) as usize] as usize;
                    let body: Vec<u8> = (0..len).map(|_| rand(256) as u8).collect();
                    let mut h = header(
                        tar::EntryType::Regular,
                        len as u64,
                        0o600 | rand(0o7777) as u32,
                    );
                    b.append_data(&mut h, &path, &body[..]).unwrap();
                    files.push(path);
                }
            }
        }
        let tar = b.into_inner().unwrap();
        roundtrip(&tar);
    }
}
