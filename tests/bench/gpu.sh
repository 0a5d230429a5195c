#!/usr/bin/env bash
# The GPU checks, run on a lent GPU machine (or here, on lavapipe, to try the script itself):
#
#   bash tests/bench/gpu.sh golden   # probe + golden tests on wgpu      (carry .gpu/golden .gpu/common;
#                                    #   then .gpu/golden-nofusion, then .gpu/golden-spirv, each
#                                    #   with .gpu/golden/fixtures .gpu/common: gpu-bundle.sh)
#   bash tests/bench/gpu.sh bench    # probe + bench ops / bench model on wgpu, PyTorch on cuda
#                                    #                                    (carry .gpu/bench .gpu/common)
#   bash tests/bench/gpu.sh all      # both, where one call can carry both parts
#
# from the repository root, after `bash tests/bench/gpu-bundle.sh .ref` has filled `.gpu/` here.
# Results go to $OUT (the device tool's folder; ./gpu-out elsewhere): summary.txt (probe and
# each step's exit status), golden.log, golden-nofusion.log, golden-spirv.log, ops.json,
# model.json, model-f16.json, model-nofusion.json, model-spirv.json, train.json, gpu-memory.csv (the
# processes' GPU memory, sampled every 250 ms during the training figure), stderr.log.
# Each step has its own time limit, so that one slow step leaves the others their time; the
# whole script stays under 10 minutes. A step that fails is reported and the next runs.
# To try the script quickly: SAM4EM_BENCH_SIZE=tiny (default base_plus), SAM4EM_BENCH_RUNS=1
# (default 5), SAM4EM_GOLDEN_FILTER="NAME …" (test-name filters of the `model` test binary;
# default: every golden test's wgpu run, `model_golden::…_wgpu`).
set -u
size=${SAM4EM_BENCH_SIZE:-base_plus}
runs=${SAM4EM_BENCH_RUNS:-5}
part=${1:-all}
bundle=${SAM4EM_GPU_BUNDLE:-.gpu}
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
bin=$(mktemp -d)
summary="$out/summary.txt"
say() { echo "== $*" | tee -a "$summary" >&2; }
step() { # step NAME SECONDS CMD…: runs CMD under a time limit, records its status
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  timeout --kill-after=10 "$limit" "$@" 2>>"$out/stderr.log"
  rc=$?
  say "$name: exit $rc after $((SECONDS - start)) s$([ $rc = 124 ] && echo " (time limit $limit s)")"
  return $rc
}

# --- Vulkan: bring the loader where the image has none (the device tool's note) ---
if ! ldconfig -p | grep -q 'libvulkan.so.1 '; then
  for f in "$bundle"/common/deb/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
nv=/usr/local/nvidia/share
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f $nv/vulkan/icd.d/nvidia_icd.json ] &&
  ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
  export VK_DRIVER_FILES=$nv/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=$nv/glvnd/egl_vendor.d/10_nvidia.json
fi

# --- probe ---
say "probe $(date -u +%FT%TZ), part $part"
{
  uname -srm
  nproc
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  ldconfig -p | grep -m1 'libvulkan.so.1 ' || echo "no Vulkan loader"
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-} ICDs: $(ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d 2>/dev/null | tr '\n' ' ')"
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tail -1
} | tee -a "$summary"

unpack() { xz -dc "$1" >"$2" && chmod +x "$2"; }

