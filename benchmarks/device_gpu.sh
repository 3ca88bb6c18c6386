#!/usr/bin/env bash
# The GPU checks of issue 16 in one prepared run on a lent NVIDIA machine (H100/H200).
#
#   bash benchmarks/device_gpu_prepare.sh        # HERE first: wheels into .gpu-carry/1..N
#   bash benchmarks/device_gpu.sh stage          # device, once per .gpu-carry/1..N-1 (carried)
#   bash benchmarks/device_gpu.sh                # device, .gpu-carry/N carried: the run
#
# The device reaches no package registry and takes 64 MiB per call: onnxruntime-gpu (about
# 250 MB) arrives in parts over several calls, kept in /tmp while the machine stays warm (30 s
# after a call). Its image has Python 3.12, PyTorch, CUDA 13's libraries (pip nvidia-*), no
# TensorRT: the TensorRT tests and variants skip there, saying so.
#
# The run (under 8 minutes): the GPU, the gpu-marked tests and the engine conformance suite on
# CUDA (and TensorRT where installed), fogline optimize on MobileNetV2 and the YOLO-style
# detector with the GPU variants, fogline bench of each selection, and bench_serve.py --quick.
# Everything lands in $OUT (at most 8 files come back): summary.txt, nvidia-smi.txt,
# pytest-gpu.log, optimize.log, optimize-mobilenet_v2.json, optimize-yolo_style.json, serve.log.
set -uo pipefail
OUT=${OUT:-/tmp/fogline-gpu-out}
STAGE=/tmp/fogline-gpu-stage
mkdir -p "$OUT" "$STAGE"
cd "$(dirname "$0")/.."

# Whatever parts this call carried go to the stage (kept between calls while warm).
find .gpu-carry -type f -name '*.part-*' -exec cp {} "$STAGE/" \; 2>/dev/null
find .gpu-carry -type f \( -name '*.whl' -o -name SHA256SUMS \) -exec cp {} "$STAGE/" \; 2>/dev/null
if [ "${1:-}" = stage ]; then
  ls -la "$STAGE"
  exit 0
fi

summary=$OUT/summary.txt
say() { echo "$*" | tee -a "$summary"; }
started=$(date +%s)
say "== fogline GPU checks, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# --- onnxruntime-gpu and the other wheels -------------------------------------------------------
wheel_name=$(awk '{print $2}' "$STAGE/SHA256SUMS" 2>/dev/null | sed 's#^\./##')
if [ -z "$wheel_name" ]; then
  say "no SHA256SUMS in the stage: carry the last .gpu-carry folder with this call"; exit 3
fi
cat "$STAGE/$wheel_name".part-* >"$STAGE/$wheel_name"
if ! (cd "$STAGE" && sha256sum -c SHA256SUMS >/dev/null); then
  say "the onnxruntime-gpu wheel is incomplete: parts here: $(ls "$STAGE" | grep -c part-)"
  say "stage every .gpu-carry folder but the last first (bash benchmarks/device_gpu.sh stage)"
  exit 3
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$STAGE/$wheel_name" "$STAGE"/*.whl 2>&1 | grep -v "already exists" | tail -3
export PYTHONPATH=/tmp/site:$PWD/src
# CUDA 13's libraries from the image's pip packages (ONNX Runtime dlopens cuDNN, cuBLAS...).
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
LD_LIBRARY_PATH=$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: -)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH PYTHONUNBUFFERED=1 FOGLINE_CACHE_DIR=/tmp/fogline-cache

# --- the GPU --------------------------------------------------------------------------------------
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
say "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
say "$(python3 -c 'import onnxruntime as o, sys; print("python", sys.version.split()[0], "onnxruntime", o.__version__, o.__file__, o.get_available_providers())' 2>&1)"
say "$(python3 -c 'from fogline.model import gpu_name, tensorrt_version; print("gpu_name:", gpu_name(0), "| tensorrt:", tensorrt_version())' 2>&1)"

# --- the tests: gpu-marked, and the engine conformance suite on every provider ---------------------
say "== pytest (gpu-marked, conformance on CUDA/TensorRT)"
timeout 150 python3 -m pytest -p no:cacheprovider -n 0 -q -rs --no-header \
  -m gpu tests/model/test_gpu_engines.py tests/model/test_engine_conformance.py \
  >"$OUT/pytest-gpu.log" 2>&1
say "pytest exit $? ; $(tail -1 "$OUT/pytest-gpu.log")"
grep -E "FAILED|ERROR|SKIPPED" "$OUT/pytest-gpu.log" | head -20 | tee -a "$summary"

# --- fogline optimize with the GPU variants, then fogline bench of each selection --------------
say "== fogline optimize: MobileNetV2 and the YOLO-style detector"
timeout 220 python3 benchmarks/device_gpu.py "$OUT" --duration 0.5 >"$OUT/optimize.log" 2>&1
say "device_gpu.py exit $?"
grep -vE '^\s+\[' "$OUT/optimize.log" | tail -30 | tee -a "$summary"
for name in mobilenet_v2 yolo_style; do
  if [ -f "/tmp/fogline-gpu/$name/fogline.yaml" ]; then
    say "$(timeout 25 python3 -m fogline bench "/tmp/fogline-gpu/$name" --batch 1,8 --duration 1 2>&1 | head -8)"
  fi
done

# --- fogline serve under load --------------------------------------------------------------------
say "== bench_serve.py --quick"
# Options the serve helper's version of the script may or may not have: asked for by --help.
usage=$(python3 benchmarks/bench_serve.py --help 2>/dev/null)
extra=()
grep -q -- "--provider" <<<"$usage" && extra+=(--provider cuda)
for flag in --no-bentoml --no-mlserver --no-pytriton; do  # their venvs need the registry
  grep -q -- "$flag" <<<"$usage" && extra+=("$flag")
done
# The naive server's venv would be pip-installed; here its interpreter is this Python, which
# has FastAPI and uvicorn from the carried wheels (bench_serve takes a venv whose probe imports).
mkdir -p benchmarks/.venv-naive/bin
cat >benchmarks/.venv-naive/bin/python <<'EOF'
#!/bin/sh
# no registry here: never let bench_serve pip-install into this Python
[ "$1 $2" = "-m pip" ] && { echo "no package registry on this machine" >&2; exit 1; }
exec python3 "$@"
EOF
chmod +x benchmarks/.venv-naive/bin/python
timeout 110 python3 benchmarks/bench_serve.py --quick "${extra[@]}" >"$OUT/serve.log" 2>&1
say "bench_serve.py exit $?"
sed -n '/^Summary/,$p' "$OUT/serve.log" | tee -a "$summary"
say "== done in $(( $(date +%s) - started )) s"
