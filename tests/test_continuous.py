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

    cfg = UnitConfig(d_model=16, n_layers=1, n_heads=2, dropout=0.1)
    torch.manual_seed(0)
    net = PhoneticEncoder(cfg.feature.dim, 3, 16, 1, 2, cfg.ff_mult, 0.1, cfg.stride, cfg.attn_window)
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
    clips = [wav(0.5, 1), wav(0.3, 2)]
    together = enc(clips)
    assert [s.shape for s in together] == [(13, 16), (8, 16)]        # ceil((samples // 160 + 1) / 4)
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
