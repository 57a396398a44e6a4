#!/usr/bin/env bash
# Install safety-edge as a systemd service on a gateway, or into a gateway image.
#
#   sudo deploy/install.sh [options]
#
# Debian/Ubuntu/Raspberry Pi OS/Jetson Linux (arm64 or x86-64) with systemd and python3 >= 3.10.
# What it does (idempotent; an existing /etc/safety-edge/gateway.yaml is never overwritten):
#   1. system user `safety-edge` (no login, group video for V4L2 cameras);
#   2. /opt/safety-edge/venv with safety-edge from a wheel, a source tree, or a wheelhouse
#      (offline install: --wheelhouse DIR holds every wheel, e.g. from `pip download`);
#   3. models -> /opt/safety-edge/models (read-only for the service);
#   4. /etc/safety-edge/gateway.yaml (yours, or the commented example; owned by the service so
#      the console's zone editor can save, in a sticky folder) and secrets.env (root, 0600);
#   5. the hardened unit deploy/systemd/safety-edge.service, enabled; started unless
#      --no-start or inside a chroot (image build: run this script in the image's chroot,
#      e.g. with qemu-user-static; `systemctl enable` works there without a running systemd).
#      `safety-edge config check` runs first: when it fails, the script stops before
#      enabling or (re)starting the service (the unit would only fail its start limit),
#      unless --no-start or --force.
# safety-edge itself is always reinstalled, also at the same version (a rollback with an
# older wheel), and `safety-edge --version` must then print the version given.
#
# Options:
#   --wheel FILE        install this safety-edge wheel (default: the source tree of this script)
#   --wheelhouse DIR    pip --no-index --find-links DIR (no network needed)
#   --models DIR        ONNX models + manifests to install (default: <source>/models)
#   --config FILE       gateway.yaml to install (default: `safety-edge config example`, edited)
#   --onnxruntime-gpu SPEC  replace onnxruntime by this (Jetson: see deploy/JETSON.md), e.g.
#                       "onnxruntime-gpu --index-url https://pypi.jetson-ai-lab.io/jp6/cu126"
#   --no-start          enable but do not start the service
#   --force             enable and (re)start even when the config check fails
#   --dry-run           print the commands instead of running them (the read-only config
#                       check runs when safety-edge and gateway.yaml are installed already)
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX=/opt/safety-edge
ETC=/etc/safety-edge
DATA=/var/lib/safety-edge
USER_NAME=safety-edge
WHEEL=""
WHEELHOUSE=""
MODELS="$SRC/models"
CONFIG=""
ORT_GPU=""
START=1
FORCE=0
DRY=0

die() { echo "install.sh: $*" >&2; exit 2; }
run() {
  if [ "$DRY" = 1 ]; then printf '+ %s\n' "$*"; else "$@"; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) WHEEL="$2"; shift 2 ;;
    --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    --config) CONFIG="$2"; shift 2 ;;
    --onnxruntime-gpu) ORT_GPU="$2"; shift 2 ;;
    --no-start) START=0; shift ;;
    --force) FORCE=1; shift ;;
    --dry-run) DRY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$DRY" = 1 ] || [ "$(id -u)" = 0 ] || die "run as root (sudo)"
if [ "$DRY" = 1 ]; then
  # test hook (tests/test_install_upgrade.py): where a dry run finds the installed program
  # and config for its config check; ignored without --dry-run
  PREFIX="${INSTALL_SH_TEST_PREFIX:-$PREFIX}"
  ETC="${INSTALL_SH_TEST_ETC:-$ETC}"
fi
command -v python3 >/dev/null || die "python3 not found (apt-get install python3 python3-venv)"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "python3 >= 3.10 needed"
[ -d "$MODELS" ] || die "models folder $MODELS not found (make models, or --models DIR)"
[ -z "$CONFIG" ] || [ -f "$CONFIG" ] || die "config $CONFIG not found"

# 1. user
if ! id "$USER_NAME" >/dev/null 2>&1; then
  run useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin \
    --user-group "$USER_NAME"
fi
if getent group video >/dev/null 2>&1; then run usermod -a -G video "$USER_NAME"; fi

# 2. virtual environment (system site packages: JetPack's CUDA/TensorRT Python bits stay visible)
run install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || run python3 -m venv --system-site-packages "$PREFIX/venv"
PIP=("$PREFIX/venv/bin/python" -m pip install --quiet)
[ -z "$WHEELHOUSE" ] || PIP+=(--no-index --find-links "$WHEELHOUSE")
if [ -n "$WHEEL" ]; then TARGET="$WHEEL"; else TARGET="$SRC"; fi
# safety-edge itself is always replaced (--force-reinstall --no-deps): pip takes a wheel or
# source tree of the version already installed as "already satisfied" and replaces nothing,
# which would make a rebuilt 0.x.y, or a rollback to an older wheel of the same version, a
# silent no-op. Its dependencies are then installed (or upgraded) as usual.
run "${PIP[@]}" --force-reinstall --no-deps "$TARGET"
run "${PIP[@]}" --upgrade "$TARGET"
if [ -n "$ORT_GPU" ]; then
  # Both distributions install the `onnxruntime` module: remove the CPU one first.
  run "$PREFIX/venv/bin/python" -m pip uninstall --yes onnxruntime
  # shellcheck disable=SC2086  # SPEC is a pip argument list on purpose
  run "$PREFIX/venv/bin/python" -m pip install --quiet $ORT_GPU
