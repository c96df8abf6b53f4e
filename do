#!/usr/bin/env bash
# Vigil's set-up and entry script. Two commands matter (see README):
#   ./do run [vigil run options]   install what is missing, build the BPF objects, run the agent
#   ./do test [pytest options]     install what is missing, build, run the whole test suite
# Both are idempotent: each step checks first and does nothing when already done.
#   ./do test-kernels [--kernel 5.10|6.1|6.12 ...] [--backend auto|all|NAME ...]
#                     [--btf kernel|tailored ...] [--suite matrix|kernel]
#                                  the VM kernel matrix (tests/vm; QEMU + virtme-ng, see README);
#                                  --btf tailored: on a tailored BTF, the kernel's own hidden
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"

# Debian packages Vigil needs to build and test. The monitored host needs only libbpf1 and
# python3; clang/llvm/bpftool are build tools.
APT_PKGS=(clang llvm libbpf-dev libbpf1 bpftool make gcc libc6-dev python3 python3-venv kmod
          python3-pip linux-libc-dev util-linux passwd procps coreutils
          zstd lz4 xz-utils rpm dwarves  # vigil btf extract: payloads, pahole; rpmbuild (tests)
          liburing-dev             # tests/kernel/uring_ops.c: changes made only through io_uring
          sudo logrotate openssh-client systemd  # tests/kernel/test_pack_vigil.py: visudo,
                                   # logrotate, ssh-keygen, systemctl, the tools whose writes
                                   # the built-in rules leave out, run for real
          wget                     # tests/kernel/test_pack_sigmahq_file.py: a download into
                                   # /tmp, from a server the test runs on 127.0.0.1
          iproute2                 # tests/kernel/netns.py: test hosts in network namespaces
          libreadline-dev binutils   # tests/kernel/test_uprobes.py: programs linked against
                                   # libreadline, stripped with a .gnu_debugdata (objcopy)
          rsyslog rsyslog-gnutls rsyslog-relp openssl  # tests/outputs/test_syslog_*.py: a
                                   # private rsyslogd (every transport, TLS with a throwaway
                                   # CA, RELP)
          prometheus               # tests/outputs/test_prometheus.py: a private Prometheus
                                   # scrapes the agent and is queried for the series
          python3-seccomp          # tests/kernel/test_service_notify.py: the unit's seccomp
                                   # filters imitated (PID 1 here need not be systemd)
          podman runc busybox-static)  # tests/kernel/test_container_agent.py: a real container
                                   # (runc: crun refuses hybrid cgroup hierarchies) from an
                                   # image built locally out of busybox (no registry needed)

die() { echo "do: $*" >&2; exit 2; }

need_root() {
  [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and loads eBPF programs)"
}

ensure_apt() {  # ensure_apt PKG...
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "do: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

ensure_venv() {
  # Debian's own interpreter (the python3 package above), never the first python3 on PATH: a
  # venv made from root's private Python (pyenv under /root) cannot be run by other users, and
  # `vigil scan` is for any user who can read the tree.
  local py=/usr/bin/python3
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$py is older than Python 3.11"
  if [ ! -x "$VENV/bin/python" ] || [ ! -x "$VENV/bin/pip" ] \
     || [ "$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null)" != /usr ]; then
    # missing, left half-made by an interrupted run, or made from another Python: afresh
    "$py" -m venv --clear "$VENV" >&2
    rm -f "$VENV/.stamp-deps"
  fi
  # Reinstall only when the dependency list changed.
  local stamp="$VENV/.stamp-deps" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$VENV/bin/vigil" ]; then
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q -e ".[dev]" >&2
    echo "$want" > "$stamp"
  fi
}

# Host tools of the kernel matrix: QEMU (software emulation is enough), kmod for depmod,
# busybox for virtme-ng's initramfs, e2fsprogs for the guest's scratch filesystem; virtme-ng
# itself comes from pyproject's `vm` extra.
VM_APT_PKGS=(qemu-system-x86 kmod busybox-static e2fsprogs dpkg apt)

ensure_vm_tools() {
  ensure_apt "${VM_APT_PKGS[@]}"
  if [ ! -x "$VENV/bin/vng" ]; then
    "$VENV/bin/pip" install -q -e ".[dev,vm]" >&2
  fi
}

build_bpf() {
  make -s -C bpf >&2
}

# Vigil's own bytecode, compiled once here: the editable install leaves it to the first
# import, which cannot write it where PYTHONDONTWRITEBYTECODE is set or the tree is read-only,
# and compiling every module again at each start costs `vigil run` a tenth of a second.
compile_python() {
  "$VENV/bin/python" -m compileall -q -j0 vigil >/dev/null
}

setup() {
  need_root
  ensure_apt "${APT_PKGS[@]}"
  ensure_venv
  build_bpf
  compile_python
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    setup
    exec "$VENV/bin/vigil" run "$@"
    ;;
  test)
    setup
    "$VENV/bin/ruff" check vigil tests bench
    "$VENV/bin/mypy" >&2
    # Every test must run here (tests/conftest.py): a skip for a reason a user can fix fails.
    VIGIL_STRICT_SKIPS=1 exec "$VENV/bin/pytest" "$@"
    ;;
  test-kernels)
    setup
    ensure_vm_tools
    exec "$VENV/bin/python" tests/vm/matrix.py "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./do run [vigil run options] | ./do test [pytest options] | ./do setup" >&2
    echo "       ./do test-kernels [--kernel SERIES ...] [--backend auto|all|NAME ...]" \
         "[--btf kernel|tailored ...] [--suite matrix|kernel]" >&2
    exit 2
    ;;
esac
