//! A private containerd (Debian's package) for interop checks: its own
//! config, root, state and socket under a scratch directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Containerd {
    child: Child,
    pub socket: PathBuf,
}

impl Containerd {
    // The child is waited for in Drop.
    #[allow(clippy::zombie_processes)]
    pub fn start(dir: &Path) -> Containerd {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
                dir.join("root").display(),
                dir.join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start containerd (Debian package containerd)");
        for _ in 0..200 {
            if socket.exists()
                && Command::new("ctr")
                    .arg("-a")
                    .arg(&socket)
                    .arg("version")
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            {
                return Containerd { child, socket };
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "containerd did not start: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
    }

    /// Run `ctr -a SOCKET -n stowage-test ARGS...`.
    pub fn ctr(&self, args: &[&str]) -> std::process::Output {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "stowage-test"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
