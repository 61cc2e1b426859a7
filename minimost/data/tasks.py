"""Task formats: one example -> (input_ids, labels), with the loss on the response only.

MoST renders every post-training sample as `prompt = <bos>{instruction}\\n\\n{input}<eos>\\n\\nOutput: `
and `response = <bos>{output}<eos>`, labels -100 on the prompt (most-reference.md §6.1), but its
marker strings never become special tokens. minimost keeps the prompt / response idea and builds
the sequence from real special ids (`minimost.tokenizer.SPECIAL_TOKENS`):

    text_lm          <bos> | TEXT <eos>
    asr              <bos><asr><user> INSTRUCTION <boa> UNITS <eoa> <assistant> | TEXT <eos>
    tts              <bos><tts><user> INSTRUCTION TEXT <assistant> | <boa> UNITS <eoa> <eos>
    text_instruct    <bos><text_reply><user> INSTRUCTION <assistant> | ANSWER <eos>
    speech_instruct  <bos><text_reply><user> <boa> UNITS <eoa> <assistant> | ANSWER <eos>
                     <bos><speech_reply><user> <boa> UNITS <eoa> <assistant> | <boa> UNITS <eoa> <eos>
    speech_lm        <bos><boa> | UNITS <eoa> <eos>

Left of `|` is the prompt (labels -100), right of it the response (labels = ids). The task marker
after <bos> says what to do and in which modality to answer; the instruction text says it in words
as MoST does (ASR: "transcribe the following speech into text."). Labels are aligned with the input
ids (the model shifts, INTERFACES.md). <bos> is never scored, so in packed rows no document learns
to predict the next one's first token.

`speech_lm` is the speech-only language model (GSLM, TWIST, Spirit-LM: next-unit prediction with no
text): MoST's released recipe has none (most-reference.md §6.4 traces a LibriLight one that was never
released), but the spoken-LM benchmarks score exactly `p(units)` after `<bos><boa>`
(`minimost.evaluate`, docs/evaluation.md), which ASR (units unsupervised) and TTS (units given text)
never train. Its prompt is `<bos><boa>` so training and scoring condition on the same two tokens.

Examples are plain dicts (an Arrow row) with the columns of `ROW_COLUMNS`; speech fields hold ids of
utterances in the speech plan (`minimost.data.build.speech_plan`), and the caller passes their
*deduplicated* unit ids (ints < n_units) as `units={speech_id: [...]}`. Nothing is truncated: an
example longer than the training length is left out by the sampler and counted, never cut (MoST
cuts from the left and can lose the instruction, §6.1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from minimost.config import TASKS
from minimost.data.world import ASR_INSTRUCTION, TTS_INSTRUCTION  # MoST's instructions, lowercased
from minimost.tokenizer import Tokenizer

IGNORE_INDEX = -100


ROW_COLUMNS = ("id", "task", "kind", "instruction", "prompt_text", "prompt_speech", "answer_text",
               "answer_speech")


class TaskError(ValueError):
    """An example cannot be rendered; the message names the example and the missing piece."""


@dataclass
class Rendered:
    """One rendered example. input_ids and labels have the same length; labels -100 on the prompt."""
    input_ids: list[int]
    labels: list[int]
    task: str
    prompt_len: int

    def __len__(self) -> int:
        return len(self.input_ids)


def make_row(task: str, id: str, *, kind: str = "", instruction: str = "", prompt_text: str = "",
             prompt_speech: str = "", answer_text: str = "", answer_speech: str = "") -> dict:
    """A task example as a plain dict with every column of ROW_COLUMNS (empty string = absent)."""
    if task not in TASKS:
        raise TaskError(f"unknown task {task!r}; tasks: {', '.join(TASKS)}.")
    return {"id": id, "task": task, "kind": kind, "instruction": instruction, "prompt_text": prompt_text,
            "prompt_speech": prompt_speech, "answer_text": answer_text, "answer_speech": answer_speech}


def _units(row: Mapping, field: str, units: Mapping[str, Sequence[int]] | None) -> list[int]:
    sid = row.get(field) or ""
    if not sid:
        raise TaskError(f"example {row.get('id')!r} ({row.get('task')}): needs {field} (a speech id).")
    if units is None or sid not in units:
        raise TaskError(f"example {row.get('id')!r} ({row.get('task')}): no units for speech id {sid!r}; pass "
                        "units={speech_id: [deduplicated unit ids]} from the speech kit.")
    return list(units[sid])


def _need(row: Mapping, field: str) -> str:
    value = row.get(field) or ""
    if not value:
        raise TaskError(f"example {row.get('id')!r} ({row.get('task')}): needs a non-empty {field}.")
    return value


def render_parts(tok: Tokenizer, row: Mapping, units: Mapping[str, Sequence[int]] | None = None
                 ) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one example, following the table in the module docstring."""
    task = row.get("task")
    sp = tok.special
    text = tok.encode_text
    if task == "text_lm":
        return [sp("bos")], text(_need(row, "answer_text")) + [sp("eos")]
    if task == "asr":
        prompt = [sp("bos"), sp("asr"), sp("user")] + text(row.get("instruction") or ASR_INSTRUCTION)
        prompt += tok.encode_audio(_units(row, "prompt_speech", units)) + [sp("assistant")]
        return prompt, text(_need(row, "answer_text")) + [sp("eos")]
    if task == "tts":
        prompt = [sp("bos"), sp("tts"), sp("user")] + text(row.get("instruction") or TTS_INSTRUCTION)
        prompt += text(_need(row, "prompt_text")) + [sp("assistant")]
        return prompt, tok.encode_audio(_units(row, "answer_speech", units)) + [sp("eos")]
    if task == "text_instruct":
        prompt = [sp("bos"), sp("text_reply"), sp("user")] + text(_need(row, "instruction")) + [sp("assistant")]
        return prompt, text(_need(row, "answer_text")) + [sp("eos")]
    if task == "speech_instruct":
        spoken_answer = bool(row.get("answer_speech"))
        prompt = [sp("bos"), sp("speech_reply" if spoken_answer else "text_reply"), sp("user")]
        if row.get("instruction"):
            prompt += text(row["instruction"])
        prompt += tok.encode_audio(_units(row, "prompt_speech", units)) + [sp("assistant")]
        if spoken_answer:
            return prompt, tok.encode_audio(_units(row, "answer_speech", units)) + [sp("eos")]
        return prompt, text(_need(row, "answer_text")) + [sp("eos")]
    if task == "speech_lm":
        return [sp("bos"), sp("boa")], tok.encode_units(_units(row, "answer_speech", units)) + [sp("eoa"), sp("eos")]
    raise TaskError(f"example {row.get('id')!r}: unknown task {task!r}; tasks: {', '.join(TASKS)}.")


def render(tok: Tokenizer, row: Mapping, units: Mapping[str, Sequence[int]] | None = None) -> Rendered:
    """One example -> input_ids and labels (-100 on the prompt, ids on the response)."""
    prompt, response = render_parts(tok, row, units)
    return Rendered(prompt + response, [IGNORE_INDEX] * len(prompt) + response, row["task"], len(prompt))


def render_prompt(tok: Tokenizer, row: Mapping, units: Mapping[str, Sequence[int]] | None = None) -> list[int]:
    """The prompt alone (ends with <assistant>, or <bos> for text_lm): what generation starts from."""
    return render_parts(tok, row, units)[0]


def show_loss(tok: Tokenizer, input_ids: Sequence[int], labels: Sequence[int]) -> str:
    """Tokens of one sequence, loss-carrying ones in [brackets], padding dropped: for tests and notebooks."""
    out = []
    for i, lab in zip(input_ids, labels):
        i, lab = int(i), int(lab)
        if i == tok.pad_id and lab == IGNORE_INDEX:
            continue
        piece = tok.token(i)
        out.append(f"[{piece}]" if lab != IGNORE_INDEX else piece)
    return " ".join(out)
