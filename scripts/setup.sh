#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine, run as root by `make demo`
# and `make test`: system packages from apt, bpffs, and the project's venv.
# Quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  clang llvm libbpf-dev bpftool gcc-multilib
  etcd-server etcd-client
  iproute2 iptables nftables conntrack
  podman runc containernetworking-plugins
  catatonit  # the infra container of `podman pod create` runs it
  docker.io  # the libnetwork driver's e2e: a dockerd per lab node, never started by apt
  busybox-static iperf3 wrk nginx-light procps psmisc
  python3-venv
)

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (network namespaces, BPF, podman)" >&2
  exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # etcd-server's and docker.io's postinst would start a system daemon;
  # policy-rc.d stops that.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# bpffs: the datapath pins its maps there so they outlive the agent.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.glia-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -U pip >/dev/null
  .venv/bin/pip install -q --disable-pip-version-check -e '.[dev]' >/dev/null
  echo "$want" > "$stamp"
fi
