"""How long a spoken command waits for pocketsphinx: each search of the transcriber, timed on the same audio.

    python bench/speech_latency.py --commands 12

Speaks ``--commands`` of our instruction and referring sentences with espeak-ng (as the tests do), then decodes
each under the first grammar (plain commands), the second (every sentence, the referring ones too) and the free
English language model, and prints the mean seconds of each, side by side in one run. An accepted command costs
the two grammars; a refused one the free decoding too (``appliance/daemon/speech.py``).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SEARCHES = ("commands", "referring", "free")


def sentences(vocab, n: int, seed: int = 0) -> list[str]:
    """``n`` sentences the grammar holds, their slots filled with the bundle's own words."""
    from appliance.daemon.speech import normalise

    rng = random.Random(seed)
    out = []
    while len(out) < n:
        sentence = rng.choice(vocab.sentences)
        for name, values in vocab.slots.items():
            if values and "{" + name + "}" in sentence:
                sentence = sentence.replace("{" + name + "}", rng.choice(values))
        if "{" not in sentence:
            out.append(normalise(sentence))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commands", type=int, default=12, help="sentences to speak and decode")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from appliance.daemon.speech import Transcriber, Vocabulary, read_wav
    from appliance.demo import speak
    from export.speech import vocabulary

    vocab = Vocabulary(**{k: tuple(v) for k, v in vocabulary().items()})
    started = time.perf_counter()
    transcriber = Transcriber(vocab)
    print(f"recogniser loaded in {time.perf_counter() - started:.2f} s")
    spent = dict.fromkeys(SEARCHES, 0.0)
    accepted = 0
    with tempfile.TemporaryDirectory() as tmp:
        texts = sentences(vocab, args.commands, args.seed)
        for k, text in enumerate(texts):
            audio = speak(text, Path(tmp) / f"{k}.wav")
            pcm = read_wav(audio, transcriber.max_seconds)
            for search in SEARCHES:
                t = time.perf_counter()
                transcriber._decode(pcm, search)
                spent[search] += time.perf_counter() - t
            accepted += transcriber(audio).accepted
    n = len(texts)
    mean = {s: spent[s] / n for s in SEARCHES}
    print(f"{n} spoken sentences ({accepted} accepted), mean seconds per sentence:")
    for search in SEARCHES:
        print(f"  {search:10} {mean[search]:.2f}")
    grammars = mean["commands"] + mean["referring"]
    print(
        f"  an accepted command waits {grammars:.2f} s (the two grammars); a refused one {grammars + mean['free']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
