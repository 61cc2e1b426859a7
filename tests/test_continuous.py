"""Continuous speech input (MoST-C): splicing checked by hand, gradients, frozen encoder, cached generation,
clear errors, and the trainer consuming a ContinuousSource. Tiny random encoders, CPU, a few seconds."""

import dataclasses

import numpy as np
import pytest
import torch

from minimost.config import AUDIO, SPECIAL, TEXT, ModelConfig, TrainConfig, preset
from minimost.continuous import (
    ContinuousInputError,
    ContinuousSource,
    Projector,
    SpeechEncoder,
    collate_continuous,
    splice,
    stack_frames,
)
from minimost.generate import generate
from minimost.model import MAMoELM

torch.set_num_threads(1)
PAD, BOA, EOA = 0, 3, 4   # ids 0-9 special (3, 4 audio brackets), 10-99 text, 100-149 units
C = 6                     # encoder width of the hand-made features


def modality_map(V: int) -> torch.Tensor:
    m = torch.full((V,), TEXT, dtype=torch.long)
    m[:10] = SPECIAL
    m[BOA] = m[EOA] = AUDIO
    m[100:150] = AUDIO
    return m


def micro_model(**changes) -> MAMoELM:
    torch.manual_seed(0)
    cfg = dataclasses.replace(preset("micro"), **({"audio_feature_dim": C, "dispatch": "loop"} | changes))
    model = MAMoELM(cfg)
    model.set_modality_map(modality_map(cfg.vocab_size))
    return model


def tiny_units():
    """A phonetic UnitTokenizer with random weights: the real encoder class, built in milliseconds."""
    from minimost.speech.units import PhoneticEncoder, UnitConfig, UnitTokenizer

    cfg = UnitConfig(d_model=16, n_layers=2, n_heads=2, dropout=0.1)
    torch.manual_seed(0)
    net = PhoneticEncoder(cfg.feature.dim, 3, 16, 2, 2, cfg.ff_mult, 0.1, cfg.stride, cfg.attn_window)
    return UnitTokenizer(cfg, ["sil", "a", "b"], {f"encoder.{k}": v for k, v in net.state_dict().items()})


def wav(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1


# ------------------------------------------------------------------------------ splicing

def test_splice_realigns_by_hand():
    # row 0: <bos> t <boa> u u u <eoa> t | answer a b <eos>; its clip has 2 frames.
    # row 1: <bos> <boa> u <eoa> | answer c <eos>; its clip has 4 frames (longer than its unit span).
    a0, a1 = torch.arange(2 * C).view(2, C).float() + 1, -torch.arange(4 * C).view(4, C).float() - 1
    ex0 = {"input_ids": [1, 11, BOA, 100, 101, 102, EOA, 12, 20, 21, 2],
           "labels": [-100] * 8 + [20, 21, 2], "audio": [a0], "task": "asr"}
    ex1 = {"input_ids": [1, BOA, 103, EOA, 30, 2], "labels": [-100] * 4 + [30, 2], "audio": [a1],
           "task": "speech_instruct"}
    b = collate_continuous([ex0, ex1], boa=BOA, eoa=EOA, pad_id=PAD)
    # Spliced lengths: row 0 = 11 - 5 + 2 = 8, row 1 = 6 - 3 + 4 = 7; right padding to 8.
    assert b["input_ids"].tolist() == [[1, 11, BOA, BOA, 12, 20, 21, 2],
                                       [1, BOA, BOA, BOA, BOA, 30, 2, PAD]]
    assert b["attention_mask"].tolist() == [[True] * 8, [True] * 7 + [False]]
    assert b["labels"].tolist() == [[-100, -100, -100, -100, -100, 20, 21, 2],
                                    [-100, -100, -100, -100, -100, 30, 2, -100]]
    assert b["audio_mask"].tolist() == [[False, False, True, True, False, False, False, False],
                                        [False, True, True, True, True, False, False, False]]
    assert b["task_ids"].tolist() == [1, 4]
    assert torch.equal(b["audio"][0, 2:4], a0) and torch.equal(b["audio"][1, 1:5], a1)
    assert b["audio"][~b["audio_mask"]].abs().sum() == 0
    # Positions continue through the frames; padding does not advance them.
    pos = MAMoELM._default_positions(b["attention_mask"], None, None, 0)
    assert pos.tolist() == [list(range(8)), list(range(7)) + [6]]

    # Marks the MoE layers actually receive: AUDIO on the frames, the ids' own marks elsewhere.
    model = micro_model()
    seen = []
    moe = next(blk.ffn for blk in model.blocks if blk.is_moe)
    hook = moe.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    out = model(b["input_ids"], attention_mask_BT=b["attention_mask"], labels_BT=b["labels"],
                audio_BTC=b["audio"], audio_mask_BT=b["audio_mask"])
    hook.remove()
    S, T_, A = SPECIAL, TEXT, AUDIO
    assert seen[0].tolist() == [[S, T_, A, A, T_, T_, T_, S], [S, A, A, A, A, T_, S, S]]
    # The loss scores exactly the response: 3 + 2 targets, the same as the unspliced rows.
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(),
                                           ignore_index=-100)
    assert torch.allclose(out.lm_loss, ce)


