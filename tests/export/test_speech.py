"""The bundle's speech vocabulary and the appliance's default referring phrasings agree with the training data."""

import yaml

from appliance.daemon.vocabulary import REFERRING_DEFAULTS, Vocabulary
from export.speech import referring_vocabulary, vocabulary, write_vocabulary


def test_the_appliance_defaults_are_the_referring_phrasings_of_training():
    """appliance/daemon/referring_speech.yaml is written by `python -m export.speech`; rerun it after editing
    training/reasoning/referring.yaml."""
    assert yaml.safe_load(REFERRING_DEFAULTS.read_text()) == referring_vocabulary()


def test_an_exported_vocabulary_has_the_referring_phrasings_and_needs_no_defaults(tmp_path):
    path = write_vocabulary(tmp_path / "speech.yaml")
    vocab = Vocabulary.load(path, defaults=None)
    assert vocab == Vocabulary.load(path)
    assert {"red", "green"} <= set(vocab.colours) and "on the left" in vocab.where
    assert "hand me {thing}" in vocab.sentences and "pick up the {object}" in vocab.sentences
    assert len(vocab.sentences) == len(set(vocabulary()["sentences"]))  # no sentence twice
    assert {"green", "left", "robot's"} <= vocab.words and "cut" not in vocab.words  # a use counts whole
    assert "cut" in vocab.spoken_words
