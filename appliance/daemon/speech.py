"""Spoken instructions: 16 kHz mono WAV → text, offline, constrained to what the appliance understands.

pocketsphinx decodes against a JSGF grammar built from the bundle's speech
vocabulary (``speech.yaml``: the instruction and refinement sentences the model
was trained on, with the object, part and side names), which brings its word
error from over 80 % (free decoding) to a few percent. The referring sentences
of cluttered scenes (a colour or size, a place, a use: "pick up the pink ball",
"i need something to cut with"; the appliance's defaults for a bundle whose
vocabulary predates them) are decoded in a second grammar holding every
sentence, whose whole command wins when it explains the audio better: in one
grammar they made the plain commands' words a third more often wrong. A grammar alone would
force *any* speech onto some command, so the grammar also holds a "chatter"
rule of common words and unknown object names: speech that is best explained
by chatter is rejected ("not understood") — out-of-grammar speech never turns
into a motion. Refused speech is also decoded freely (pocketsphinx's English
language model), and the refusal says what it sounded like.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import wave
from dataclasses import dataclass, replace
from pathlib import Path

from .vocabulary import Vocabulary, VocabularyError, normalise

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# Words that are not commands: everyday words and objects the model does not know. Speech whose best
# explanation uses any of them is rejected.
CHATTER = (
    "a about after all also an and any are as at back be because been before being but by can come could day did do "
    "does doing done door down each even every find first for from get give go going good got had has have he hello "
    "help her here him his how i if in into is it its just know last let like little look make man many me more most "
    "much my new no not now of off okay old on one only open or other our out over people put right said say see she "
    "should show so some something still such tell than thank thanks that the their them then there these they thing "
    "think this those through time to today too two up us use very want was way we weather well were what when where "
    "which while who why will with work would yes you your dog cat car wheel tail house tree water coffee phone chair "
    "table window shoe shirt hat paper bag box key ring light music song game ball"
).split()
UNKNOWN_OBJECTS = (
    "dog cat car door wheel tail house tree water coffee phone chair window shoe shirt hat paper key ring".split()
)
"""Nouns a command may name that the model does not know: heard as themselves, then rejected."""
CHATTER_WEIGHT = 1e-25
"""Prior of the chatter path against a command: low, or short commands lose to chatter on poor audio."""
UNKNOWN_WEIGHT = 0.5
REFERRING_SLOTS = frozenset({"colour", "size", "where", "thing", "name"})
"""The slots of the referring sentences (cluttered scenes), decoded in a grammar of their own."""
BEAM = 1e-40
"""Narrower than pocketsphinx's 1e-48: the chatter loop makes wide beams slow (minutes) and no better."""


class SpeechError(RuntimeError):
    """Speech recognition is not available or the audio is unusable."""


class BadAudio(SpeechError):
    """The audio of one request is unusable (not a 16 kHz mono 16-bit WAV, empty, truncated, too long)."""

    code = "bad_audio"


@dataclass(frozen=True)
class Heard:
    """What was understood, and whether the appliance should act on it."""

    text: str
    accepted: bool
    in_grammar: bool
    confidence: float
    reason: str = ""
    free_text: str = ""
    """For refused speech only: an unconstrained decoding of the same audio (never acted on), also in ``reason``."""


