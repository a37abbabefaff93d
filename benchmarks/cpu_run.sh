#!/usr/bin/env bash
# Every CPU measurement quoted in docs/PERFORMANCE.md, in priority order, results as JSON files.
#
#   bash benchmarks/cpu_run.sh [RESULTS_DIR]        # from the repository root, venv active
#
# Steps (STEPS=speed,memory,protocol,suite to choose): speed ratios (a)/(b) on the default pair
# and the GPT-2-medium shape; memory N=64 vs N=1,199 on the GPT-2-medium shape (fresh process
# per N); the papers' protocol on a subset, extrapolated; the suite warm vs cold and -n 2 vs
# serial. Sizes are chosen for a shared 2-core machine (~45 min in all); see docs/PERFORMANCE.md.
set -uo pipefail
cd "$(dirname "$0")/.."
R=${1:-benchmarks/results/cpu}
STEPS=${STEPS:-speed,memory,protocol,suite}
mkdir -p "$R"
export WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
has() { case ",$STEPS," in *",$1,"*) return 0 ;; esac; return 1; }
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

if has speed; then
  stamp speed
  python -m pytest benchmarks/test_generation_speed.py -p no:cacheprovider -q \
    --mt-bench-shapes default,gpt2-medium --mt-bench-prompts 16 --mt-bench-batch 16 --mt-bench-rounds 3 \
    --benchmark-json "$R/speed.json" 2>&1 | tail -25
fi
if has memory; then
  # Short prompts (3-6 words) and MEM_TOKENS new tokens (default 4, not the papers' 20) so that
  # N=1,199 on the GPT-2-medium shape fits a CPU session; benchmarks/gpu_run.sh does 32 x 20.
  for n in 64 1199; do
    stamp "memory N=$n"
    python -m benchmarks.memory_probe --shape gpt2-medium --n "$n" --tokens "${MEM_TOKENS:-4}" --batch 64 \
      --prompt-words 3,6 \
      > "$R/memory-gpt2-medium-$n.json" 2> "$R/memory-gpt2-medium-$n.log"
    tail -c 400 "$R/memory-gpt2-medium-$n.json"; echo
  done
fi
if has protocol; then
  stamp "protocol gpt2-medium"
  python -m benchmarks.protocol --shape gpt2-medium --n-prompts 8 --n-f1 8 --ppl-windows 1 --batch 8 \
    --out "$R/protocol-gpt2-medium.json" 2> "$R/protocol-gpt2-medium.log" | tail -5
  stamp "protocol default pair"
  python -m benchmarks.protocol --default-pair --n-prompts 64 --n-f1 64 --ppl-windows 4 --batch 32 \
    --out "$R/protocol-default.json" 2> "$R/protocol-default.log" | tail -5
fi
if has suite; then
  stamp suite
  python -m pytest benchmarks/test_suite.py -p no:cacheprovider -q -s --benchmark-json "$R/suite.json" 2>&1 | tail -25
fi
stamp done
