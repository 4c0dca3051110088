//! Real-world registries: authentication (htpasswd basic auth, bearer tokens
//! from a token issuer in this file that docker-registry itself verifies,
//! docker's config.json, `login`/`logout`), TLS (a CA made with openssl,
//! `ca`, `skip_verify`, client certificates) and hosts.toml mirrors.
//!
//! Each test starts its own Debian `docker-registry` processes on free
//! loopback ports. A plain "seed" registry gets a small image pushed through
//! the HTTP API; the auth and TLS registries serve the same data directory,
//! so they have the image without an authenticated push.

mod common;
use common::push::{push_image, tarb::Tar};
use common::{registry, scratch};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASS: &str = "s3cret-Pa55-xyzzy";
const WRONG: &str = "wr0ng-Pa55-plugh";
const REPO: &str = "test/img";

// ---------------------------------------------------------------------------
// Helpers: processes, files, certificates.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port where nothing listens.
fn dead_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn run_ok(cmd: &str, args: &[&str], dir: &Path) {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kill the child when the test thread that started it goes away.
fn die_with_parent(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A docker-registry process; killed on drop.
struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct RegOpts {
    /// (certificate, key, client CA that every client must present a cert of)
    tls: Option<(PathBuf, PathBuf, Option<PathBuf>)>,
    /// An `auth:` section, indented by two spaces.
    auth: Option<String>,
}

fn start_registry(dir: &Path, name: &str, data: &Path, o: RegOpts) -> Registry {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut yml = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
         delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: {addr}\n",
        data.display()
    );
    if let Some((cert, key, clientca)) = &o.tls {
        yml += &format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        );
        if let Some(ca) = clientca {
            yml += &format!("    clientcas:\n      - {}\n", ca.display());
        }
    }
    if let Some(a) = &o.auth {
        yml += "auth:\n";
        yml += a;
    }
    let cfg = dir.join(format!("{name}.yml"));
    write(&cfg, &yml);
    let log = dir.join(format!("{name}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new("/usr/bin/docker-registry");
    cmd.arg("serve")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f);
    die_with_parent(&mut cmd);
    let mut child = cmd.spawn().expect("start docker-registry");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "docker-registry {name} exited ({st}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry {name} did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, addr, log }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with openssl in `dir`: ca.pem, server.pem/server.key, client.pem/client.key.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=stowage test CA",
        ],
        dir,
    );
    for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
        run_ok(
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN=stowage test {name}"),
            ],
            dir,
        );
        write(
            &dir.join(format!("{name}.ext")),
            &format!(
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage={usage}\n\
                 subjectAltName=IP:127.0.0.1\n"
            ),
        );
        run_ok(
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                &format!("{name}.pem"),
                "-extfile",
                &format!("{name}.ext"),
            ],
            dir,
        );
    }
}

fn htpasswd_auth(dir: &Path) -> String {
    let out = Command::new("htpasswd")
        .args(["-Bbn", USER, PASS])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    let file = dir.join("htpasswd");
    std::fs::write(&file, &out.stdout).unwrap();
    format!(
        "  htpasswd:\n    realm: stowage-test\n    path: {}\n",
        file.display()
    )
}

/// The seed registry with a two-layer image at `test/img:v1`, and its
/// manifest digest.
struct World {
    dir: tempfile::TempDir,
    data: PathBuf,
    seed: Registry,
    digest: String,
}

fn world() -> Option<World> {
    registry()?;
    let dir = scratch();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let seed = start_registry(dir.path(), "seed", &data, RegOpts::default());
    let l1 = Tar::new()
        .dir("etc", 0o755)
        .file("etc/marker", b"registries")
        .finish();
    let l2 = Tar::new().file("hello", b"hello from the seed").finish();
    let pushed = push_image(&seed.addr, REPO, "v1", &[l1, l2], None);
    Some(World {
        dir,
        data,
        seed,
        digest: pushed.manifest,
    })
}

