//! End to end: `stowage serve` on a temporary socket, driven by a CRI client
//! that shares no code with it (tests/cri/client.py: Python grpcio with stubs
//! generated from the CRI proto by Debian's python3-grpc-tools), against the
//! real registry. The CLI works on the same root at the same time.

mod common;

use common::push::{push_image, tarb::Tar};
use common::{registry, scratch, stowage};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const PYTHON: &str = "/usr/bin/python3";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn client_py() -> PathBuf {
    repo_root().join("tests/cri/client.py")
}

/// Python stubs, generated once per test binary into a temporary directory.
fn stubs() -> &'static Path {
    static STUBS: OnceLock<tempfile::TempDir> = OnceLock::new();
    STUBS
        .get_or_init(|| {
            let dir = tempfile::Builder::new()
                .prefix("stowage-cri-stubs-")
                .tempdir()
                .unwrap();
            let out = Command::new("sh")
                .arg(repo_root().join("tests/cri/gen_stubs.sh"))
                .arg(dir.path())
                .output()
                .expect("run gen_stubs.sh");
            assert!(
                out.status.success(),
                "generating the CRI stubs failed (is python3-grpc-tools installed?):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            dir
        })
        .path()
}

struct Server {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    root: PathBuf,
}

impl Server {
    /// Start `stowage --root DIR/root serve --cri-socket DIR/cri.sock` and
    /// wait until it answers.
    fn start(dir: &Path, config: Option<&str>, extra: &[&str]) -> Server {
        Server::start_at(dir, &dir.join("cri.sock"), config, extra)
    }

