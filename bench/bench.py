#!/usr/bin/env python3
"""Side-by-side benchmark of stowage and containerd (driven with `ctr` and
through its CRI plugin with tests/cri/client.py).

Run through scripts/bench, which installs what is needed, builds stowage and
finds or starts the registry. This file only measures and reports:

* every repetition of every image starts on a freshly formatted loop-mounted
  ext4 (bench/scratch.sh), both stores on it;
* stowage is timed with /usr/bin/time -f '%e %M' (wall seconds, peak RSS of
  the stowage process);
* containerd does the work in its daemon, so for each operation a fresh
  private containerd is started (own config, root, state, socket; overlayfs
  snapshotter) and we report the wall time of the `ctr` command and the
  daemon's peak RSS (VmHWM in /proc/PID/status, read after the operation),
  with the ctr client's own peak RSS beside it;
* CRI pulls (containerd's CRI plugin, and `stowage serve --cri-socket`) are
  driven with tests/cri/client.py: the time is the PullImage call's own wall
  time as the client measures it, the memory the server's VmHWM;
* one warm-up pass, then N measured passes; medians are reported, with the
  range. Page caches are not dropped (they are warm: the registry's data is
  on the same disk and was read by the warm-up pass).

No number here is asserted on; this is a report, not a test.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def log(msg):
    print(f"\033[1m[bench {time.strftime('%H:%M:%S')}]\033[0m {msg}", file=sys.stderr, flush=True)


class Failed(Exception):
    pass


def run(cmd, check=True, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    p = subprocess.run([str(c) for c in cmd], text=True, timeout=1800, **kw)
    if check and p.returncode != 0:
        raise Failed(f"{shlex.join(str(c) for c in cmd)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def timed(cmd, stdout=subprocess.DEVNULL):
    """Run cmd under /usr/bin/time; return (wall seconds, peak RSS in KiB).

    A `sync` first, so the previous step's dirty pages are not written back
    on this one's clock."""
    run(["sync"])
    out = Path(os.environ.get("BENCH_TMP", "/tmp")) / "bench-time.txt"
    p = run(["/usr/bin/time", "-f", "%e %M", "-o", out, *cmd], check=False, stdout=stdout)
    if p.returncode != 0:
        raise Failed(f"{shlex.join(str(c) for c in cmd)} exited {p.returncode}:\n{p.stderr}")
    wall, rss = out.read_text().strip().splitlines()[-1].split()
    return float(wall), int(rss)


def du(path):
    """du -sb; retried while files vanish under it (a store still tidying up)."""
    for _ in range(10):
        p = run(["du", "-sb", path], check=False)
        if p.returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise Failed(f"du -sb {path} exited {p.returncode}:\n{p.stderr}")
    return int(p.stdout.split()[0])


def busy():
    """Other work on the machine (builds, tests) that makes numbers noisy:
    cargo/rustc processes and anything run from a stowage test's scratch."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            comm = (d / "comm").read_text().strip()
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        cmd = " ".join(x.decode(errors="replace") for x in argv if x)
        if comm in ("cargo", "rustc", "cc", "ld", "clippy-driver") or "stowage-test" in cmd:
            found.append(f"{d.name} {cmd[:200]}")
    return sorted(found)


# ---------------------------------------------------------------- registry


def http_get(url, accept=None):
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.read(), r.headers.get("Content-Type", "")


def resolve(registry, repo, tag):
    """The host platform's manifest (dict) for repo:tag."""
    body, ctype = http_get(f"http://{registry}/v2/{repo}/manifests/{tag}", MANIFEST_ACCEPT)
    m = json.loads(body)
    if "manifests" in m:
        for d in m["manifests"]:
            p = d.get("platform", {})
            if p.get("os") == "linux" and p.get("architecture") == GOARCH:
                body, _ = http_get(f"http://{registry}/v2/{repo}/manifests/{d['digest']}", MANIFEST_ACCEPT)
                return json.loads(body)
        raise Failed(f"{repo}:{tag}: no linux/{GOARCH} manifest")
    return m


class Image:
    def __init__(self, registry, name, cache):
        self.name = name  # as given: debian-min, debian-min:zstd
        repo, _, tag = name.partition(":")
        self.repo, self.tag = f"corpus/{repo}", tag or "latest"
        self.ref = f"{registry}/{self.repo}:{self.tag}"
        self.manifest = resolve(registry, self.repo, self.tag)
        self.layers = self.manifest["layers"]
        self.compressed = sum(l["size"] for l in self.layers)
        self.big = max(self.layers, key=lambda l: l["size"])
        self.blobs, self.tars, self.codecs = [], [], set()
        for l in self.layers:
            hexd = l["digest"].split(":", 1)[1]
            blob, tar = cache / hexd, cache / (hexd + ".tar")
            mt = l["mediaType"]
            codec = "zstd" if "zstd" in mt else "gzip" if "gzip" in mt else "none"
            self.codecs.add(codec)
            if not blob.exists():
                log(f"{name}: fetching layer {hexd[:12]} ({l['size'] / 1e6:.0f} MB) for the machine's-share rows")
                tmp = blob.with_suffix(".part")
                run(["curl", "-fsS", "-o", tmp, f"http://{registry}/v2/{self.repo}/blobs/{l['digest']}"])
                tmp.rename(blob)
            if not tar.exists():
                dec = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-qdc"], "none": ["cat"]}[codec]
                tmp = tar.with_suffix(".part")
                with open(tmp, "wb") as f:
                    run([*dec, blob], stdout=f)
                tmp.rename(tar)
            self.blobs.append(blob)
            self.tars.append(tar)
        self.tar_size = sum(t.stat().st_size for t in self.tars)
        self.codec = self.codecs.pop() if len(self.codecs) == 1 else "mixed"


