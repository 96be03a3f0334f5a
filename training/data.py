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

IGNORE = -100


def conversation_text(turns: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The full text and the character spans the loss is taken on (answers + end of turn)."""
    text, targets = "", []
    for turn in turns:
        if turn["from"] == "human":
            text += ("" if not text else " ") + f"USER: {turn['value']} ASSISTANT:"
        else:
            start = len(text)  # from the space: "▁It" / "ĠIt" tokens begin there
            text += f" {turn['value']}</s>"
            targets.append((start, len(text)))
    return text, targets


def encode(
    record: dict, tokenizer, image_token_id: int, image_tokens: int, max_length: int
) -> tuple[list[int], list[int]]:
    """input_ids and labels of one record, the image token expanded."""
    text, targets = conversation_text(record["conversations"])
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, labels = [], []
    for token, (start, end) in zip(enc["input_ids"], enc["offset_mapping"]):
        if token == image_token_id:
            ids += [image_token_id] * image_tokens
            labels += [IGNORE] * image_tokens
            continue
        ids.append(token)
        inside = end > start and any(a <= start and end <= b for a, b in targets)
        labels.append(token if inside else IGNORE)
    if len(ids) > max_length:
        raise ValueError(f"record {record.get('id')}: {len(ids)} tokens exceed max_length {max_length}")
    return ids, labels


class ConversationDataset(torch.utils.data.Dataset):
    """The records of one ``train.json``/``test.json`` (or several, one after the other) with their images;
    each record's image is found beside its own JSON file."""

    def __init__(
        self, json_path: Path | list[Path], processor, image_token_id: int, image_tokens: int, max_length: int = 512
    ):
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
        ids, labels = encode(record, self.processor.tokenizer, self.image_token_id, self.image_tokens, self.max_length)
        with Image.open(self.roots[i] / record["image"]) as img:
            pixels = self.processor.image_processor(img.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        return {"input_ids": ids, "labels": labels, "pixel_values": pixels}


def collate(batch: list[dict], pad_id: int) -> dict:
    """Right-pad a batch; padding is masked out of attention and loss."""
    width = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[row, :n] = torch.tensor(b["input_ids"])
        labels[row, :n] = torch.tensor(b["labels"])
        mask[row, :n] = 1
    return {
        "input_ids": ids,
        "labels": labels,
        "attention_mask": mask,
        "pixel_values": torch.stack([b["pixel_values"] for b in batch]),
    }