def test_output_spans_stay_discrete_and_downsampling():
    # TTS: the supervised <boa> UNITS <eoa> of the answer is kept; no clip is needed.
    ids, labels, is_frame = splice([1, 11, 5, BOA, 100, EOA, 2], [-100, -100, -100, BOA, 100, EOA, 2], [], BOA, EOA)
    assert ids == [1, 11, 5, BOA, 100, EOA, 2] and not any(is_frame)
    # Downsampling by 2: 5 frames -> 3 positions of width 2C, the tail zero-padded.
    x = torch.arange(5 * C).view(5, C).float()
    s = stack_frames(x, 2)
    assert s.shape == (3, 2 * C) and torch.equal(s[0], torch.cat([x[0], x[1]])) and s[2, C:].abs().sum() == 0
    b = collate_continuous([{"input_ids": [1, BOA, 100, EOA], "audio": [x]}], boa=BOA, eoa=EOA, pad_id=PAD,
                           downsample=2)
    assert b["audio"].shape == (1, 4, 2 * C) and b["audio_mask"].tolist() == [[False, True, True, True]]


def test_clear_errors():
    with pytest.raises(ContinuousInputError, match="never closed"):
        splice([1, BOA, 100], [-100] * 3, [2], BOA, EOA)
    with pytest.raises(ContinuousInputError, match="closes no span"):
        splice([1, 100, EOA], [-100] * 3, [], BOA, EOA)
    with pytest.raises(ContinuousInputError, match="still open"):
        splice([1, BOA, BOA, EOA], [-100] * 4, [1], BOA, EOA)
    with pytest.raises(ContinuousInputError, match="1 input audio span.*2 audio clip"):
        splice([1, BOA, 100, EOA], [-100] * 4, [2, 3], BOA, EOA)
    with pytest.raises(ContinuousInputError, match="0 input audio span.*1 audio clip"):
        splice([1, 11], [-100] * 2, [2], BOA, EOA)
    with pytest.raises(ContinuousInputError, match="8000 Hz.*expects 16000"):
        SpeechEncoder(tiny_units())([wav(0.2, 0)], sample_rate=8000)
    with pytest.raises(ContinuousInputError, match="7 wide, the projector expects 6"):
        Projector(C, 32)(torch.zeros(2, 7))
    with pytest.raises(ContinuousInputError, match="different widths"):
        collate_continuous([{"input_ids": [BOA, EOA], "audio": [torch.zeros(2, C)]},
                            {"input_ids": [BOA, EOA], "audio": [torch.zeros(2, C + 1)]}], boa=BOA, eoa=EOA, pad_id=0)
    with pytest.raises(ValueError, match="no projector"):
        plain = MAMoELM(preset("micro"))
        plain(torch.tensor([[1, 2]]), audio_BTC=torch.zeros(1, 2, C), audio_mask_BT=torch.tensor([[False, True]]))


# ------------------------------------------------------------------------------ encoder and gradients

