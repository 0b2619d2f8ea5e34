#!/usr/bin/env bash
# Local stand-ins for the Dockerfile's two FROM images, for a Docker engine
# that cannot pull them (no registry: CI here, an air-gapped host). An image
# already present under its tag is left alone, so on a machine that can pull
# this does nothing once the real ones are there.
#
#   debian:bookworm-slim  a Debian bookworm root from `debootstrap --variant=minbase`
#   rust:1-bookworm       a bookworm root with a C toolchain (`--variant=buildd`)
#                         and this machine's own Rust toolchain copied in,
#                         laid out as the official image lays it out
#                         (RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo)
#
#   tests/docker/base-images.sh        (as root: debootstrap needs it)
#
# DEBIAN_MIRROR: where debootstrap fetches packages (default: the mirror
# apt uses here, else deb.debian.org). Building the image then needs the
# crate registry and that mirror: `docker build --network host`.
set -euo pipefail

mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

missing() { ! docker image inspect "$1" >/dev/null 2>&1; }

need_tool() {
  command -v "$1" >/dev/null && return
  apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
}

# A bookworm root in $work/$1 (variant $2, extra packages $3), its apt lists,
# caches and documentation removed: what the image needs is apt and dpkg.
bootstrap() {
  local root=$work/$1
  need_tool debootstrap debootstrap
  debootstrap --variant="$2" ${3:+--include="$3"} bookworm "$root" "$mirror" >"$work/$1.log" 2>&1 \
    || { tail -20 "$work/$1.log" >&2; echo "base-images: debootstrap $1 failed" >&2; exit 1; }
  # What Docker's own Debian images configure: apt keeps no package files
  # or caches after an install, and dpkg installs no documentation, manual
  # pages or translations (the slim images' rules).
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
DPKG
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/lintian/* "$root"/var/log/*.log
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
  # The mirror apt uses inside the image (debootstrap writes only the suite).
  echo "deb $mirror bookworm main" >"$root/etc/apt/sources.list"
}

# The host's own extra certificate authorities (a proxy that inspects TLS,
# a company CA), so that the build stage reaches the crate registry as the
# host does.
copy_host_cas() {
  local root=$1
  compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null || return 0
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
}

# The default toolchain's compiler and standard library, without its
# documentation (about 600 MB instead of 1.4 GB).
copy_rust() {
  local root=$1 toolchain
  toolchain=$(rustc --print sysroot)
  mkdir -p "$root/usr/local/rustup/toolchains/host" "$root/usr/local/cargo/bin"
  cp -a "$toolchain/bin" "$toolchain/lib" "$toolchain/libexec" "$root/usr/local/rustup/toolchains/host/" 2>/dev/null \
    || cp -a "$toolchain/bin" "$toolchain/lib" "$root/usr/local/rustup/toolchains/host/"
  for tool in cargo rustc rustdoc; do
    ln -s "../../rustup/toolchains/host/bin/$tool" "$root/usr/local/cargo/bin/$tool"
  done
}

if missing debian:bookworm-slim; then
  echo "base-images: making debian:bookworm-slim (debootstrap minbase)"
  bootstrap slim minbase
  tar -C "$work/slim" -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - debian:bookworm-slim >/dev/null
fi

if missing rust:1-bookworm; then
  echo "base-images: making rust:1-bookworm (debootstrap buildd + $(rustc --version))"
  bootstrap rust buildd ca-certificates,curl,git,pkg-config
  copy_rust "$work/rust"
  copy_host_cas "$work/rust"
  tar -C "$work/rust" -c . | docker import \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    - rust:1-bookworm >/dev/null
fi

docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' debian:bookworm-slim
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' rust:1-bookworm
