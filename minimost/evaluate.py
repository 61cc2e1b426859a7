"""Evaluation: MoST's four task families, measured the way their benchmarks are, plus text retention.

    model, tok = load_stage(run_dir / "stage2")
    metrics = evaluate_model(model, tok, data, kit, tasks=("asr", "tts", "slm", "sqa", "text"))
    headline(metrics)      # {"asr_wer": ..., "tts_wer": ..., "swuggy": ..., "sqa_s2t": ..., ...}

The families (most-reference.md §8; docs/evaluation.md has the details and the conventions):
- **asr**: free-running greedy decoding from the ASR prompt, corpus-level WER after
  `minimost.wer.normalize_text`, on the valid split (held-out sentences, *training* voices) and the
  test split (held-out sentences, *held-out* voices), and per voice. MoST's in-loop "WER" scores the
  teacher-forced argmax instead (§7.4), which flatters a model: every step sees the true prefix.
- **tts**: text → generated units → unit vocoder → ASR judge → WER against the input text. Beside it,
  the two ceilings (the judge on the original espeak audio; the judge on the *true* units through the
  vocoder) and the unit edit rate against the true units, which needs no vocoder.
- **slm**: mini-sWUGGY, mini-sBLIMP (and per phenomenon), mini-sStoryCloze and mini-tStoryCloze. Each
  stimulus is scored by the log-likelihood of its deduplicated unit tokens in `<bos><boa> units`
  (no text prompt); accuracy is the fraction of pairs where the right member scores higher, ties
  0.5, chance 50 %. Both conventions are reported: `sum` (total log-probability, the headline) and
  `mean` (per unit token).
- **sqa**: spoken questions (held-out voices) about facts that appear only in *text* training.
  S→T: the text answer contains the normalised gold answer. S→S: the spoken answer, vocoded and
  transcribed by the judge, contains it. T→T: the same questions asked in text, the reference.
- **text**: validation perplexity of the text-LM task and T→T QA accuracy on held-out questions:
  evaluated after each stage it shows how much text ability the speech stages cost.

Speech *input* takes the path the model was trained on (`EvalConfig.audio_input`, "auto" by default):
unit tokens, or (MoST-C, docs/continuous.md) the cached encoder states through the model's projector.
ASR and spoken QA (S→T, S→S) change with it; TTS and spoken-LM score unit tokens on both paths.

Shape letters: B batch, T time (sequence), V vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from minimost.data.tasks import make_row, render_prompt
from minimost.generate import generate
from minimost.model import MAMoELM
from minimost.wer import edit_ops, normalize_text, wer_report

EVAL_TASKS = ("asr", "tts", "slm", "sqa", "text")
SLM_SETS = ("swuggy", "sblimp", "sstorycloze", "tstorycloze")


class EvalError(ValueError):
    """An evaluation cannot run as asked; the message says what is missing and how to get it."""


@dataclass
class EvalConfig:
    """How much to evaluate and how. `None` limits mean every example of the set."""

    max_asr: int | None = 200          # utterances per split (valid: seen voices, test: held-out voices)
    max_tts: int | None = 100          # test sentences for TTS (each one vocoded and judged 3 ways)
    max_slm: int | None = None         # pairs per spoken-LM set
    max_sqa: int | None = None         # spoken questions
    batch_size: int = 32
    max_new_text: int = 48             # tokens for a text answer
    unit_budget: float = 2.5           # TTS may generate up to this many units per true unit (+ 10)
    max_new_units: int = 200           # units for a spoken answer (S→S)
    tts_voice: str = ""                # vocoder speaker for generated speech; "" = the first training voice
    n_examples: int = 4                # examples kept per family for the report
    ceilings: bool = True              # TTS: also the judge on espeak audio and the vocoder on true units
    judge_lexicon: bool = True         # TTS, S→S: also judged with decoding held to the corpus's words
    device: str = "cpu"
    # Speech prompts (ASR, spoken QA) as "units" or "continuous" encoder states (MoST-C). "auto": the
    # path the checkpoint trained with (evaluate_run), else continuous when the model has a projector.
    audio_input: str = "auto"

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Loading a stage and batched decoding
# --------------------------------------------------------------------------------------------

def load_stage(stage_dir, device: str = "cpu"):
    """(model in eval mode, tokenizer) from a stage's run folder or checkpoint folder."""
    from minimost.checkpoint import TOKENIZER, load_checkpoint, resolve_checkpoint
    from minimost.config import ModelConfig
    from minimost.tokenizer import Tokenizer

    folder = resolve_checkpoint(stage_dir)
    weights, _, config = load_checkpoint(folder)
    model = MAMoELM(ModelConfig.from_dict(config["model"]))
    model.load_state_dict(weights)
    if not (folder / TOKENIZER).exists():
        raise EvalError(f"{folder} holds no tokenizer; evaluation needs the tokenizer the stage trained with.")
    return model.to(device).eval(), Tokenizer.load(folder / TOKENIZER)


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[b, T - len(p):] = True
    return ids.to(device), mask.to(device)