def jsgf(vocab: Vocabulary, known=lambda word: True) -> str:
    """The command grammar: every sentence with its slots, plus the chatter rule; unknown words dropped, and
    sentences whose slots have nothing to fill them (an older bundle's vocabulary without colours)."""

    def ok(phrase: str) -> bool:
        return all(known(w) for w in re.sub(r"\{\w+\}", "", phrase).split())

    def alternatives(items) -> list[str]:
        return sorted({normalise(i) for i in items if ok(normalise(i))})

    fillers = {name: alternatives(values) for name, values in vocab.slots.items()}
    fillers["object"] = fillers["object"] and ["/1/ <known>", f"/{UNKNOWN_WEIGHT}/ <unknown>"]
    known_objects = alternatives(vocab.objects)
    unknown = alternatives(w for w in UNKNOWN_OBJECTS if w not in vocab.objects)
    if not known_objects or not unknown:
        raise SpeechError("no usable words for a grammar rule")

    def fillable(sentence: str) -> bool:
        return ok(sentence) and all(fillers.get(slot) for slot in re.findall(r"\{(\w+)\}", sentence))

    sentences = sorted({re.sub(r"\{(\w+)\}", r"<\1>", normalise(s)) for s in vocab.sentences if fillable(normalise(s))})
    if not sentences:
        raise SpeechError("no usable sentence for the grammar")
    used = {slot for s in sentences for slot in re.findall(r"<(\w+)>", s)}

    chatter = [w for w in CHATTER if known(w) and len(w) >= 4]  # short words fit any sound
    return (
        "\n".join(
            [
                "#JSGF V1.0;",
                "grammar rtgrasp;",
                f"public <utterance> = /1/ <command> | /{CHATTER_WEIGHT}/ <chatter>;",
                f"<command> = {' | '.join(sentences)};",
                f"<known> = {' | '.join(known_objects)};",
                f"<unknown> = {' | '.join(unknown)};",
                *(f"<{slot}> = {' | '.join(fillers[slot])};" for slot in vocab.slots if slot in used),
                "<chatter> = <word>+;",
                f"<word> = {' | '.join(chatter)};",
            ]
        )
        + "\n"
    )


def plain(vocab: Vocabulary) -> Vocabulary:
    """The vocabulary without its referring sentences (a colour, size, place or use) and their words."""
    sentences = tuple(s for s in vocab.sentences if not set(re.findall(r"\{(\w+)\}", s)) & REFERRING_SLOTS)
    return replace(vocab, sentences=sentences, colours=(), sizes=(), where=(), things=())


MIN_SECONDS = 0.1
"""Shorter audio holds no word (and an empty one upsets pocketsphinx)."""


def read_wav(data: bytes, max_seconds: float) -> bytes:
    """The PCM of a 16 kHz mono 16-bit WAV; ``BadAudio`` for anything else."""
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, channels, width, frames = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            if (rate, channels, width) != (SAMPLE_RATE, 1, 2):
                raise BadAudio(
                    f"audio must be 16 kHz mono 16-bit WAV, got {rate} Hz, {channels} channel(s), {8 * width} bit"
                )
            if frames / rate > max_seconds:
                raise BadAudio(f"audio is {frames / rate:.1f} s long, the limit is {max_seconds} s")
            pcm = w.readframes(frames)
    except (wave.Error, EOFError, ValueError) as exc:
        raise BadAudio(f"not a WAV file: {exc}") from exc
    if len(pcm) < 2 * frames:
        raise BadAudio(f"the WAV is truncated: its header says {frames} samples, it holds {len(pcm) // 2}")
    if frames < MIN_SECONDS * SAMPLE_RATE:
        raise BadAudio(f"audio is {frames / SAMPLE_RATE:.2f} s long: at least {MIN_SECONDS} s are needed")
    return pcm


