//! A fault-injecting HTTP proxy in front of the real registry: it forwards
//! each request (one per connection) and can rewrite the answer for chosen
//! paths: other bytes, a truncated body, or an error status.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub enum Fault {
    Pass,
    /// Serve these bytes instead (Content-Length fixed up).
    Body(Vec<u8>),
    /// Announce the full length, send only the first N bytes, then close.
    Truncate(usize),
    /// Answer with this status and no body.
    Status(u16),
    /// Flip one byte in the middle of the body (same length, other bytes).
    Corrupt,
    /// Redirect (307) to this path on the proxy itself.
    Redirect(String),
    /// Pass, after waiting this many milliseconds.
    Delay(u64),
    /// Send the headers and N bytes, then stop sending (keep the connection open) for a long while.
    Stall(usize),
    /// A complete answer that is shorter than the blob: the first N bytes,
    /// with a Content-Length that says so (a registry serving a cut file).
    Short(usize),
}

pub struct Proxy {
    pub addr: String,
    /// The head of every request seen, in order.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Start a proxy to `upstream`; `rule(method, path)` picks the fault.
pub fn start(upstream: &str, rule: impl Fn(&str, &str) -> Fault + Send + Sync + 'static) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let rule = Arc::new(rule);
    let upstream = upstream.to_string();
    let s2 = stop.clone();
    let log = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if s2.load(Ordering::Relaxed) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let rule = rule.clone();
            let upstream = upstream.clone();
            let log = log2.clone();
            std::thread::spawn(move || {
                let _ = serve(conn, &upstream, &*rule, &log);
            });
        }
    });
    Proxy { addr, stop, log }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    rule: &dyn Fn(&str, &str) -> Fault,
    log: &std::sync::Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut content_length = 0usize;
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
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        head.extend_from_slice(line.as_bytes());
    }
    log.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body)?;
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();

    let mut up = TcpStream::connect(upstream)?;
    up.write_all(&head)?;
    up.write_all(b"Connection: close\r\n\r\n")?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(resp.len());
    let (rhead, rbody) = resp.split_at(split);
    let rhead = String::from_utf8_lossy(rhead).to_string();
    let mut out = client;
    let headers_without = |skip: &[&str]| -> String {
        rhead
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .filter(|l| !skip.iter().any(|s| l.to_ascii_lowercase().starts_with(s)))
            .map(|l| format!("{l}\r\n"))
            .collect()
    };
    let mut fault = rule(&method, &path);
    if let Fault::Delay(ms) = fault {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        fault = Fault::Pass;
    }
    match fault {
        Fault::Delay(_) => unreachable!(),
        Fault::Pass => {
            out.write_all(headers_without(&["connection:"]).as_bytes())?;
            out.write_all(b"Connection: close\r\n\r\n")?;
            out.write_all(rbody)?;
        }
        Fault::Body(b) => {
            // The registry's digest header would give the game away early.
            out.write_all(
                headers_without(&["connection:", "content-length:", "docker-content-digest:"])
                    .as_bytes(),
            )?;
            out.write_all(
                format!("Content-Length: {}\r\nConnection: close\r\n\r\n", b.len()).as_bytes(),
            )?;
            if method != "HEAD" {
                out.write_all(&b)?;
            }
        }
        Fault::Truncate(n) => {
            out.write_all(headers_without(&["connection:"]).as_bytes())?;
            out.write_all(b"Connection: close\r\n\r\n")?;
            out.write_all(&rbody[..n.min(rbody.len())])?;
        }
        Fault::Corrupt => {
            out.write_all(headers_without(&["connection:"]).as_bytes())?;
            out.write_all(b"Connection: close\r\n\r\n")?;
            let mut b = rbody.to_vec();
            if !b.is_empty() {
                let mid = b.len() / 2;
                b[mid] ^= 0xff;
            }
            out.write_all(&b)?;
        }
        Fault::Stall(n) => {
            out.write_all(headers_without(&["connection:"]).as_bytes())?;
            out.write_all(b"Connection: close\r\n\r\n")?;
            out.write_all(&rbody[..n.min(rbody.len())])?;
            out.flush()?;
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
        Fault::Short(_)
            if String::from_utf8_lossy(&head)
                .to_ascii_lowercase()
                .contains("range:") =>
        {
            // The cut file has nothing past its end.
            out.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        }
        Fault::Short(n) => {
            let b = &rbody[..n.min(rbody.len())];
            out.write_all(headers_without(&["connection:", "content-length:"]).as_bytes())?;
            out.write_all(
                format!("Content-Length: {}\r\nConnection: close\r\n\r\n", b.len()).as_bytes(),
            )?;
            out.write_all(b)?;
        }
        Fault::Redirect(to) => {
            out.write_all(format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())?;
        }
        Fault::Status(code) => {
            out.write_all(
                format!(
                    "HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .as_bytes(),
            )?;
        }
    }
    out.flush()
}
