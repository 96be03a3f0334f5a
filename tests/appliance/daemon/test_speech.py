"""Spoken instructions: espeak-ng speech of our commands through pocketsphinx with the command grammar."""

import multiprocessing
import random
import re
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor

import pytest

pytest.importorskip("pocketsphinx")
if not (shutil.which("espeak-ng") and shutil.which("sox")):
    pytest.skip("needs espeak-ng and sox (scripts/setup installs them with the speech extra)", allow_module_level=True)

from appliance.daemon.speech import SpeechError, Transcriber, Vocabulary, jsgf, normalise, read_wav  # noqa: E402
from appliance.demo import speak  # noqa: E402

OUT_OF_GRAMMAR = [
    "what time is it",
    "the weather is nice today",
    "give me the phone",  # a command's shape, an object no grammar has
]
"""Speech that is no command at all. (A command naming an unknown object, "pick up the dog", can still
be heard as a known one that sounds alike: docs/protocol.md says so.)"""


def word_errors(ref: str, hyp: str) -> int:
    a, b = ref.split(), hyp.split()
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
    return d[len(b)]


@pytest.fixture(scope="module")
def vocab():
    pytest.importorskip("training")
    from export.speech import vocabulary

    return Vocabulary(**{k: tuple(v) for k, v in vocabulary().items()})  # a bundle's, exported today


@pytest.fixture(scope="module")
def transcriber(vocab):
    return Transcriber(vocab)


