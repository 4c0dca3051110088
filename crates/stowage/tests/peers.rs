//! `stowage serve --registry-addr`: the store served to peers as a
//! read-only OCI registry, checked with the real clients (containerd's ctr
//! through a hosts.toml mirror, skopeo directly, stowage itself), and the
//! pull-through mirror.

mod common;
use common::containerd::Containerd;
use common::proxy::{self, Fault};
use common::{manifest_digest, pull_as_recipes, registry, scratch, sh, stowage};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Peer {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Peer {
    // The child is waited for in Drop.
    #[allow(clippy::zombie_processes)]
    fn start(dir: &Path, root: &Path, extra: &[&str]) -> Peer {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join("serve.log");
        let child = Command::new(common::bin())
            .arg("--root")
            .arg(root)
            .args(["--log-level", "info", "serve", "--cri-socket"])
            .arg(dir.join("cri.sock"))
            .args(["--registry-addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(at) = text.find("registry endpoint on http://") {
                let addr = text[at + "registry endpoint on http://".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .to_string();
                return Peer { child, addr, log };
            }
            assert!(Instant::now() < deadline, "serve did not start:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `hosts.toml` naming `mirror` for `registry` (origin in plain HTTP).
fn hosts(dir: &Path, registry: &str, mirror: &str) -> PathBuf {
    let d = dir.join(registry);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("hosts.toml"),
        format!(
            "server = \"http://{registry}\"\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

#[test]
fn a_store_of_recipes_serves_exact_blobs_to_containerd_and_skopeo() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    // The origin behind a proxy that counts layer downloads.
    let layer_gets = Arc::new(AtomicUsize::new(0));
    let g = layer_gets.clone();
    let p = proxy::start(&reg, move |m, path| {
        if m == "GET" && path.contains("/blobs/") {
            g.fetch_add(1, Ordering::SeqCst);
        }
        Fault::Pass
    });
    let img = format!("{}/corpus/debian-min:latest", p.addr);
    let root = work.path().join("store");
    let doc = pull_as_recipes(&root, &img);
    let peer = Peer::start(&work.path().join("peer"), &root, &[]);
    let before = layer_gets.load(Ordering::SeqCst);

    // containerd, with the peer as its mirror: every blob from the peer.
    let c = Containerd::start(&work.path().join("containerd"));
    let hosts_dir = hosts(&work.path().join("certs.d"), &p.addr, &peer.addr);
    c.ctr(&[
        "images",
        "pull",
        "--hosts-dir",
        hosts_dir.to_str().unwrap(),
        &img,
    ]);
    assert_eq!(
        layer_gets.load(Ordering::SeqCst),
        before,
        "containerd fetched blobs from the origin, not the peer"
    );
    let listed = String::from_utf8(c.ctr(&["images", "ls"]).stdout).unwrap();
    let want = manifest_digest(&reg, "corpus/debian-min", "latest").unwrap();
    assert!(listed.contains(&want), "{listed}");
    // ...and can export it (its blobs are all there, with their digests).
    let tar = work.path().join("ctr.tar");
    c.ctr(&["images", "export", tar.to_str().unwrap(), &img]);

    // skopeo, naming the peer directly (no ?ns=), verifies every digest.
    let layout = work.path().join("layout");
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--src-tls-verify=false",
            &format!("docker://{}/corpus/debian-min:latest", peer.addr),
            &format!("oci:{}:t", layout.display()),
        ],
    );

    // A snapshot changed under its recipe: the peer does not hand out a
    // complete wrong blob; the response breaks off instead.
    let chain = doc["layers"][1]["chainID"].as_str().unwrap()[7..].to_string();
    let target = root
        .join("snapshots")
        .join(chain)
        .join("fs/usr/bin/python3.11");
    let mut data = std::fs::read(&target).unwrap();
    data[1000] ^= 0xff;
    std::fs::write(&target, &data).unwrap();
    let layer = doc["layers"][1]["digest"].as_str().unwrap();
    let size = doc["layers"][1]["size"].as_u64().unwrap();
    let resp = reqwest::blocking::Client::new()
        .get(format!(
            "http://{}/v2/corpus/debian-min/blobs/{layer}",
            peer.addr
        ))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Either the read fails or it comes up short; never the whole size.
    if let Ok(b) = resp.bytes() {
        assert!(
            (b.len() as u64) < size,
            "a complete blob was served from a changed snapshot"
        );
    }
    let log = std::fs::read_to_string(&peer.log).unwrap();
    assert!(log.contains("not serving it"), "{log}");
}

#[test]
fn pull_through_fills_the_peer_and_serves_the_origin_digest() {
    let Some(reg) = registry() else { return };
    let work = scratch();
    let peer_root = work.path().join("peer-store");
    let peer = Peer::start(&work.path().join("peer"), &peer_root, &["--pull-through"]);
    let hosts_dir = hosts(&work.path().join("certs.d"), &reg, &peer.addr);
    let conf = work.path().join("stowage.toml");
    std::fs::write(
        &conf,
        format!("[registry]\nconfig_path = \"{}\"\n", hosts_dir.display()),
    )
    .unwrap();
    let img = format!("{reg}/corpus/many-small:latest");
    let client = work.path().join("client-store");
    let out = stowage(
        &client,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--log-level",
            "info",
            "pull",
            "-q",
            &img,
        ],
    )
    .ok();
    assert_eq!(
        out.stdout().trim(),
        manifest_digest(&reg, "corpus/many-small", "latest").unwrap()
    );
    // The peer pulled it through and keeps it.
    let names = stowage(&peer_root, &["images", "-q"]).ok().stdout();
    assert!(names.contains("corpus/many-small:latest"), "{names}");
    let log = std::fs::read_to_string(&peer.log).unwrap();
    assert!(log.contains("pulling through"), "{log}");
    // An unknown image through the peer: the peer says not found, the
    // client falls back to the origin and fails there, clearly.
    let r = stowage(
        &client,
        &[
            "--config",
            conf.to_str().unwrap(),
            "pull",
            "-q",
            &format!("{reg}/corpus/no-such-image:latest"),
        ],
    )
    .fails();
    assert!(r.stderr().contains("no-such-image"), "{}", r.stderr());
}
