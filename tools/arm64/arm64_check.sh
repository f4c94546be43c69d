#!/usr/bin/env bash
# ARM64 check (not in CI): install the runtime-only edge-seg into a Debian arm64 root run
# through qemu-user emulation, compute the mask of a fixed frame with fixed .tflite models
# there, and compare it with the mask computed natively on this (x86_64) machine.
#
#   sudo tools/arm64/arm64_check.sh [--root DIR] [--out DIR] [--model M.tflite]... [--engine E]
#                                  [--profiles "pi4 pi5 max"] [--ops] [--no-reference] [--fresh]
#
# Needs root (debootstrap, chroot, mounts) and a Debian/Ubuntu host with apt. Emulated speed
# means nothing: the point is that the install and the code work on the Pi's architecture.
# Results and what each step did: tools/arm64/README.md.
#
# Steps:
#   1. host packages: qemu-user-static debootstrap binfmt-support (apt-get, if missing)
#   2. register qemu-aarch64 with binfmt_misc (mounting binfmt_misc if needed); if that is
#      impossible here, fall back to proot -q qemu-aarch64-static
#   3. debootstrap --arch=arm64 --foreign bookworm ROOT MIRROR, then the second stage inside
#      (the mirror is the one this machine's apt uses)
#   4. python3 + python3-venv in the root; a venv; the project's wheel (built on the host
#      from the working tree) pip-installed there WITHOUT extras, pinned by constraints.txt
#      (numpy, opencv-python-headless, ai-edge-litert, click)
#   5. the same fixed frame and models through tools/arm64/arm64_mask.py on both sides,
#      then compare the masks (exact) and the raw outputs, once per emulated CPU profile:
#      pi4 = QEMU_CPU=cortex-a72 (Raspberry Pi 4: NEON, no dot product),
#      pi5 = QEMU_CPU=cortex-a76 (Raspberry Pi 5: NEON + dot product, fp16 arithmetic);
#      also available: max = qemu's default CPU, every feature qemu emulates (SVE2, SME,
#      i8mm...), which no Pi has. Under qemu 7.2 its int8 convolutions come out wrong
#      (XNNPACK picks SME kernels, which qemu 7.2 mis-emulates; qemu 10.0 runs them right:
#      see README.md) -- why the profiles pin the CPU model
#   6. the same models with LiteRT's portable reference kernels on both sides (int8
#      arithmetic as specified: should be bit-exact), and with --ops the single-op int8
#      models (which kernel differs, if any)
#
# /proc/cpuinfo: qemu-user 7.2 (Debian bookworm) does not emulate it for aarch64, so the
# guest reads the host's x86 one; with /sys mounted, the cpuinfo library inside LiteRT /
# XNNPACK then crashes (SIGSEGV in Interpreter() or invoke(), with or without XNNPACK).
# A Pi-like /proc/cpuinfo is bind-mounted over it for each profile (see README.md).
#
# The root is kept (default /work/arm64-root, never inside the repo) so a rerun skips
# steps 1-3; --fresh deletes it first.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
ROOT=/work/arm64-root
OUT=/tmp/arm64-check
SUITE=bookworm
ENGINE=auto
FRESH=0
PROFILES="pi4 pi5"
OPS=0
REFERENCE=1
MODELS=()
HOST_PY="${HOST_PY:-$REPO/.venv/bin/python}"

usage() { sed -n '2,11p' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --model) MODELS+=("$2"); shift 2 ;;
        --engine) ENGINE="$2"; shift 2 ;;
        --profiles) PROFILES="$2"; shift 2 ;;
        --fresh) FRESH=1; shift ;;
        --ops) OPS=1; shift ;;
        --no-reference) REFERENCE=0; shift ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument $1" >&2; usage 2 ;;
    esac
done