def decode_batched(model: MAMoELM, prompts: Sequence[Sequence[int]], max_new: int | Sequence[int],
                   stop_tokens: Sequence[int], pad_id: int, batch_size: int = 32) -> list[list[int]]:
    """Greedy continuation of every prompt (without the stop token), in input order.

    Prompts are sorted by length and decoded in batches with left padding; `max_new` is one limit
    for all, or one per prompt (a batch decodes to its largest, then each row is cut to its own).
    Never longer than the model's `max_seq_len`. A prompt is a list of ids, or a continuous-input
    prompt from `continuous.spliced_prompt` ({input_ids, audio_mask, frames}): its frames enter the
    prefill through the projector, and the KV cache holds them after that.
    """
    limits = [max_new] * len(prompts) if isinstance(max_new, int) else list(max_new)
    device = next(model.parameters()).device
    length = [len(p["input_ids"]) if isinstance(p, Mapping) else len(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: length[i])
    out: list[list[int]] = [[] for _ in prompts]
    stop = set(stop_tokens)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        audio = {}
        if any(isinstance(prompts[i], Mapping) for i in chunk):   # the continuous path: frames in the prompt
            from minimost.continuous import pad_spliced
            rows = [p if isinstance(p, Mapping) else {"input_ids": list(p), "audio_mask": [False] * len(p),
                                                      "frames": []} for p in (prompts[i] for i in chunk)]
            batch = pad_spliced(rows, pad_id, padding_side="left",
                                width=model.cfg.audio_feature_dim * model.cfg.audio_downsample)
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            audio = {"audio_BTC": batch["audio"].to(device), "audio_mask_BT": batch["audio_mask"].to(device)}
        else:
            ids, mask = _left_pad([prompts[i] for i in chunk], pad_id, device)
        room = model.cfg.max_seq_len - ids.shape[1]
        if room <= 0:
            raise EvalError(f"a prompt of {ids.shape[1]} tokens leaves no room to answer (max_seq_len "
                            f"{model.cfg.max_seq_len}); evaluate shorter examples or a model with a longer context.")
        n_new = min(max(limits[i] for i in chunk), room)
        new = generate(model, ids, mask, max_new_tokens=n_new, stop_tokens=tuple(stop), pad_id=pad_id, **audio)
        for row, i in enumerate(chunk):
            seq = new[row, ids.shape[1]:].tolist()[:limits[i]]
            cut = next((j for j, t in enumerate(seq) if t in stop), len(seq))
            out[i] = seq[:cut]
    return out


def text_of(tok, ids: Sequence[int]) -> str:
    """The text part of generated ids (units and special tokens dropped)."""
    return tok.decode_text(ids, skip_special=True).strip()


def units_of(tok, ids: Sequence[int]) -> list[int]:
    """Unit ids of a generated `<boa> units <eoa>` answer: the unit tokens, in order, others dropped."""
    return [i - tok.unit_start for i in ids if tok.unit_start <= i < tok.vocab_size]


# --------------------------------------------------------------------------------------------
# Front doors: what a user calls on a trained model
# --------------------------------------------------------------------------------------------

def _speech_prompt(model, tok, row: Mapping, speech, units: Mapping | None = None):
    """The prompt of a row whose `prompt_speech` is `speech`: unit ids (a list), or (U, C) encoder states
    (a tensor: the continuous path, `continuous.spliced_prompt`, the span replaced by projected frames)."""
    if isinstance(speech, torch.Tensor):
        from minimost.continuous import spliced_prompt
        ids = render_prompt(tok, row, {**(units or {}), row["prompt_speech"]: []})   # <boa><eoa>: the span
        return spliced_prompt(tok, ids, [speech], model.cfg.audio_downsample)
    return render_prompt(tok, row, {**(units or {}), row["prompt_speech"]: speech})


def transcribe_units(model, tok, units_list: Sequence, cfg: EvalConfig | None = None) -> list[str]:
    """ASR, greedy: speech → text. Each speech item is a deduplicated unit sequence, or (U, C) encoder
    states (a torch.Tensor) for a model trained on continuous input (MoST-C)."""
    cfg = cfg or EvalConfig()
    prompts = [_speech_prompt(model, tok, make_row("asr", f"u{i}", prompt_speech="x", answer_text="x"), u)
               for i, u in enumerate(units_list)]
    outs = decode_batched(model, prompts, cfg.max_new_text, [tok.special("eos")], tok.pad_id, cfg.batch_size)
    return [text_of(tok, o) for o in outs]


def speak_text(model, tok, texts: Sequence[str], cfg: EvalConfig | None = None,
               max_units: int | Sequence[int] | None = None) -> list[list[int]]:
    """TTS: texts → deduplicated unit sequences (for the vocoder), greedy."""
    cfg = cfg or EvalConfig()
    prompts = [render_prompt(tok, make_row("tts", f"t{i}", prompt_text=t, answer_speech="x"), {"x": []})
               for i, t in enumerate(texts)]
    limit = max_units if max_units is not None else cfg.max_new_units
    outs = decode_batched(model, prompts, limit, [tok.special("eoa"), tok.special("eos")], tok.pad_id,
                          cfg.batch_size)
    return [units_of(tok, o) for o in outs]


def answer(model, tok, questions: Sequence, spoken_reply: bool = False, cfg: EvalConfig | None = None):
    """Instruction following. A question is text (str) or speech (a list of unit ids, or (U, C) encoder
    states as a torch.Tensor for a continuous-input model); the answer is text, or units when
    `spoken_reply` (MoST's S→S; text questions always get text answers here)."""
    cfg = cfg or EvalConfig()
    prompts = []
    for i, q in enumerate(questions):
        if isinstance(q, str):
            row = make_row("text_instruct", f"q{i}", instruction=q, answer_text="x")
            prompts.append(render_prompt(tok, row))
        else:
            row = make_row("speech_instruct", f"q{i}", prompt_speech="q", answer_text="x",
                           answer_speech="a" if spoken_reply else "")
            prompts.append(_speech_prompt(model, tok, row, q, {"a": []}))
    if spoken_reply:
        outs = decode_batched(model, prompts, cfg.max_new_units, [tok.special("eoa"), tok.special("eos")],
                              tok.pad_id, cfg.batch_size)
        return [units_of(tok, o) for o in outs]
    outs = decode_batched(model, prompts, cfg.max_new_text, [tok.special("eos")], tok.pad_id, cfg.batch_size)
    return [text_of(tok, o) for o in outs]


# --------------------------------------------------------------------------------------------
# Metrics on known inputs (each tested on a case with a known answer)
# --------------------------------------------------------------------------------------------

def contains_answer(prediction: str, gold: str) -> bool:
    """Does the normalised prediction contain the normalised gold answer as whole words?"""
    g = normalize_text(gold)
    return bool(g) and f" {g} " in f" {normalize_text(prediction)} "


def pair_accuracy(good: Sequence[float], bad: Sequence[float]) -> float:
    """Fraction of pairs where the right member scores higher; ties count 0.5 (chance = 0.5)."""
    if len(good) != len(bad) or not good:
        raise EvalError(f"pair_accuracy needs two equal, non-empty lists; got {len(good)} and {len(bad)}.")
    wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g, b in zip(good, bad))
    return wins / len(good)