def commands(vocab, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    objects = [o for o in vocab.objects if " " not in o][:40]
    from training.reasoning import load_templates

    templates = load_templates()  # the instruction and refinement sentences (the referring ones: REFERRING below)
    plain = [s for kind in (*templates.instructions.values(), *templates.refinement.values()) for s in kind]
    assert set(plain) <= set(vocab.sentences)
    out = []
    for _ in range(n):
        sentence = rng.choice(plain)
        sentence = (
            sentence.replace("{object}", rng.choice(objects))
            .replace("{name}", rng.choice(objects))
            .replace("{part}", rng.choice(["handle", "rim", "body", "neck", "blade"]))
        )
        out.append(normalise(sentence.replace("{side}", rng.choice(vocab.sides))))
    return out


def test_the_spoken_audio_is_the_same_every_time(tmp_path):
    """sox dithers with a fresh seed unless told -R: the word error below moved between 7.1 and 11.3 % run to run."""
    assert speak("pick up the mug", tmp_path / "a.wav") == speak("pick up the mug", tmp_path / "b.wav")


def _hear(vocab, audio: list) -> list:
    """In a worker process: what a transcriber of its own hears in each recording."""
    return list(map(Transcriber(vocab), audio))


@pytest.fixture(scope="module")
def hear():
    """``hear(vocab, audio)``: what a transcriber hears in each recording, decoded in two processes. Decoding is
    the slow part (about 3.7 s a sentence; a refusal's free decoding more) and each recording's result is its own."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:

        def run(vocab, audio: list) -> list:
            halves = list(pool.map(_hear, [vocab, vocab], [audio[0::2], audio[1::2]]))
            heard = [None] * len(audio)
            heard[0::2], heard[1::2] = halves
            return heard

        yield run


@pytest.mark.slow  # 41-71 s of the default run's 15 min; the real-audio tests below stay in it
def test_word_error_of_spoken_commands_is_under_ten_percent(vocab, hear, tmp_path, capsys):
    sentences = commands(vocab, 24)
    audio = [speak(sentence, tmp_path / f"c{i}.wav") for i, sentence in enumerate(sentences)]
    heard = [(h.text, h.accepted) for h in hear(vocab, audio)]
    errors = words = rejected = 0
    for sentence, (text, accepted) in zip(sentences, heard):
        errors += word_errors(sentence, text)
        words += len(sentence.split())
        rejected += not accepted
    wer = errors / words
    with capsys.disabled():
        print(f"\n  speech: {len(sentences)} commands, word error {100 * wer:.1f} %, {rejected} rejected")
    assert wer < 0.10
    assert rejected <= len(sentences) // 4  # a rejected command moves nothing; the user says it again


REFERRING = [
    "i need something to cut with",  # function
    "pick up the pink ball",  # attribute (colour): the demo's spoken step
    "grab the ball on the left please",  # spatial
    "grasp the mug nearest the robot",  # spatial
]
"""Referring phrasings heard right. Not in the list, because espeak-ng's voice defeats the recogniser there:
"hand me something to cut with" (its last three words are heard as silence), "... the green mug" (heard
as "green lock", "green remote") and "i want the smaller bottle" ("i want the water bottle", a plain
command that explains the audio better): docs/protocol.md lists them."""


def test_referring_phrasings_are_heard_with_a_bundle_that_predates_them(hear, tmp_path):
    """A bundle's speech.yaml from before them has no colours, uses or places: the appliance's defaults add them."""
    from pathlib import Path

    bundle = Path(__file__).resolve().parent / "speech-before-referring.yaml"
    vocab = Vocabulary.load(bundle)
    assert "green" in vocab.colours and "something to cut with" in vocab.things
    assert not Vocabulary.load(bundle, defaults=None).things  # the file itself has none
    spoken = REFERRING[:3]  # a use, a colour and a place: the words only the defaults add
    audio = [speak(sentence, tmp_path / f"r{i}.wav") for i, sentence in enumerate(spoken)]
    for sentence, heard in zip(spoken, hear(vocab, audio)):
        assert heard.accepted and heard.text == sentence, heard


def test_out_of_grammar_speech_is_rejected(vocab, hear, tmp_path):
    audio = [speak(sentence, tmp_path / f"o{i}.wav") for i, sentence in enumerate(OUT_OF_GRAMMAR)]
    for sentence, heard in zip(OUT_OF_GRAMMAR, hear(vocab, audio)):
        assert not heard.accepted, (sentence, heard)
        # what it sounded like, freely decoded, goes back with the refusal
        assert heard.free_text and f"it sounded like '{heard.free_text}'" in heard.reason, heard


def test_accepted_speech_is_decoded_by_the_grammars_alone(transcriber, tmp_path, monkeypatch):
    """The free decoding is for refusals: an accepted command does not wait for it."""
    searches = []
    decode = transcriber._decode
    monkeypatch.setattr(transcriber, "_decode", lambda pcm, search: searches.append(search) or decode(pcm, search))
    heard = transcriber(speak("pick up the mug", tmp_path / "mug.wav"))
    assert heard.accepted and heard.free_text == "" and "free" not in searches, (heard, searches)
    assert searches == ["commands", "referring"]


def test_bad_audio_is_an_error(transcriber, tmp_path):
    with pytest.raises(SpeechError, match="not a WAV"):
        transcriber(b"RIFF....garbage")
    raw = tmp_path / "x.raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "pick up the mug"], check=True, capture_output=True)
    with pytest.raises(SpeechError, match="16 kHz mono"):
        read_wav(raw.read_bytes(), 10)
    wav = speak("pick up the mug", tmp_path / "m.wav")
    with pytest.raises(SpeechError, match="limit"):
        read_wav(wav, 0.1)


def test_grammar_drops_words_the_recogniser_cannot_say(vocab):
    grammar = jsgf(vocab, known=lambda w: w != "mug")
    assert not re.search(r"\bmug\b", grammar.split("<chatter> =")[0])
    assert "<object> =" in grammar and "public <utterance>" in grammar


def wav_bytes(samples: int, rate: int = 16000, truncate: int = 0) -> bytes:
    import io
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * samples)
    data = buf.getvalue()
    return data[: len(data) - truncate] if truncate else data


BAD_AUDIO = [
    (wav_bytes(0), "at least"),
    (wav_bytes(16000, truncate=3000), "truncated"),
    (wav_bytes(16000, rate=8000), "16 kHz mono"),
    (b"not a wav at all", "not a WAV"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "not a WAV"),
]


def test_bad_audio_is_bad_audio_and_the_recogniser_keeps_working(transcriber, tmp_path):
    """Each bad recording is refused with its reason; then the same recogniser still hears a command (one decoding
    after all of them: a decoding takes about 3.7 s, and a recogniser a bad input broke stays broken)."""
    from appliance.daemon.speech import BadAudio

    for audio, message in BAD_AUDIO:
        with pytest.raises(BadAudio, match=message):
            transcriber(audio)
    heard = transcriber(speak("pick up the mug", tmp_path / "after.wav"))
    assert heard.accepted and heard.text == "pick up the mug", heard
