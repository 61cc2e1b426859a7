"""Evaluation metrics on tiny cases with known answers (minimost.evaluate)."""

import json
import math

import pytest
import torch

import minimost.evaluate as ev
from minimost.config import preset
from minimost.generate import generate
from minimost.model import MAMoELM
from minimost.tokenizer import Tokenizer

torch.set_num_threads(1)

WORDS = ["the", "red", "fox", "sees", "a", "big", "dog", "and", "the", "cat", "is", "green"]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([" ".join(WORDS)] * 4, vocab_size=120).with_units(20)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    m = MAMoELM(preset("micro"))
    m.set_modality_map(tok.modality_map(m.cfg.vocab_size))
    return m.eval()


def zero_model(tok) -> MAMoELM:
    """Every logit 0: a uniform next-token distribution over the V ids."""
    m = MAMoELM(preset("micro"))
    m.set_modality_map(tok.modality_map(m.cfg.vocab_size))
    with torch.no_grad():
        m.lm_head.weight.zero_()
    return m.eval()


def test_pair_accuracy_counts_ties_as_half():
    assert ev.pair_accuracy([1.0, 2.0, 3.0, 0.0], [0.0, 2.0, 4.0, -1.0]) == pytest.approx(2.5 / 4)
    with pytest.raises(ev.EvalError, match="equal"):
        ev.pair_accuracy([1.0], [])


def test_contains_answer_matches_whole_normalised_words():
    assert ev.contains_answer("It is a Yellow sheep!", "a yellow sheep")
    assert not ev.contains_answer("a yellowish sheep", "yellow")
    assert not ev.contains_answer("anything", "")


def test_unit_edit_rate_is_corpus_level():
    # one substitution in 4 units, one deletion in 2: 2 errors / 6 reference units
    assert ev.unit_edit_rate([[1, 2, 3, 4], [5, 6]], [[1, 2, 9, 4], [5]]) == pytest.approx(2 / 6)


def test_unit_loglik_of_a_uniform_model_is_length_times_log_v(tok):
    m = zero_model(tok)
    V = m.cfg.vocab_size
    sums, means = ev.unit_loglik(m, tok, [[1, 2, 3], [4, 5, 6, 7, 8]])
    assert sums == pytest.approx([-3 * math.log(V), -5 * math.log(V)], rel=1e-5)
    assert means == pytest.approx([-math.log(V)] * 2, rel=1e-5)


def test_unit_loglik_matches_a_single_sequence_forward(tok, model):
    units = [[3, 1, 4, 1, 5, 9, 2, 6], [5, 3]]
    sums, means = ev.unit_loglik(model, tok, units, batch_size=2)
    ids = torch.tensor([[tok.special("bos"), tok.special("boa")] + tok.encode_units(units[0])])
    with torch.no_grad():
        logp = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    assert sums[0] == pytest.approx(float(logp[1:].sum()), abs=1e-4)      # units only, not <boa>
    assert means[0] == pytest.approx(float(logp[1:].mean()), abs=1e-5)


def test_text_loglik_scores_the_text_after_bos(tok, model):
    texts = ["the red fox runs.", "a dog"]
    sums, means = ev.text_loglik(model, tok, texts, batch_size=2)
    ids = torch.tensor([[tok.special("bos")] + tok.encode_text(texts[0])])
    with torch.no_grad():
        logp = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    assert sums[0] == pytest.approx(float(logp.sum()), abs=1e-4)          # every text token, no <eos>
    assert means[0] == pytest.approx(float(logp.mean()), abs=1e-5)


def test_identical_stimuli_tie_exactly_whatever_their_batch(tok, model):
    # The two copies of [7, 7, 2] fall into batches of different padding; they must still score the same.
    units = [[7, 7, 2], [1] * 30, [2, 2], [7, 7, 2], [3] * 50]
    sums, means = ev.unit_loglik(model, tok, units, batch_size=2)
    assert sums[0] == sums[3] and means[0] == means[3]
    assert ev.pair_accuracy([sums[0]], [sums[3]]) == 0.5


