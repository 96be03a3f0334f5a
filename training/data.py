"""LLaVA conversation JSON → model inputs, with the loss on the assistant's answers only.

A record (written by ``training.build_dataset``) becomes the LLaVA-1.5 text

    USER: <image>\\n{instruction} ASSISTANT: {answer}</s> USER: {follow-up} ASSISTANT: {answer}</s>

tokenized once as a whole (so tokens match what the runtime sees), with labels
on the answer tokens and their ``</s>``; the single ``<image>`` token is
expanded to the model's number of image tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image

from .attend import NO_TARGET, answer_patches

IGNORE = -100


def conversation_text(turns: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The full text and the character spans the loss is taken on (answers + end of turn)."""
    text, answers, _ = conversation_spans(turns)
    return text, answers


def conversation_spans(turns: list[dict]) -> tuple[str, list[tuple[int, int]], list[tuple[int, int]]]:
    """``conversation_text``, plus the character span of each answer's question (the human turn before it)."""
    text, answers, questions = "", [], []
    for turn in turns:
        if turn["from"] == "human":
            text += "" if not text else " "
            start = len(text)
            text += f"USER: {turn['value']} ASSISTANT:"
            questions.append((start, len(text)))
        else:
            start = len(text)  # from the space: "▁It" / "ĠIt" tokens begin there
            text += f" {turn['value']}</s>"
            answers.append((start, len(text)))
    return text, answers, questions[: len(answers)]


def encode(
    record: dict, tokenizer, image_token_id: int, image_tokens: int, max_length: int
) -> tuple[list[int], list[int]]:
    """input_ids and labels of one record, the image token expanded."""
    ids, labels, _ = encode_turns(record, tokenizer, image_token_id, image_tokens, max_length)
    return ids, labels


def encode_turns(
    record: dict, tokenizer, image_token_id: int, image_tokens: int, max_length: int
) -> tuple[list[int], list[int], list[int]]:
    """``encode``, plus for each token which answer it belongs to: k for answer k's tokens, -(k + 2) for the
    tokens of the question it answers, -1 for anything else."""
    text, answers, questions = conversation_spans(record["conversations"])
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, labels, turns = [], [], []
    for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        if token == image_token_id:
            ids += [image_token_id] * image_tokens
            labels += [IGNORE] * image_tokens
            turns += [-1] * image_tokens
            continue
        ids.append(token)
        answer = _span_of(answers, start, end)
        question = _span_of(questions, start, end) if answer < 0 else -1
        labels.append(token if answer >= 0 else IGNORE)
        turns.append(answer if answer >= 0 else -(question + 2) if question >= 0 else -1)
    if len(ids) > max_length:
        raise ValueError(f"record {record.get('id')}: {len(ids)} tokens exceed max_length {max_length}")
    return ids, labels, turns


def _span_of(spans: list[tuple[int, int]], start: int, end: int) -> int:
    """The index of the span holding the (non-empty) token at characters start..end, else -1."""
    if end <= start:
        return -1
    return next((k for k, (a, b) in enumerate(spans) if a <= start and end <= b), -1)


def attend_targets(turns: list[int], patches: list[int], ids: list[int], image_token_id: int, start: str) -> list[int]:
    """Per position, the patch its query should look at (``training.attend``), ``NO_TARGET`` where none."""
    seen = ids.index(image_token_id) if image_token_id in ids else len(ids)
    out = []
    for i in range(len(turns)):
        nxt = turns[i + 1] if i + 1 < len(turns) else -1
        if nxt >= 0:  # this position predicts a token of answer nxt
            out.append(patches[nxt])
        elif start == "turn" and i > seen and turns[i] <= -2:  # a word of the question, after the image
            out.append(patches[-turns[i] - 2])
        else:
            out.append(NO_TARGET)
    return out


class ConversationDataset(torch.utils.data.Dataset):
    """The records of one ``train.json``/``test.json`` (or several, one after the other) with their images;
    each record's image is found beside its own JSON file. With ``attend`` (the answers' format and the patch
    grid's side, ``ATTEND_FROM``) each item also says, per position, which patch the supervised heads should look at."""

    def __init__(
        self,
        json_path: Path | list[Path],
        processor,
        image_token_id: int,
        image_tokens: int,
        max_length: int = 512,
        attend: tuple | None = None,
    ):
        self.attend = attend
        paths = [Path(p) for p in json_path] if isinstance(json_path, (list, tuple)) else [Path(json_path)]
        self.records, self.roots = [], []
        for path in paths:
            records = json.loads(path.read_text())
            self.records += records
            self.roots += [path.parent] * len(records)
        self.processor, self.image_token_id, self.image_tokens, self.max_length = (
            processor,
            image_token_id,
            image_tokens,
            max_length,
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        ids, labels, turns = encode_turns(
            record, self.processor.tokenizer, self.image_token_id, self.image_tokens, self.max_length
        )
        with Image.open(self.roots[i] / record["image"]) as img:
            pixels = self.processor.image_processor(img.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        item = {"input_ids": ids, "labels": labels, "pixel_values": pixels}
        if self.attend is not None:
            fmt, grid, start = self.attend
            patches = answer_patches(record["conversations"], fmt, grid)
            item["attend"] = attend_targets(turns, patches, ids, self.image_token_id, start)
        return item


def collate(batch: list[dict], pad_id: int) -> dict:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    attend = torch.full((len(batch), width), NO_TARGET, dtype=torch.long) if "attend" in batch[0] else None
    for row, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[row, :n] = torch.tensor(b["input_ids"])
        labels[row, :n] = torch.tensor(b["labels"])
        mask[row, :n] = 1
        if attend is not None:
            attend[row, :n] = torch.tensor(b["attend"])
    out = {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
    }
    if attend is not None:
        out["attend"] = attend
    return out
