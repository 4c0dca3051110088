# shellcheck shell=bash
# Shared set-up for scripts/demo and scripts/test (sourced, not run).
# Installs Debian packages, builds stowage, starts a private docker-registry
# on a free loopback port and pushes the corpus images to it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${STOWAGE_SHARED:-$ROOT/../shared}
# Fixed places so a re-run skips finished work (corpus build, registry data).
STATE=${STOWAGE_STATE:-/var/tmp/stowage-dev}
export CORPUS_WORK=${CORPUS_WORK:-/var/tmp/oci-corpus}

say() { printf '\033[1m[stowage %(%H:%M:%S)T]\033[0m %s\n' -1 "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Debian packages the scripts and tests use. The docker-registry package
# starts a system service on :5000 when installed; we never use that one.
PACKAGES=(docker-registry skopeo umoci runc containerd debootstrap jq curl gzip zstd
          python3-grpc-tools protobuf-compiler pkg-config e2fsprogs attr
          apache2-utils openssl golang-1.19-go golang-github-klauspost-pgzip-dev pigz)

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        say "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

ensure_rust() {
    command -v cargo >/dev/null || [[ -x $HOME/.cargo/bin/cargo ]] || die "cargo not found (install rustup's stable toolchain)"
    export PATH=$HOME/.cargo/bin:$PATH
}

build_release() {
    say "building stowage (release)"
    (cd "$ROOT" && cargo build --release --locked -q -p stowage)
    export STOWAGE_BIN=$ROOT/target/release/stowage
}

free_port() {
    local p
    for p in $(seq "${1:-5000}" 5999); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
    done
    die "no free port in ${1:-5000}-5999"
}

# Start Debian's docker-registry binary with our own config and data dir.
# Sets REGISTRY=127.0.0.1:PORT and REGISTRY_PID; stop_registry stops only it.
start_registry() {
    local port data=$STATE/registry
    mkdir -p "$data"
    port=$(free_port 5000)
    cat >"$STATE/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
    /usr/bin/docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
    REGISTRY_PID=$!
    REGISTRY=127.0.0.1:$port
    export REGISTRY REGISTRY_PID
    local i
    for i in $(seq 100); do
        curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && { say "registry up at $REGISTRY (pid $REGISTRY_PID, data $data)"; return; }
        kill -0 "$REGISTRY_PID" 2>/dev/null || { cat "$STATE/registry.log" >&2; die "docker-registry exited"; }
        sleep 0.1
    done
    die "docker-registry did not answer on $REGISTRY"
}

stop_registry() {
    if [[ -n ${REGISTRY_PID:-} ]] && kill -0 "$REGISTRY_PID" 2>/dev/null; then
        kill "$REGISTRY_PID"; wait "$REGISTRY_PID" 2>/dev/null || true
    fi
}

build_corpus() {
    say "building and pushing the corpus to $REGISTRY (work dir $CORPUS_WORK; first run ~2-3 min)"
    bash "$SHARED/corpus/build.sh" -w "$CORPUS_WORK" -r "$REGISTRY"
}

# A loop-mounted ext4 for scratch stores: deleting many files on the work
# disk is slow, and overlay/xattr tests want a real filesystem.
mount_scratch() {
    SCRATCH=$STATE/scratch
    local img=$STATE/scratch.img
    if mountpoint -q "$SCRATCH"; then
        umount "$SCRATCH" || umount -l "$SCRATCH"
    fi
    rm -f "$img"
    truncate -s "${SCRATCH_SIZE:-24G}" "$img"
    mkfs.ext4 -q -F -E lazy_itable_init=1,lazy_journal_init=1 "$img"
    mkdir -p "$SCRATCH"
    mount -o loop "$img" "$SCRATCH"
    export SCRATCH
    say "scratch filesystem at $SCRATCH (loop-mounted ext4)"
}

unmount_scratch() {
    if [[ -n ${SCRATCH:-} ]] && mountpoint -q "$SCRATCH"; then
        # Overlay mounts made by tests live below; release them first.
        { grep -o " $SCRATCH/[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        umount "$SCRATCH" 2>/dev/null || umount -l "$SCRATCH" || true
        rm -f "$STATE/scratch.img"
    fi
}
