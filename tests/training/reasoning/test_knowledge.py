"""The language stage's knowledge: what things are for, in the words the test phrasings use."""

import re

import pytest

from training.reasoning import load_templates
from training.reasoning.corpus import corpus, knowledge_lines
from training.reasoning.referring import PHRASING_SETS, PURPOSE_FORMS, REFERRING_FILE, load_referring


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", re.sub(r"{\w+}", "", text).lower()))


@pytest.fixture(scope="module")
def corpus_words() -> set[str]:
    return set().union(*(words(line) for line in corpus(load_templates(), seed=0)))


def test_every_word_of_every_test_phrasing_is_in_the_corpus(corpus_words):
    """A test instruction may be worded as no training instruction was, but not in words the model never read."""
    ref = load_referring()
    for table in (ref.phrasings, ref.uses, ref.where):
        for key, sets in table.items():
            for phrasing in sets["test"]:
                assert words(phrasing) <= corpus_words, (key, phrasing, words(phrasing) - corpus_words)


def test_without_the_knowledge_the_test_uses_hold_words_never_read():
    ref = load_referring()
    bare = set().union(*(words(line) for line in corpus(load_templates(), seed=0, knowledge=0)))
    unread = {p for sets in ref.uses.values() for p in sets["test"] if words(p) - bare}
    assert len(unread) > len(ref.uses) / 2  # what the knowledge is for: "whip cream", "a parcel", "a bouquet"


@pytest.mark.parametrize("forms", [False, True])
def test_knowledge_states_facts_never_phrasings(forms):
    """No knowledge line is worded as an instruction frame or holds a test use phrasing: the test phrasings stay
    unseen as such (the purposes in every wording of PURPOSE_FORMS too)."""
    ref = load_referring()
    frames = [
        re.compile(re.sub(r"\\{\w+\\}", ".+", re.escape(frame.lower())))
        for sets in ref.phrasings.values()
        for kind in PHRASING_SETS
        for frame in sets[kind]
        if re.sub(r"{\w+}", "", frame).strip(" .?")  # a frame with words of its own
    ]
    test_uses = {p.lower() for sets in ref.uses.values() for p in sets["test"]}
    lines = list(knowledge_lines(list(load_templates().categories.values()), purpose_forms=forms))
    for line in lines:
        assert not any(frame.fullmatch(line.lower()) for frame in frames), line
        assert not any(p in line.lower() for p in test_uses), line
    assert any(frame.fullmatch("hand me something to cut with") for frame in frames)  # the check can match


def test_knowledge_is_about_each_category_and_its_own_uses():
    ref = load_referring()
    lines = list(knowledge_lines(list(load_templates().categories.values())))
    assert "People whip cream with a whisk." in lines and "A candle gives light." in lines
    assert "People whip cream with a mug." not in lines
    assert set(ref.words) <= set(lines)


def test_every_purpose_is_stated_in_every_wording_of_its_own_objects():
    templates = load_templates()
    categories = list(templates.categories.values())
    plain, forms = list(knowledge_lines(categories, False)), list(knowledge_lines(categories, True))
    assert set(plain) < set(forms)
    for wording in PURPOSE_FORMS:
        assert wording.format(purpose="whip cream", a_name="a whisk", A_name="A whisk") in forms
    assert "What do you use to whip cream? A whisk." in forms and "You use a mug to whip cream." not in forms
    ref = load_referring()
    assert len(forms) - len(plain) == len(PURPOSE_FORMS) * sum(
        len(ref.purposes.get(use, ())) for c in categories for use in ref.category_uses[c.name]
    )
    assert set(ref.purposes) == set(ref.uses)  # every use has its purposes


def test_left_out_phrasings_fill_no_referring_instruction():
    """A probe's validation phrasings (corpus leave_out) are never read as instructions."""
    import random

    from training.reasoning.corpus import referring_lines

    categories = list(load_templates().categories.values())
    kept = list(referring_lines(categories, random.Random(0), per_frame=200))
    left = list(referring_lines(categories, random.Random(0), per_frame=200, leave_out=frozenset({"a snack"})))
    assert any("a snack" in line for line in kept) and not any("a snack" in line for line in left)
    with pytest.raises(ValueError, match="every train phrasing of the use 'store'"):
        list(referring_lines(categories, random.Random(0), leave_out=frozenset({"something to keep things in"})))


def test_the_corpus_pairs_a_use_only_with_an_object_that_has_it():
    templates, ref = load_templates(), load_referring()
    use_of_thing = {sets["train"][0]: use for use, sets in ref.uses.items()}
    a_names = {c.a_name[:1].upper() + c.a_name[1:]: name for name, c in templates.categories.items()}
    lines, seen = list(corpus(templates, seed=3)), 0
    for line in lines:  # "A whisk is something to beat eggs with."
        a_name, is_, thing = line.rstrip(".").partition(" is ")
        if is_ and thing in use_of_thing and a_name in a_names:
            assert use_of_thing[thing] in ref.category_uses[a_names[a_name]], line
            seen += 1
    assert seen > 10
    fallback = templates.fallback.a_name[:1].upper() + templates.fallback.a_name[1:] + " is something"
    assert not any(line.startswith(fallback) for line in lines)  # it has no use


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('  block: ["Children build with {a_name}.", "You can stack {a_name} on another one."]\n', "", "missing"),
        ("People whip cream with {a_name}.", "People whip {cream} with {a_name}.", "no other slot"),
        ("People whip cream with {a_name}.", "People whip cream.", "must name the object"),
        ("People whip cream with {a_name}.", "People whip cream} with {a_name}.", "Single '}'"),
        ("People whip cream with {a_name}.", "People whip cream with {a_name.upper}.", "no other slot"),
        ('  - "To grab a thing is to take it."\n', '  - ""\n', "words: needs a list of sentences"),
        ('  beat: ["beat eggs", "whip cream", "mix batter"]', '  beat: ["whip {a_name}"]', "bare phrase"),
        ('  beat: ["beat eggs", "whip cream", "mix batter"]', '  beat: ["whip cream."]', "bare phrase"),
        ('  beat: ["beat eggs", "whip cream", "mix batter"]', '  beat: "whip cream"', "needs a list of phrases"),
        ('  beat: ["beat eggs", "whip cream", "mix batter"]', '  juggle: ["juggle"]', "unknown uses"),
    ],
)
def test_a_bad_knowledge_table_is_refused(tmp_path, old, new, message):
    text = REFERRING_FILE.read_text()
    assert old in text
    bad = tmp_path / "referring.yaml"
    bad.write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=message):
        load_referring(bad)