    fn start_at(dir: &Path, socket: &Path, config: Option<&str>, extra: &[&str]) -> Server {
        let root = dir.join("root");
        let socket = socket.to_path_buf();
        let log = dir.join("serve.log");
        let mut cmd = Command::new(common::bin());
        cmd.arg("--root").arg(&root).args(["--log-level", "info"]);
        if let Some(c) = config {
            // A containerd config.toml has [plugins]; anything else is a stowage.toml.
            let (file, flag) = if c.contains("[plugins") {
                ("containerd.toml", "--containerd-config")
            } else {
                ("stowage.toml", "--config")
            };
            let p = dir.join(file);
            std::fs::write(&p, c).unwrap();
            cmd.arg(flag).arg(p);
        }
        cmd.arg("serve")
            .arg("--cri-socket")
            .arg(&socket)
            .args(extra);
        let child = cmd
            .env_remove("STOWAGE_ROOT")
            .env_remove("STOWAGE_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start stowage serve");
        let mut s = Server {
            child: Some(child),
            socket,
            log,
            root,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = s.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("stowage serve exited ({st}) before answering:\n{}", s.log());
            }
            if s.socket.exists() && s.call(&["--timeout", "2", "list"])["ok"] == true {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "stowage serve did not answer in 60s:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn client(&self) -> Command {
        let mut c = Command::new(PYTHON);
        c.arg(client_py())
            .arg("--socket")
            .arg(&self.socket)
            .arg("--stubs")
            .arg(stubs());
        c
    }

    /// Run one client command; its JSON answer.
    fn call(&self, args: &[&str]) -> Value {
        let out = self.client().args(args).output().expect("run client.py");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "client.py {args:?}: no JSON ({e}):\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// A call that must succeed; its result.
    fn ok(&self, args: &[&str]) -> Value {
        let v = self.call(args);
        assert_eq!(
            v["ok"],
            true,
            "{args:?} failed: {v:#}\nserver log:\n{}",
            self.log()
        );
        v["result"].clone()
    }

    /// A call that must fail with `code`; its details.
    fn fails(&self, args: &[&str], code: &str) -> String {
        let v = self.call(args);
        assert_eq!(v["ok"], false, "{args:?} should fail with {code}: {v:#}");
        assert_eq!(v["code"], code, "{args:?}: {v:#}");
        v["details"].as_str().unwrap_or("").to_string()
    }

    fn images(&self) -> Vec<Value> {
        self.ok(&["list"])["images"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        strip_ansi(&raw)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// SIGTERM and wait for the exit.
    fn terminate(mut self) -> (ExitStatus, String) {
        self.signal(libc::SIGTERM);
        let st = wait_exit(self.child.as_mut().unwrap(), Duration::from_secs(30));
        self.child = None;
        (st, self.log())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Bytes and inodes of a tree as `du` counts them (blocks, each inode once).
fn du(top: &Path) -> (u64, u64) {
    let mut seen = HashSet::new();
    let (mut bytes, mut inodes) = (0, 0);
    let mut stack = vec![top.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert(md.ino()) {
            continue;
        }
        bytes += md.blocks() * 512;
        inodes += 1;
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    (bytes, inodes)
}

/// Pseudo-random bytes that gzip cannot shrink much.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Push a small two-layer image `repo:tag`; its config digest (the CRI id).
fn push_small(reg: &str, repo: &str, tag: &str, seed: u64) -> common::push::Pushed {
    let l1 = Tar::new()
        .dir("data", 0o755)
        .file("data/a.bin", &noise(seed, 150_000))
        .finish();
    let l2 = Tar::new()
        .file("data/b.bin", &noise(seed + 1, 120_000))
        .finish();
    push_image(reg, repo, tag, &[l1, l2], None)
}

/// The registry's digest of `repo:tag` and the manifest itself.
fn registry_manifest(reg: &str, repo: &str, tag: &str) -> (String, Value) {
    let resp = reqwest::blocking::Client::new()
        .get(format!("http://{reg}/v2/{repo}/manifests/{tag}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, \
             application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )
        .send()
        .unwrap();
    assert!(
        resp.status().is_success(),
        "GET manifest {repo}:{tag}: {}",
        resp.status()
    );
    let bytes = resp.bytes().unwrap();
    (
        common::push::sha(&bytes),
        serde_json::from_slice(&bytes).unwrap(),
    )
}

// ---------------------------------------------------------------------------
// A proxy in front of the registry that can slow down, stall or trickle blob
// downloads, and counts blob GETs.

#[derive(Clone, Copy, Debug)]
enum Mode {
    Pass,
    /// Wait this long before answering a blob GET.
    Delay(Duration),
    /// Send the headers and a few bytes of a blob, then nothing (for 20s).
    Stall,
    /// Send a blob one byte every 100ms.
    Trickle,
}

struct SlowProxy {
    addr: String,
    mode: Arc<Mutex<Mode>>,
    blob_gets: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

impl SlowProxy {
    fn start(upstream: &str) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let p = SlowProxy {
            addr,
            mode: Arc::new(Mutex::new(Mode::Pass)),
            blob_gets: Arc::default(),
            stop: Arc::default(),
        };
        let (mode, gets, stop, upstream) = (
            p.mode.clone(),
            p.blob_gets.clone(),
            p.stop.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (mode, gets, stop, upstream) =
                    (mode.clone(), gets.clone(), stop.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = proxy_one(conn, &upstream, &mode, &gets, &stop);
                });
            }
        });
        p
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn gets(&self, digest: &str) -> usize {
        self.blob_gets
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.ends_with(digest))
            .map(|(_, v)| *v)
            .sum()
    }
}

fn proxy_one(
    client: TcpStream,
    upstream: &str,
    mode: &Mutex<Mode>,
    gets: &Mutex<HashMap<String, usize>>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if first.is_empty() {
            first = line.clone();
        }
        if line == "\r\n" {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.extend_from_slice(line.as_bytes());
        }
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head)?;
    up.write_all(b"Connection: close\r\n\r\n")?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    let (rhead, body) = resp.split_at(split);
    let mut out = client;
    if method == "GET" && path.contains("/blobs/sha256:") {
        *gets.lock().unwrap().entry(path.clone()).or_default() += 1;
    }
    // Layers only are slowed: manifests and configs (small) pass untouched.
    if !(method == "GET" && path.contains("/blobs/sha256:") && body.len() > 4096) {
        out.write_all(&resp)?;
        return Ok(());
    }
    let m = *mode.lock().unwrap();
    match m {
        Mode::Pass => out.write_all(&resp)?,
        Mode::Delay(d) => {
            std::thread::sleep(d);
            out.write_all(&resp)?;
        }
        Mode::Stall => {
            out.write_all(rhead)?;
            out.write_all(&body[..body.len().min(16)])?;
            out.flush()?;
            let until = Instant::now() + Duration::from_secs(20);
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Mode::Trickle => {
            out.write_all(rhead)?;
            for b in body {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                out.write_all(&[*b])?;
                out.flush()?;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------

/// pull → list → status (verbose) → fsinfo; the CLI sees what CRI pulled and
/// CRI sees what the CLI pulled, on one root at the same time; remove.
#[test]
fn cri_pull_list_status_fsinfo_remove_and_the_cli_agrees() {
    let Some(reg) = registry() else { return };
    let dir = scratch();
    let s = Server::start(dir.path(), None, &[]);

    let md = std::fs::metadata(&s.socket).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(md.permissions().mode() & 0o777, 0o660, "socket mode");
    assert!(s.images().is_empty());

    // Pull over CRI.
    let image = format!("{reg}/corpus/debian-min:latest");
    let (manifest_digest, manifest) = registry_manifest(&reg, "corpus/debian-min", "latest");
    assert!(
        manifest["layers"].is_array(),
        "corpus/debian-min should be a single-platform manifest"
    );
    let config_digest = manifest["config"]["digest"].as_str().unwrap().to_string();
    let size: u64 = manifest["config"]["size"].as_u64().unwrap()
        + manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>();
    let pulled = s.ok(&["pull", &image]);
    assert_eq!(
        pulled["image_ref"],
        config_digest.as_str(),
        "PullImage returns the image id (config digest)"
    );

    // List: the id, tags, digests and size kubelet expects.
    let images = s.images();
    assert_eq!(images.len(), 1, "{images:#?}");
    let img = &images[0];
    assert_eq!(img["id"], config_digest.as_str());
    assert_eq!(img["repo_tags"], serde_json::json!([image]));
    assert_eq!(
        img["repo_digests"],
        serde_json::json!([format!("{reg}/corpus/debian-min@{manifest_digest}")])
    );
    assert_eq!(img["size"].as_str().unwrap().parse::<u64>().unwrap(), size);
    assert!(img.get("pinned").is_none() || img["pinned"] == false);
    let filtered = s.ok(&["list", "--filter", &image]);
    assert_eq!(filtered["images"].as_array().map(Vec::len), Some(1));
    let none = s.ok(&["list", "--filter", &format!("{reg}/corpus/not-here:1")]);
    assert!(none.get("images").is_none() || none["images"].as_array().unwrap().is_empty());

    // Status by every name kubelet and crictl use.
    let short_id = &config_digest["sha256:".len().."sha256:".len() + 12];
    for spec in [
        image.clone(),
        format!("{reg}/corpus/debian-min"),
        config_digest.clone(),
        short_id.to_string(),
        format!("{reg}/corpus/debian-min@{manifest_digest}"),
    ] {
        let st = s.ok(&["status", &spec]);
        assert_eq!(st["image"]["id"], config_digest.as_str(), "status {spec}");
        assert!(st.get("info").is_none(), "info only when verbose");
    }
    let v = s.call(&["status", "--verbose", &image]);
    assert_eq!(v["ok"], true, "{v:#}");
    let info = &v["info"]["info"];
    assert_eq!(info["id"], config_digest.as_str());
    assert_eq!(info["policy"], "keep");
    assert_eq!(info["origin"]["registry"], reg.as_str());
    assert_eq!(info["origin"]["repository"], "corpus/debian-min");
    let layers = info["layers"].as_array().unwrap();
    assert_eq!(layers.len(), manifest["layers"].as_array().unwrap().len());
    for (l, m) in layers.iter().zip(manifest["layers"].as_array().unwrap()) {
        assert_eq!(l["digest"], m["digest"]);
        let forms: Vec<&str> = l["forms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["form"].as_str().unwrap())
            .collect();
        assert!(
            forms.contains(&"blob") && forms.contains(&"snapshot"),
            "policy keep keeps blob and snapshot: {forms:?}"
        );
    }
    assert!(info["imageSpec"]["rootfs"]["diff_ids"].is_array());

    // A multi-platform image whose host manifest is this very image: one CRI
    // image (one id) with two tags; its repo digest is the index's digest.
    let (index_digest, index) = registry_manifest(&reg, "corpus/multi", "latest");
    let host = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == common::push::host_arch());
    if host.is_some_and(|m| m["digest"] == manifest_digest.as_str()) {
        let multi = format!("{reg}/corpus/multi:latest");
        let r = s.ok(&["pull", &multi]);
        assert_eq!(r["image_ref"], config_digest.as_str());
        let images = s.images();
        assert_eq!(images.len(), 1, "{images:#?}");
        assert_eq!(images[0]["repo_tags"], serde_json::json!([image, multi]));
        assert_eq!(
            images[0]["repo_digests"],
            serde_json::json!([
                format!("{reg}/corpus/debian-min@{manifest_digest}"),
                format!("{reg}/corpus/multi@{index_digest}")
            ])
        );
        let st = s.ok(&["status", &format!("{reg}/corpus/multi@{index_digest}")]);
        assert_eq!(st["image"]["id"], config_digest.as_str());
    } else {
        eprintln!("corpus/multi has no {} manifest equal to corpus/debian-min: multi-platform check skipped", common::push::host_arch());
    }

    // ImageFsInfo: what snapshots/ and blobs/ take, counted independently here.
    let fs = s.ok(&["fsinfo"]);
    let fss = fs["image_filesystems"].as_array().unwrap();
    assert!(!fss.is_empty());
    let (sb, si) = du(&s.root.join("snapshots"));
    let (bb, bi) = du(&s.root.join("blobs"));
    let num = |v: &Value| {
        v["value"]
            .as_str()
            .map(|x| x.parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    let used: u64 = fss.iter().map(|f| num(&f["used_bytes"])).sum();
    let inodes: u64 = fss.iter().map(|f| num(&f["inodes_used"])).sum();
    assert_eq!((used, inodes), (sb + bb, si + bi), "fsinfo {fs:#}");
    assert!(
        sb > 50 << 20,
        "debian-min unpacks to more than 50 MiB: {sb}"
    );
    for f in fss {
        let mp = f["fs_id"]["mountpoint"].as_str().unwrap();
        assert!(
            Path::new(mp).is_absolute() && Path::new(mp).exists(),
            "mountpoint {mp}"
        );
        assert!(f["timestamp"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    }

    // The CLI, on the same root while the server runs, sees the CRI pull...
    let names = stowage(&s.root, &["images", "-q"]).ok().stdout();
    assert!(names.lines().any(|l| l == image), "CLI images: {names}");
    // ...and CRI sees what the CLI pulls and tags.
    let small = push_small(&reg, "test/cri-cli", "v1", 11);
    let cli_image = format!("{reg}/test/cri-cli:v1");
    stowage(&s.root, &["pull", "-q", "--plain-http", &cli_image]).ok();
    stowage(
        &s.root,
        &["tag", &cli_image, &format!("{reg}/test/cri-cli:alias")],
    )
    .ok();
    let images = s.images();
    assert_eq!(images.len(), 2, "{images:#?}");
    let other = images
        .iter()
        .find(|i| i["id"] == small.config.as_str())
        .expect("the CLI-pulled image over CRI");
    assert_eq!(
        other["repo_tags"],
        serde_json::json!([format!("{reg}/test/cri-cli:alias"), cli_image]),
        "one image, two names"
    );
    assert_eq!(
        other["repo_digests"],
        serde_json::json!([format!("{reg}/test/cri-cli@{}", small.manifest)])
    );

    // Remove by id removes every name of it (as containerd does).
    s.ok(&["remove", &small.config]);
    let names = stowage(&s.root, &["images", "-q"]).ok().stdout();
    assert!(!names.contains("test/cri-cli"), "CLI still lists {names}");
    // Remove by name; then nothing is left, and removing again is fine.
    s.ok(&["remove", &image]);
    assert!(s.images().is_empty());
    let st = s.ok(&["status", &image]);
    assert!(st.get("image").is_none(), "{st:#}");
    s.ok(&["remove", &image]);
    assert!(stowage(&s.root, &["images", "-q"])
        .ok()
        .stdout()
        .trim()
        .is_empty());

    let socket = s.socket.clone();
    let (st, log) = s.terminate();
    assert!(st.success(), "SIGTERM exit {st}:\n{log}");
    assert!(!socket.exists(), "socket left behind");
}

/// Malformed references, unknown images, registries that refuse or lack the
/// image: a status with a useful message each, and the server keeps serving.
#[test]
fn cri_bad_input_answers_with_statuses_and_keeps_serving() {
    let Some(reg) = registry() else { return };
    let dir = scratch();
    let s = Server::start(dir.path(), None, &[]);

    let d = s.fails(&["pull", "Not A::Valid ref"], "INVALID_ARGUMENT");
    assert!(d.contains("invalid image reference"), "{d}");
    s.fails(&["pull", ""], "INVALID_ARGUMENT");
    s.fails(
        &["pull", &format!("{reg}/UPPER/case:1")],
        "INVALID_ARGUMENT",
    );
    let d = s.fails(&["status", "UPPER/Case:x"], "INVALID_ARGUMENT");
    assert!(d.contains("UPPER/Case"), "{d}");
    s.fails(
        &[
            "pull",
            "--auth",
            "%%%not-base64",
            &format!("{reg}/corpus/x:1"),
        ],
        "INVALID_ARGUMENT",
    );

    // Unknown images: an empty status, an idempotent remove.
    let unknown = format!("{reg}/corpus/never-pulled:latest");
    let st = s.ok(&["status", &unknown]);
    assert!(st.get("image").is_none(), "{st:#}");
    s.ok(&[
        "status",
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]);
    s.ok(&["remove", &unknown]);

    // A registry port that refuses connections.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = s.fails(
        &[
            "pull",
            &format!("127.0.0.1:{port}/corpus/debian-min:latest"),
        ],
        "UNAVAILABLE",
    );
    assert!(d.contains(&format!("127.0.0.1:{port}")), "{d}");
    // A repository the registry does not have.
    let d = s.fails(
        &["pull", &format!("{reg}/corpus/does-not-exist:latest")],
        "NOT_FOUND",
    );
    assert!(d.contains("does-not-exist"), "{d}");
    assert!(s.images().is_empty(), "a failed pull leaves no image");

    // Still serving: a good pull (credentials are passed; this registry
    // does not ask for them) and a list.
    let small = push_small(&reg, "test/cri-bad", "v1", 21);
    let r = s.ok(&[
        "pull",
        "--username",
        "u",
        "--password",
        "p",
        &format!("{reg}/test/cri-bad:v1"),
    ]);
    assert_eq!(r["image_ref"], small.config.as_str());
    assert_eq!(s.images().len(), 1);
    let (st, log) = s.terminate();
    assert!(st.success(), "{log}");
}

/// Concurrent PullImage calls of one image share one download; a remove
/// while a pull is writing does no harm.
#[test]
fn cri_concurrent_pulls_share_one_download() {
    let Some(reg) = registry() else { return };
    let small = push_small(&reg, "test/cri-shared", "v1", 31);
    let proxy = SlowProxy::start(&reg);
    proxy.set(Mode::Delay(Duration::from_millis(1500)));
    let dir = scratch();
    let s = Server::start(dir.path(), None, &[]);
    let image = format!("{}/test/cri-shared:v1", proxy.addr);

    let v = s.call(&["pull-many", &image, "3"]);
    assert_eq!(v["ok"], true, "{v:#}\n{}", s.log());
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["result"]["image_ref"], small.config.as_str(), "{r:#}");
    }
    for l in &small.layers {
        assert_eq!(
            proxy.gets(l),
            1,
            "layer {l} fetched {} times",
            proxy.gets(l)
        );
    }
    assert_eq!(
        proxy.gets(&small.config),
        1,
        "config fetched more than once"
    );
    let log = s.log();
    assert_eq!(log.matches("pull started").count(), 1, "{log}");
    assert_eq!(
        log.matches("joining the pull already in flight").count(),
        2,
        "{log}"
    );

    // Remove while a pull of the same name is writing: both succeed, and the
    // pull's result is a whole image.
    s.ok(&["remove", &image]);
    let small2 = push_small(&reg, "test/cri-shared", "v2", 32);
    let image2 = format!("{}/test/cri-shared:v2", proxy.addr);
    let bg = s
        .client()
        .args(["pull", &image2])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the second pull to start", Duration::from_secs(20), || {
        s.log().matches("pull started").count() == 2
    });
    s.ok(&["remove", &image2]);
    let out = bg.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["result"]["image_ref"], small2.config.as_str());
    let st = s.ok(&["status", "--verbose", &image2]);
    assert_eq!(st["image"]["id"], small2.config.as_str());
    stowage(
        &s.root,
        &[
            "unpack",
            &image2,
            dir.path().join("rootfs").to_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(
        std::fs::read(dir.path().join("rootfs/data/b.bin")).unwrap(),
        noise(33, 120_000)
    );

    // SIGTERM drains: a pull in flight finishes and answers, then the server
    // exits 0; the image is there for the CLI.
    let small3 = push_small(&reg, "test/cri-shared", "v3", 35);
    let image3 = format!("{}/test/cri-shared:v3", proxy.addr);
    let bg = s
        .client()
        .args(["pull", &image3])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the third pull to start", Duration::from_secs(20), || {
        s.log().matches("pull started").count() == 3
    });
    let (root, socket) = (s.root.clone(), s.socket.clone());
    let (st, log) = s.terminate();
    assert!(st.success(), "SIGTERM exit {st}:\n{log}");
    let signalled = log.find("SIGTERM").expect("SIGTERM logged");
    let finished = log.rfind("pull finished").expect("pull finished logged");
    assert!(signalled < finished, "drained after the signal:\n{log}");
    let out = bg.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["result"]["image_ref"], small3.config.as_str());
    assert!(!socket.exists());
    let names = stowage(&root, &["images", "-q"]).ok().stdout();
    assert!(names.contains("test/cri-shared:v3"), "{names}");
}

/// A pull with no progress for image_pull_progress_timeout fails with
/// DeadlineExceeded; a pull whose only caller goes away is cancelled; the
/// server keeps serving and a later pull of the same image works.
#[test]
fn cri_pull_timeout_and_cancellation() {
    let Some(reg) = registry() else { return };
    let small = push_small(&reg, "test/cri-slow", "v1", 41);
    let proxy = SlowProxy::start(&reg);
    let dir = scratch();
    let s = Server::start(
        dir.path(),
        Some("[cri]\nimage_pull_progress_timeout = \"2s\"\n"),
        &[],
    );
    let image = format!("{}/test/cri-slow:v1", proxy.addr);

    // Stalled download: DeadlineExceeded after ~2s of silence.
    proxy.set(Mode::Stall);
    let started = Instant::now();
    let d = s.fails(&["pull", &image], "DEADLINE_EXCEEDED");
    assert!(
        d.contains("no progress for 2s") && d.contains("image_pull_progress_timeout"),
        "{d}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    assert!(s.ok(&["status", &image]).get("image").is_none());

    // A trickling download makes progress, so only the caller's own deadline
    // ends the call; with no caller left, the server cancels the pull.
    proxy.set(Mode::Trickle);
    let v = s.call(&["--timeout", "3", "pull", &image]);
    // The caller's deadline: the client or tonic (which honours grpc-timeout
    // and answers CANCELLED "Timeout expired") ends the call, whichever is first.
    assert!(
        v["code"] == "DEADLINE_EXCEEDED" || v["code"] == "CANCELLED",
        "{v:#}"
    );
    assert!(v["seconds"].as_f64().unwrap() < 10.0, "{v:#}");
    wait_for(
        "the server to cancel the abandoned pull",
        Duration::from_secs(20),
        || {
            let log = s.log();
            log.contains("every caller of this pull went away") && log.contains("pull cancelled")
        },
    );
    assert!(s.ok(&["status", &image]).get("image").is_none());

    // Healthy again: the same image pulls (a new pull, not the cancelled one).
    proxy.set(Mode::Pass);
    let r = s.ok(&["pull", &image]);
    assert_eq!(r["image_ref"], small.config.as_str());
    let (st, log) = s.terminate();
    assert!(st.success(), "{log}");
}

/// containerd's `discard_unpacked_layers` (from a containerd config.toml)
/// applies to CRI pulls, and the verbose status says which forms each layer
/// keeps and why the blob is gone.
#[test]
fn cri_pull_follows_containerd_discard_unpacked_layers() {
    let Some(reg) = registry() else { return };
    let small = push_small(&reg, "test/cri-discard", "v1", 51);
    let dir = scratch();
    let config =
        "version = 3\n[plugins.'io.containerd.cri.v1.images']\ndiscard_unpacked_layers = true\n";
    let s = Server::start(dir.path(), Some(config), &[]);
    let image = format!("{reg}/test/cri-discard:v1");
    assert_eq!(s.ok(&["pull", &image])["image_ref"], small.config.as_str());
    let v = s.call(&["status", "--verbose", &image]);
    let info = &v["info"]["info"];
    assert_eq!(info["policy"], "discard", "{v:#}");
    let layers = info["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    for l in layers {
        let forms: Vec<&str> = l["forms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["form"].as_str().unwrap())
            .collect();
        assert!(
            forms.contains(&"snapshot") && !forms.contains(&"blob"),
            "{l:#}"
        );
        assert!(
            l["dropped"]["blob"]
                .as_str()
                .unwrap_or("")
                .contains("discard"),
            "{l:#}"
        );
        assert!(!s
            .root
            .join("blobs/sha256")
            .join(&l["digest"].as_str().unwrap()[7..])
            .exists());
    }
    // The size kubelet sees is still the image's content size.
    let img = &s.images()[0];
    assert!(img["size"].as_str().unwrap().parse::<u64>().unwrap() > 270_000);
    let (st, log) = s.terminate();
    assert!(st.success(), "{log}");
}

/// Under `policy = "recipe"` a CRI pull answers once the image is usable;
/// `serve` then starts a detached settle that drops the blobs, and the CLI
/// on the same root sees (and can wait for) the result.
#[test]
fn cri_pull_under_recipe_settles_after_answering() {
    let Some(reg) = registry() else { return };
    let dir = scratch();
    let s = Server::start(dir.path(), Some("[store]\npolicy = \"recipe\"\n"), &[]);
    let image = format!("{reg}/corpus/debian-min:latest");
    s.ok(&["pull", &image]);
    // The background settle was started by serve and logs to the root.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.root.join("settle.log").exists() {
        assert!(Instant::now() < deadline, "serve started no settle");
        std::thread::sleep(Duration::from_millis(50));
    }
    common::stowage(&s.root, &["settle"]).ok();
    let doc = common::stowage(&s.root, &["inspect", "--format", "json", &image])
        .ok()
        .json();
    for l in doc["layers"].as_array().unwrap() {
        assert_eq!(l["forms"], serde_json::json!(["snapshot", "recipe"]), "{l}");
    }
    let v = s.call(&["status", "--verbose", &image]);
    assert_eq!(v["info"]["info"]["policy"], "recipe", "{v:#}");
    let (st, log) = s.terminate();
    assert!(st.success(), "{log}");
}

/// The socket: mode 0660, a stale socket is replaced, a live one or a
/// non-socket is refused, SIGTERM and SIGINT exit 0 and remove it.
#[test]
fn cri_socket_lifecycle() {
    let dir = scratch();
    let socket = dir.path().join("cri.sock");
    // A stale socket: bound, then its listener gone without cleanup.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let s = Server::start(dir.path(), None, &[]);
    assert!(s.log().contains("stale socket"), "{}", s.log());
    assert_eq!(
        std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
        0o660
    );

    // A second server on the same socket is refused, and the first unharmed.
    let second = Command::new(common::bin())
        .arg("--root")
        .arg(dir.path().join("root2"))
        .args(["serve", "--cri-socket"])
        .arg(&socket)
        .env_remove("STOWAGE_ROOT")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains("cri.sock")
            && (err.contains("another stowage serve") || err.contains("listening")),
        "{err}"
    );
    s.ok(&["list"]);

    let (st, log) = s.terminate();
    assert!(st.success(), "SIGTERM: {st}\n{log}");
    assert!(!socket.exists(), "socket left behind");
    assert!(log.contains("SIGTERM"), "{log}");

    // SIGINT too; and the socket's directory is created when missing.
    let nested = dir.path().join("run/stowage/cri.sock");
    let mut s = Server::start_at(dir.path(), &nested, None, &[]);
    assert_eq!(
        std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777,
        0o660
    );
    s.signal(libc::SIGINT);
    let st = wait_exit(s.child.as_mut().unwrap(), Duration::from_secs(30));
    s.child = None;
    assert!(st.success(), "SIGINT: {st}");
    assert!(!nested.exists());

    // A path that is not a socket is never replaced.
    std::fs::write(&socket, b"precious").unwrap();
    let out = Command::new(common::bin())
        .arg("--root")
        .arg(dir.path().join("root3"))
        .args(["serve", "--cri-socket"])
        .arg(&socket)
        .env_remove("STOWAGE_ROOT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
}
