#!/usr/bin/env bash
# Prepares `.gpu/`, everything `tests/bench/gpu.sh` needs on a lent GPU machine that has no
# network, no Rust toolchain, no `../shared` and no room for more than 64 MiB of files per call
# (the repository's tracked files included). Run it here, in the repository root:
#
#   bash tests/bench/gpu-bundle.sh .ref        # .ref: a checkout of Uzshah/SAM4EM (ignored)
#
# It builds what the GPU machine runs (the release `sam4em` and the golden-test binary), strips
# and compresses them, and copies beside them the reference fixtures, the reference tool, the
# SAM4EM checkout, the Vulkan / GL loaders (Debian packages, unpacked there) and the pure-Python
# wheels the reference imports that the machine's image lacks, in folders that four `run`
# calls carry (a call carries at most 64 MiB, tracked files included; on 2026-12-06 all three
# golden binaries with the fixtures came to 77 MiB, two of them 65 MiB):
#
#   .gpu/golden           model_golden.xz + fixtures/
#   .gpu/golden-nofusion  model_golden-nofusion.xz
#   .gpu/golden-spirv     model_golden-spirv.xz
#   .gpu/bench            sam4em{,-nofusion,-spirv}.xz + ref/ + shared/tools/
#   .gpu/common           deb/*.deb (libvulkan1, libglvnd …), whl/*.whl (hydra-core, omegaconf, iopath, antlr4)
#
#   call 1  gpu.sh golden  carry: .gpu/golden .gpu/common
#   call 2  gpu.sh golden  carry: .gpu/golden-nofusion .gpu/golden/fixtures .gpu/common
#   call 3  gpu.sh golden  carry: .gpu/golden-spirv .gpu/golden/fixtures .gpu/common
#   call 4  gpu.sh bench   carry: .gpu/bench .gpu/common
#
# `gpu.sh golden` runs whichever golden binaries the call carried. The sizes of the four
# calls are checked at the end.
#
# `.gpu/` must be listed in `.git/info/exclude`; the script adds it when it is not.
set -euo pipefail
cd "$(dirname "$0")/../.."
ref=${1:?usage: bash tests/bench/gpu-bundle.sh SAM4EM_CHECKOUT}
[ -d "$ref/sam2" ] || { echo "not a checkout of the original SAM4EM code (no sam2/ in it): $ref" >&2; exit 2; }
shared=${SAM4EM_SHARED:-../shared}
fixtures=${SAM4EM_FIXTURES:-$shared/fixtures/sam4em-micro}
[ -f "$fixtures/reference.safetensors" ] || { echo "no reference fixtures in $fixtures (set SAM4EM_FIXTURES)" >&2; exit 2; }
grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >>.git/info/exclude

rm -rf .gpu && mkdir -p .gpu/golden/fixtures .gpu/bench/shared/tools .gpu/common/deb .gpu/common/whl

echo "building (release binary and golden-test binary; both again without burn's kernel fusion and with --features spirv)" >&2
cargo build --release --locked
# The golden tests are the `model_golden` module of the `model` test binary (tests/model/).
golden=$(cargo test --locked --test model --no-run 2>&1 | grep -o 'target/[^ )]*/model-[0-9a-f]*' | tail -1)
[ -x "$golden" ] || { echo "cannot find the model test binary" >&2; exit 1; }
strip -o .gpu/bench/sam4em target/release/sam4em
strip -o .gpu/golden/model_golden "$golden"
# The default build has burn's kernel fusion (feature `fusion`); the GPU machine runs, beside it,
# a build without it (what fusion gains, and whether its kernels agree) and one with the opt-in
# `spirv` (cubecl's SPIR-V compiler on Vulkan, which lavapipe cannot run: README "On the GPU").
# Own target folders: the burn stack builds differently with each.
declare -A flags=([nofusion]="--no-default-features --features gui" [spirv]="--features spirv")
for variant in nofusion spirv; do
  # shellcheck disable=SC2086 # the flags are meant to split
  cargo build --release --locked ${flags[$variant]} --target-dir "target/$variant"
  # shellcheck disable=SC2086
  g=$(cargo test --locked ${flags[$variant]} --target-dir "target/$variant" --test model --no-run 2>&1 |
    grep -o "target/$variant/[^ )]*/model-[0-9a-f]*" | tail -1)
  [ -x "$g" ] || { echo "cannot find the $variant model test binary" >&2; exit 1; }
  strip -o ".gpu/bench/sam4em-$variant" "target/$variant/release/sam4em"
  strip -o ".gpu/golden/model_golden-$variant" "$g"
done
xz -T0 -9 .gpu/bench/sam4em* .gpu/golden/model_golden*
for variant in nofusion spirv; do
  mkdir ".gpu/golden-$variant" && mv ".gpu/golden/model_golden-$variant.xz" ".gpu/golden-$variant/"
done

# The golden tests read these; sam2-micro.pt and the trainer checkpoint belong to CPU-only tests.
for f in config.json expected.json inputs.safetensors reference.safetensors weights.safetensors; do
  cp "$fixtures/$f" .gpu/golden/fixtures/
done
cp "$shared/tools/sam4em_torch_reference.py" .gpu/bench/shared/tools/
mkdir .gpu/bench/ref && (cd "$ref" && tar -c --exclude=.git --exclude='*.ipynb' .) | tar -x -C .gpu/bench/ref

o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/sam4em-apt-lists'
mkdir -p /tmp/sam4em-apt-lists/partial
apt-get $o update >/dev/null
(cd .gpu/common/deb && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>/dev/null)
python3 -m pip wheel -q --no-deps -w .gpu/common/whl hydra-core==1.3.2 omegaconf==2.3.0 iopath==0.1.10 antlr4-python3-runtime==4.9.3

tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for call in ".gpu/golden .gpu/common" ".gpu/golden-nofusion .gpu/golden/fixtures .gpu/common" \
  ".gpu/golden-spirv .gpu/golden/fixtures .gpu/common" ".gpu/bench .gpu/common"; do
  # shellcheck disable=SC2086 # the folders are meant to split
  bytes=$(($(du -sb $call | cut -f1 | paste -sd+) + tree))
  echo "carry $call: $((bytes / 1048576)) MiB with the tracked files (limit 64 MiB)" >&2
  [ "$bytes" -lt $((64 << 20)) ] || { echo "carry $call: over the 64 MiB a call may carry" >&2; exit 1; }
done