fi
run install -m 0644 "$SRC/README.md" "$PREFIX/README.md"
# the version now installed must be the one given (wheel file name, or the source's pyproject)
if [ -n "$WHEEL" ]; then
  WANT="$(basename "$WHEEL" | cut -d- -f2)"
else
  WANT="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml" | head -n 1)"
fi
if [ "$DRY" = 1 ]; then
  printf '+ %s\n' "$PREFIX/venv/bin/safety-edge --version   # must print: safety-edge $WANT"
  VERSION="safety-edge $WANT"
else
  VERSION="$("$PREFIX/venv/bin/safety-edge" --version)" || die "the installed safety-edge does not run"
  [ -z "$WANT" ] || [ "$VERSION" = "safety-edge $WANT" ] \
    || die "installed $VERSION, expected $WANT from $TARGET: pip did not replace it"
fi

# 3. models (read-only for the service)
run install -d -m 0755 "$PREFIX/models"
run cp -r "$MODELS/." "$PREFIX/models/"
run chmod -R a+rX,go-w "$PREFIX/models"

# 4. configuration and secrets
# Sticky and group-writable: the service may replace the files it owns (gateway.yaml, written
# by the console's zone / line editor with a temporary file and rename) but not root's
# (secrets.env, key files).
run install -d -m 1770 -o root -g "$USER_NAME" "$ETC"
if [ ! -f "$ETC/gateway.yaml" ]; then
  if [ -n "$CONFIG" ]; then
    run install -m 0640 -o "$USER_NAME" -g "$USER_NAME" "$CONFIG" "$ETC/gateway.yaml"
  elif [ "$DRY" = 1 ]; then
    echo "+ safety-edge config example > $ETC/gateway.yaml (data_dir $DATA, models_dir $PREFIX/models)"
  else
    "$PREFIX/venv/bin/safety-edge" config example \
      | sed -e "s#^data_dir: .*#data_dir: $DATA#" -e "s#^models_dir: .*#models_dir: $PREFIX/models#" \
      > "$ETC/gateway.yaml"
    chown "$USER_NAME":"$USER_NAME" "$ETC/gateway.yaml"
    chmod 0640 "$ETC/gateway.yaml"
    echo "wrote the example to $ETC/gateway.yaml: edit cameras, zones and mqtt before starting"
    START=0
  fi
fi
if [ -f "$ETC/gateway.yaml" ] || [ "$DRY" = 1 ]; then
  # an existing config (earlier installs: root-owned) becomes the service's, contents untouched
  run chown "$USER_NAME":"$USER_NAME" "$ETC/gateway.yaml"
fi
if [ ! -f "$ETC/secrets.env" ]; then
  if [ "$DRY" = 1 ]; then echo "+ create $ETC/secrets.env (0600)"; else
    umask 077
    printf '%s\n' "# KEY=value lines read by systemd (EnvironmentFile); e.g." \
      "# SAFETY_EDGE_MQTT_PASSWORD=" "# SAFETY_EDGE_ADMIN_TOKEN=" > "$ETC/secrets.env"
  fi
fi
run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$DATA"

# 5. the unit
CHECK=("$PREFIX/venv/bin/safety-edge" config check "$ETC/gateway.yaml")
CHECK_OK=1
if [ "$DRY" = 1 ]; then
  printf '+ %s\n' "${CHECK[*]}"
  if [ -x "${CHECK[0]}" ] && [ -f "$ETC/gateway.yaml" ]; then
    echo "(dry run: checked with the safety-edge installed now; the new one may differ)"
    "${CHECK[@]}" || CHECK_OK=0
  fi
else
  "${CHECK[@]}" || CHECK_OK=0
fi
if [ "$CHECK_OK" = 0 ]; then
  if [ "$START" = 1 ] && [ "$FORCE" = 0 ]; then
    die "the config check of $ETC/gateway.yaml failed (above): the unit was not updated and \
the service NOT restarted (a running gateway goes on until it restarts, and then the check \
fails it). Fix the config, check it with \`${CHECK[*]}\`, then run this script again; \
--force restarts anyway"
  fi
  echo "install.sh: WARNING: the config check of $ETC/gateway.yaml failed (above); the service \
will not start until it passes" >&2
fi
run install -m 0644 "$SRC/deploy/systemd/safety-edge.service" /etc/systemd/system/safety-edge.service
if [ -d /run/systemd/system ] && ! systemd-detect-virt --chroot >/dev/null 2>&1; then
  run systemctl daemon-reload
  run systemctl enable safety-edge.service
  if [ "$START" = 1 ]; then run systemctl restart safety-edge.service; fi
else
  run systemctl enable safety-edge.service   # chroot / image build: symlinks only
  START=0
fi
echo "$VERSION installed. Config: $ETC/gateway.yaml; secrets: $ETC/secrets.env"
[ "$START" = 1 ] && echo "running: systemctl status safety-edge; journalctl -u safety-edge -f" \
  || echo "start with: systemctl start safety-edge (after safety-edge config check)"