class Transcriber:
    """pocketsphinx with the command grammars (and a free decoding of what they refuse)."""

    def __init__(self, vocab: Vocabulary, max_seconds: float = 15.0):
        try:
            import pocketsphinx
        except ImportError as exc:
            raise SpeechError("speech needs pocketsphinx: pip install 'rtgrasp[speech]'") from exc
        model = os.path.join(pocketsphinx.get_model_path(), "en-us")
        self.vocab, self.max_seconds = vocab, max_seconds
        self.decoder = pocketsphinx.Decoder(
            hmm=os.path.join(model, "en-us"),
            dict=os.path.join(model, "cmudict-en-us.dict"),
            lm=None,
            samprate=SAMPLE_RATE,
            loglevel="FATAL",
            beam=BEAM,
            pbeam=BEAM,
            wbeam=BEAM * 1e10,
        )
        known = lambda w: self.decoder.lookup_word(w) is not None  # noqa: E731
        self.grammar = jsgf(plain(vocab), known)
        self.decoder.add_jsgf_string("commands", self.grammar)
        # every sentence, the referring ones too, in a second grammar: in the first grammar they cost the others
        # a third more word errors (8.5 -> 11.5-12.3 %, measured on the word-error test's 24 commands), short
        # names heard as a colour and a sound-alike ("pick up the dvd" -> "pick up the green tea")
        self.referring_grammar = jsgf(vocab, known) if plain(vocab) != vocab else None
        if self.referring_grammar is not None:
            self.decoder.add_jsgf_string("referring", self.referring_grammar)
        self.decoder.add_lm_file("free", os.path.join(model, "en-us.lm.bin"))
        self._commands = set(vocab.spoken_words)

    def _decode(self, pcm: bytes, search: str) -> tuple[str, float, float]:
        """(text, posterior, path score) of the best hypothesis under one search."""
        d = self.decoder
        d.activate_search(search)
        d.start_utt()
        try:
            d.process_raw(pcm, full_utt=True)
        finally:  # an utterance left open would refuse every later search switch
            d.end_utt()
        hyp = d.hyp()
        return (hyp.hypstr.strip(), float(hyp.prob), float(hyp.score)) if hyp else ("", 0.0, -math.inf)

    def __call__(self, audio: bytes) -> Heard:
        pcm = read_wav(audio, self.max_seconds)
        text, confidence, score = self._decode(pcm, "commands")
        heard = self._judge(text, confidence)
        if self.referring_grammar is not None:
            # a referring sentence wins when it is a whole command and explains the audio better, even
            # against a whole plain one ("pick up the pink ball" is "pick up the lip balm" to the first)
            text, confidence, referring_score = self._decode(pcm, "referring")
            second = self._judge(text, confidence)
            if second.accepted and (not heard.accepted or referring_score > score):
                return second
        if heard.accepted:
            return heard
        # only for what is refused: the free decoding costs a sixth of a command's time and moves nothing
        free = self._decode(pcm, "free")[0]
        return replace(
            heard, free_text=free, reason=f"{heard.reason}; it sounded like '{free}'" if free else heard.reason
        )

    def _judge(self, text: str, confidence: float) -> Heard:
        """Whether a grammar's decoding is a whole command, free of chatter."""
        if not text:
            return Heard("", False, False, 0.0, "no speech matched any command")
        words = text.split()
        chatter = [w for w in words if (w in CHATTER or w in UNKNOWN_OBJECTS) and w not in self._commands]
        if chatter:
            return Heard(text, False, False, confidence, f"out of grammar ({' '.join(chatter)})")
        if not self._is_command(text):
            return Heard(text, False, False, confidence, "an incomplete command")
        return Heard(text, True, True, confidence, "")

    def _is_command(self, text: str) -> bool:
        slots = {name: values for name, values in self.vocab.slots.items() if values}
        for sentence in self.vocab.sentences:
            pattern = re.escape(normalise(sentence))
            for name, values in slots.items():
                pattern = pattern.replace(
                    re.escape("{" + name + "}"), "(?:" + "|".join(re.escape(normalise(v)) for v in values) + ")"
                )
            if re.fullmatch(pattern, text):
                return True
        return False


def make_transcriber(settings, vocabulary: Path | None = None):
    """The daemon's transcriber, or None (logged) when speech cannot run here."""
    if vocabulary is None or not Path(vocabulary).is_file():
        log.warning("speech disabled: the bundle has no speech vocabulary")
        return None
    try:
        return Transcriber(Vocabulary.load(vocabulary), settings.max_seconds)
    except (SpeechError, VocabularyError) as exc:
        log.warning("speech disabled: %s", exc)
        return None