def unit_edit_rate(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> float:
    """Corpus-level edit distance between unit sequences / total reference units."""
    errors = sum(sum(edit_ops([str(u) for u in r], [str(u) for u in h])) for r, h in zip(refs, hyps))
    return errors / max(1, sum(len(r) for r in refs))


@torch.no_grad()
def sequence_loglik(model: MAMoELM, tok, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                    batch_size: int = 32) -> tuple[list[float], list[float]]:
    """(sum, mean) log-probability of each continuation given its prompt; only continuation tokens count.

    Each distinct (prompt, continuation) is scored once, so identical stimuli (a spoken pair whose two members
    give the same units) tie exactly instead of by float noise from different batch paddings.
    """
    device = next(model.parameters()).device
    distinct: dict[tuple, int] = {}
    for p, c in zip(prompts, continuations):
        distinct.setdefault((tuple(p), tuple(c)), len(distinct))
    seqs = [list(p) + list(c) for p, c in distinct]
    n_prompt = [len(p) for p, _ in distinct]
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    sums, means = [0.0] * len(seqs), [0.0] * len(seqs)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        T = max(len(seqs[i]) for i in chunk)
        ids = torch.full((len(chunk), T), tok.pad_id, dtype=torch.long)
        scored = torch.zeros(len(chunk), T, dtype=torch.bool)     # True where a token is scored
        for b, i in enumerate(chunk):
            ids[b, :len(seqs[i])] = torch.tensor(seqs[i])
            scored[b, n_prompt[i]:len(seqs[i])] = True
        mask = torch.arange(T)[None, :] < torch.tensor([len(seqs[i]) for i in chunk])[:, None]
        ids, mask, scored = ids.to(device), mask.to(device), scored.to(device)
        logits = model(ids, attention_mask_BT=mask, check_inputs=False).logits.float()     # (B, T, V)
        logp = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)    # (B, T-1): token t+1
        logp = (logp * scored[:, 1:]).sum(-1)
        n = scored[:, 1:].sum(-1).clamp(min=1)
        for b, i in enumerate(chunk):
            sums[i], means[i] = float(logp[b]), float(logp[b] / n[b])
    which = [distinct[(tuple(p), tuple(c))] for p, c in zip(prompts, continuations)]
    return [sums[i] for i in which], [means[i] for i in which]


def unit_loglik(model: MAMoELM, tok, units_list: Sequence[Sequence[int]], batch_size: int = 32
                ) -> tuple[list[float], list[float]]:
    """(sum, mean) log-probability of each unit sequence's unit tokens in `<bos><boa> units`.

    Only the unit tokens are scored (not <boa>, not an <eoa> the stimulus does not contain).
    """
    prompt = [tok.special("bos"), tok.special("boa")]
    return sequence_loglik(model, tok, [prompt] * len(units_list), [tok.encode_units(u) for u in units_list],
                           batch_size)


def text_loglik(model: MAMoELM, tok, texts: Sequence[str], batch_size: int = 32) -> tuple[list[float], list[float]]:
    """(sum, mean) log-probability of each text's tokens in `<bos> text` (the text-LM task, no <eos>)."""
    return sequence_loglik(model, tok, [[tok.special("bos")]] * len(texts), [tok.encode_text(t) for t in texts],
                           batch_size)


# --------------------------------------------------------------------------------------------
# The families on a data build
# --------------------------------------------------------------------------------------------

@dataclass
class EvalInputs:
    """Everything the families read from a data build and the speech kit."""

    data: object                     # minimost.data.build.TextData
    kit: object | None               # minimost.speech.kit.SpeechKit (TTS, S→S and the ceilings)
    units: Mapping[str, list[int]]   # speech-plan id → deduplicated units
    plan: dict[str, dict] = field(default_factory=dict)    # speech-plan id → {text, voice, split, purpose}
    cache_dir: str = "data/cache"
    features: Mapping | None = None  # speech-plan id → (U, C) encoder states: the continuous path's input

    @classmethod
    def build(cls, data, kit=None, cache_dir: str = "data/cache", progress: bool = False) -> EvalInputs:
        if kit is None:
            path = data.path / "speech_units.json"
            units = json.loads(path.read_text()) if path.exists() else None
            found = sorted(data.path.glob("speech_units-*.json"))
            if units is None and found:
                units = json.loads(found[-1].read_text())
            if units is None:
                raise EvalError(f"no speech units in {data.path}; build the speech kit and render the speech "
                                "data first (`python -m minimost run --preset ...` does both).")
        else:
            from minimost.speech.kit import speech_units
            units = speech_units(data, kit, cache_dir, progress=progress)
        plan = {r["id"]: r for r in data.dataset("speech_plan")}
        return cls(data, kit, units, plan, cache_dir)

    def judge_lexicon(self):
        """Every word of the build's text corpus, as a `judge.Lexicon` (built once)."""
        if getattr(self, "_lexicon", None) is None:
            from minimost.speech.judge import Lexicon
            corpus = self.data.dataset("corpus")
            self._lexicon = Lexicon(t for split in corpus for t in corpus[split]["text"])
        return self._lexicon

    def rows(self, split: str, task: str, prefix: str = "") -> list[dict]:
        tasks = self.data.dataset("tasks")[split]
        return [r for r in tasks if r["task"] == task and r["id"].startswith(prefix)]

    def speech(self, ids: Sequence[str], path: str) -> list:
        """The speech prompts of some speech ids on an input path: unit lists, or (U, C) float states."""
        if path == "continuous":
            if self.features is None:
                raise EvalError("the continuous input path needs the encoder states of the speech; pass "
                                "EvalInputs(features=minimost.continuous.load_speech_features(data, tok, kit)).")
            missing = [i for i in ids if i not in self.features]
            if missing:
                raise EvalError(f"no encoder states for {len(missing)} speech id(s) (e.g. {missing[:3]}); "
                                "rebuild the features: delete speech_features-*.safetensors next to the data.")
            return [self.features[i].float() for i in ids]
        return [self.units[i] for i in ids]

    def need_kit(self, what: str):
        if self.kit is None:
            raise EvalError(f"{what} needs the speech kit (vocoder and judge); pass kit=build_speech_kit(...).")
        return self.kit


