"""Torch answers in batches: left-padded greedy decoding gives each prompt the answer it gets alone."""

import pytest

torch = pytest.importorskip("torch")

from training.datasets import open_dataset  # noqa: E402


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from training.datasets.toy import write_toy_dataset

    return write_toy_dataset(tmp_path_factory.mktemp("toy"), images=3, seed=7, objects=3)


def test_answers_in_a_batch_are_the_answers_one_at_a_time(tiny_spm_checkpoint, toy, monkeypatch):
    from training.datasets.augment import center_crop
    from training.evaluate import answer, answer_many
    from training.model import PROMPT_TEMPLATE, load_llava

    monkeypatch.setattr("training.evaluate.MAX_NEW_TOKENS", 24)
    model, processor = load_llava(tiny_spm_checkpoint)
    model.eval()
    dataset = open_dataset(toy)
    images = [center_crop(dataset.load(i, with_depth=False), None, (224, 224)).image for i in list(dataset.ids)[:3]]
    instructions = ("pick up the mug", "could you pass me a thing to take notes with? " * 2, "grab it")
    prompts = [PROMPT_TEMPLATE.format(instruction=t) for t in instructions]  # three lengths: two are padded
    alone = [answer(model, processor, image, "", prompt=p) for image, p in zip(images, prompts)]
    assert answer_many(model, processor, images, prompts) == alone
    # an answer that ends early: the random model writes no </s>, so let a token of the second answer end it
    inputs = processor(images=images[1], text=prompts[1], return_tensors="pt")
    with torch.no_grad():
        written = model.generate(**inputs, max_new_tokens=24, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    model.generation_config.eos_token_id = int(written[12])
    alone = [answer(model, processor, image, "", prompt=p) for image, p in zip(images, prompts)]
    assert alone[1][1] < 24 and answer_many(model, processor, images, prompts) == alone


def test_the_benchmark_times_both_ways_on_the_same_requests(refusing_checkpoint, toy, monkeypatch, capsys):
    from bench import batched_answers

    monkeypatch.setattr("training.evaluate.MAX_NEW_TOKENS", 8)
    assert batched_answers.main(["--model", str(refusing_checkpoint), "--root", str(toy), "--requests", "3"]) == 0
    printed = capsys.readouterr().out
    assert "3 requests: one at a time" in printed and "the same answer for 3" in printed
    assert batched_answers.main(["--model", str(toy), "--root", str(toy)]) == 2  # no checkpoint there
