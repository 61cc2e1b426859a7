"""Config validation, preset parameter arithmetic, JSON round trip and --set overrides."""

import json

import pytest

from minimost.config import (
    DEFAULT_MIXTURES,
    PRESETS,
    ConfigError,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    preset,
    save_json,
    train_preset,
)

# ----------------------------------------------------------------------------- presets

def test_most_preset_matches_deepseek_v2_lite():
    """MoST's backbone: 15.7 B total (DeepSeek's published figure), 2.4-2.7 B active (most-reference §2.1)."""
    cfg = preset("most")
    total, active = cfg.num_params(), cfg.num_active_params()
    assert abs(total - 15.7e9) / 15.7e9 < 0.01, total
    assert 2.4e9 <= active <= 2.7e9, active
    # the exact arithmetic of most-reference.md §2.1
    assert cfg._attention_params() == 2048 * 16 * 192 + 2048 * 576 + 512 + 512 * 16 * 256 + 16 * 128 * 2048
    assert cfg.expert_groups() == (tuple(range(32)), tuple(range(32, 64)))
    assert cfg.first_k_dense == 1 and cfg.dense_hidden == 10944 and cfg.top_k == 6


def test_preset_ladder_grows_and_has_expected_shape():
    sizes = [preset(name).num_params() for name in ("micro", "tiny", "small", "most")]
    assert sizes == sorted(sizes)
    assert preset("micro").vocab_size <= 512
    tiny = preset("tiny")
    assert tiny.n_layers == 4 and tiny.expert_groups() == (tuple(range(8)), tuple(range(8, 16)))
    assert tiny.top_k == 2 and tiny.n_shared_experts == 1
    assert 2e6 < tiny.num_params() < 10e6
    assert 1e8 <= preset("small").num_params() <= 1e9


def test_active_params_scale_with_top_k_only_in_routed_experts():
    cfg = preset("tiny")
    routed = cfg._param_breakdown()["routed_experts"]
    assert cfg.num_params() - cfg.num_active_params() == routed - routed * cfg.top_k // cfg.n_experts


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="micro, tiny, small, most"):
        preset("huge")


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("changes, message", [
    (dict(top_k=5), "each modality group needs at least top_k"),
    (dict(top_k=9), "larger than n_experts"),
    (dict(text_experts=(0, 1, 2), audio_experts=(2, 3, 4, 5, 6, 7)), "overlap"),
    (dict(text_experts=(0, 1, 2), audio_experts=(4, 5, 6, 7)), "belong to neither group"),
    (dict(text_experts=(0, 1, 2, 3), audio_experts=(4, 5, 6, 7, 8)), "outside"),
    (dict(d_model=60, n_heads=4), "multiple of 8"),
    (dict(expert_hidden=20), "multiple of 8"),
    (dict(d_model=72, n_heads=5), "not divisible"),
    (dict(n_heads=4, n_kv_heads=3), "multiple of n_kv_heads"),
    (dict(mask_mode="sideways"), "after_softmax"),
    (dict(balance_loss="local"), "sequence"),
    (dict(special_token_route="none"), "expected one of 'text', 'audio', 'all'"),
    (dict(first_k_dense=3), "between 0 and n_layers"),
    (dict(n_shared_experts=-1), ">= 0"),
    (dict(modality_routing=False, text_experts=(0, 1, 2, 3)), "modality_routing=False"),
    (dict(vocab_size=0), "positive"),
    (dict(attention="mla", qk_rope_head_dim=63), "even"),
])
def test_model_config_rejects_bad_values_with_a_clear_message(changes, message):
    base = preset("micro").to_dict()
    with pytest.raises(ConfigError, match=message):
        ModelConfig.from_dict(base | changes)


def test_explicit_disjoint_groups_are_accepted():
    cfg = ModelConfig.from_dict(preset("micro").to_dict() | dict(text_experts=[0, 2, 4, 6], audio_experts=[1, 3, 5, 7]))
    assert cfg.expert_groups() == ((0, 2, 4, 6), (1, 3, 5, 7))


def test_vanilla_routing_does_not_need_groups_of_size_top_k():
    cfg = ModelConfig.from_dict(preset("micro").to_dict() | dict(modality_routing=False, top_k=6))
    assert cfg.top_k == 6


