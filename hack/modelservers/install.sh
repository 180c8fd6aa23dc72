#!/usr/bin/env bash
# Real model servers for the compat-probe's integration tests and `make demo MODEL=mlserver`: MLServer
# (+ mlserver-sklearn) and KServe's Python model server, each in its own venv under
# ${MODELROLLOUT_CACHE:-~/.cache/modelrollout}/venvs/NAME, from PyPI only (no weights are downloaded: the
# tests train scikit-learn models on data sets scikit-learn ships). Idempotent: a venv whose requirement
# file is unchanged is kept. Usage: install.sh [mlserver] [kserve]   (default: both)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${MODELROLLOUT_CACHE:-$HOME/.cache/modelrollout}/venvs"
python="${PYTHON:-python}"  # the interpreter bootstrap installs the project with (3.11 here; MLServer needs < 3.13)
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(mlserver kserve)
mkdir -p "$root"
for name in "${names[@]}"; do
    req="$here/$name.txt"
    venv="$root/$name"
    stamp="$venv/.requirements"
    if [[ -f "$stamp" ]] && cmp -s "$req" "$stamp"; then
        continue
    fi
    start=$(date +%s)
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
    cp "$req" "$stamp"
    echo "modelservers: $name installed in $(( $(date +%s) - start )) s ($venv)"
done
