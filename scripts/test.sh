#!/usr/bin/env bash
# Everything the tests need on a fresh machine, then the tests themselves.
# Installs Debian's chromium (report tests) and postgresql (scale-out tests) when missing,
# installs edgetune with its test extras and every runtime's (LiteRT, ExecuTorch, Core ML), checks the code with ruff (pyproject.toml's rules),
# and runs pytest with any arguments given.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v pg_virtualenv >/dev/null 2>&1 || missing+=(postgresql)
if ((${#missing[@]})); then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python -m pip install -q -e '.[test,litert,executorch,coreml]'
python -m ruff check --quiet .
exec python -m pytest "$@"