if [ "$part" = golden ] || [ "$part" = all ]; then
  # Every golden comparison on wgpu (SAM4EM_WGPU_TESTS=1; the CPU ones run in CI), for the
  # default build (burn's kernel fusion on), then without fusion and with the kernels compiled
  # to SPIR-V (the opt-in feature `spirv`): whichever of the three binaries this call carried
  # (.gpu/golden, .gpu/golden-nofusion, .gpu/golden-spirv).
  # CI=true turns a missing adapter into a failure instead of a skip.
  ran=0
  golden_wgpu="model_golden::encoder_wgpu model_golden::decoders_and_memory_wgpu model_golden::whole_stream_wgpu
    model_golden::training_step_wgpu model_golden::training_step_recomputed_wgpu"
  # shellcheck disable=SC2206 # the filters are meant to split
  filters=(${SAM4EM_GOLDEN_FILTER:-$golden_wgpu})
  for variant in "" -nofusion -spirv; do
    packed=$(ls "$bundle"/golden*/"model_golden$variant.xz" 2>/dev/null | head -1)
    [ -n "$packed" ] || continue
    unpack "$packed" "$bin/model_golden$variant" || continue
    CI=true SAM4EM_WGPU_TESTS=1 SAM4EM_FIXTURES="$bundle/golden/fixtures" \
      step "golden tests on wgpu${variant:+, ${variant#-}}" 150 "$bin/model_golden$variant" "${filters[@]}" \
      --test-threads 1 >"$out/golden$variant.log" 2>&1
    grep -E '^test |test result' "$out/golden$variant.log" | tee -a "$summary"
    ran=1
  done
  [ $ran = 1 ] || { say "no golden-test binaries under $bundle"; exit 1; }
fi

if [ "$part" = bench ] || [ "$part" = all ]; then
  unpack "$bundle/bench/sam4em.xz" "$bin/sam4em" || exit 1
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$bundle"/common/whl/*.whl 2>>"$out/stderr.log" || say "wheels did not install"
  export PYTHONPATH=$site SAM4EM_SHARED=$bundle/bench/shared
  torch_device=cpu
  python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null && torch_device=cuda
  reference=(--reference "$bundle/bench/ref" --python python3 --torch-device "$torch_device")

  step "bench ops (wgpu)" 60 "$bin/sam4em" bench ops --device wgpu --runs "$runs" --json >"$out/ops.json"
  step "bench model, inference (wgpu; PyTorch on $torch_device)" 180 \
    "$bin/sam4em" bench model --device wgpu --size "$size" --runs "$runs" --train-slices 0 "${reference[@]}" --json >"$out/model.json"
  # The inference figures again in half precision, without kernel fusion and with SPIR-V
  # (ours only: PyTorch ran above, in f32).
  step "bench model, inference (wgpu, f16)" 75 \
    "$bin/sam4em" bench model --device wgpu --size "$size" --runs "$runs" --train-slices 0 --precision f16 --json >"$out/model-f16.json"
  for variant in nofusion spirv; do
    unpack "$bundle/bench/sam4em-$variant.xz" "$bin/sam4em-$variant" || continue
    step "bench model, inference (wgpu, $variant)" 75 \
      "$bin/sam4em-$variant" bench model --device wgpu --size "$size" --runs "$runs" --train-slices 0 --json >"$out/model-$variant.json"
  done
  sampler=
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader -lms 250 \
      >"$out/gpu-memory.csv" 2>&1 &
    sampler=$!
  fi
  step "bench model, training step of 8 slices (wgpu; PyTorch on $torch_device)" 180 \
    "$bin/sam4em" bench model --device wgpu --size "$size" --runs "$(((runs + 1) / 2))" --train-slices 8 "${reference[@]}" --json >"$out/train.json"
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  python3 - "$out" <<'EOF' | tee -a "$summary"
import json, sys, os
out = sys.argv[1]
for name in ("model.json", "model-f16.json", "model-nofusion.json", "model-spirv.json", "train.json"):
    try:
        r = json.load(open(os.path.join(out, name)))
    except Exception as e:
        print(f"{name}: no result ({e})"); continue
    print(f"{name}: {r['device']} {r.get('precision')} {r['machine'].get('adapter')}, PyTorch {r.get('reference')}")
    for f in r["figures"]:
        ref = f.get("reference_ms"); ratio = f.get("ratio")
        print(f"  {f['describe']:<50} {f['ours_ms']:9.1f} ms  " +
              (f"{ref:9.1f} ms  ratio {ratio:.2f}" if ref else ""))
    if r.get("training"):
        print("  training:", json.dumps(r["training"]))
try:
    peak = {}
    for line in open(os.path.join(out, "gpu-memory.csv")):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[2].endswith("MiB"):
            peak[parts[1]] = max(peak.get(parts[1], 0), int(parts[2].split()[0]))
    print("GPU memory peaks (MiB, nvidia-smi):", peak)
except FileNotFoundError:
    pass
EOF
fi
say "done"