def speech_input_path(model, cfg: EvalConfig) -> str:
    """"units" or "continuous": how speech prompts reach the model (EvalConfig.audio_input; "auto" =
    continuous exactly when the model has a projector, i.e. audio_feature_dim > 0)."""
    if cfg.audio_input not in ("auto", "units", "continuous"):
        raise EvalError(f"audio_input={cfg.audio_input!r}; expected auto, units or continuous.")
    path = cfg.audio_input
    if path == "auto":
        path = "continuous" if model.cfg.audio_feature_dim > 0 else "units"
    if path == "continuous" and model.cfg.audio_feature_dim <= 0:
        raise EvalError("audio_input='continuous' needs a model with a projector (audio_feature_dim > 0); this "
                        "one was trained on unit tokens: evaluate it with audio_input='units'.")
    return path


def _limit(rows: list, n: int | None) -> list:
    return rows if n is None else rows[:n]


def _examples(refs, hyps, n, **extra) -> list[dict]:
    return [{"ref": r, "hyp": h, **{k: v[i] for k, v in extra.items()}} for i, (r, h) in
            enumerate(zip(refs[:n], hyps[:n]))]


def eval_asr(model, tok, inp: EvalInputs, cfg: EvalConfig) -> dict:
    """Greedy ASR WER per split (valid = seen voices, test = held-out voices) and per voice."""
    out: dict = {}
    path = speech_input_path(model, cfg)
    for split, name in (("valid", "seen_voices"), ("test", "heldout_voices")):
        rows = _limit(inp.rows(split, "asr"), cfg.max_asr)
        if not rows:
            continue
        hyps = transcribe_units(model, tok, inp.speech([r["prompt_speech"] for r in rows], path), cfg)
        refs = [r["answer_text"] for r in rows]
        report = wer_report(refs, hyps)
        voices = [inp.plan[r["prompt_speech"]]["voice"] for r in rows]
        per_voice = defaultdict(lambda: ([], []))
        for v, r, h in zip(voices, refs, hyps):
            per_voice[v][0].append(r)
            per_voice[v][1].append(h)
        out[name] = {"wer": round(report.wer, 4), "utterances": len(rows), "words": report.ref_words,
                     "per_voice": {v: round(wer_report(*rh).wer, 4) for v, rh in sorted(per_voice.items())},
                     "examples": _examples(refs, hyps, cfg.n_examples, voice=voices)}
    if not out:
        raise EvalError("no ASR rows in the valid/test splits of this build.")
    out["audio_input"] = path
    return out


def _test_audio(inp: EvalInputs, ids: set[str]) -> dict[str, np.ndarray]:
    """The original espeak audio of some test-split speech ids (from the cached speech corpus)."""
    from minimost.speech.audio import audio_from_hf
    from minimost.speech.kit import speech_corpus

    corpus = speech_corpus(inp.data, inp.cache_dir, "test", progress=False)
    return {r["id"]: audio_from_hf(r["audio"])[0] for r in corpus if r["id"] in ids}


def eval_tts(model, tok, inp: EvalInputs, cfg: EvalConfig, wav_dir: Path | None = None) -> dict:
    """TTS judge-WER with its two ceilings, and the unit edit rate against the true units."""
    kit = inp.need_kit("TTS evaluation")
    rows = _limit(inp.rows("test", "tts"), cfg.max_tts)
    if not rows:
        raise EvalError("no TTS rows in the test split of this build.")
    texts = [r["prompt_text"] for r in rows]
    true_units = [inp.units[r["answer_speech"]] for r in rows]
    gen_units = speak_text(model, tok, texts, cfg, [int(len(u) * cfg.unit_budget) + 10 for u in true_units])
    voice = cfg.tts_voice or kit.vocoder.speakers[0]
    empty = sum(1 for u in gen_units if not u)
    gen_wavs = kit.vocoder.synthesize_batch([u or [0] for u in gen_units], voice)
    hyp_gen = kit.transcribe(gen_wavs)
    if wav_dir is not None:
        from minimost.speech.audio import save_audio
        wav_dir.mkdir(parents=True, exist_ok=True)
        for i in range(min(cfg.n_examples, len(rows))):
            save_audio(wav_dir / f"tts_{i}.wav", gen_wavs[i])
    out = {"wer": round(wer_report(texts, hyp_gen).wer, 4),
           "unit_edit_rate": round(unit_edit_rate(true_units, gen_units), 4),
           "units_per_true_unit": round(sum(map(len, gen_units)) / max(1, sum(map(len, true_units))), 3),
           "empty_outputs": empty, "sentences": len(rows), "voice": str(voice)}
    hyp_voc = [""] * len(rows)
    if cfg.ceilings:   # the same for every model: the judge and the vocoder alone
        voc_wavs = kit.vocoder.synthesize_batch(true_units, voice)
        originals = _test_audio(inp, {r["answer_speech"] for r in rows})
        orig_wavs = [originals[r["answer_speech"]] for r in rows]
        hyp_voc, hyp_orig = kit.transcribe(voc_wavs), kit.transcribe(orig_wavs)
        out["ceiling_judge_on_espeak"] = round(wer_report(texts, hyp_orig).wer, 4)
        out["ceiling_vocoder_true_units"] = round(wer_report(texts, hyp_voc).wer, 4)
    if cfg.judge_lexicon:
        # The same audio, decoded in the mini-world's words only (judge.ctc_lexicon_decode): the judge's
        # own misspellings go, so what is left is mostly the speech's. Beside the greedy figures, never
        # instead of them (docs/judge.md, "Lexicon-constrained decoding").
        lexicon = inp.judge_lexicon()
        out["wer_lexicon"] = round(wer_report(texts, kit.transcribe(gen_wavs, lexicon=lexicon)).wer, 4)
        out["lexicon_words"], out["lexicon_oov_words"] = len(lexicon), lexicon.oov(texts)
        if cfg.ceilings:
            heard = kit.transcribe(orig_wavs, lexicon=lexicon)
            out["ceiling_judge_on_espeak_lexicon"] = round(wer_report(texts, heard).wer, 4)
            heard = kit.transcribe(voc_wavs, lexicon=lexicon)   # the same vocoded audio as the greedy ceiling
            out["ceiling_vocoder_true_units_lexicon"] = round(wer_report(texts, heard).wer, 4)
    out["examples"] = _examples(texts, hyp_gen, cfg.n_examples, vocoder_ceiling=hyp_voc)
    return out