def test_decode_batched_equals_one_prompt_at_a_time(tok, model):
    prompts = [[tok.special("bos")] + tok.encode_text(t) for t in ("the red fox", "a big dog and the cat", "the")]
    eos = tok.special("eos")
    batched = ev.decode_batched(model, prompts, [5, 7, 3], [eos], tok.pad_id, batch_size=2)
    for p, limit, got in zip(prompts, [5, 7, 3], batched):
        alone = generate(model, torch.tensor([p]), max_new_tokens=limit, stop_tokens=(eos,))[0, len(p):].tolist()
        cut = alone.index(eos) if eos in alone else len(alone)
        assert got == alone[:cut]
        assert len(got) <= limit


class FakeData:
    """Just enough of TextData for the families: named datasets as lists of dicts."""

    def __init__(self, sets):
        self.sets = sets

    def dataset(self, name):
        return self.sets[name]


def test_slm_accuracy_of_a_uniform_model_prefers_the_shorter_stimulus(tok):
    # Uniform model: sum log-prob = -n log V, so the shorter member wins; per-unit means all tie (50 %).
    units = {"swuggy-0-word": [1, 2], "swuggy-0-nonword": [1, 2, 3], "swuggy-1-word": [1, 2, 3, 4],
             "swuggy-1-nonword": [5, 6], "sblimp-0-good": [1], "sblimp-0-bad": [2, 3],
             "storycloze-00000-good": [1, 2], "storycloze-00000-bad": [1, 2],
             "storycloze-00000-foreign": [1, 2, 3]}
    data = FakeData({"eval/swuggy": [{"id": "swuggy-0"}, {"id": "swuggy-1"}],
                     "eval/sblimp": [{"id": "sblimp-0", "phenomenon": "agreement"}]})
    inp = ev.EvalInputs(data, None, units, {k: {} for k in units})
    out = ev.eval_slm(zero_model(tok), tok, inp, ev.EvalConfig())
    assert out["swuggy"]["acc_sum"] == 0.5 and out["swuggy"]["acc_mean"] == 0.5
    assert out["sblimp"]["acc_sum"] == 1.0 and out["sblimp"]["per_phenomenon"] == {"agreement": 1.0}
    assert out["sstorycloze"]["acc_sum"] == 0.5          # equal lengths: a tie
    assert out["tstorycloze"]["acc_sum"] == 1.0
    assert "text_acc_sum" not in out["swuggy"]           # no stimulus texts in this plan: no topline


def test_slm_text_topline_reads_the_same_pairs_as_text(tok):
    # Uniform model on text too: the member with fewer text tokens wins, whatever its units.
    units = {"swuggy-0-word": [1, 2, 3], "swuggy-0-nonword": [1, 2]}
    plan = {"swuggy-0-word": {"text": "a"}, "swuggy-0-nonword": {"text": "the big red fox and the cat"}}
    data = FakeData({"eval/swuggy": [{"id": "swuggy-0"}], "eval/sblimp": []})
    out = ev.eval_slm(zero_model(tok), tok, ev.EvalInputs(data, None, units, plan), ev.EvalConfig())
    assert out["swuggy"]["acc_sum"] == 0.0                # units: the nonword is shorter
    assert out["swuggy"]["text_acc_sum"] == 1.0           # text: the word is shorter
    rows = ev.metric_rows({"metrics": {"slm": out}})
    assert "text topline 100.0 %" in rows[0][2]


def test_slm_missing_units_is_a_clear_error(tok):
    data = FakeData({"eval/swuggy": [{"id": "swuggy-0"}], "eval/sblimp": []})
    inp = ev.EvalInputs(data, None, {"swuggy-0-word": [1]}, {"swuggy-0-word": {}})
    with pytest.raises(ev.EvalError, match="no units"):
        ev.eval_slm(zero_model(tok), tok, inp, ev.EvalConfig())


def _asr_inputs():
    rows = {"valid": [{"task": "asr", "id": f"asr-v{i}", "prompt_speech": f"v{i}", "answer_text": t}
                      for i, t in enumerate(["the red fox", "a big dog"])],
            "test": [{"task": "asr", "id": f"asr-t{i}", "prompt_speech": f"t{i}", "answer_text": t}
                     for i, t in enumerate(["the cat is green", "the dog"])]}
    plan = {"v0": {"voice": "A"}, "v1": {"voice": "B"}, "t0": {"voice": "C"}, "t1": {"voice": "C"}}
    units = {k: [1, 2] for k in plan}
    return ev.EvalInputs(FakeData({"tasks": rows}), None, units, plan)