log() { printf '\n== %s\n' "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot, mounts)"
case "$ROOT" in "$REPO"|"$REPO"/*) die "--root must be outside the repository ($REPO)" ;; esac
[ "$(uname -m)" = x86_64 ] || echo "note: host is $(uname -m), not x86_64"
mkdir -p "$OUT"
: > "$OUT/summary.txt"

# ------------------------------------------------------------------ 1. host packages
log "1. host packages"
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
qemu-aarch64-static --version | head -1

# ------------------------------------------------------------------ 2. binfmt_misc
log "2. binfmt_misc registration of qemu-aarch64"
MODE=binfmt
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>&1 || true
fi
if [ -e /proc/sys/fs/binfmt_misc/register ]; then
    update-binfmts --enable qemu-aarch64 2>&1 || true
fi
if grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    grep -E '^(enabled|interpreter|flags)' /proc/sys/fs/binfmt_misc/qemu-aarch64
else
    echo "binfmt_misc is not usable here; falling back to proot -q qemu-aarch64-static"
    MODE=proot
    command -v proot >/dev/null || { apt-get update -q; DEBIAN_FRONTEND=noninteractive apt-get install -y -q proot; }
fi

# run a command inside the arm64 root (QEMU_CPU: the emulated CPU model, set per profile)
QEMU_CPU_MODEL=cortex-a72
CPUINFO_FILE=""
in_root() {
    # QEMU_CPU goes inside env -i too: every exec in the guest starts a new qemu through
    # binfmt_misc, which reads QEMU_CPU from the environment it is started with
    local envs=(QEMU_CPU="$QEMU_CPU_MODEL" HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
                PIP_CERT=/etc/ssl/certs/host-ca-bundle.crt)
    if [ "$MODE" = binfmt ]; then
        QEMU_CPU="$QEMU_CPU_MODEL" chroot "$ROOT" /usr/bin/env -i "${envs[@]}" "$@"
    else
        local binds=(-b /proc -b /sys -b /dev)
        [ -n "$CPUINFO_FILE" ] && binds+=(-b "$CPUINFO_FILE:/proc/cpuinfo")
        proot -q "qemu-aarch64-static -cpu $QEMU_CPU_MODEL" -0 -r "$ROOT" "${binds[@]}" -w / \
            /usr/bin/env -i "${envs[@]}" "$@"
    fi
}

# a Raspberry-Pi-like /proc/cpuinfo for the guest (binfmt mode: bind-mounted over the real one)
use_profile() {
    local profile="$1" part features model
    case "$profile" in
        pi4) QEMU_CPU_MODEL=cortex-a72; part=0xd08; model="Raspberry Pi 4 Model B Rev 1.4"
             features="fp asimd evtstrm crc32 cpuid" ;;
        pi5) QEMU_CPU_MODEL=cortex-a76; part=0xd0b; model="Raspberry Pi 5 Model B Rev 1.0"
             features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
        max) QEMU_CPU_MODEL=max; part=0xd0b; model="qemu max CPU (not a Pi: SVE2, SME, i8mm...)"
             features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp sve i8mm" ;;
        *) die "unknown profile $profile (pi4, pi5, max)" ;;
    esac
    CPUINFO_FILE="$OUT/cpuinfo-$profile"
    : > "$CPUINFO_FILE"
    for n in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 1\n\n' \
            "$n" "$features" "$part" >> "$CPUINFO_FILE"
    done
    printf 'Model\t\t: %s\n' "$model" >> "$CPUINFO_FILE"
    if [ "$MODE" = binfmt ]; then
        mountpoint -q "$ROOT/proc/cpuinfo" 2>/dev/null && umount "$ROOT/proc/cpuinfo"
        mount --bind "$CPUINFO_FILE" "$ROOT/proc/cpuinfo"
    fi
    echo "profile $profile: QEMU_CPU=$QEMU_CPU_MODEL, /proc/cpuinfo of a $model"
    in_root /usr/bin/python3 -c 'import ctypes, platform
libc = ctypes.CDLL(None); libc.getauxval.restype = ctypes.c_ulong
print("  emulated", platform.machine(), "AT_HWCAP", hex(libc.getauxval(16)), "AT_HWCAP2", hex(libc.getauxval(26)))' \
        || true
}

MOUNTED=()
cleanup() {
    local i
    umount "$ROOT/proc/cpuinfo" 2>/dev/null || true
    for ((i=${#MOUNTED[@]}-1; i>=0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mount_in_root() {  # only in binfmt mode; proot binds by itself
    [ "$MODE" = binfmt ] || return 0
    local src="$1" dst="$ROOT$2" type="${3:-bind}"
    mkdir -p "$dst"
    mountpoint -q "$dst" && return 0
    if [ "$type" = bind ]; then mount --bind "$src" "$dst"; else mount -t "$type" "$src" "$dst"; fi
    MOUNTED+=("$dst")
}

# ------------------------------------------------------------------ 3. debootstrap
if [ "$FRESH" = 1 ] && [ -d "$ROOT" ]; then
    log "--fresh: removing $ROOT"
    for m in proc sys dev; do umount -l "$ROOT/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$ROOT"
fi
MIRROR="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -m1 -E '/debian/?$' || true)"
[ -n "$MIRROR" ] || MIRROR="$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -m1 -E '/debian/?$' || true)"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
if [ ! -e "$ROOT/.edge-seg-stage2-done" ]; then
    log "3. debootstrap --arch=arm64 --foreign $SUITE $ROOT $MIRROR"
    mkdir -p "$ROOT"
    debootstrap --arch=arm64 --foreign --variant=minbase \
        --include=python3,python3-venv,ca-certificates "$SUITE" "$ROOT" "$MIRROR"
    install -m 0755 "$(command -v qemu-aarch64-static)" "$ROOT/usr/bin/qemu-aarch64-static"
    log "3b. debootstrap second stage (emulated)"
    in_root /debootstrap/debootstrap --second-stage
    touch "$ROOT/.edge-seg-stage2-done"
else
    log "3. $ROOT already bootstrapped (--fresh to redo)"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# the host's CA bundle: a machine that reaches PyPI through a TLS-inspecting proxy has its CA
# there, and the fresh root's ca-certificates lacks it (pip: CERTIFICATE_VERIFY_FAILED)
HOST_CA="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
[ -f "$HOST_CA" ] && install -m 0644 "$HOST_CA" "$ROOT/etc/ssl/certs/host-ca-bundle.crt"
mount_in_root proc /proc proc
mount_in_root sysfs /sys sysfs
mount_in_root /dev /dev
use_profile "${PROFILES%% *}"
in_root /bin/uname -m
in_root /usr/bin/python3 -c 'import platform; print("python", platform.python_version(), platform.machine())'

# ------------------------------------------------------------------ 4. runtime-only install
log "4. copy the project (working tree, tracked + untracked, not ignored) and install it without extras"
SRC=/opt/edge-seg-src
rm -rf "$ROOT$SRC"
mkdir -p "$ROOT$SRC"
( cd "$REPO" && git ls-files -z -co --exclude-standard | xargs -0 -I{} sh -c '[ -e "$1" ] && printf "%s\0" "$1"' _ {} \
    | tar --null -T - -cf - ) | tar -C "$ROOT$SRC" -xf -
echo "source: $(cd "$REPO" && git describe --always --dirty) ($(find "$ROOT$SRC" -type f | wc -l) files)"
if [ ! -x "$ROOT/opt/venv/bin/python" ]; then
    in_root /usr/bin/python3 -m venv /opt/venv
fi
retry() {  # network hiccups (connection reset by peer) must not sink a half-hour run
    local i
    for i in 1 2 3; do
        "$@" && return 0
        echo "(attempt $i failed; retrying in 15 s)"
        sleep 15
    done
    return 1
}
retry in_root /opt/venv/bin/pip install -q --upgrade pip || echo "(pip upgrade failed: keeping the venv's pip)"
# the wheel (pure Python, py3-none-any) is built on the host from the copy, as `make dist`
# would; building inside the root needs setuptools from PyPI under emulation, and a flaky
# connection there sank whole runs. Then the root installs the wheel and its dependencies.
rm -rf "$ROOT/opt/dist"
if retry "$HOST_PY" -m pip wheel --no-deps -q -w "$ROOT/opt/dist" "$ROOT$SRC" >"$OUT/wheel-build.log" 2>&1; then
    WHEEL="/opt/dist/$(basename "$(ls "$ROOT"/opt/dist/edge_seg-*.whl)")"
    echo "wheel: $WHEEL"
else
    echo "(host wheel build failed, see $OUT/wheel-build.log: installing from source in the root)"
    WHEEL="$SRC"
fi
rm -rf "$ROOT$SRC/build" "$ROOT$SRC"/*.egg-info
retry in_root /opt/venv/bin/pip install -q --force-reinstall --no-deps "$WHEEL" \
    || die "pip install of the edge-seg wheel failed in the arm64 root"
retry in_root /opt/venv/bin/pip install -q -c "$SRC/constraints.txt" "$WHEEL" \
    || die "pip install of the project's runtime dependencies (no extras) failed in the arm64 root"
in_root /opt/venv/bin/pip list --format=freeze | tee "$OUT/arm64-pip-freeze.txt"
in_root /opt/venv/bin/python -c 'import importlib.util as u, sys; tf = u.find_spec("tensorflow"); print("tensorflow importable:", tf is not None); sys.exit(tf is not None)' \
    || die "TensorFlow is installed in the runtime-only venv"
in_root /opt/venv/bin/edge-seg --version
if in_root /opt/venv/bin/edge-seg --help | grep -qE '^ +run '; then
    log "4b. edge-seg run --source demo --headless --max-frames 3 (emulated)"
    if in_root /bin/sh -c 'cd /tmp && /opt/venv/bin/edge-seg run --source demo --headless --max-frames 3'; then
        echo "edge-seg run (aarch64 ${PROFILES%% *}): OK" | tee -a "$OUT/summary.txt"
    else
        echo "edge-seg run (aarch64 ${PROFILES%% *}): FAILED (exit $?)" | tee -a "$OUT/summary.txt"
    fi
fi

# ------------------------------------------------------------------ 5. masks
log "5. fixed frame and models"
WORK=/opt/arm64-check
rm -rf "$ROOT$WORK"; mkdir -p "$ROOT$WORK"
"$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" frame "$OUT/frame.png"
echo "x86_64 host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); SIMD: $(grep -m1 -o -w -E 'avx512f|avx512_vnni|avx512vnni|avx_vnni|avx2|fma' /proc/cpuinfo | sort -u | tr '\n' ' ')" \
    | tee -a "$OUT/summary.txt"
if [ ${#MODELS[@]} -eq 0 ]; then
    MODELS+=("$REPO/models/unet-mobilenetv2-camvid-idd-int8.tflite")
    "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" make-models "$OUT/models" >/dev/null 2>"$OUT/make-models.log" \
        || { cat "$OUT/make-models.log"; die "could not build the tiny test models (needs TensorFlow on the host)"; }
    MODELS+=("$OUT/models/tiny-fp32.tflite" "$OUT/models/tiny-int8.tflite")
fi
cp "$OUT/frame.png" "$ROOT$WORK/"
sha256sum "$OUT/frame.png" "${MODELS[@]}"
status=0
for model in "${MODELS[@]}"; do
    name="$(basename "$model" .tflite)"
    cp "$model" "$ROOT$WORK/"
    [ -f "${model%.tflite}.json" ] && cp "${model%.tflite}.json" "$ROOT$WORK/"
    log "5. $name: x86_64 (native)"
    "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" mask --engine "$ENGINE" --model "$model" \
        --frame "$OUT/frame.png" --out "$OUT/$name-x86_64.png" --raw "$OUT/$name-x86_64.npy"
done
for profile in $PROFILES; do
    log "5. aarch64, profile $profile"
    use_profile "$profile"
    for model in "${MODELS[@]}"; do
        name="$(basename "$model" .tflite)"
        log "5. $name: aarch64 $profile (emulated)"
        tag="$name-aarch64-$profile"
        if ! in_root /bin/sh -c "cd /tmp && /opt/venv/bin/python $SRC/tools/arm64/arm64_mask.py mask --engine $ENGINE \
                --model $WORK/$name.tflite --frame $WORK/frame.png --out $WORK/$tag.png --raw $WORK/$tag.npy"; then
            echo "$name x86_64 vs aarch64 ($profile): the aarch64 run FAILED" | tee -a "$OUT/summary.txt"
            status=1
            continue
        fi
        cp "$ROOT$WORK/$tag.png" "$ROOT$WORK/$tag.npy" "$OUT/"
        "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" compare --label "$name x86_64 vs aarch64 ($profile)" \
            "$OUT/$name-x86_64.png" "$OUT/$tag.png" \
            --raw "$OUT/$name-x86_64.npy" "$OUT/$tag.npy" | tee -a "$OUT/summary.txt" || status=1
    done
done
if [ "$REFERENCE" = 1 ]; then
    use_profile "${PROFILES%% *}"
    for model in "${MODELS[@]}"; do
        name="$(basename "$model" .tflite)"
        log "6. $name: reference kernels, x86_64 and aarch64 ${PROFILES%% *}"
        "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" mask --kernels reference --model "$model" \
            --frame "$OUT/frame.png" --out "$OUT/$name-x86_64-ref.png" --raw "$OUT/$name-x86_64-ref.npy"
        tag="$name-aarch64-ref"
        in_root /bin/sh -c "cd /tmp && /opt/venv/bin/python $SRC/tools/arm64/arm64_mask.py mask --kernels reference \
            --model $WORK/$name.tflite --frame $WORK/frame.png --out $WORK/$tag.png --raw $WORK/$tag.npy" || status=1
        cp "$ROOT$WORK/$tag.png" "$ROOT$WORK/$tag.npy" "$OUT/" 2>/dev/null || true
        "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" compare --label "$name reference kernels x86_64 vs aarch64" \
            "$OUT/$name-x86_64-ref.png" "$OUT/$tag.png" \
            --raw "$OUT/$name-x86_64-ref.npy" "$OUT/$tag.npy" | tee -a "$OUT/summary.txt" || status=1
    done
fi
if [ "$OPS" = 1 ]; then
    log "6. single-op int8 models: x86_64 reference vs x86_64 XNNPACK vs aarch64 XNNPACK per profile"
    "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" make-op-models "$OUT/ops" >/dev/null 2>>"$OUT/make-models.log"
    rm -rf "$ROOT$WORK/ops"; cp -r "$OUT/ops" "$ROOT$WORK/ops"
    "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" run-ops --dir "$OUT/ops" --kernels reference --out "$OUT/ops-out/x86-reference"
    "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" run-ops --dir "$OUT/ops" --out "$OUT/ops-out/x86-xnnpack"
    dirs=("$OUT/ops-out/x86-reference" "$OUT/ops-out/x86-xnnpack")
    for profile in $PROFILES; do
        use_profile "$profile"
        in_root /opt/venv/bin/python "$SRC/tools/arm64/arm64_mask.py" run-ops --dir "$WORK/ops" --out "$WORK/ops-out/arm-$profile-xnnpack"
        cp -r "$ROOT$WORK/ops-out/arm-$profile-xnnpack" "$OUT/ops-out/"
        dirs+=("$OUT/ops-out/arm-$profile-xnnpack")
    done
    "$HOST_PY" "$REPO/tools/arm64/arm64_mask.py" compare-ops "${dirs[@]}" | tee -a "$OUT/summary.txt" || status=1
fi
log "summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"
exit $status
