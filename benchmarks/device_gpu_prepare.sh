#!/usr/bin/env bash
# Run HERE (a machine that reaches the package registry), from the repository root, before the
# device calls of benchmarks/device_gpu.sh. The device machine reaches no registry and takes at
# most 64 MiB of working tree plus carried files per call, and onnxruntime-gpu's wheel alone is
# about 250 MB: so the wheels it lacks are downloaded here (Python 3.12, x86-64, what its image
# runs) into .gpu-carry/ (git-excluded), the big wheel cut into parts, one folder per call:
#
#   .gpu-carry/1 ... .gpu-carry/N-1   one part each: carried by a "stage" call each
#   .gpu-carry/N                      the last part, the small wheels, SHA256SUMS: the run's call
#
# It prints the device calls to make, back to back (a machine is given back 30 s after a call).
set -euo pipefail
PART_MB=${PART_MB:-44}       # the repository's own files travel too (about 10 MB)
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}   # built for CUDA 13, as the device's image is
PY=${PY:-/work/main/.venv/bin/python}
cd "$(git rev-parse --show-toplevel)"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.gpu-carry/' "$exclude" 2>/dev/null || echo '/.gpu-carry/' >>"$exclude"
rm -rf .gpu-carry /tmp/fogline-gpu-dl
mkdir -p .gpu-carry /tmp/fogline-gpu-dl/big /tmp/fogline-gpu-dl/small

download() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 --platform any "$@"
}

# What fogline, its serve extra, the tests and bench_serve.py need that the image (see
# /work/.library/device/KINDS.md) lacks; the versions are this machine's, which pass the tests.
small=(pydantic pydantic-core annotated-types typing-inspection paho-mqtt simpleeval starlette
       uvicorn httptools tritonclient python-rapidjson geventhttpclient gevent greenlet
       zope.event zope.interface brotli fastapi)
pinned=()
for name in "${small[@]}"; do
  version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" \
            2>/dev/null || true)
  pinned+=("$name${version:+==$version}")
done
download -d /tmp/fogline-gpu-dl/big "$ORT_GPU"
for spec in "${pinned[@]}"; do
  download -d /tmp/fogline-gpu-dl/small "$spec" || echo "no cp312 wheel of $spec (skipped)"
done

big=$(ls /tmp/fogline-gpu-dl/big/*.whl)
(cd /tmp/fogline-gpu-dl/big && sha256sum ./*.whl) >/tmp/fogline-gpu-dl/SHA256SUMS
split -b "${PART_MB}M" -d -a 2 "$big" "/tmp/fogline-gpu-dl/$(basename "$big").part-"
parts=(/tmp/fogline-gpu-dl/*.part-*)
count=${#parts[@]}
for i in "${!parts[@]}"; do
  folder=.gpu-carry/$((i + 1))
  mkdir -p "$folder"
  mv "${parts[$i]}" "$folder/"
done
last=.gpu-carry/$count
mkdir -p "$last/wheels"
cp /tmp/fogline-gpu-dl/small/*.whl "$last/wheels/"
cp /tmp/fogline-gpu-dl/SHA256SUMS "$last/"
rm -rf /tmp/fogline-gpu-dl
du -sh .gpu-carry/*
echo
echo "Device calls, back to back (nvidia-h100-x1 or nvidia-h200):"
for i in $(seq 1 $((count - 1))); do
  echo "  run(command='bash benchmarks/device_gpu.sh stage', carry=['.gpu-carry/$i'], timeout_s=120)"
done
echo "  run(command='bash benchmarks/device_gpu.sh', carry=['.gpu-carry/$count'], timeout_s=560)"