def test_asr_wer_per_split_and_voice(monkeypatch, tok, model):
    hyps = {("the red fox", "a big dog"): ["the red fox", "a dog"],
            ("the cat is green", "the dog"): ["the cat is red", "the dog"]}
    seen = []

    def fake_transcribe(m, t, units_list, cfg):
        seen.append(len(units_list))
        return hyps[tuple(fake_transcribe.refs.pop(0))]

    fake_transcribe.refs = [["the red fox", "a big dog"], ["the cat is green", "the dog"]]
    monkeypatch.setattr(ev, "transcribe_units", fake_transcribe)
    out = ev.eval_asr(model, tok, _asr_inputs(), ev.EvalConfig())
    assert out["seen_voices"]["wer"] == pytest.approx(1 / 6, abs=1e-4)    # "big" deleted
    assert out["seen_voices"]["per_voice"] == {"A": 0.0, "B": pytest.approx(1 / 3, abs=1e-4)}
    assert out["heldout_voices"]["wer"] == pytest.approx(1 / 6, abs=1e-4)  # green -> red
    assert ev.headline({"asr": out})["asr_wer"] == out["heldout_voices"]["wer"]
    assert seen == [2, 2]


def test_spoken_qa_compares_speech_and_text_questions(monkeypatch, tok, model):
    rows = [{"task": "speech_instruct", "id": f"s2t-spoken_qa-{i}", "prompt_speech": f"q{i}", "answer_text": g}
            for i, g in enumerate(["purple", "a nurse", "a farmer", "two"])]
    plan = {f"q{i}": {"text": f"question {i}?"} for i in range(4)}
    inp = ev.EvalInputs(FakeData({"tasks": {"test": rows}}), None, {k: [1] for k in plan}, plan)

    def fake_answer(m, t, questions, spoken_reply=False, cfg=None):
        if isinstance(questions[0], str):       # T→T: all right
            return ["it is purple", "she is a nurse", "a farmer", "two"]
        return ["purple", "a doctor", "a farmer", "three"]   # S→T: 2 of 4

    monkeypatch.setattr(ev, "answer", fake_answer)
    out = ev.eval_sqa(model, tok, inp, ev.EvalConfig())
    assert (out["s2t"], out["t2t"], out["s2t_over_t2t"]) == (0.5, 1.0, 0.5)
    assert "s2s" not in out                     # no kit: S→S needs the vocoder and the judge


def test_front_doors_return_text_and_units(tok, model):
    cfg = ev.EvalConfig(max_new_text=4, max_new_units=6)
    texts = ev.transcribe_units(model, tok, [[1, 2, 3], [4]], cfg)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    units = ev.speak_text(model, tok, ["the red fox"], cfg)
    assert len(units) == 1 and all(0 <= u < tok.n_units for u in units[0]) and len(units[0]) <= 6
    answers = ev.answer(model, tok, ["the red fox", [1, 2]], cfg=cfg)
    assert len(answers) == 2


def test_evaluate_model_refuses_bad_requests(tok, model):
    with pytest.raises(ev.EvalError, match="unknown evaluation task"):
        ev.evaluate_model(model, tok, None, tasks=("asr", "wer"))
    text_only = Tokenizer.train([" ".join(WORDS)] * 4, vocab_size=120)
    with pytest.raises(ev.EvalError, match="text-only"):
        ev.evaluate_model(model, text_only, None, tasks=("asr",))


def test_targets_say_met_or_not():
    assert ev.target_check("tiny", "asr_wer", 0.15).endswith("✓")
    assert ev.target_check("tiny", "swuggy", 0.6).endswith("✗")
    assert ev.target_check("micro", "asr_wer", 0.15) == ""