impl World {
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn registry(&self, name: &str, o: RegOpts) -> Registry {
        start_registry(self.path(), name, &self.data, o)
    }
    /// A registry with its own, empty data directory.
    fn empty_registry(&self, name: &str) -> Registry {
        let data = self.path().join(format!("{name}-data"));
        std::fs::create_dir_all(&data).unwrap();
        start_registry(self.path(), name, &data, RegOpts::default())
    }
    fn certs(&self) -> PathBuf {
        let d = self.path().join("certs");
        if !d.join("ca.pem").exists() {
            make_certs(&d);
        }
        d
    }
    fn tls_registry(&self, name: &str, client_ca: bool) -> Registry {
        let c = self.certs();
        self.registry(
            name,
            RegOpts {
                tls: Some((
                    c.join("server.pem"),
                    c.join("server.key"),
                    client_ca.then(|| c.join("ca.pem")),
                )),
                auth: None,
            },
        )
    }
    /// An empty docker config dir (so the host's ~/.docker never leaks in).
    fn docker_dir(&self, name: &str) -> PathBuf {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

/// How to run stowage in a test.
struct Run<'a> {
    args: Vec<String>,
    env: Vec<(&'a str, String)>,
    stdin: Option<String>,
}

fn cmd<'a>(args: &[&str]) -> Run<'a> {
    Run {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        stdin: None,
    }
}

impl<'a> Run<'a> {
    fn env(mut self, k: &'a str, v: impl AsRef<Path>) -> Self {
        self.env
            .push((k, v.as_ref().to_string_lossy().into_owned()));
        self
    }
    fn stdin(mut self, s: &str) -> Self {
        self.stdin = Some(s.to_string());
        self
    }
    /// Run in a new session (no controlling terminal), DOCKER_CONFIG set
    /// to `docker` unless the test set it or HOME.
    fn run(self, root: &Path, docker: &Path) -> common::Run {
        let mut c = Command::new(common::bin());
        c.arg("--root").arg(root).args(&self.args);
        c.env_remove("STOWAGE_ROOT")
            .env_remove("STOWAGE_LOG")
            .env_remove("DOCKER_CONFIG");
        if !self.env.iter().any(|(k, _)| *k == "HOME") {
            c.env("DOCKER_CONFIG", docker);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = c.spawn().expect("run stowage");
        if let Some(s) = &self.stdin {
            child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
        }
        common::Run {
            out: child.wait_with_output().unwrap(),
        }
    }
}

/// Neither stream of `r` holds a secret, plain or base64'd.
fn assert_no_secret(r: &common::Run, secrets: &[&str]) {
    let all = format!("{}\n{}", r.stdout(), r.stderr());
    for s in secrets {
        assert!(!all.contains(s), "output shows a secret {s:?}:\n{all}");
        let b = b64(format!("{USER}:{s}").as_bytes(), false);
        assert!(!all.contains(&b), "output shows base64 credentials:\n{all}");
    }
}

fn b64(data: &[u8], url: bool) -> String {
    let abc: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= n {
                out.push(abc[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

fn hosts_toml(dir: &Path, host: &str, text: &str) {
    write(&dir.join(host).join("hosts.toml"), text);
}

fn stowage_toml(path: &Path, hosts: &Path) {
    write(
        path,
        &format!(
            "[registry]\nconfig_path = {:?}\n",
            hosts.display().to_string()
        ),
    );
}

fn image(addr: &str) -> String {
    format!("{addr}/{REPO}:v1")
}

// ---------------------------------------------------------------------------
// A token issuer for docker-registry's `auth: token` mode: RS256 JWTs with
// the signing certificate in `x5c`, signed by `openssl dgst`. The registry
// verifies them against the certificate as its rootcertbundle.

struct TokenServer {
    realm: String,
    /// One line per request: "scope=… service=… user=…|anonymous|refused".
    log: Arc<Mutex<Vec<String>>>,
}

const SERVICE: &str = "stowage-test-registry";
const ISSUER: &str = "stowage-test-issuer";
const IDENTITY_TOKEN: &str = "identity-Tok3n-quux";

fn token_server(dir: &Path) -> TokenServer {
    std::fs::create_dir_all(dir).unwrap();
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.pem",
            "-days",
            "2",
            "-subj",
            "/CN=stowage test token issuer",
        ],
        dir,
    );
    run_ok(
        "openssl",
        &[
            "x509",
            "-in",
            "token.pem",
            "-outform",
            "DER",
            "-out",
            "token.der",
        ],
        dir,
    );
    let der = std::fs::read(dir.join("token.der")).unwrap();
    let x5c = b64(&der, false);
    let key = dir.join("token.key");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let realm = format!("http://{}/token", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut n = 0u64;
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            n += 1;
            let _ = serve_token(conn, &x5c, &key, n, &log2);
        }
    });
    TokenServer { realm, log }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(h, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn serve_token(
    mut conn: TcpStream,
    x5c: &str,
    key: &Path,
    n: u64,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut authz = None;
    let mut length = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authz = Some(v.trim().to_string());
            }
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    // GET with the parameters in the query, or an OAuth2 POST form
    // (grant_type=refresh_token, for identity tokens).
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)?;
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let form = String::from_utf8_lossy(&body).into_owned();
    let mut scope = String::new();
    let mut service = String::new();
    let mut refresh = None;
    for kv in query.split('&').chain(form.split('&')) {
        if let Some((k, v)) = kv.split_once('=') {
            match k {
                "scope" => scope = url_decode(v),
                "service" => service = url_decode(v),
                "refresh_token" => refresh = Some(url_decode(v)),
                _ => {}
            }
        }
    }
    let good = format!("Basic {}", b64(format!("{USER}:{PASS}").as_bytes(), false));
    let who = match (&authz, &refresh) {
        (_, Some(t)) if t == IDENTITY_TOKEN => USER,
        (_, Some(_)) => "refused",
        (None, None) => "anonymous",
        (Some(a), None) if *a == good => USER,
        (Some(_), None) => "refused",
    };
    let who = if refresh.is_some() && who == USER {
        "alice-by-identity-token"
    } else {
        who
    };
    log.lock()
        .unwrap()
        .push(format!("scope={scope} service={service} user={who}"));
    let who = if who == "alice-by-identity-token" {
        USER
    } else {
        who
    };
    if who == "refused" {
        let body = r#"{"details":"invalid username or password"}"#;
        write!(
            conn,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    // Alice gets what she asks for; anonymous callers get nothing.
    let mut access = Vec::new();
    if who == USER {
        if let Some(rest) = scope.strip_prefix("repository:") {
            if let Some((name, actions)) = rest.rsplit_once(':') {
                access.push(serde_json::json!({"type": "repository", "name": name,
                    "actions": actions.split(',').collect::<Vec<_>>()}));
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": if who == USER { USER } else { "" }, "aud": service,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("t{n}"),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes(), true),
        b64(claims.to_string().as_bytes(), true)
    );
    let mut sign = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    sign.stdin
        .take()
        .unwrap()
        .write_all(signing_input.as_bytes())?;
    let sig = sign.wait_with_output()?.stdout;
    let jwt = format!("{signing_input}.{}", b64(&sig, true));
    let body = serde_json::json!({"token": jwt, "expires_in": 300}).to_string();
    write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Basic auth (htpasswd).

#[test]
fn basic_auth_with_creds_flag_never_shows_the_password() {
    let Some(w) = world() else { return };
    let auth = w.registry(
        "htpasswd",
        RegOpts {
            auth: Some(htpasswd_auth(w.path())),
            ..Default::default()
        },
    );
    let docker = w.docker_dir("docker-empty");
    let img = image(&auth.addr);

    // Right credentials; trace logging on, and still no secret anywhere.
    let root = w.path().join("store-ok");
    let creds = format!("{USER}:{PASS}");
    let r = cmd(&[
        "--log-level",
        "trace",
        "pull",
        "--plain-http",
        "-q",
        "--creds",
        &creds,
        &img,
    ])
    .run(&root, &docker)
    .ok();
    assert_eq!(r.stdout().trim(), w.digest);
    assert_no_secret(&r, &[PASS]);

    // No credentials: a clear refusal naming the registry and the repository.
    let root = w.path().join("store-anon");
    let r = cmd(&["pull", "--plain-http", "-q", &img])
        .run(&root, &docker)
        .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    assert!(
        err.contains("unauthorized") && err.contains(&auth.addr) && err.contains(REPO),
        "{err}"
    );

    // Wrong password: refused, named, not shown.
    let bad = format!("{USER}:{WRONG}");
    let started = Instant::now();
    let r = cmd(&[
        "--log-level",
        "debug",
        "pull",
        "--plain-http",
        "-q",
        "--creds",
        &bad,
        &img,
    ])
    .run(&root, &docker)
    .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    assert!(
        err.contains("unauthorized") && err.contains(&auth.addr) && err.contains(REPO),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    assert_no_secret(&r, &[WRONG, PASS]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a refusal must not be retried forever"
    );
}

#[test]
fn credentials_from_docker_config_json() {
    let Some(w) = world() else { return };
    let auth = w.registry(
        "htpasswd",
        RegOpts {
            auth: Some(htpasswd_auth(w.path())),
            ..Default::default()
        },
    );
    let img = image(&auth.addr);

    // DOCKER_CONFIG, key host:port, base64 `auth`.
    let docker = w.docker_dir("docker-a");
    write(
        &docker.join("config.json"),
        &serde_json::json!({"auths": {auth.addr.clone(): {"auth": b64(format!("{USER}:{PASS}").as_bytes(), false)}}})
            .to_string(),
    );
    let r = cmd(&["pull", "--plain-http", "-q", &img])
        .run(&w.path().join("store-a"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);

    // HOME/.docker, key https://host:port, username/password fields, and a
    // credsStore we cannot use: warned about, auths still used.
    let home = w.path().join("home");
    write(
        &home.join(".docker/config.json"),
        &serde_json::json!({
            "auths": {format!("https://{}", auth.addr): {"username": USER, "password": PASS}},
            "credsStore": "desktop",
        })
        .to_string(),
    );
    let r = cmd(&["pull", "--plain-http", "-q", &img])
        .env("HOME", &home)
        .run(&w.path().join("store-b"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);
    assert!(r.stderr().contains("not supported"), "{}", r.stderr());
    assert_no_secret(&r, &[PASS]);

    // A wrong password in config.json: refused, not shown.
    let docker = w.docker_dir("docker-c");
    write(
        &docker.join("config.json"),
        &serde_json::json!({"auths": {auth.addr.clone(): {"auth": b64(format!("{USER}:{WRONG}").as_bytes(), false)}}})
            .to_string(),
    );
    let r = cmd(&["pull", "--plain-http", "-q", &img])
        .run(&w.path().join("store-c"), &docker)
        .fails();
    assert!(r.stderr().contains("unauthorized"), "{}", r.stderr());
    assert_no_secret(&r, &[WRONG]);

    // --creds comes before config.json.
    let creds = format!("{USER}:{PASS}");
    let r = cmd(&["pull", "--plain-http", "-q", "--creds", &creds, &img])
        .run(&w.path().join("store-c"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);
}

#[test]
fn login_then_pull_then_logout() {
    let Some(w) = world() else { return };
    let auth = w.registry(
        "htpasswd",
        RegOpts {
            auth: Some(htpasswd_auth(w.path())),
            ..Default::default()
        },
    );
    // The registry is plain HTTP: say so in hosts.toml, found through stowage.toml.
    let hosts = w.path().join("certs.d");
    hosts_toml(
        &hosts,
        &auth.addr,
        &format!("server = \"http://{}\"\n", auth.addr),
    );
    let conf = w.path().join("stowage.toml");
    stowage_toml(&conf, &hosts);
    let conf = conf.to_str().unwrap();
    let docker = w.docker_dir("docker");
    let cfg = docker.join("config.json");
    write(
        &cfg,
        r#"{"auths": {"other.example": {"auth": "eDp5"}}, "psFormat": "table {{.ID}}"}"#,
    );
    let root = w.path().join("store");
    let img = image(&auth.addr);

    // Without a terminal and without --password-stdin: a clear error.
    let r = cmd(&["--config", conf, "login", &auth.addr, "-u", USER])
        .run(&root, &docker)
        .fails();
    assert!(r.stderr().contains("--password-stdin"), "{}", r.stderr());

    // Wrong password: refused, nothing written, nothing shown.
    let before = std::fs::read(&cfg).unwrap();
    let r = cmd(&[
        "--config",
        conf,
        "login",
        &auth.addr,
        "-u",
        USER,
        "--password-stdin",
    ])
    .stdin(&format!("{WRONG}\n"))
    .run(&root, &docker)
    .fails();
    assert!(
        r.stderr().contains("unauthorized") && r.stderr().contains(&auth.addr),
        "{}",
        r.stderr()
    );
    assert_no_secret(&r, &[WRONG]);
    eprintln!("--- expected failure:\n{}", r.stderr());
    assert_eq!(std::fs::read(&cfg).unwrap(), before);

    // Right password: written as docker does, other keys kept, mode 0600.
    let r = cmd(&[
        "--config",
        conf,
        "login",
        &auth.addr,
        "-u",
        USER,
        "--password-stdin",
    ])
    .stdin(&format!("{PASS}\n"))
    .run(&root, &docker)
    .ok();
    assert!(r.stdout().contains("Login Succeeded"), "{}", r.stdout());
    assert_no_secret(&r, &[PASS]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert_eq!(
        doc["auths"][&auth.addr]["auth"],
        b64(format!("{USER}:{PASS}").as_bytes(), false)
    );
    assert_eq!(doc["psFormat"], "table {{.ID}}");
    assert!(doc["auths"].get("other.example").is_some());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Pull with the stored credentials (no --creds, no --plain-http).
    let r = cmd(&["--config", conf, "pull", "-q", &img])
        .run(&root, &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);

    // Logout removes only that entry; pulling again is refused.
    cmd(&["logout", &auth.addr]).run(&root, &docker).ok();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    assert!(doc["auths"].get(&auth.addr).is_none(), "{doc}");
    assert!(doc["auths"].get("other.example").is_some());
    assert_eq!(doc["psFormat"], "table {{.ID}}");
    let root2 = w.path().join("store2");
    let r = cmd(&["--config", conf, "pull", "-q", &img])
        .run(&root2, &docker)
        .fails();
    assert!(r.stderr().contains("unauthorized"), "{}", r.stderr());
}

// ---------------------------------------------------------------------------
// Bearer tokens: docker-registry in token mode, verifying our issuer's JWTs.

#[test]
fn bearer_tokens_from_a_token_service() {
    let Some(w) = world() else { return };
    let ts = token_server(&w.path().join("token"));
    let reg = w.registry(
        "token",
        RegOpts {
            auth: Some(format!(
                "  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
                 rootcertbundle: {}\n",
                ts.realm,
                w.path().join("token/token.pem").display()
            )),
            ..Default::default()
        },
    );
    let docker = w.docker_dir("docker");
    let img = image(&reg.addr);

    // Right credentials: one token for the whole pull (cached per scope).
    let creds = format!("{USER}:{PASS}");
    let r = cmd(&[
        "--log-level",
        "trace",
        "pull",
        "--plain-http",
        "-q",
        "--creds",
        &creds,
        &img,
    ])
    .run(&w.path().join("store-ok"), &docker)
    .ok();
    assert_eq!(r.stdout().trim(), w.digest);
    assert_no_secret(&r, &[PASS]);
    let log = ts.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [format!(
            "scope=repository:{REPO}:pull service={SERVICE} user={USER}"
        )],
        "one token, asked for with the pull scope and the service"
    );

    // Anonymous: an anonymous token, then a clear "access denied".
    let r = cmd(&["pull", "--plain-http", "-q", &img])
        .run(&w.path().join("store-anon"), &docker)
        .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    assert!(
        err.contains("access denied")
            && err.contains("unauthorized")
            && err.contains(&reg.addr)
            && err.contains(REPO),
        "{err}"
    );
    assert!(ts
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.ends_with("user=anonymous")));

    // Wrong password: the token service refuses; named, not shown.
    let bad = format!("{USER}:{WRONG}");
    let r = cmd(&["pull", "--plain-http", "-q", "--creds", &bad, &img])
        .run(&w.path().join("store-bad"), &docker)
        .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    assert!(
        err.contains("unauthorized") && err.contains(&reg.addr) && err.contains(REPO),
        "{err}"
    );
    assert_no_secret(&r, &[WRONG]);

    // An identity token in config.json: the OAuth2 refresh-token grant.
    let ident = w.docker_dir("docker-ident");
    write(
        &ident.join("config.json"),
        &serde_json::json!({"auths": {reg.addr.clone(): {"auth": "", "identitytoken": IDENTITY_TOKEN}}})
            .to_string(),
    );
    let r = cmd(&["pull", "--plain-http", "-q", &img])
        .run(&w.path().join("store-ident"), &ident)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);
    assert_no_secret(&r, &[IDENTITY_TOKEN]);
    assert!(ts
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.ends_with("user=alice-by-identity-token")));

    // login against the token service (no scope), then pull from config.json.
    let hosts = w.path().join("certs.d");
    hosts_toml(
        &hosts,
        &reg.addr,
        &format!("server = \"http://{}\"\n", reg.addr),
    );
    let conf = w.path().join("stowage.toml");
    stowage_toml(&conf, &hosts);
    let conf = conf.to_str().unwrap();
    let r = cmd(&[
        "--config",
        conf,
        "login",
        &reg.addr,
        "-u",
        USER,
        "--password-stdin",
    ])
    .stdin(PASS)
    .run(&w.path().join("store-login"), &docker)
    .ok();
    assert_no_secret(&r, &[PASS]);
    assert!(ts
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("scope= ") && l.ends_with(USER)));
    let r = cmd(&["--config", conf, "pull", "-q", &img])
        .run(&w.path().join("store-login"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);

    // Push asks for the push scope; anonymous pushes are refused clearly.
    let dest = format!("{}/test/img-pushed:v1", reg.addr);
    let nobody = w.docker_dir("docker-push-anon");
    let r = cmd(&["push", "--plain-http", "-q", &img, &dest])
        .run(&w.path().join("store-ok"), &nobody)
        .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    assert!(
        err.contains("unauthorized") && err.contains("test/img-pushed"),
        "{err}"
    );
    let r = cmd(&["push", "--plain-http", "-q", "--creds", &creds, &img, &dest])
        .run(&w.path().join("store-ok"), &nobody)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);
    assert_no_secret(&r, &[PASS]);
    assert!(ts.log.lock().unwrap().iter().any(|l| l
        == &format!("scope=repository:test/img-pushed:pull,push service={SERVICE} user={USER}")));
    // What was pushed pulls back with the same digest.
    let r = cmd(&["pull", "--plain-http", "-q", "--creds", &creds, &dest])
        .run(&w.path().join("store-pushed"), &nobody)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);
}

// ---------------------------------------------------------------------------
// TLS.

#[test]
fn tls_with_ca_skip_verify_and_client_certificates() {
    let Some(w) = world() else { return };
    let tls = w.tls_registry("tls", false);
    let docker = w.docker_dir("docker");
    let img = image(&tls.addr);
    let certs = w.certs();

    // System roots only: the test CA is unknown.
    let r = cmd(&["pull", "-q", &img])
        .run(&w.path().join("store-none"), &docker)
        .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    assert!(
        err.contains("certificate") && err.contains(&tls.addr),
        "should be a certificate error: {err}"
    );

    // `ca`, relative to the host's directory.
    let hosts = w.path().join("hosts-ca");
    hosts_toml(&hosts, &tls.addr, "ca = \"ca.pem\"\n");
    std::fs::copy(certs.join("ca.pem"), hosts.join(&tls.addr).join("ca.pem")).unwrap();
    let conf = w.path().join("ca.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&["--config", conf.to_str().unwrap(), "pull", "-q", &img])
        .run(&w.path().join("store-ca"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);

    // skip_verify.
    let hosts = w.path().join("hosts-skip");
    hosts_toml(
        &hosts,
        &tls.addr,
        &format!("server = \"https://{}\"\nskip_verify = true\n", tls.addr),
    );
    let conf = w.path().join("skip.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&["--config", conf.to_str().unwrap(), "pull", "-q", &img])
        .run(&w.path().join("store-skip"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);

    // A registry that wants a client certificate: refused without, served with.
    let mtls = w.tls_registry("mtls", true);
    let img = image(&mtls.addr);
    let hosts = w.path().join("hosts-mtls");
    let ca = certs.join("ca.pem");
    hosts_toml(
        &hosts,
        &mtls.addr,
        &format!("ca = {:?}\n", ca.display().to_string()),
    );
    let conf = w.path().join("mtls-none.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&["--config", conf.to_str().unwrap(), "pull", "-q", &img])
        .run(&w.path().join("store-mtls-none"), &docker)
        .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    assert!(err.contains(&mtls.addr), "{err}");
    hosts_toml(
        &hosts,
        &mtls.addr,
        &format!(
            "ca = {:?}\nclient = [[{:?}, {:?}]]\n",
            ca.display().to_string(),
            certs.join("client.pem").display().to_string(),
            certs.join("client.key").display().to_string()
        ),
    );
    let r = cmd(&["--config", conf.to_str().unwrap(), "pull", "-q", &img])
        .run(&w.path().join("store-mtls"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);
}

// ---------------------------------------------------------------------------
// Mirrors.

#[test]
fn mirror_first_then_origin() {
    let Some(w) = world() else { return };
    let docker = w.docker_dir("docker");
    let certs = w.certs();
    let ca = certs.join("ca.pem").display().to_string();

    // 1. The origin is a port where nothing listens; a TLS mirror (with its
    //    CA) has the image: the pull is served by the mirror.
    let mirror = w.tls_registry("tls-mirror", false);
    let origin = dead_addr();
    let hosts = w.path().join("hosts-1");
    hosts_toml(
        &hosts,
        &origin,
        &format!(
            "server = \"http://{origin}\"\n[host.\"https://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {ca:?}\n",
            mirror.addr
        ),
    );
    let conf = w.path().join("1.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&[
        "--config",
        conf.to_str().unwrap(),
        "pull",
        "-q",
        &image(&origin),
    ])
    .run(&w.path().join("store-1"), &docker)
    .ok();
    assert_eq!(r.stdout().trim(), w.digest);

    // 2. The mirror lacks the image (an empty registry): the origin serves
    //    it, after the mirror was asked.
    let empty = w.empty_registry("empty-mirror");
    let hosts = w.path().join("hosts-2");
    hosts_toml(
        &hosts,
        &w.seed.addr,
        &format!(
            "server = \"http://{}\"\n[host.\"http://{}\"]\n",
            w.seed.addr, empty.addr
        ),
    );
    let conf = w.path().join("2.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&[
        "--config",
        conf.to_str().unwrap(),
        "--log-level",
        "info",
        "pull",
        "-q",
        &image(&w.seed.addr),
    ])
    .run(&w.path().join("store-2"), &docker)
    .ok();
    assert_eq!(r.stdout().trim(), w.digest);
    assert!(
        r.stderr()
            .contains(&format!("served by origin http://{}", w.seed.addr)),
        "{}",
        r.stderr()
    );
    let mirror_log = std::fs::read_to_string(&empty.log).unwrap();
    assert!(
        mirror_log.contains(&format!("/v2/{REPO}/manifests/v1")),
        "the mirror was not asked first:\n{mirror_log}"
    );
    assert!(
        mirror_log.contains(&format!("ns={}", w.seed.addr)),
        "mirror requests carry ?ns=REGISTRY as containerd sends it:\n{mirror_log}"
    );

    // 3. A mirror without `resolve` is not asked for tags: with the origin
    //    dead, a tag fails (and the error lists the origin), a digest pulls.
    let mirror = w.registry("pull-only", RegOpts::default());
    let origin = dead_addr();
    let hosts = w.path().join("hosts-3");
    hosts_toml(
        &hosts,
        &origin,
        &format!(
            "server = \"http://{origin}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            mirror.addr
        ),
    );
    let conf = w.path().join("3.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&[
        "--config",
        conf.to_str().unwrap(),
        "pull",
        "-q",
        &image(&origin),
    ])
    .run(&w.path().join("store-3"), &docker)
    .fails();
    assert!(r.stderr().contains(&origin), "{}", r.stderr());
    assert!(!r.stderr().contains(&mirror.addr), "{}", r.stderr());
    let by_digest = format!("{origin}/{REPO}@{}", w.digest);
    let r = cmd(&["--config", conf.to_str().unwrap(), "pull", "-q", &by_digest])
        .run(&w.path().join("store-3"), &docker)
        .ok();
    assert_eq!(r.stdout().trim(), w.digest);

    // 4. Everything fails: the error lists every attempt, in order.
    let hosts = w.path().join("hosts-4");
    let dead_mirror = dead_addr();
    hosts_toml(
        &hosts,
        &origin,
        &format!(
            "server = \"http://{origin}\"\n[host.\"http://{}\"]\n[host.\"http://{dead_mirror}\"]\n",
            empty.addr
        ),
    );
    let conf = w.path().join("4.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&[
        "--config",
        conf.to_str().unwrap(),
        "pull",
        "-q",
        &image(&origin),
    ])
    .run(&w.path().join("store-4"), &docker)
    .fails();
    let err = r.stderr();
    eprintln!("--- expected failure:\n{err}");
    let at = |s: &str| err.find(s).unwrap_or_else(|| panic!("{s} missing: {err}"));
    assert!(err.contains("every endpoint failed"), "{err}");
    assert!(
        at(&format!("mirror http://{}", empty.addr)) < at(&format!("mirror http://{dead_mirror}"))
    );
    assert!(at(&format!("mirror http://{dead_mirror}")) < at(&format!("origin http://{origin}")));
    assert!(err.contains("not found"), "{err}");

    // 5. `_default/hosts.toml` applies to every registry.
    let hosts = w.path().join("hosts-5");
    hosts_toml(
        &hosts,
        "_default",
        &format!("[host.\"http://{}\"]\n", w.seed.addr),
    );
    let conf = w.path().join("5.toml");
    stowage_toml(&conf, &hosts);
    let r = cmd(&[
        "--config",
        conf.to_str().unwrap(),
        "pull",
        "-q",
        &image(&dead_addr()),
    ])
    .run(&w.path().join("store-5"), &docker)
    .ok();
    assert_eq!(r.stdout().trim(), w.digest);
}

#[test]
fn containerd_config_path_feeds_hosts_toml() {
    let Some(w) = world() else { return };
    let docker = w.docker_dir("docker");
    let origin = dead_addr();
    let hosts = w.path().join("containerd-certs.d");
    hosts_toml(
        &hosts,
        &origin,
        &format!(
            "server = \"http://{origin}\"\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            w.seed.addr
        ),
    );
    let v2 = w.path().join("containerd-2.toml");
    write(
        &v2,
        &format!(
            "version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = {:?}\n",
            hosts.display().to_string()
        ),
    );
    let r = cmd(&[
        "--containerd-config",
        v2.to_str().unwrap(),
        "pull",
        "-q",
        &image(&origin),
    ])
    .run(&w.path().join("store-v2"), &docker)
    .ok();
    assert_eq!(r.stdout().trim(), w.digest);
    let v1 = w.path().join("containerd-1.toml");
    write(
        &v1,
        &format!(
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = {:?}\n",
            hosts.display().to_string()
        ),
    );
    let r = cmd(&[
        "--containerd-config",
        v1.to_str().unwrap(),
        "pull",
        "-q",
        &image(&origin),
    ])
    .run(&w.path().join("store-v1"), &docker)
    .ok();
    assert_eq!(r.stdout().trim(), w.digest);
}
