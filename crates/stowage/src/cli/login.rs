//! `login` and `logout`: credentials in Docker's `config.json`, as docker
//! writes them. The password comes from stdin (`--password-stdin`) or the
//! terminal without echo; it is never printed or logged.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use stowage::config::Config;
use stowage_remote::dockercfg::{self, DockerConfig};
use stowage_remote::{ClientOptions, Credentials, RegistryClient};

type Result<T> = std::result::Result<T, String>;

/// `registry.example:5000`, `https://registry.example:5000/` → host[:port];
/// Docker Hub's names → `docker.io`.
fn registry_name(s: &str) -> Result<String> {
    let host = dockercfg::normalize(s.trim());
    if host.is_empty() {
        return Err(format!("{s:?} is not a registry name (HOST or HOST:PORT)"));
    }
    Ok(host)
}

fn config_path() -> Result<std::path::PathBuf> {
    dockercfg::default_path()
        .ok_or_else(|| "cannot find docker's config.json: set DOCKER_CONFIG or HOME".to_string())
}

pub fn login(
    registry: &str,
    username: Option<String>,
    password_stdin: bool,
    config: &Config,
) -> Result<()> {
    let name = registry_name(registry)?;
    let username = match username {
        Some(u) if !u.is_empty() => u,
        Some(_) => return Err("the username is empty".into()),
        None if password_stdin => {
            return Err("--password-stdin needs the username with -u USER".into())
        }
        None => {
            let u = prompt("Username: ", true)?;
            if u.is_empty() {
                return Err("the username is empty".into());
            }
            u
        }
    };
    let password = if password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .lock()
            .read_to_string(&mut s)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        s.trim_end_matches(['\n', '\r']).to_string()
    } else {
        prompt("Password: ", false)?
    };
    if password.is_empty() {
        return Err("the password is empty".into());
    }
    let creds = Credentials { username, password };
    let path = config_path()?;
    let mut file = DockerConfig::load(&path).map_err(|e| e.to_string())?;

    let opts = ClientOptions {
        credentials: Some(creds.clone()),
        hosts_dir: config
            .registry_config_path
            .clone()
            .or_else(stowage_remote::hosts::default_dir),
        ..Default::default()
    };
    let client = RegistryClient::new(&name, &opts).map_err(|e| e.to_string())?;
    client
        .check_login()
        .map_err(|e| format!("login to {name} failed: {e}"))?;

    if let Some(w) = file.helper_warning(&name) {
        eprintln!("warning: {w}");
    }
    file.set(&name, &creds);
    file.save().map_err(|e| e.to_string())?;
    eprintln!(
        "warning: the password is stored unencrypted in {}",
        path.display()
    );
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(registry: &str) -> Result<()> {
    let name = registry_name(registry)?;
    let path = config_path()?;
    let mut file = DockerConfig::load(&path).map_err(|e| e.to_string())?;
    if !file.remove(&name) {
        eprintln!("not logged in to {name}");
        return Ok(());
    }
    file.save().map_err(|e| e.to_string())?;
    println!("Removing login credentials for {name}");
    Ok(())
}

/// Ask on the controlling terminal; `echo` false hides what is typed.
fn prompt(question: &str, echo: bool) -> Result<String> {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .ok()
        .filter(|t| unsafe { libc::isatty(t.as_raw_fd()) } == 1)
        .ok_or("no terminal to ask for the password: pass it with --password-stdin")?;
    let fd = tty.as_raw_fd();
    (&tty)
        .write_all(question.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let hidden = !echo && unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if hidden {
        let mut t = saved;
        t.c_lflag &= !libc::ECHO;
        t.c_lflag |= libc::ECHONL;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
    }
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if hidden {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.map_err(|e| format!("reading from the terminal: {e}"))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