# ---------------------------------------------------------------- containerd


class Containerd:
    """A private containerd: own config, root, state and socket under dir."""

    def __init__(self, dir, namespace="bench", cri=None):
        """cri: None (as `ctr` uses it), or {"discard": bool, "hosts": DIR}
        for pulls through the CRI plugin: discard_unpacked_layers and the
        registry hosts.toml directory (config_path)."""
        self.dir = Path(dir)
        self.root = self.dir / "root"
        self.sock = self.dir / "containerd.sock"
        self.ns = namespace
        self.proc = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "config.toml"
        self.config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.dir / "state"}"\n'
            "[grpc]\n"
            f'  address = "{self.sock}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n'
            "  disable_tcp_service = true\n"
            '  [plugins."io.containerd.grpc.v1.cri".containerd]\n'
            '    snapshotter = "overlayfs"\n'
            + ("" if cri is None else
               f'    discard_unpacked_layers = {"true" if cri["discard"] else "false"}\n'
               '  [plugins."io.containerd.grpc.v1.cri".registry]\n'
               f'    config_path = "{cri["hosts"]}"\n')
        )

    def start(self):
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "containerd.log", "ab"),
        )
        for _ in range(300):
            if self.proc.poll() is not None:
                raise Failed("containerd exited:\n" + (self.dir / "containerd.log").read_text()[-3000:])
            if self.sock.exists() and run(["ctr", "-a", self.sock, "version"], check=False).returncode == 0:
                self.idle_hwm = self.hwm()
                return self
            time.sleep(0.1)
        raise Failed("containerd did not answer:\n" + (self.dir / "containerd.log").read_text()[-3000:])

    def hwm(self):
        """The daemon's peak resident set so far, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise Failed("no VmHWM")

    def argv(self, *args):
        return ["ctr", "-a", self.sock, "-n", self.ns, *args]

    def ctr(self, *args, check=True):
        return run(self.argv(*args), check=check)

    def timed(self, *args):
        return timed(self.argv(*args))

    def blob_files(self, digests):
        """Which of these blobs still have a file in the content store."""
        d = self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
        return [x for x in digests if (d / x.split(":", 1)[1]).exists()]

    def content(self):
        """Digests `ctr content ls` lists in this namespace."""
        return set(self.ctr("content", "ls", "-q").stdout.split())

    def blob_bytes(self, digests):
        """Bytes the content store holds for these blobs (as du -b counts)."""
        d = self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
        return sum((d / x.split(":", 1)[1]).stat().st_size for x in digests)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class StowageServe:
    """`stowage --root ROOT serve --cri-socket SOCK --config CFG`, the CRI
    ImageService, with the policy set in its own stowage.toml."""

    def __init__(self, st, dir, root, policy):
        self.st, self.dir, self.root = st, Path(dir), Path(root)
        self.sock = self.dir / "cri.sock"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "stowage.toml"
        self.config.write_text(f'[store]\npolicy = "{policy}"\n')
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.st, "--root", self.root, "serve", "--cri-socket", self.sock, "--config", self.config],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "serve.log", "ab"),
        )
        for _ in range(300):
            if self.proc.poll() is not None:
                raise Failed("stowage serve exited:\n" + (self.dir / "serve.log").read_text()[-3000:])
            if self.sock.exists():
                return self
            time.sleep(0.05)
        raise Failed("stowage serve made no socket:\n" + (self.dir / "serve.log").read_text()[-3000:])

    hwm = Containerd.hwm
    stop = Containerd.stop


# ---------------------------------------------------------------- the run


class Bench:
    def __init__(self, a):
        self.a = a
        self.st = a.stowage
        self.state = Path(a.state)
        self.scratch = self.state / "scratch"
        self.img = self.state / "scratch.img"
        self.cache = self.state / "layers"
        self.cache.mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_TMP"] = str(self.state)
        self.r = defaultdict(list)  # (op, image, key) -> [values]
        self.notes = {}
        self.busy = []  # (when, [processes])
        self.daemons = []
        # containerd's CRI plugin reads registry hosts from config_path: the
        # corpus registry in plain HTTP (as `ctr --plain-http` and stowage's
        # loopback rule do).
        self.hosts = self.state / "cri-hosts"
        h = self.hosts / a.registry
        h.mkdir(parents=True, exist_ok=True)
        (h / "hosts.toml").write_text(
            f'server = "http://{a.registry}"\n[host."http://{a.registry}"]\n  capabilities = ["pull", "resolve"]\n')
        # `stowage settle`: the recipe policy's deflate analysis as its own
        # step, once it exists. With it, pulls are told not to settle on
        # their own (`--settle later`, when pull has that option) and the
        # settle is timed as its own row.
        self.settle = run([self.st, "settle", "--help"], check=False).returncode == 0
        pull_help = run([self.st, "pull", "--help"], check=False).stdout
        if "--settle" in pull_help:
            self.pull_settle = ["--settle", "later" if self.settle else "now"]
        else:
            self.pull_settle = []
        self.cri_ok = a.cri
        log(f"stowage settle: {'yes' if self.settle else 'no (recipe pulls settle inside the pull)'}"
            + (f"; recipe pulls run with {' '.join(self.pull_settle)}" if self.pull_settle else ""))

    def fresh(self):
        for d in self.daemons:
            d.stop()
        self.daemons = []
        run([HERE / "scratch.sh", "mount", self.scratch, self.img, self.a.scratch_size])
        return self.scratch

    def containerd(self, dir, namespace="bench", cri=None):
        c = Containerd(dir, namespace, cri)
        self.daemons.append(c)
        return c.start()

    def cri(self, sock, *args, timeout=1800):
        """tests/cri/client.py against sock; its JSON answer."""
        p = run(["/usr/bin/python3", self.a.cri_client, "--socket", sock, "--stubs", self.a.cri_stubs,
                 "--timeout", timeout, *args], check=False)
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise Failed(f"client.py {' '.join(map(str, args))} exited {p.returncode}, no JSON:\n{p.stdout}\n{p.stderr}")

    def cri_pull(self, sock, ref):
        """PullImage through sock once the endpoint answers: (seconds of the
        call as the client measured it)."""
        out = self.cri(sock, "wait", timeout=60)
        if not out["ok"]:
            raise Failed(f"CRI endpoint {sock} does not answer: {out}")
        run(["sync"])
        out = self.cri(sock, "pull", ref)
        if not out["ok"]:
            raise Failed(f"CRI PullImage {ref} on {sock}: {out.get('code')}: {out.get('details')}")
        return out["seconds"]

    def snapshots_bytes(self, root):
        """du -sb of the store's snapshots alone (stowage's own `du` figure
        if the layout has no snapshots directory)."""
        d = Path(root) / "snapshots"
        if d.is_dir():
            return du(d)
        j = json.loads(run(self.stowage(root, "du", "--format", "json")).stdout)
        return j["total"]["snapshots"]

    def stowage_blobs(self, root):
        """Bytes of blobs stowage's `du` says the store keeps."""
        p = run(self.stowage(root, "du", "--format", "json"), check=False)
        try:
            return json.loads(p.stdout)["total"]["blobs"]
        except (ValueError, KeyError):
            return None

    def cri_failed(self, what, e):
        log(f"CRI rows off from here on: {what}: {e}")
        self.notes.setdefault("cri_error", f"{what}: {e}")
        self.cri_ok = False

    def stowage(self, root, *args):
        return [self.st, "--root", root, *args]

    def check_busy(self, when):
        b = busy()
        if b:
            self.busy.append((when, b))

    def add(self, op, image, **vals):
        for k, v in vals.items():
            self.r[(op, image, k)].append(v)

    def cri_containerd_pull(self, s, im, mode, rec):
        """A PullImage through a fresh containerd's CRI plugin with
        discard_unpacked_layers = (mode == "discard"); then wait for its
        garbage collection to settle and see which layer blobs are left."""
        discard = mode == "discard"
        c = self.containerd(s / f"ctrd-cri-{mode}", "k8s.io", {"discard": discard, "hosts": self.hosts})
        w = self.cri_pull(c.sock, im.ref)
        hwm = c.hwm()
        layers = [l["digest"] for l in im.layers]
        t0 = time.monotonic()
        while True:
            have = c.content()
            listed = [d for d in layers if d in have]
            files = c.blob_files(layers)
            if not discard or (not listed and not files) or time.monotonic() - t0 > self.a.gc_wait:
                break
            time.sleep(0.2)
        gc = time.monotonic() - t0
        rec(f"cri/ctrd-{mode}", im.name, wall=w, rss=hwm, idle=c.idle_hwm, du=du(c.root),
            layers_listed=len(listed), layer_files=len(files), gc_wait=gc if discard else 0.0)
        if discard and (listed or files):
            self.notes.setdefault("cri_discard_left",
                                  f"{im.name}: {len(listed)} layer blobs still listed by `ctr -n k8s.io content ls`, "
                                  f"{len(files)} still on disk, {gc:.0f} s after the pull")
        c.stop()

    def cri_stowage_pull(self, s, im, pol, rec):
        """A PullImage through `stowage serve --cri-socket` with policy pol."""
        root = s / f"st-cri-{pol}"
        srv = StowageServe(self.st, s / f"st-cri-{pol}.d", root, pol).start()
        self.daemons.append(srv)
        idle = srv.hwm()
        w = self.cri_pull(srv.sock, im.ref)
        hwm = srv.hwm()
        srv.stop()
        if pol == "recipe" and self.settle:
            # whatever the server left to settle (or a background settle it
            # started: `stowage settle` waits for it), untimed
            run(self.stowage(root, "settle"))
        rec(f"cri/st-{pol}", im.name, wall=w, rss=hwm, idle=idle, du=du(root))

    # one pass of the pull section for one image
    def pull_pass(self, im, rep, record):
        s = self.fresh()
        self.check_busy(f"pull {im.name} rep {rep}")
        rec = (lambda *a, **k: self.add(*a, **k)) if record else (lambda *a, **k: None)
        order = ["stowage", "containerd", "cri-containerd", "cri-stowage"]
        if rep % 2:
            order.reverse()
        for tool in order:
            if tool == "stowage":
                for pol in self.a.policies:
                    root = s / f"st-{pol}"
                    extra = self.pull_settle if pol == "recipe" else []
                    w, m = timed(self.stowage(root, "pull", "--plain-http", "-q", "--policy", pol, *extra, im.ref))
                    vals = {}
                    if pol == "recipe" and self.settle:
                        vals["du_pulled"] = du(root)
                        sw, sm = timed(self.stowage(root, "settle"))
                        rec("settle/recipe", im.name, wall=sw, rss=sm, total=w + sw)
                    rec(f"pull/{pol}", im.name, wall=w, rss=m, du=du(root), snap=self.snapshots_bytes(root),
                        blobs=self.stowage_blobs(root), **vals)
            elif tool == "cri-containerd":
                if self.cri_ok:
                    for mode in ("keep", "discard"):
                        try:
                            self.cri_containerd_pull(s, im, mode, rec)
                        except Failed as e:
                            self.cri_failed(f"containerd CRI pull ({mode}) of {im.name}", e)
                            break
            elif tool == "cri-stowage":
                if self.cri_ok:
                    for pol in self.a.cri_policies:
                        try:
                            self.cri_stowage_pull(s, im, pol, rec)
                        except Failed as e:
                            self.cri_failed(f"stowage serve CRI pull ({pol}) of {im.name}", e)
                            break
            else:
                c = self.containerd(s / "ctrd")
                w, m = c.timed("images", "pull", "--plain-http", im.ref)
                hwm = c.hwm()
                size = du(c.root)
                # containerd's discard_unpacked_layers (a CRI-plugin setting
                # that ctr ignores) deletes the layer blobs after unpacking:
                # what would be left is the root minus those files.
                left = size - c.blob_bytes([l["digest"] for l in im.layers])
                rec("pull/ctr", im.name, wall=w, rss=hwm, client=m, idle=c.idle_hwm, du=size, du_discard=left)
                c.stop()
        # The machine's share: the unavoidable stages of this pull, each
        # alone, over all the image's layers in order.
        if self.a.hardware:
            blobs, tars = im.blobs, im.tars
            if im.codec == "gzip":
                if shutil.which("pigz"):
                    rec("hw", im.name, pigz=timed(["pigz", "-dc", *blobs])[0])
                rec("hw", im.name, gzip=timed(["gzip", "-dc", *blobs])[0])
            elif im.codec == "zstd":
                rec("hw", im.name, zstd=timed(["zstd", "-qdc", *blobs])[0])
            rec("hw", im.name, sha256_blob=timed(["sha256sum", *blobs])[0])
            rec("hw", im.name, sha256_tar=timed(["sha256sum", *tars])[0])
            x = s / "tarx"
            x.mkdir()
            untar = 'for t; do tar -xf "$t" -C "$X" || exit 1; done'
            rec("hw", im.name, tar_x=timed(["env", f"X={x}", "sh", "-c", untar, "sh", *tars])[0])

    # one pass of export / import / discard-export for one image
    def archive_pass(self, im, rep, record):
        s = self.fresh()
        self.check_busy(f"archive {im.name} rep {rep}")
        rec = (lambda *a, **k: self.add(*a, **k)) if record else (lambda *a, **k: None)
        st_root, st_tar = s / "st", s / "st-export.tar"
        run(self.stowage(st_root, "pull", "--plain-http", "-q", "--policy", "keep", im.ref))
        c = self.containerd(s / "ctrd")
        c.ctr("images", "pull", "--plain-http", im.ref)
        c.stop()
        ctr_tar = s / "ctr-export.tar"
        order = ["stowage", "containerd"] if rep % 2 == 0 else ["containerd", "stowage"]
        for tool in order:
            if tool == "stowage":
                w, m = timed(self.stowage(st_root, "export", "-o", st_tar, im.ref))
                rec("export", im.name, st_wall=w, st_rss=m, st_size=st_tar.stat().st_size)
            else:
                c.start()  # fresh daemon (same root): its peak is this export's
                w, m = c.timed("images", "export", ctr_tar, im.ref)
                rec("export", im.name, ctr_wall=w, ctr_rss=c.hwm(), ctr_client=m, ctr_size=ctr_tar.stat().st_size)
                c.stop()
        # Both import the same archive: the one `ctr images export` wrote.
        for tool in order:
            if tool == "stowage":
                root = s / "st-import"
                w, m = timed(self.stowage(root, "import", "--policy", "keep", ctr_tar))
                rec("import", im.name, st_wall=w, st_rss=m, st_du=du(root))
            else:
                ci = self.containerd(s / "ctrd-import")
                w, m = ci.timed("images", "import", ctr_tar)
                rec("import", im.name, ctr_wall=w, ctr_rss=ci.hwm(), ctr_client=m, ctr_du=du(ci.root))
                ci.stop()
        # Export of an image whose blobs were dropped: stowage re-fetches them
        # from the origin registry; containerd cannot.
        d_root, d_tar = s / "st-discard", s / "st-discard-export.tar"
        run(self.stowage(d_root, "pull", "--plain-http", "-q", "--policy", "discard", im.ref))
        w, m = timed(self.stowage(d_root, "export", "-o", d_tar, im.ref))
        same = blob_names(d_tar) == blob_names(st_tar)
        rec("export-discard", im.name, st_wall=w, st_rss=m, same_blobs=same)
        if "ctr_discard_error" not in self.notes:
            c.start()
            victim = im.big["digest"]
            c.ctr("content", "rm", victim)
            p = c.ctr("images", "export", s / "ctr-discard.tar", im.ref, check=False)
            self.notes["ctr_discard_cmd"] = f"ctr -n bench content rm {victim}; ctr -n bench images export out.tar {im.ref}"
            self.notes["ctr_discard_rc"] = p.returncode
            self.notes["ctr_discard_error"] = (p.stderr.strip() or p.stdout.strip())
            c.stop()

    def go(self):
        a = self.a
        self.check_busy("start")
        self.load_start = os.getloadavg()
        log(f"resolving images and caching their largest layers under {self.cache}")
        pulls = [Image(a.registry, n, self.cache) for n in a.images]
        archives = [Image(a.registry, n, self.cache) for n in a.archive_images]
        passes = [(rep, rep >= a.warmup) for rep in range(a.warmup + a.reps)]
        t0 = time.monotonic()
        try:
            for rep, record in passes:
                what = f"rep {rep - a.warmup + 1}/{a.reps}" if record else "warm-up"
                for im in pulls:
                    log(f"{what}: pull {im.name}")
                    self.pull_pass(im, rep, record)
                for im in archives:
                    log(f"{what}: export/import {im.name}")
                    self.archive_pass(im, rep, record)
        finally:
            for d in self.daemons:
                d.stop()
            run([HERE / "scratch.sh", "unmount", self.scratch, self.img], check=False)
        self.check_busy("end")
        self.elapsed = time.monotonic() - t0
        self.load_end = os.getloadavg()
        (self.state / "last-run.json").write_text(json.dumps(
            {"results": {"|".join(k): v for k, v in self.r.items()}, "notes": self.notes, "busy": self.busy}, indent=1))
        return pulls, archives