def slm_pairs(inp: EvalInputs) -> dict[str, list[tuple[str, str, str]]]:
    """Per set, (right speech id, wrong speech id, label) triples from the speech plan."""
    ids = set(inp.plan)
    out: dict[str, list] = {s: [] for s in SLM_SETS}
    for r in inp.data.dataset("eval/swuggy"):
        out["swuggy"].append((f"{r['id']}-word", f"{r['id']}-nonword", ""))
    for r in inp.data.dataset("eval/sblimp"):
        out["sblimp"].append((f"{r['id']}-good", f"{r['id']}-bad", r["phenomenon"]))
    stories = sorted({i.rsplit("-", 1)[0] for i in ids if i.startswith("storycloze-")})
    out["sstorycloze"] = [(f"{s}-good", f"{s}-bad", "") for s in stories]
    out["tstorycloze"] = [(f"{s}-good", f"{s}-foreign", "") for s in stories]
    missing = [a for pairs in out.values() for p in pairs for a in p[:2] if a not in inp.units]
    if missing:
        raise EvalError(f"{len(missing)} spoken-LM stimuli have no units (e.g. {missing[:3]}); re-render the test "
                        "split's units with the speech kit (`minimost.speech.kit.speech_units`).")
    return out


def eval_slm(model, tok, inp: EvalInputs, cfg: EvalConfig) -> dict:
    """Pairwise accuracy on the four spoken-LM sets, `sum` and `mean` conventions, sBLIMP by phenomenon."""
    out = {}
    for name, pairs in slm_pairs(inp).items():
        pairs = _limit(pairs, cfg.max_slm)
        if not pairs:
            continue
        ids = [p[0] for p in pairs] + [p[1] for p in pairs]
        sums, means = unit_loglik(model, tok, [inp.units[i] for i in ids], cfg.batch_size)
        n = len(pairs)
        res = {"acc_sum": round(pair_accuracy(sums[:n], sums[n:]), 4),
               "acc_mean": round(pair_accuracy(means[:n], means[n:]), 4), "pairs": n}
        if all("text" in inp.plan.get(i, {}) for i in ids):
            # The text topline (ZeroSpeech 2021, TWIST): the same pairs read as text by the same model. The gap
            # to it is what the speech side has not learnt of what the model knows in text.
            text_sums, _ = text_loglik(model, tok, [inp.plan[i]["text"] for i in ids], cfg.batch_size)
            res["text_acc_sum"] = round(pair_accuracy(text_sums[:n], text_sums[n:]), 4)
        if name == "sblimp":
            by = defaultdict(list)
            for k, p in enumerate(pairs):
                by[p[2]].append(k)
            res["per_phenomenon"] = {ph: round(pair_accuracy([sums[k] for k in ks], [sums[n + k] for k in ks]), 4)
                                     for ph, ks in sorted(by.items())}
        out[name] = res
    return out


def eval_sqa(model, tok, inp: EvalInputs, cfg: EvalConfig) -> dict:
    """Spoken QA S→T and S→S against T→T on the same held-out questions."""
    rows = _limit(inp.rows("test", "speech_instruct", "s2t-spoken_qa"), cfg.max_sqa)
    if not rows:
        raise EvalError("no spoken-QA rows (s2t-spoken_qa-*) in the test split of this build.")
    gold = [r["answer_text"] for r in rows]
    questions_text = [inp.plan[r["prompt_speech"]]["text"] for r in rows]
    path = speech_input_path(model, cfg)
    speech_q = inp.speech([r["prompt_speech"] for r in rows], path)
    s2t = answer(model, tok, speech_q, cfg=cfg)
    t2t = answer(model, tok, questions_text, cfg=cfg)
    acc = lambda preds: round(sum(contains_answer(p, g) for p, g in zip(preds, gold)) / len(gold), 4)  # noqa: E731
    out = {"s2t": acc(s2t), "t2t": acc(t2t), "questions": len(rows), "audio_input": path}
    out["s2t_over_t2t"] = round(out["s2t"] / out["t2t"], 4) if out["t2t"] else None
    if inp.kit is not None:
        spoken = answer(model, tok, speech_q, spoken_reply=True, cfg=cfg)
        voice = cfg.tts_voice or inp.kit.vocoder.speakers[0]
        spoken_wavs = inp.kit.vocoder.synthesize_batch([u or [0] for u in spoken], voice)
        heard = inp.kit.transcribe(spoken_wavs)
        out["s2s"] = acc(heard)
        out["s2s_over_t2t"] = round(out["s2s"] / out["t2t"], 4) if out["t2t"] else None
        if cfg.judge_lexicon:   # the spoken answers heard in the corpus's words (see eval_tts)
            out["s2s_lexicon"] = acc(inp.kit.transcribe(spoken_wavs, lexicon=inp.judge_lexicon()))
    else:
        heard = [""] * len(rows)
    out["examples"] = [{"question": q, "gold": g, "s2t": a, "t2t": b, "s2s_heard": c}
                       for q, g, a, b, c in list(zip(questions_text, gold, s2t, t2t, heard))[:cfg.n_examples]]
    return out


def eval_text(model, tok, inp: EvalInputs, cfg: EvalConfig) -> dict:
    """Text retention: validation perplexity of the text-LM task and T→T accuracy on held-out QA."""
    from minimost.pipeline import text_eval_fn
    ppl = text_eval_fn(inp.data, tok)(model, 0)
    qa = inp.data.dataset("qa")["test"]
    rows = _limit(list(qa), cfg.max_sqa)
    preds = answer(model, tok, [r["question"] for r in rows], cfg=cfg)
    correct = sum(contains_answer(p, r["answer"]) for p, r in zip(preds, rows))
    return {"valid_ppl": ppl["valid_text_ppl"], "valid_loss": ppl["valid_text_loss"],
            "qa_acc": round(correct / max(1, len(rows)), 4), "qa_questions": len(rows)}


FAMILIES: dict[str, Callable] = {"asr": eval_asr, "tts": eval_tts, "slm": eval_slm, "sqa": eval_sqa,
                                 "text": eval_text}


