#!/usr/bin/env bash
# Create one virtual environment per peer server under bench/.venvs/, so that the peers' pins
# (numpy<2 for PyTriton, uvloop<0.22 for MLServer) never touch the service's own .venv.
# Each peer is installed independently: a failure is reported and the next one still runs.
# Usage: bash bench/setup_peers.sh [pytriton] [mlserver]     (default: both)
set -u
cd "$(dirname "$0")/.."
PYTHON="${PEER_PYTHON:-$(.venv/bin/python -c 'import sys; print(sys._base_executable)')}"
VENVS=bench/.venvs
mkdir -p "$VENVS"
PEERS=("$@")
[ ${#PEERS[@]} -eq 0 ] && PEERS=(pytriton mlserver)

# The SavedModel is served by the same TensorFlow as the service's (same wheel, same kernels).
TF_REQ=$(.venv/bin/python -c 'import importlib.metadata as m; print("tensorflow=="+m.version("tensorflow"))' 2>/dev/null || echo "tensorflow~=2.21.0")

install_peer() {
  local name="$1"; shift
  local venv="$VENVS/$name"
  echo "== $name: $venv ($*)"
  rm -rf "$venv"
  if "$PYTHON" -m venv "$venv" \
     && "$venv/bin/pip" install --quiet --upgrade pip \
     && "$venv/bin/pip" install --quiet "$@"; then
    echo "== $name: installed"
    "$venv/bin/pip" list 2>/dev/null | grep -iE "^(nvidia-pytriton|mlserver|tensorflow|numpy|uvloop) " || true
  else
    echo "== $name: INSTALL FAILED (the benchmark will skip it)"
    rm -rf "$venv"
    return 1
  fi
}

status=0
for peer in "${PEERS[@]}"; do
  case "$peer" in
    # 0.7.0 requires numpy<2; without the pin pip silently falls back to an old 0.5.x.
    pytriton) install_peer pytriton "nvidia-pytriton==0.7.0" "numpy<2" "$TF_REQ" || status=1 ;;
    # uvloop 0.22+ makes MLServer 1.7.1's inference worker crash in a loop.
    mlserver) install_peer mlserver "mlserver==1.7.1" "uvloop<0.22" "$TF_REQ" || status=1 ;;
    *) echo "unknown peer: $peer"; status=1 ;;
  esac
done
exit $status
