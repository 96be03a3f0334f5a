"""The words check that stands in for a model's refusal, with the referring phrasings of cluttered scenes."""

from pathlib import Path

import pytest

from appliance.daemon.vocabulary import Vocabulary, not_understood

TINY = Path(__file__).resolve().parent / "speech-before-referring.yaml"
"""A bundle's speech vocabulary from before the referring words (the bundled demo model's until session 28)."""


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.load(TINY)


def test_a_bundle_without_referring_words_gets_the_appliance_defaults(vocab):
    bare = Vocabulary.load(TINY, defaults=None)
    assert not bare.colours and not bare.things and not bare.where
    assert "pink" in vocab.colours and "on the left" in vocab.where and "something to cut with" in vocab.things
    assert set(bare.sentences) < set(vocab.sentences) and "hand me {thing}" in vocab.sentences


@pytest.mark.parametrize(
    "text",
    ["hand me something to cut with", "pick up the pink ball", "grab the ball on the left please", "I need a toy."],
)
def test_referring_instructions_are_understood(vocab, text):
    assert not_understood(text, vocab) is None


@pytest.mark.parametrize("text", ["what time is it", "open the door please", "the weather is nice today"])
def test_the_everyday_words_of_uses_alone_are_not_understood(vocab, text):
    """ "something that tells the time", "something to open a door with": only the whole phrase counts."""
    assert not_understood(text, vocab) is not None
