#!/usr/bin/env bash
# The prepared GPU check, for a machine with an NVIDIA GPU (run from the repository root):
#
#   bash bench/gpu_check.sh [OUT_DIR]          # default OUT_DIR: $OUT or bench/results/gpu
#
# 1. the GPU install: exactly one TensorFlow distribution (`tensorflow[and-cuda]` through the
#    `gpu` extra), and it sees the GPU;
# 2. `mnist` trained for one epoch with --device gpu --gpu-memory-growth;
# 3. the server started with a GPU memory cap (KERASSERVE_GPU_CHECK_CAP_MB, default 2048): what
#    `GET /v2` reports (read back from TensorFlow), and the process's GPU memory as the driver
#    sees it, before and after load; the cap must hold;
# 4. the benchmark's one-row mnist figures (c=1 and c=32) against the same capped server.
#
# PYTHON=/path/to/python uses an existing environment instead of creating .venv-gpu (a machine
# without a package index needs one with `pip install -e '.[gpu,train,test]'` done beforehand).
# Everything printed is also written to OUT_DIR/gpu_check.log. Exit status: 0 when every check
# held, 1 when one failed, 2 when the machine has no usable GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench/results/gpu}}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
cap_mb=${KERASSERVE_GPU_CHECK_CAP_MB:-2048}
# The driver counts the CUDA context (a few hundred MB) on top of what TensorFlow allocates.
context_allowance_mb=${KERASSERVE_GPU_CHECK_CONTEXT_MB:-1024}
failed=0
step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*"; failed=1; }

step "GPU and driver"
if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; then
  echo "no NVIDIA GPU or driver on this machine"; exit 2
fi

step "the GPU install: one TensorFlow distribution that sees the GPU"
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ ! -x .venv-gpu/bin/python ]; then
    python3.11 -m venv .venv-gpu && .venv-gpu/bin/pip install -q -e '.[gpu,train]' || exit 2
  fi
  python=.venv-gpu/bin/python
fi
"$python" - <<'EOF' || exit 2
import importlib.metadata as metadata
import tensorflow as tf
names = sorted({d.metadata["Name"].lower() for d in metadata.distributions()})
distributions = [n for n in names if n in ("tensorflow", "tensorflow-cpu", "tensorflow-gpu",
                                           "tf-nightly", "intel-tensorflow")]
print("TensorFlow distributions:", distributions, "version", tf.__version__)
print("GPUs TensorFlow sees:", tf.config.list_physical_devices("GPU"))
assert distributions == ["tensorflow"], "expected exactly one distribution: tensorflow"
assert tf.config.list_physical_devices("GPU"), "TensorFlow sees no GPU"
EOF

step "train mnist for one epoch on the GPU with memory growth"
scratch=$(mktemp -d)
repository="$scratch/models"
mkdir -p "$repository"
cp -r models/deskew models/ocr "$repository"/
started=$(date +%s)
if ! "$python" -m training mnist --repository "$repository" --epochs 1 --device gpu \
     --gpu-memory-growth --quiet; then
  fail "GPU training run"
fi
echo "training wall time: $(( $(date +%s) - started )) s"
"$python" - "$repository" <<'EOF' || fail "training metadata"
import json, sys, pathlib
metadata = json.loads(next(pathlib.Path(sys.argv[1]).glob("mnist/*/metadata.json")).read_text())
devices = metadata["training"]["devices"]
print("trained on:", devices["mode"], devices["visible_devices"])
print("memory growth read back:", devices["gpu_memory_growth"])
print("held-out metrics:", metadata.get("metrics"))
assert devices["mode"] == "gpu" and all(devices["gpu_memory_growth"].values())
EOF

gpu_memory_of() {  # MiB the driver attributes to process $1 (0 when none)
  nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits \
    | awk -F', *' -v pid="$1" '$1 == pid { total += $2 } END { print total + 0 }'
}

step "the server under a GPU memory cap of ${cap_mb} MB"
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$python" -m app --model-repository "$repository" --port "$port" --grpc-port 0 --device gpu \
  --gpu-memory-limit "$cap_mb" --log-level warning > "$out/server.log" 2>&1 &
server=$!
for _ in $(seq 180); do
  curl -sf "localhost:$port/v2/health/ready" > /dev/null && break
  kill -0 "$server" 2> /dev/null || break
  sleep 1
done
if curl -sf "localhost:$port/v2" -o "$out/v2.json"; then
  "$python" -c 'import json, sys; d = json.load(open(sys.argv[1]))["device"]; print(json.dumps(d, indent=2))' "$out/v2.json"
else
  fail "server did not become ready (see $out/server.log)"
fi
after_load=$(gpu_memory_of "$server")
echo "GPU memory of the server after loading and warm-up: ${after_load} MiB (cap ${cap_mb} MB)"
for _ in $(seq 200); do
  curl -s -X POST -d @examples/mnist-7.json "localhost:$port/v1/models/mnist:predict" > /dev/null
done
after_requests=$(gpu_memory_of "$server")
echo "GPU memory after 200 predictions: ${after_requests} MiB"
kill -TERM "$server"; wait "$server"
echo "server exit status after SIGTERM: $?"
limit=$(( cap_mb + context_allowance_mb ))
[ "$after_requests" -le "$limit" ] || fail "GPU memory ${after_requests} MiB over cap + context ${limit} MiB"

step "benchmark: one-row mnist at c=1 and c=32 (same cap)"
if command -v wrk > /dev/null; then
  KERASSERVE_DEVICE=gpu KERASSERVE_GPU_MEMORY_LIMIT=$cap_mb "$python" -m bench.run \
    --systems service --models mnist --rows 1 --concurrency 1,32 --duration 5 --repeats 1 \
    --model-repository "$repository" --out "$out/bench" || fail "benchmark run"
  [ -f "$out/bench/results.md" ] && cat "$out/bench/results.md"
else
  fail "wrk is not installed (apt-get install -y wrk): no benchmark figures"
fi
rm -rf "$scratch"
step "verdict"
[ "$failed" = 0 ] && echo "every GPU check held" || echo "some GPU checks failed (above)"
exit "$failed"