def evaluate_model(model, tok, data, kit=None, tasks: Sequence[str] = EVAL_TASKS, cfg: EvalConfig | None = None,
                   inputs: EvalInputs | None = None, cache_dir: str = "data/cache", wav_dir=None,
                   progress: bool = False) -> dict:
    """{family: metrics} for the requested families, plus `seconds` per family."""
    cfg = cfg or EvalConfig()
    unknown = [t for t in tasks if t not in FAMILIES]
    if unknown:
        raise EvalError(f"unknown evaluation task(s) {unknown}; choose from {', '.join(EVAL_TASKS)}.")
    speech = [t for t in tasks if t != "text"]
    if speech and tok.n_units == 0:
        raise EvalError(f"tasks {speech} need a model with unit tokens; this tokenizer is text-only (stage 0). "
                        "Evaluate stage 0 with tasks=('text',).")
    if inputs is None and speech:
        inputs = EvalInputs.build(data, kit, cache_dir)
    elif inputs is None:
        inputs = EvalInputs(data, kit, {}, {}, cache_dir)
    heard = [t for t in tasks if t in ("asr", "sqa")]
    if heard and inputs.features is None and speech_input_path(model, cfg) == "continuous":
        from minimost.continuous import load_speech_features  # encoder states, cached next to the data
        inputs = dataclasses.replace(inputs, features=load_speech_features(inputs.data, tok, inputs.kit,
                                                                           inputs.cache_dir, progress))
    model.eval()
    out: dict = {"seconds": {}}
    for t in tasks:
        t0 = time.perf_counter()
        if progress:
            print(f"  eval {t} ...", flush=True)
        kwargs = {"wav_dir": Path(wav_dir)} if (t == "tts" and wav_dir is not None) else {}
        with torch.no_grad():
            out[t] = FAMILIES[t](model, tok, inputs, cfg, **kwargs)
        out["seconds"][t] = round(time.perf_counter() - t0, 1)
    return out


def headline(metrics: Mapping) -> dict[str, float]:
    """One flat dict of the numbers the targets and the ablations compare (absent families skipped)."""
    h: dict[str, float] = {}
    if "asr" in metrics:
        h["asr_wer"] = metrics["asr"].get("heldout_voices", metrics["asr"].get("seen_voices", {})).get("wer")
        if "seen_voices" in metrics["asr"]:
            h["asr_wer_seen"] = metrics["asr"]["seen_voices"]["wer"]
    if "tts" in metrics:
        h["tts_wer"] = metrics["tts"]["wer"]
        if "wer_lexicon" in metrics["tts"]:
            h["tts_wer_lexicon"] = metrics["tts"]["wer_lexicon"]
        h["tts_unit_edit"] = metrics["tts"]["unit_edit_rate"]
    if "slm" in metrics:
        for s in SLM_SETS:
            if s in metrics["slm"]:
                h[s] = metrics["slm"][s]["acc_sum"]
        accs = [metrics["slm"][s]["acc_sum"] for s in SLM_SETS if s in metrics["slm"]]
        h["slm_mean"] = round(sum(accs) / len(accs), 4) if accs else None
    if "sqa" in metrics:
        for k in ("s2t", "s2s", "s2s_lexicon", "t2t", "s2t_over_t2t", "s2s_over_t2t"):
            if k in metrics["sqa"]:
                h[f"sqa_{k}"] = metrics["sqa"][k]
    if "text" in metrics:
        h["text_ppl"] = metrics["text"]["valid_ppl"]
        h["text_qa"] = metrics["text"]["qa_acc"]
    return h


# Lower is better for these; everything else in `headline` is higher-is-better.
LOWER_IS_BETTER = ("asr_wer", "asr_wer_seen", "tts_wer", "tts_wer_lexicon", "tts_unit_edit", "text_ppl")

# The targets of the evaluation issue (held-out sentences and voices): `tiny` on 2 CPU cores, `small`
# on one H100/H200-class GPU. Spoken-QA targets are fractions of the T→T accuracy.
TARGETS: dict[str, dict[str, float]] = {
    "tiny": {"asr_wer": 0.20, "tts_wer": 0.30, "swuggy": 0.70, "sblimp": 0.65, "tstorycloze": 0.80,
             "sstorycloze": 0.60, "sqa_s2t_over_t2t": 0.50},
    "small": {"asr_wer": 0.03, "tts_wer": 0.08, "swuggy": 0.85, "sblimp": 0.80, "tstorycloze": 0.95,
              "sstorycloze": 0.75, "sqa_s2t_over_t2t": 0.90, "sqa_s2s_over_t2t": 0.75},
}


def target_check(preset: str, key: str, value) -> str:
    """'≤ 20 % ✓' / '≥ 70 % ✗' for a headline value against the preset's target, '' when there is none."""
    goal = TARGETS.get(preset, {}).get(key)
    if goal is None or value is None:
        return ""
    low = key in LOWER_IS_BETTER
    met = value <= goal if low else value >= goal
    goal_text = f"{goal:.2f} of T→T" if key.startswith("sqa_") else f"{100 * goal:.0f} %"
    return f"{'≤' if low else '≥'} {goal_text} {'✓' if met else '✗'}"


# --------------------------------------------------------------------------------------------
# A run folder: `python -m minimost eval --run runs/<name> --tasks asr,tts,slm,sqa`
# --------------------------------------------------------------------------------------------

def trained_audio_input(stage_dir, model=None) -> str:
    """"units" or "continuous": `train.audio_input` of a stage's checkpoint (stage 0 trains on text, so a
    missing field means units), or, without one, whether the model has a projector."""
    from minimost.checkpoint import CONFIG, resolve_checkpoint
    try:
        saved = json.loads((resolve_checkpoint(stage_dir) / CONFIG).read_text())
    except (OSError, ValueError):
        saved = {}
    path = saved.get("train", {}).get("audio_input")
    if path is None:
        path = "continuous" if model is not None and model.cfg.audio_feature_dim > 0 else "units"
    return path


def final_stage(run_dir: Path) -> str:
    """The last trained stage of a run folder: stage2, else stage1, else stage0."""
    from minimost.checkpoint import latest_checkpoint
    for stage in ("stage2", "stage1", "stage0"):
        if latest_checkpoint(run_dir / stage / "checkpoints") is not None:
            return stage
    raise EvalError(f"{run_dir} has no trained stage (no stage*/checkpoints/step_*); run "
                    "`python -m minimost run --preset ...` first.")