def blob_names(path):
    with tarfile.open(path) as t:
        return sorted(n for n in t.getnames() if n.startswith("blobs/"))


# ---------------------------------------------------------------- report


def med(xs):
    return statistics.median(xs) if xs else None


def secs(xs):
    if not xs:
        return "–"
    m = med(xs)
    if len(xs) > 1 and max(xs) - min(xs) >= 0.01:
        return f"{m:.2f} ({min(xs):.2f}–{max(xs):.2f})"
    return f"{m:.2f}"


def mib_kib(xs):
    return "–" if not xs else f"{med(xs) / 1024:.0f}"


def mb(n):
    return f"{n / 1e6:.1f} MB"


def ratio(a, b):
    if not a or not b:
        return "–"
    return f"**{med(a) / med(b):.2f}×**"


def report(b, pulls, archives, command):
    a, r = b.a, b.r
    out = []
    w = out.append
    w("| operation | image | stowage s | containerd s | time ratio | stowage peak MiB | containerd daemon peak MiB (`ctr` client) | memory ratio |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for im in pulls:
        c = ("pull/ctr", im.name)
        for pol in a.policies:
            s = (f"pull/{pol}", im.name)
            w(f"| pull + unpack, `--policy {pol}` | {im.name} | {secs(r[s + ('wall',)])} | {secs(r[c + ('wall',)])} "
              f"| {ratio(r[s + ('wall',)], r[c + ('wall',)])} | {mib_kib(r[s + ('rss',)])} "
              f"| {mib_kib(r[c + ('rss',)])} ({mib_kib(r[c + ('client',)])}) | {ratio(r[s + ('rss',)], r[c + ('rss',)])} |")
        g = lambda k: r[("settle/recipe", im.name, k)]
        if g("wall"):
            w(f"| settle (`stowage settle` after `pull --policy recipe{' '.join([''] + b.pull_settle)}`) | {im.name} | {secs(g('wall'))} "
              f"| – (no such step) | – | {mib_kib(g('rss'))} | – | – |")
            w(f"| pull + settle, `--policy recipe` (per pass, summed) | {im.name} | {secs(g('total'))} | {secs(r[c + ('wall',)])} "
              f"| {ratio(g('total'), r[c + ('wall',)])} | – | – | – |")
        for mode in ("keep", "discard"):
            c2 = ("cri/ctrd-" + mode, im.name)
            if not r[c2 + ("wall",)]:
                continue
            if r[(f"cri/st-{mode}", im.name, "wall")]:
                s2, label = (f"cri/st-{mode}", im.name), f'`stowage serve` with `policy = "{mode}"`'
            else:
                s2, label = (f"pull/{mode}", im.name), f"`stowage pull --policy {mode}` (CLI)"
            w(f"| pull (CRI `PullImage`): containerd `discard_unpacked_layers = {str(mode == 'discard').lower()}` / {label} "
              f"| {im.name} | {secs(r[s2 + ('wall',)])} | {secs(r[c2 + ('wall',)])} | {ratio(r[s2 + ('wall',)], r[c2 + ('wall',)])} "
              f"| {mib_kib(r[s2 + ('rss',)])} | {mib_kib(r[c2 + ('rss',)])} | {ratio(r[s2 + ('rss',)], r[c2 + ('rss',)])} |")
    for im in archives:
        for op, label in (("export", "export (`stowage export -o` / `ctr images export`)"),
                          ("import", "import (`stowage import` / `ctr images import`, same archive)")):
            g = lambda k: r[(op, im.name, k)]
            w(f"| {label} | {im.name} | {secs(g('st_wall'))} | {secs(g('ctr_wall'))} | {ratio(g('st_wall'), g('ctr_wall'))} "
              f"| {mib_kib(g('st_rss'))} | {mib_kib(g('ctr_rss'))} ({mib_kib(g('ctr_client'))}) | {ratio(g('st_rss'), g('ctr_rss'))} |")
        g = lambda k: r[("export-discard", im.name, k)]
        w(f"| export of a `--policy discard` image (blobs re-fetched) | {im.name} | {secs(g('st_wall'))} "
          f"| fails (see below) | – | {mib_kib(g('st_rss'))} | – | – |")
    table1 = "\n".join(out)

    out = []
    w = out.append
    pols = a.policies
    head = " | ".join(f"stowage `{p}`" for p in pols)
    w(f"| image | compressed layers | {head} | containerd (`ctr`: blobs + snapshots) | containerd, layer blobs deleted (≈ `discard_unpacked_layers`) | "
      + " | ".join(f"`{p}` / containerd{' (blobs deleted)' if p == 'discard' else ''}" for p in pols) + " |")
    w("|" + " --- |" * (4 + 2 * len(pols)))
    for im in pulls:
        c = r[("pull/ctr", im.name, "du")]
        cd = r[("pull/ctr", im.name, "du_discard")]
        cells = [mb(med(r[(f"pull/{p}", im.name, "du")])) if r[(f"pull/{p}", im.name, "du")] else "–" for p in pols]
        rats = [ratio(r[(f"pull/{p}", im.name, "du")], cd if p == "discard" else c) for p in pols]
        w(f"| {im.name} | {mb(im.compressed)} | {' | '.join(cells)} | {mb(med(c)) if c else '–'} | {mb(med(cd)) if cd else '–'} | {' | '.join(rats)} |")
    for im in archives:
        g = lambda k: r[("import", im.name, k)]
        if g("st_du"):
            w(f"| {im.name}, after import | {mb(im.compressed)} | {mb(med(g('st_du')))} (keep) | {'– | ' * (len(pols) - 1)}"
              f"{mb(med(g('ctr_du')))} | – | {ratio(g('st_du'), g('ctr_du'))} |{' – |' * (len(pols) - 1)}")
    table2 = "\n".join(out)

    # Bytes at rest through CRI, and recipe against the snapshots alone.
    def dmed(key):
        return med(r[key]) if r[key] else None

    def cell(v):
        return mb(v) if v is not None else "–"

    def small(v):
        return "–" if v is None else mb(v) if v >= 1e6 else f"{v / 1e3:.1f} kB"

    def rat(x, y, nd=2):
        return f"**{x / y:.{nd}f}×**" if x and y else "–"

    cols = []  # (header, fn(image) -> cell)
    if any(r[("cri/ctrd-keep", im.name, "du")] for im in pulls):
        cols.append(("containerd CRI, `discard_unpacked_layers = false`", lambda im: cell(dmed(("cri/ctrd-keep", im.name, "du")))))
    if any(r[("cri/ctrd-discard", im.name, "du")] for im in pulls):
        cols.append(("containerd CRI, `discard_unpacked_layers = true`", lambda im: cell(dmed(("cri/ctrd-discard", im.name, "du")))))

        def left(im):
            ls, fs = r[("cri/ctrd-discard", im.name, "layers_listed")], r[("cri/ctrd-discard", im.name, "layer_files")]
            gc = r[("cri/ctrd-discard", im.name, "gc_wait")]
            return (f"{max(ls)} listed, {max(fs)} files (of {len(im.layers)}); gone {max(gc):.1f} s after the pull"
                    if ls else "–")
        cols.append(("its layer blobs left (`ctr -n k8s.io content ls`; files on disk)", left))
    for pol in a.cri_policies:
        if any(r[(f"cri/st-{pol}", im.name, "du")] for im in pulls):
            cols.append((f"`stowage serve`, `policy = \"{pol}\"`", lambda im, pol=pol: cell(dmed((f"cri/st-{pol}", im.name, "du")))))
    if "discard" in pols and any(r[("cri/ctrd-discard", im.name, "du")] for im in pulls):
        cols.append(("stowage `discard` / containerd CRI `= true`", lambda im: rat(
            dmed(("pull/discard", im.name, "du")), dmed(("cri/ctrd-discard", im.name, "du")))))
    if "recipe" in pols:
        cols.append(("stowage `recipe`" + (" after `settle`" if b.settle else ""), lambda im: cell(dmed(("pull/recipe", im.name, "du")))))
        cols.append(("its snapshots alone (`du -sb ROOT/snapshots`)", lambda im: cell(dmed(("pull/recipe", im.name, "snap")))))

        def target(im):
            x, y = dmed(("pull/recipe", im.name, "du")), dmed(("pull/recipe", im.name, "snap"))
            if not x or not y:
                return "–"
            return f"**{x / y:.3f}×** ({'meets' if x / y <= 1.03 else 'misses'} ≤ 1.03×)"
        cols.append(("`recipe` / its snapshots (target ≤ 1.03×)", target))
        cols.append(("blobs `stowage du` still counts", lambda im: small(dmed(("pull/recipe", im.name, "blobs")))))
        if any(r[("cri/ctrd-discard", im.name, "du")] for im in pulls):
            cols.append(("`recipe` / containerd CRI `= true`", lambda im: rat(
                dmed(("pull/recipe", im.name, "du")), dmed(("cri/ctrd-discard", im.name, "du")))))
    table2b = ""
    if cols:
        out = ["| image | " + " | ".join(h for h, _ in cols) + " |", "|" + " --- |" * (1 + len(cols))]
        for im in pulls:
            out.append(f"| {im.name} | " + " | ".join(f(im) for _, f in cols) + " |")
        table2b = "\n".join(out)

    table3 = ""
    if a.hardware:
        out = []
        w = out.append
        w("| image | layers (compressed → tar) | pigz -dc | gzip -dc | zstd -dc | sha256sum blobs | sha256sum tars | tar -x | "
          "slowest stage, MB/s of compressed image | stowage pull (keep), MB/s of compressed image | pull / slowest stage |")
        w("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for im in pulls:
            g = lambda k: r[("hw", im.name, k)]
            dec = [med(g(k)) for k in ("pigz", "gzip", "zstd") if g(k)]
            stages = [min(dec)] if dec else []
            stages += [med(g(k)) for k in ("sha256_blob", "sha256_tar", "tar_x") if g(k)]
            pull = r[("pull/keep", im.name, "wall")]
            if not stages:
                continue
            slow = max(stages)
            bound = im.compressed / slow / 1e6
            rate = im.compressed / med(pull) / 1e6 if pull else None
            w(f"| {im.name} | {len(im.layers)}: {mb(im.compressed)} → {mb(im.tar_size)} | {secs(g('pigz'))} | {secs(g('gzip'))} | {secs(g('zstd'))} "
              f"| {secs(g('sha256_blob'))} | {secs(g('sha256_tar'))} | {secs(g('tar_x'))} | {bound:.0f} "
              f"| {f'{rate:.0f}' if rate else '–'} | {f'{rate / bound:.0%}' if rate else '–'} |")
        table3 = "\n".join(out)

    summary = "## Results\n\n" + table1 + "\n\n### Bytes at rest (`du -sb` of the store root)\n\n" + table2
    if table2b:
        summary += ("\n\n### Bytes at rest after a CRI pull, and `recipe` against the snapshots alone (`du -sb`)\n\n"
                    + table2b)
    if b.notes.get("cri_error"):
        summary += f"\n\n**CRI rows incomplete** (none measured after this error):\n\n```\n{b.notes['cri_error'].strip()[-2000:]}\n```"
    if b.notes.get("cri_discard_left"):
        summary += f"\n\n**containerd kept layer blobs despite `discard_unpacked_layers = true`**: {b.notes['cri_discard_left']}"
    if table3:
        summary += "\n\n### The machine's share (each unavoidable stage of a pull alone, over all the image's layers)\n\n" + table3
    print(summary)

    # ---- BENCHMARKS.md
    meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("model name")), "?")
    ctrd_v = run(["containerd", "--version"]).stdout.strip()
    st_v = run([b.st, "--version"]).stdout.strip()
    git = run(["git", "-C", HERE.parent, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
    dirty = run(["git", "-C", HERE.parent, "status", "--porcelain", "--untracked-files=no"], check=False).stdout.strip()
    idle = [v for im in pulls for v in r[("pull/ctr", im.name, "idle")]]
    same = [v for im in archives for v in r[("export-discard", im.name, "same_blobs")]]
    if b.busy:
        noise = ("**Noisy: other work was running on this machine during the measurements** "
                 f"(seen at {len(b.busy)} of the checks before each pass; e.g. `{b.busy[0][1][0][:160]}`). "
                 f"Load average {b.load_start[0]:.2f} at the start, {b.load_end[0]:.2f} at the end. "
                 "Ratios are more trustworthy than absolute seconds; re-run on a quiet machine before quoting numbers.")
    else:
        noise = (f"The machine was quiet: no cargo/rustc/test process was seen before any pass "
                 f"(load average {b.load_start[0]:.2f} at the start, {b.load_end[0]:.2f} at the end).")
    md = f"""# Benchmarks: stowage vs containerd

Generated by `scripts/bench`; re-run it to refresh this file (it overwrites it).

```
{command}
```

- Date: {datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}; run took {b.elapsed / 60:.1f} min.
- Machine: {os.cpu_count()} CPUs ({cpu}), {int(meminfo) / 1024 / 1024:.1f} GiB RAM, Linux {platform.release()}.
- stowage: `{st_v}` (release build, commit {git or '?'}{', with uncommitted changes' if dirty else ''}); containerd: `{ctrd_v}` with `ctr` and through its CRI plugin, overlayfs snapshotter.
- Repetitions: {a.warmup} warm-up pass (not counted), then {a.reps} measured; each cell is the median (range in brackets).
- Caches are **warm**: page caches are never dropped; the registry's data is on the same disk and was read by the warm-up pass.
- {noise}

{summary}

Ratios are stowage / containerd: below 1× stowage is faster, smaller or lighter.

## What each number is

- **Fresh stores, same filesystem.** Before every pass of every image, both stores' filesystem (a
  loop-mounted ext4 image under `{a.state}`, mounted with `noinit_itable` so no background inode
  table zeroing runs during the measurement) is re-formatted; stowage's root and containerd's root
  and state sit side by side on it. The order of the tools (stowage CLI pulls, `ctr`, containerd
  through CRI, `stowage serve` through CRI) is reversed every other pass. A `sync`
  runs before every timed command, so no step pays for the previous one's writeback. Each tool's
  own fsync calls are on its clock (both fsync the blobs they store); whatever a command leaves dirty
  in the page cache (most of the unpacked files, for both) is not.
- **stowage** is timed with `/usr/bin/time -f '%e %M'`: wall seconds and the peak RSS of the stowage process.
- **containerd** does the work in its daemon, so a private containerd (own config, root, state and
  socket, Debian's package) is started fresh for each operation; the time is the wall time of the `ctr`
  command (`/usr/bin/time`), the memory is the daemon's `VmHWM` from `/proc/PID/status` read right
  after the operation (peak since the daemon started — its idle peak after start-up is
  {f'{med(idle) / 1024:.0f} MiB' if idle else '?'}, with the CRI plugin loaded as in the default
  config), and the `ctr` client's own peak RSS is shown in brackets.
- **pull + unpack**: `stowage pull --plain-http -q --policy P REF` vs `ctr images pull --plain-http REF`
  (which fetches the host platform and unpacks to overlayfs snapshots). Both talk to the same local
  `docker-registry` over loopback.
- **pull (CRI `PullImage`)**: the same image pulled through containerd's CRI plugin, the way kubelet
  pulls: a fresh private containerd (CRI plugin enabled, `snapshotter = "overlayfs"`, the registry
  in plain HTTP through a `hosts.toml` under `registry.config_path`), once with
  `discard_unpacked_layers = false` and once with `= true`, driven by `tests/cri/client.py` (Python
  grpcio, stubs from the CRI proto). The time is the `PullImage` call's own wall time as the client
  measures it (not the Python start-up), the memory the daemon's `VmHWM` as for `ctr`; images land in
  namespace `k8s.io`. The stowage cell beside it is `stowage serve --cri-socket S` with
  `[store] policy = "keep"` / `"discard"` in its config, driven by the same client the same way
  (its `VmHWM`), or, when the bench ran with `--cri-policies none`, the CLI pull of that policy.
  (`--cri-policies` may add `recipe`; that server's root is settled, untimed, before its `du`.)
- **settle** (when `stowage settle` exists): the `recipe` policy's deflate analysis and proof
  rebuild as its own step. The `recipe` pull runs with `--settle later` (when `pull` has that
  option), then `stowage --root R settle` is timed as its own row; "pull + settle" is the two added up
  per pass. The `recipe` bytes at rest are measured after the settle. Without `stowage settle` the
  analysis is part of the `recipe` pull row.
- **export**: `stowage export -o FILE REF` vs `ctr images export FILE REF` from a store that holds the
  pulled image (a freshly restarted containerd, so its peak is the export's).
  **import**: both import the archive `ctr images export` wrote, into an empty store, unpacking
  (`stowage import --policy keep`, `ctr images import`).
- **export of a `--policy discard` image**: stowage holds only snapshots and re-fetches the dropped
  blobs from the origin registry during the export (the archive carries the same blob digests as the
  `keep` export: {'yes' if same and all(same) else 'NO' if same else '?'}). containerd cannot do this: after its
  layer blobs are gone (what `discard_unpacked_layers = true` does; `ctr` ignores that CRI setting, so
  the benchmark deletes one layer blob with `ctr content rm`), export fails:

  ```
  $ {b.notes.get('ctr_discard_cmd', '?')}
  {b.notes.get('ctr_discard_error', '?')}
  (exit status {b.notes.get('ctr_discard_rc', '?')})
  ```
- **bytes at rest**: `du -sb` of the store root after the pull (stowage: the whole `--root`;
  containerd: its `root`, i.e. content store, snapshots and metadata; not its `state`). "containerd,
  layer blobs deleted" is that figure minus the sizes of the layer blob files in its content store:
  what containerd with `discard_unpacked_layers = true` would keep (a CRI-plugin setting that `ctr` pulls do not
  honour; `ctr content rm` only drops the metadata, the files stay until a later garbage collection). Compare stowage `keep` with containerd as `ctr` leaves it, and stowage `discard`
  with the blob-less containerd.
  **After a CRI pull** the figure is measured, not estimated: `du -sb` of the CRI-driven containerd's
  `root` once its garbage collection has removed the layer blobs (the bench polls
  `ctr -n k8s.io content ls` and the content store's blob files for the image's layer digests, up to
  {a.gc_wait:.0f} s, and reports how many were left and how long after the pull the first poll found them gone; each poll
  is a `ctr` call, so that time is an upper bound), and of `stowage serve`'s root
  after the server stopped. **`recipe` / its snapshots** is the `recipe` store's whole root over
  `du -sb ROOT/snapshots` of the same store: what keeping the recipes (and metadata) costs on top of
  the unpacked layers alone; the target is ≤ 1.03×. "blobs `stowage du` still counts" is `stowage du`'s
  blob total for that store (manifest and config, plus any layer blob the recipe could not replace).
- **the machine's share**: every layer of the image, fetched once from the registry and kept on the
  work disk (warm in the page cache), each stage alone over all layers in order: `pigz -dc`/`gzip -dc`
  (or `zstd -dc`) to /dev/null, `sha256sum` of the compressed blobs and of the tars (a pull verifies
  both digests), and GNU `tar -x` of each tar in turn into the fresh scratch filesystem. "slowest
  stage" is the image's compressed size over the slowest of (fastest decompressor, either hash,
  tar -x): what a pull that overlaps all stages could reach on this machine (2 cores: the stages
  compete for them, so it is an upper bound, not a promise). "stowage pull" is the same size over the
  median `keep` pull time.
- Raw numbers of the last run (every pass, every measured value): `{b.state}/last-run.json`.
"""
    # Where stowage is behind and why: written by people from a run's numbers
    # (bench/analysis.md names the run it reads), kept across re-runs.
    analysis = HERE / "analysis.md"
    if analysis.exists():
        md += "\n" + analysis.read_text()
    if a.write:
        Path(a.write).write_text(md)
        log(f"wrote {a.write}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--registry", required=True)
    p.add_argument("--stowage", required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--images", default="debian-min,many-small,big-blobs")
    p.add_argument("--archive-images", default="debian-min")
    p.add_argument("--policies", default="keep,discard,recipe")
    p.add_argument("--no-hardware", dest="hardware", action="store_false")
    p.add_argument("--no-cri", dest="cri", action="store_false")
    p.add_argument("--cri-policies", default="keep,discard")
    p.add_argument("--cri-client", default=str(HERE.parent / "tests" / "cri" / "client.py"))
    p.add_argument("--cri-stubs", default="")
    p.add_argument("--gc-wait", type=float, default=30.0)
    p.add_argument("--scratch-size", default="24G")
    p.add_argument("--write", default="")
    p.add_argument("--command", default="scripts/bench")
    a = p.parse_args()
    a.images = [x for x in a.images.split(",") if x]
    a.archive_images = [x for x in a.archive_images.split(",") if x]
    a.policies = [x for x in a.policies.split(",") if x]
    a.cri_policies = [x for x in a.cri_policies.split(",") if x and x != "none"]
    if a.cri and not a.cri_stubs:
        p.error("--cri-stubs DIR (from tests/cri/gen_stubs.sh) is needed unless --no-cri")
    b = Bench(a)
    pulls, archives = b.go()
    report(b, pulls, archives, a.command)


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        log(f"ERROR: {e}")
        sys.exit(1)