def test_encoder_frames_batch_equals_single_and_stays_frozen():
    units = tiny_units()
    enc = SpeechEncoder(units)
    # 26 and 6 frames: padding rows whose attention window (8) holds only padding, the case that
    # PyTorch's eval fast path turned into NaN for the short clip (units._mha_fastpath).
    clips = [wav(1.0, 1), wav(0.2, 2)]
    together = enc(clips)
    assert [s.shape for s in together] == [(26, 16), (6, 16)]        # ceil((samples // 160 + 1) / 4)
    for c, s in zip(clips, together):
        assert torch.allclose(enc([c])[0], s, atol=1e-5)              # padding never leaks into a clip
    enc.train()                                                       # a frozen encoder ignores train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert torch.equal(enc(clips)[0], together[0])                    # no dropout: deterministic
    assert not together[0].requires_grad and not any(p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("trainable", [False, True])
def test_projector_gets_gradient_encoder_only_when_trainable(trainable):
    units = tiny_units()
    enc = SpeechEncoder(units, trainable=trainable)
    model = micro_model(audio_feature_dim=enc.dim, audio_projector="mlp")
    model.train()
    enc.train()
    states = enc([wav(0.3, 3)])
    b = collate_continuous([{"input_ids": [1, BOA, 100, EOA, 20, 2], "labels": [-100] * 4 + [20, 2],
                             "audio": states}], boa=BOA, eoa=EOA, pad_id=PAD)
    model(b["input_ids"], attention_mask_BT=b["attention_mask"], labels_BT=b["labels"], audio_BTC=b["audio"],
          audio_mask_BT=b["audio_mask"]).loss.backward()
    for p in model.audio_projector.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    grads = [p.grad for p in enc.parameters()]
    if trainable:
        assert enc.training and all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    else:
        assert not enc.training and all(g is None for g in grads)
    assert model.num_params() == model.cfg.num_params()               # the config counts the projector


# ------------------------------------------------------------------------------ generation

def test_generation_with_audio_matches_full_forward_and_routes_new_tokens_by_id():
    model = micro_model()
    model.eval()
    g = torch.Generator().manual_seed(0)
    prompts = [{"input_ids": [1, 11, BOA, 100, EOA, 7], "audio": [torch.randn(3, C, generator=g)]},
               {"input_ids": [1, BOA, 100, 101, EOA, 12, 13, 7], "audio": [torch.randn(5, C, generator=g)]}]
    b = collate_continuous(prompts, boa=BOA, eoa=EOA, pad_id=PAD, padding_side="left")
    T, N = b["input_ids"].shape[1], 6
    seen = []
    moe = next(blk.ffn for blk in model.blocks if blk.is_moe)
    hook = moe.register_forward_pre_hook(lambda m, args: seen.append(args[1].clone()))
    out = generate(model, b["input_ids"], b["attention_mask"], max_new_tokens=N, audio_BTC=b["audio"],
                   audio_mask_BT=b["audio_mask"])
    hook.remove()
    # One full forward over prompt + generated tokens predicts every generated token (greedy).
    pad = lambda x, v: torch.cat([x, torch.full((2, N, *x.shape[2:]), v, dtype=x.dtype)], dim=1)
    full = model(out, attention_mask_BT=pad(b["attention_mask"], True), audio_BTC=pad(b["audio"], 0.0),
                 audio_mask_BT=pad(b["audio_mask"], False)).logits
    assert torch.equal(full[:, T - 1:-1].argmax(-1), out[:, T:])
    # The decode steps route each new token by its own id.
    for step, marks in enumerate(seen[1:]):
        assert torch.equal(marks[:, 0], model.token_modality[out[:, T + step]])


# ------------------------------------------------------------------------------ the trainer

def test_trainer_consumes_continuous_source(tmp_path):
    from minimost.train import run_training

    g = torch.Generator().manual_seed(0)
    features = {f"s{i}": torch.randn(3 + i, C, generator=g).half() for i in range(6)}
    asr = [{"input_ids": [1, 11] + [BOA] * (3 + i) + [7, 20 + i, 2], "labels": [-100] * (5 + i) + [7, 20 + i, 2],
            "clips": [f"s{i}"]} for i in range(6)]
    text = [{"input_ids": [1, 30 + i, 31 + i, 2], "labels": [-100, 30 + i, 31 + i, 2]} for i in range(6)]
    source = ContinuousSource({"asr": asr, "text_lm": text}, features, {"asr": 0.5, "text_lm": 0.5}, batch_size=4,
                              max_len=32, pad_id=PAD, placeholder_id=BOA, packing=True, bucket_batches=2)
    batch = source.next_batch()
    for b in range(4):   # every placeholder of a row holds its clips' frames, in order
        assert int(batch["audio_mask"][b].sum()) == int((batch["audio"][b].abs().sum(-1) > 0).sum())
    source.load_state_dict(source.state_dict())

    cfg = dataclasses.replace(preset("micro"), audio_feature_dim=C, dispatch="loop")
    train = TrainConfig(stage="posttrain", steps=2, batch_size=4, seq_len=32, warmup_steps=0, log_every=1,
                        ckpt_every=2, out_dir=str(tmp_path), mixture={"asr": 0.5, "text_lm": 0.5},
                        audio_input="continuous")
    torch.manual_seed(train.seed)
    before = MAMoELM(cfg).audio_projector.fc.weight.clone()   # run_training builds the same init
    record = run_training(cfg, train, source=source, progress=False)
    from minimost.checkpoint import WEIGHTS, latest_checkpoint, load_weights
    weights = load_weights(latest_checkpoint(tmp_path / record["run_dir"].split("/")[-1] / "checkpoints") / WEIGHTS)
    assert not torch.equal(weights["audio_projector.fc.weight"], before)   # the projector trained
    assert np.isfinite(record["loss"])


def test_config_fields():
    cfg = ModelConfig(audio_feature_dim=768, d_model=2048)
    assert cfg.num_params() - ModelConfig(d_model=2048).num_params() == 768 * 2048 + 2048   # MoST's Linear
    assert TrainConfig().audio_input == "units"


# ------------------------------------------------------------------------------ evaluation on the continuous path

WORDS = "the red fox sees a big dog and the cat is green"


@pytest.fixture(scope="module")
def eval_tok():
    from minimost.tokenizer import Tokenizer
    return Tokenizer.train([WORDS] * 4, vocab_size=120).with_units(20)


def eval_model(tok, **changes) -> MAMoELM:
    torch.manual_seed(0)
    model = MAMoELM(dataclasses.replace(preset("micro"), **({"audio_feature_dim": C} | changes)))
    model.set_modality_map(tok.modality_map(model.cfg.vocab_size))
    return model.eval()


def test_continuous_asr_decode_alone_equals_left_padded_batch(eval_tok):
    import minimost.evaluate as ev
    from minimost.continuous import spliced_prompt

    tok, model = eval_tok, eval_model(eval_tok)
    g = torch.Generator().manual_seed(1)
    clips = [torch.randn(n, C, generator=g) for n in (7, 3, 12)]   # different lengths: left padding differs
    prompts = [ev._speech_prompt(model, tok, {"task": "asr", "id": "a", "prompt_speech": "x", "answer_text": "x",
                                              "instruction": ""}, c) for c in clips]
    for p, c in zip(prompts, clips):   # the span became exactly the clip's frames; no unit token is left
        assert sum(p["audio_mask"]) == len(c) and not any(i >= tok.unit_start for i in p["input_ids"])
    alone = [ev.decode_batched(model, [p], 6, [], tok.pad_id, batch_size=1)[0] for p in prompts]
    together = ev.decode_batched(model, prompts, 6, [], tok.pad_id, batch_size=3)
    assert together == alone and all(len(a) == 6 for a in alone)
    # The same through generate_from_audio (collate_continuous) and through the front door.
    from minimost.continuous import generate_from_audio
    ids = spliced_prompt(tok, [1, tok.special("boa"), tok.special("eoa")], [clips[0]])["input_ids"]
    assert len(ids) == 1 + len(clips[0])
    cfg = ev.EvalConfig(max_new_text=6, batch_size=2)
    texts = ev.transcribe_units(model, tok, clips, cfg)
    assert texts == [ev.text_of(tok, o) for o in ev.decode_batched(model, prompts, 6, [tok.special("eos")],
                                                                   tok.pad_id, 1)]
    row = {"input_ids": [1, tok.special("boa"), tok.special("eoa")], "audio": [clips[1]]}
    via_collate = generate_from_audio(model, tok, [row], max_new_tokens=3)[0]
    assert via_collate == ev.decode_batched(model, [spliced_prompt(tok, row["input_ids"], [clips[1]])], 3, [],
                                            tok.pad_id)[0]
    # Text and spoken questions mixed in one batch: the text rows get no frames.
    mixed = ev.answer(model, tok, ["the red fox", clips[0]], cfg=ev.EvalConfig(max_new_text=3))
    assert mixed == [ev.answer(model, tok, ["the red fox"], cfg=ev.EvalConfig(max_new_text=3))[0],
                     ev.answer(model, tok, [clips[0]], cfg=ev.EvalConfig(max_new_text=3))[0]]
    # Frames matter: other states give another continuation (the projector is in the path).
    other = ev.decode_batched(model, [ev._speech_prompt(model, tok, {"task": "asr", "id": "a", "prompt_speech": "x",
                                                                     "answer_text": "x", "instruction": ""},
                                                        clips[0] * 5)], 6, [], tok.pad_id)[0]
    assert other != alone[0]


class FakeData:
    def __init__(self, sets):
        self.sets = sets

    def dataset(self, name):
        return self.sets[name]


def test_evaluate_model_runs_asr_and_spoken_qa_on_the_continuous_path(eval_tok, monkeypatch):
    import minimost.evaluate as ev

    tok, model = eval_tok, eval_model(eval_tok)
    rows = {"valid": [{"task": "asr", "id": "asr-v0", "prompt_speech": "v0", "answer_text": "the red fox"}],
            "test": [{"task": "asr", "id": "asr-t0", "prompt_speech": "t0", "answer_text": "the cat"},
                     {"task": "speech_instruct", "id": "s2t-spoken_qa-0", "prompt_speech": "q0",
                      "answer_text": "green", "instruction": "", "answer_speech": ""}]}
    plan = {"v0": {"voice": "A"}, "t0": {"voice": "B"}, "q0": {"voice": "B", "text": "the cat is?"}}
    g = torch.Generator().manual_seed(2)
    features = {k: torch.randn(4 + i, C, generator=g).half() for i, k in enumerate(plan)}
    inp = ev.EvalInputs(FakeData({"tasks": rows}), None, {k: [1, 2] for k in plan}, plan, features=features)
    calls = []
    real = ev.generate

    def spy(*args, **kwargs):
        calls.append(kwargs.get("audio_BTC") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "generate", spy)
    cfg = ev.EvalConfig(max_new_text=4)
    out = ev.evaluate_model(model, tok, inp.data, tasks=("asr", "sqa"), cfg=cfg, inputs=inp)
    assert out["asr"]["audio_input"] == out["sqa"]["audio_input"] == "continuous"
    assert set(out["asr"]) >= {"seen_voices", "heldout_voices"} and out["sqa"]["questions"] == 1
    assert calls == [True, True, True, False]      # ASR valid, ASR test, S→T with frames; T→T as text
    # The same model asked for units: the unit prompts, no frames.
    calls.clear()
    units = ev.evaluate_model(model, tok, inp.data, tasks=("asr",), cfg=ev.EvalConfig(max_new_text=4,
                              audio_input="units"), inputs=inp)
    assert units["asr"]["audio_input"] == "units" and calls == [False, False]
    # Clear errors: continuous without a projector, or without the states.
    with pytest.raises(ev.EvalError, match="needs a model with a projector"):
        ev.eval_asr(eval_model(tok, audio_feature_dim=0), tok, inp, ev.EvalConfig(audio_input="continuous"))
    with pytest.raises(ev.EvalError, match="encoder states"):
        ev.eval_asr(model, tok, dataclasses.replace(inp, features=None), cfg)
    assert ev.speech_input_path(eval_model(tok, audio_feature_dim=0), ev.EvalConfig()) == "units"


# ------------------------------------------------------------------------------ the comparison arm (ablate)

@pytest.fixture(scope="module")
def continuous_data(tmp_path_factory):
    """The micro mini-world with made-up units and made-up encoder states, cached the way a real build is."""
    import json
    import random

    from minimost.data.build import build_text_data, render_speech_tasks
    data = build_text_data("micro", tmp_path_factory.mktemp("cdata"))
    rng, g = random.Random(0), torch.Generator().manual_seed(0)
    units = {r["id"]: [rng.randrange(32) for _ in range(rng.randint(3, 12))]
             for r in data.dataset("speech_plan") if r["split"] != "test"}
    render_speech_tasks(data, units, n_units=32, unit_artefact="fake")
    (data.path / "speech_units-fake.json").write_text(json.dumps(units))
    feats = {k: torch.randn(len(u) + 2, C, generator=g).half() for k, u in units.items()}
    return data, feats


def test_continuous_arm_trains_beside_mamoe_with_the_same_stage0(continuous_data, tmp_path):
    from safetensors.torch import save_file

    from minimost.ablate import ARMS, arm_param_table, run_ablation, task_loss_metrics
    from minimost.checkpoint import WEIGHTS, latest_checkpoint, load_weights
    from minimost.config import ConfigError

    data, feats = continuous_data
    grid = dict(overrides=["train.log_every=2", "train.eval_every=100", "train.ckpt_every=100", "train.batch_size=4"],
                steps={"stage0": 2, "stage1": 2}, progress=False,
                metrics_fn=lambda m, t, d: task_loss_metrics(d, t, m, tasks=("text_lm", "asr"), max_batches=2))
    path = data.path / "speech_features-fake.safetensors"
    path.unlink(missing_ok=True)
    with pytest.raises(ContinuousInputError, match="no speech features"):   # before anything trains
        run_ablation("micro", ["mamoe", "continuous"], [0], data=data, out_dir=tmp_path / "x", **grid)
    assert not (tmp_path / "x").exists()
    save_file(feats, str(path))

    result = run_ablation("micro", ["mamoe", "continuous"], [0, 1], data=data, out_dir=tmp_path / "cmp", **grid)
    out = tmp_path / "cmp"
    D = preset("micro").d_model
    assert result["feature_dim"] == C
    assert result["params"]["continuous"]["params"] - result["params"]["mamoe"]["params"] == C * D + D
    assert result["params"] == arm_param_table(preset("micro"), [ARMS["mamoe"], ARMS["continuous"]], C)
    assert sorted(p.parent.name for p in out.glob("seed*/stage0_moe-*")) == ["seed0", "seed1"]   # shared
    for arm in ("mamoe", "continuous"):
        s = result["summary"][arm]["asr_loss"]
        assert s["n"] == 2 and np.isfinite(s["mean"]) and s["std"] >= 0
    cell = next((out / "cells").glob("continuous-seed0-*"))
    import json
    saved = json.loads((latest_checkpoint(cell / "stage1" / "checkpoints") / "config.json").read_text())
    assert saved["train"]["audio_input"] == "continuous" and saved["model"]["audio_feature_dim"] == C
    w = load_weights(latest_checkpoint(cell / "stage1" / "checkpoints") / WEIGHTS)
    w0 = load_weights(latest_checkpoint(cell / "transformed" / "checkpoints") / WEIGHTS)
    assert not torch.equal(w["audio_projector.fc.weight"], w0["audio_projector.fc.weight"])   # it trained
    mamoe_cell = next((out / "cells").glob("mamoe-seed0-*"))
    assert "audio_projector.fc.weight" not in load_weights(
        latest_checkpoint(mamoe_cell / "stage1" / "checkpoints") / WEIGHTS)
    md = (out / "ablation.md").read_text()
    assert "## Discrete vs continuous speech input" in md and "| continuous |" in md
    assert result["verdicts_continuous"] and result["verdicts_continuous"][0].startswith("**asr**")
    with pytest.raises(ConfigError, match="needs their width"):
        from minimost.ablate import arm_model_config
        arm_model_config(preset("micro"), ARMS["continuous"])