def test_cli_eval_on_a_missing_run_says_what_to_pass(tmp_path, capsys):
    from minimost.__main__ import main
    assert main(["eval", "--run", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path), "--tasks", "asr,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_readme_results_match_the_published_records():
    """The README's results section is generated from docs/results/<preset>.json, never typed by hand."""
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    records = sorted((root / "docs" / "results").glob("*.json"))
    for path in records:
        block = ev.results_block(json.loads(path.read_text()))
        assert block in readme, (f"README's results table differs from {path.name}; regenerate it with "
                                 "`python -m minimost eval --run runs/<name> --publish`.")
    assert readme.count(ev.README_BEGIN) == 1 and len(records) <= 1   # one results block, one published preset


def test_publish_writes_the_record_and_the_readme_block(tmp_path):
    run = tmp_path / "runs" / "tiny-abc"
    run.mkdir(parents=True)
    (run / "report.json").write_text(json.dumps({"preset": "tiny", "machine": "test box", "overrides": [],
                                                 "timings_s": {"stage 0: x": 10.0, "evaluation": 3.0, "total": 20.0}}))
    result = {"stage": "stage2", "preset": "tiny", "seconds": 3.0,
              "metrics": {"slm": {"swuggy": {"acc_sum": 0.75, "acc_mean": 0.6, "pairs": 4}}},
              "headline": {"swuggy": 0.75}}
    (run / "eval.json").write_text(json.dumps(result))
    (tmp_path / "README.md").write_text(f"# x\n\n{ev.README_BEGIN}\nold\n{ev.README_END}\n\nafter\n")
    ev.publish(run, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and "mini-sWUGGY" in readme and "75.0 %" in readme and "✓" in readme
    assert readme.endswith("after\n")
    assert json.loads((tmp_path / "docs" / "results" / "tiny.json").read_text())["run"] == "tiny-abc"
    overlapped = {**json.loads((tmp_path / "docs" / "results" / "tiny.json").read_text()),
                  "timings_s": {"stage 0: x": 10.0, "speech kit and speech data (second process)": 14.0,
                                "waiting for the speech data after stage 0": 1.5,
                                "waiting for the vocoder and judge after training": 0.2, "total": 20.0}}
    assert "14.0 s building the speech kit and speech data in a second process beside the training, of which " \
           "the training waited 1.5 s for the speech data and 0.2 s for the vocoder and judge" \
           in ev.results_block(overlapped)
    (tmp_path / "README.md").write_text("# no markers\n")
    with pytest.raises(ev.EvalError, match="markers"):
        ev.publish(run, tmp_path)


def _evaluated_run(root, name, headline, preset="tiny", stage="stage2"):
    run = root / name
    run.mkdir(parents=True)
    (run / "eval.json").write_text(json.dumps({"preset": preset, "stage": stage, "headline": headline}))
    return run


def test_summarise_runs_gives_mean_and_sample_std_per_metric(tmp_path, capsys):
    runs = [_evaluated_run(tmp_path, f"tiny-s{i}", {"swuggy": v, "asr_wer": w, "sqa_s2t": None})
            for i, (v, w) in enumerate(((0.6, 0.5), (0.7, 0.4), (0.8, 0.3)))]
    s = ev.summarise_runs(runs)
    assert s["metrics"]["swuggy"]["mean"] == pytest.approx(0.7)
    assert s["metrics"]["swuggy"]["std"] == pytest.approx(0.1)          # n - 1: sqrt(0.02 / 2)
    assert "sqa_s2t" not in s["metrics"]                                 # missing in a run: left out
    table = ev.render_summary(s)
    assert "| mini-sWUGGY | 60.0 % | 70.0 % | 80.0 % | 70.0 % ± 10.0 % | ≥ 70 % ✓ |" in table
    assert "| ASR WER, held-out voices | 50.0 % | 40.0 % | 30.0 % | 40.0 % ± 10.0 % | ≤ 20 % ✗ |" in table
    from minimost.__main__ import main
    assert main(["eval", "--across", *map(str, runs)]) == 0
    assert "70.0 % ± 10.0 %" in capsys.readouterr().out


def test_summarise_runs_refuses_unevaluated_or_mixed_runs(tmp_path):
    a = _evaluated_run(tmp_path, "a", {"swuggy": 0.6})
    b = _evaluated_run(tmp_path, "b", {"swuggy": 0.6}, stage="stage1")
    with pytest.raises(ev.EvalError, match="differ"):
        ev.summarise_runs([a, b])
    (tmp_path / "c").mkdir()
    with pytest.raises(ev.EvalError, match="no eval.json"):
        ev.summarise_runs([a, tmp_path / "c"])