@pytest.mark.parametrize("changes, message", [
    (dict(mixture={"asr": 0.5, "tts": 0.4}), "sum to 1"),
    (dict(mixture={"asr": 0.5, "speech": 0.5}), "unknown task"),
    (dict(stage="finetune"), "pretrain"),
    (dict(warmup_steps=500, steps=100), "warmup_steps"),
    (dict(beta2=1.0), "beta2"),
    (dict(lr=0.0), "positive"),
])
def test_train_config_rejects_bad_values(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict(TrainConfig().to_dict() | changes)


def test_stage_default_mixtures_are_most_recipe():
    assert train_preset("tiny", "posttrain").mixture == {"asr": 0.4, "tts": 0.4, "text_lm": 0.2}
    assert train_preset("tiny", "instruct").mixture == DEFAULT_MIXTURES["instruct"]
    assert sum(train_preset("tiny", "instruct").mixture.values()) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- JSON round trip

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_configs_round_trip_through_json_exactly(name, tmp_path):
    cfg = preset(name)
    cfg2 = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert cfg2 == cfg
    train = train_preset(name, "posttrain")
    path = tmp_path / "train.json"
    save_json(train, path)
    assert TrainConfig.from_dict(json.loads(path.read_text())) == train


def test_round_trip_keeps_explicit_groups():
    cfg = ModelConfig.from_dict(preset("micro").to_dict() | dict(text_experts=(0, 2, 4, 6), audio_experts=(1, 3, 5, 7)))
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown ModelConfig key"):
        ModelConfig.from_dict(preset("micro").to_dict() | {"n_expert": 4})


# ----------------------------------------------------------------------------- --set overrides

def test_overrides_are_typed_and_prefixed():
    m, t = apply_overrides(preset("micro"), train_preset("micro"), [
        "d_model=128", "train.lr=1e-4", "renormalize=true", "n_kv_heads=2", "mixture=text_lm=1.0",
        "model.mask_mode=before_softmax", "text_experts=0,1,2,3", "audio_experts=[4,5,6,7]", "head_dim=none",
    ])
    assert m.d_model == 128 and m.renormalize is True and m.n_kv_heads == 2 and m.head_dim is None
    assert m.mask_mode == "before_softmax" and m.text_experts == (0, 1, 2, 3) and m.audio_experts == (4, 5, 6, 7)
    assert t.lr == 1e-4 and t.mixture == {"text_lm": 1.0}


def test_stage_prefixed_overrides_apply_to_that_stage_only():
    items = ["posttrain.mixture=asr=0.5,speech_lm=0.5", "posttrain.train.lr=1e-4", "instruct.lr=2e-4", "lr=5e-4"]
    _, pre = apply_overrides(preset("micro"), train_preset("micro", "pretrain"), items)
    _, post = apply_overrides(preset("micro"), train_preset("micro", "posttrain"), items)
    _, inst = apply_overrides(preset("micro"), train_preset("micro", "instruct"), items)
    assert pre.mixture == DEFAULT_MIXTURES["pretrain"] and pre.lr == 5e-4
    assert post.mixture == {"asr": 0.5, "speech_lm": 0.5} and post.lr == 5e-4    # later items win
    assert inst.mixture == DEFAULT_MIXTURES["instruct"] and inst.lr == 5e-4
    _, post = apply_overrides(preset("micro"), train_preset("micro", "posttrain"), items[:3])
    _, inst = apply_overrides(preset("micro"), train_preset("micro", "instruct"), items[:3])
    assert post.lr == 1e-4 and inst.lr == 2e-4
    with pytest.raises(ConfigError, match="unknown config key 'mixtur'"):
        apply_overrides(preset("micro"), train_preset("micro", "posttrain"), ["posttrain.mixtur=asr=1"])


def test_changing_stage_gives_that_stages_mixture():
    _, t = apply_overrides(preset("micro"), train_preset("micro"), ["stage=posttrain"])
    assert t.mixture == DEFAULT_MIXTURES["posttrain"]


@pytest.mark.parametrize("item, message", [
    ("d_modl=3", "Did you mean d_model"),
    ("d_model=abc", "expected an integer"),
    ("renormalize=maybe", "expected a boolean"),
    ("mask_mode=sideways", "expected one of"),
    ("lr", "key=value"),
    ("optim.lr=1", "prefix"),
    ("d_model=60", "multiple of 8"),  # validation runs after overriding
])
def test_bad_overrides_raise_clear_errors(item, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(preset("micro"), train_preset("micro"), [item])