def evaluate_run(run_dir, tasks: Sequence[str] = EVAL_TASKS, cfg: EvalConfig | None = None,
                 data_dir: str | None = None, stage: str | None = None, retention: bool = True,
                 progress: bool = True, preset: str | None = None, data=None, kit=None) -> dict:
    """Evaluate a run folder's final stage (and text retention of every stage); write eval.json.

    The preset and data folder come from the run's report.json unless given (`run_pipeline` passes
    them, with its data and kit). The speech kit is loaded from its cache (`minimost run` built it;
    nothing is trained here unless the cache is missing).
    """
    from minimost.pipeline import prepare_data

    run_dir = Path(run_dir)
    if preset is None:
        report_path = run_dir / "report.json"
        if not report_path.exists():
            raise EvalError(f"{run_dir} has no report.json; is it a folder written by `python -m minimost run`?")
        report = json.loads(report_path.read_text())
        preset, data_dir = report["preset"], data_dir or report.get("data_dir")
    data_dir = data_dir or "data/cache"
    cfg = cfg or EvalConfig()
    stage = stage or final_stage(run_dir)
    data = data if data is not None else prepare_data(preset, data_dir)
    model, tok = load_stage(run_dir / stage, cfg.device)
    if cfg.audio_input == "auto":   # the path this stage was trained on, as its checkpoint recorded it
        cfg = dataclasses.replace(cfg, audio_input=trained_audio_input(run_dir / stage, model))
    if kit is None and any(t in ("tts", "sqa") for t in tasks):
        from minimost.speech.kit import build_speech_kit
        kit = build_speech_kit(preset, data_dir, data=data, progress=progress)
    t0 = time.perf_counter()
    result = {"stage": stage, "preset": preset, "tasks": list(tasks), "config": cfg.to_dict(),
              "metrics": evaluate_model(model, tok, data, kit, tasks, cfg, cache_dir=data_dir,
                                        wav_dir=run_dir / "examples", progress=progress)}
    if retention:   # text before and after the speech stages: forgetting is part of the story
        result["retention"] = {}
        for s in ("stage0", "stage1", "stage2"):
            try:
                m, t = load_stage(run_dir / s, cfg.device)
            except Exception:   # noqa: BLE001 - a stage that was not trained has nothing to report
                continue
            result["retention"][s] = eval_text(m, t, EvalInputs(data, None, {}, {}, data_dir), cfg)
    result["headline"] = headline(result["metrics"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    _write_json(run_dir / "eval.json", result)
    return result


# What the README's table is read against: the same command with other training seeds.
SUMMARY_LABELS = {"asr_wer": "ASR WER, held-out voices", "asr_wer_seen": "ASR WER, training voices",
                  "tts_wer": "TTS judge-WER", "tts_wer_lexicon": "TTS judge-WER, lexicon decoding",
                  "tts_unit_edit": "TTS unit edit rate", "swuggy": "mini-sWUGGY",
                  "sblimp": "mini-sBLIMP", "sstorycloze": "mini-sStoryCloze", "tstorycloze": "mini-tStoryCloze",
                  "sqa_s2t": "spoken QA S→T", "sqa_t2t": "spoken QA T→T", "sqa_s2t_over_t2t": "S→T / T→T",
                  "sqa_s2s": "spoken QA S→S", "sqa_s2s_lexicon": "spoken QA S→S, lexicon decoding",
                  "text_ppl": "text valid perplexity", "text_qa": "text QA"}


def summarise_runs(run_dirs: Sequence) -> dict:
    """Mean ± sample std of every headline metric over several evaluated runs (e.g. training seeds).

    Reads each run's eval.json; the runs must share a preset and an evaluated stage, or the spread would
    mix different things.
    """
    from minimost.ablate import mean_std

    if not run_dirs:
        raise EvalError("summarise_runs needs at least one run folder.")
    results = []
    for d in map(Path, run_dirs):
        path = d / "eval.json"
        if not path.exists():
            raise EvalError(f"{d} has no eval.json; evaluate it first: python -m minimost eval --run {d}")
        results.append(json.loads(path.read_text()))
    kinds = sorted({(r["preset"], r["stage"]) for r in results})
    if len(kinds) > 1:
        raise EvalError(f"the runs differ in (preset, evaluated stage): {kinds}; summarise like with like.")
    keys = [k for k in SUMMARY_LABELS if all(r["headline"].get(k) is not None for r in results)]
    metrics = {}
    for k in keys:
        values = [float(r["headline"][k]) for r in results]
        mean, std = mean_std(values)
        metrics[k] = {"values": values, "mean": round(mean, 4), "std": round(std, 4)}
    return {"preset": kinds[0][0], "stage": kinds[0][1], "runs": [Path(d).name for d in run_dirs],
            "metrics": metrics}


def render_summary(summary: Mapping) -> str:
    """A markdown table of `summarise_runs`: one column per run, mean ± std, and the preset's target."""
    def show(key: str, v: float) -> str:
        return f"{v:.2f}" if key in ("text_ppl", "sqa_s2t_over_t2t") else _pct(v)

    runs = summary["runs"]
    lines = [f"{len(runs)} runs of preset `{summary['preset']}`, evaluated at {summary['stage']} "
             "(sample standard deviation, n - 1):", "",
             "| metric | " + " | ".join(f"`{r}`" for r in runs) + " | mean ± std | target |",
             "|---|" + "---|" * len(runs) + "---|---|"]
    for k, m in summary["metrics"].items():
        spread = f"{show(k, m['mean'])} ± {show(k, m['std'])}"
        lines.append(f"| {SUMMARY_LABELS[k]} | " + " | ".join(show(k, v) for v in m["values"])
                     + f" | {spread} | {target_check(summary['preset'], k, m['mean'])} |")
    return "\n".join(lines)


def _write_json(path: Path, obj) -> None:
    from minimost.checkpoint import write_text_atomic
    write_text_atomic(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(x):
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x)}")


# --------------------------------------------------------------------------------------------
# Tables for report.md and the console
# --------------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def metric_rows(result: Mapping) -> list[tuple[str, str, str, str]]:
    """(metric, value, what to read it against, headline key) rows of one `evaluate_run` result."""
    m, rows = result["metrics"], []
    if "asr" in m:
        a = m["asr"]
        if "heldout_voices" in a:
            rows.append(("ASR WER, held-out sentences and voices (greedy)", _pct(a["heldout_voices"]["wer"]),
                         f"{a['heldout_voices']['utterances']} utterances", "asr_wer"))
        if "seen_voices" in a:
            rows.append(("ASR WER, held-out sentences, training voices", _pct(a["seen_voices"]["wer"]),
                         f"{a['seen_voices']['utterances']} utterances", "asr_wer_seen"))
    if "tts" in m:
        t = m["tts"]
        rows.append(("TTS judge-WER (units → vocoder → judge)", _pct(t["wer"]),
                     f"ceilings: judge on espeak audio {_pct(t.get('ceiling_judge_on_espeak'))}, vocoder on true "
                     f"units {_pct(t.get('ceiling_vocoder_true_units'))}", "tts_wer"))
        if "wer_lexicon" in t:
            rows.append(("TTS judge-WER, decoded in the corpus's words", _pct(t["wer_lexicon"]),
                         f"ceilings: judge on espeak audio {_pct(t.get('ceiling_judge_on_espeak_lexicon'))}, "
                         f"vocoder on true units {_pct(t.get('ceiling_vocoder_true_units_lexicon'))}",
                         "tts_wer_lexicon"))
        rows.append(("TTS unit edit rate vs true units", _pct(t["unit_edit_rate"]),
                     f"{t['sentences']} sentences, {t['units_per_true_unit']} units per true unit", "tts_unit_edit"))
    if "slm" in m:
        names = {"swuggy": "mini-sWUGGY", "sblimp": "mini-sBLIMP", "sstorycloze": "mini-sStoryCloze",
                 "tstorycloze": "mini-tStoryCloze"}
        for k, label in names.items():
            if k in m["slm"]:
                s = m["slm"][k]
                topline = f"; text topline {_pct(s['text_acc_sum'])}" if "text_acc_sum" in s else ""
                rows.append((f"{label} accuracy (sum log-prob)", _pct(s["acc_sum"]),
                             f"per-unit mean: {_pct(s['acc_mean'])}{topline}; {s['pairs']} pairs; chance 50 %", k))
    if "sqa" in m:
        q = m["sqa"]
        rows.append(("Spoken QA S→T", _pct(q["s2t"]), f"T→T {_pct(q['t2t'])} on the same {q['questions']} "
                     f"questions; S→T/T→T = {q['s2t_over_t2t']}", "sqa_s2t_over_t2t"))
        if "s2s" in q:
            rows.append(("Spoken QA S→S (answer vocoded, judged)", _pct(q["s2s"]),
                         f"S→S/T→T = {q['s2s_over_t2t']}", "sqa_s2s_over_t2t"))
        if "s2s_lexicon" in q:
            rows.append(("Spoken QA S→S, answers heard in the corpus's words", _pct(q["s2s_lexicon"]),
                         "the judge decodes with the lexicon (docs/judge.md)", "sqa_s2s_lexicon"))
    for stage, r in result.get("retention", {}).items():
        rows.append((f"text after {stage}: valid perplexity / text QA", f"{r['valid_ppl']:.2f} / {_pct(r['qa_acc'])}",
                     "stage 0 never saw the QA prompt format" if stage == "stage0" else "retention", ""))
    return rows


def render_eval(result: Mapping) -> str:
    """A markdown table of an `evaluate_run` result."""
    preset, h = result.get("preset", ""), result.get("headline", {})
    lines = [f"Evaluated {result['stage']} ({result.get('seconds', '?')} s).", "",
             f"| metric | value | read against | target ({preset}) |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {target_check(preset, k, h.get(k)) if k else ''} |"
              for a, b, c, k in metric_rows(result)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Publishing: docs/results/<preset>.json and the README's results table, generated from it
# --------------------------------------------------------------------------------------------

README_BEGIN, README_END = "<!-- results:begin (generated by `minimost eval --publish`) -->", "<!-- results:end -->"


def published_record(run_dir, note: str = "") -> dict:
    """What `--publish` commits: the run's machine, timings and configuration summary with eval.json.

    `note` is one sentence printed under the table (e.g. what else ran on the machine meanwhile).
    """
    run_dir = Path(run_dir)
    report = json.loads((run_dir / "report.json").read_text())
    result = json.loads((run_dir / "eval.json").read_text())
    return {"preset": report["preset"], "run": run_dir.name, "machine": report["machine"],
            "command": f"python -m minimost run --preset {report['preset']}"
                       + "".join(f" --set {o}" for o in report.get("overrides", [])),
            "timings_s": report["timings_s"], "note": note, "evaluation": result}


def results_block(record: Mapping) -> str:
    """The README's results section for one published record (markdown, between the markers)."""
    t = record["timings_s"]
    result = dict(record["evaluation"])
    train = sum(v for k, v in t.items() if k.startswith("stage "))
    second = t.get("speech kit and speech data (second process)")
    kit_part = (f"{t.get('speech kit and speech data', '?')} s building the speech kit and speech data"
                if second is None else
                f"{second} s building the speech kit and speech data in a second process beside the training, "
                f"of which the training waited {t.get('waiting for the speech data after stage 0', '?')} s "
                f"for the speech data and {t.get('waiting for the vocoder and judge after training', '?')} s "
                f"for the vocoder and judge")
    lines = [README_BEGIN,
             f"`{record['command']}` on {record['machine']}: {t.get('total', '?')} s in all "
             f"({train:.0f} s training the three stages, {kit_part}, "
             f"{t.get('evaluation', result.get('seconds', '?'))} s evaluating). "
             f"Run `{record['run']}`, evaluated at {result['stage']}; the full record is "
             f"`docs/results/{record['preset']}.json`.", "", render_eval(result).split("\n", 2)[2]]
    if record.get("note"):
        lines += ["", record["note"]]
    lines.append(README_END)
    return "\n".join(lines)


def publish(run_dir, repo_root, note: str = "") -> Path:
    """Write docs/results/<preset>.json from a run and regenerate the README's results block."""
    record = published_record(run_dir, note)
    out = Path(repo_root) / "docs" / "results" / f"{record['preset']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_json(out, record)
    readme = Path(repo_root) / "README.md"
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise EvalError(f"{readme} has no results markers; add a line `{README_BEGIN}` and a line "
                        f"`{README_END}` where the results table should go.")
    head, rest = text.split(README_BEGIN, 1)
    tail = rest.split(README_END, 1)[1]
    readme.write_text(head + results_block(record) + tail)
    return out
