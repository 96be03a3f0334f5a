import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.answer import AnswerFormat, AnswerParseError, AnswerVariant
from appliance.grasp import GraspPose, angle_difference
from appliance.runtime.gbnf import parse_grammar

unit = st.floats(0.0, 1.0, allow_nan=False)
angle = st.floats(-math.pi / 2, math.pi / 2, allow_nan=False, exclude_max=True)
poses = st.builds(GraspPose, unit, unit, angle)
# Reasoning text: printable, no '[' (the contract forbids it), not blank.
reasoning = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="["), min_size=1, max_size=80
).filter(lambda s: s.strip())
formats = st.builds(AnswerFormat, st.sampled_from(list(AnswerVariant)), st.integers(1, 4))


def render(fmt: AnswerFormat, pose: GraspPose, text: str) -> str:
    return fmt.render(pose, text if fmt.variant is AnswerVariant.RT else "")


def test_the_three_variants_look_as_in_the_paper():
    pose = GraspPose(0.512, 0.433, -0.785)
    assert AnswerFormat("nr-a").render(pose) == "[0.512, 0.433], -0.785"
    assert (
        AnswerFormat("nr-b").render(pose) == "Grasp point coordinates: [0.512, 0.433] Rotation angle in radians: -0.785"
    )
    assert AnswerFormat("rt").render(pose, "A mug. Grasp the rim.") == "A mug. Grasp the rim. [0.512, 0.433], -0.785"
    assert AnswerFormat("nr-a", decimals=2).render(GraspPose(0.5, 0.25, -0.0001)) == "[0.50, 0.25], 0.00"


@given(formats, poses, reasoning)
def test_every_rendered_answer_parses_back_to_the_same_pose(fmt, pose, text):
    parsed = fmt.parse(render(fmt, pose, text))
    tolerance = 0.5 * 10.0**-fmt.decimals + 1e-12
    assert abs(parsed.pose.x - pose.x) <= tolerance and abs(parsed.pose.y - pose.y) <= tolerance
    assert angle_difference(parsed.pose.theta, pose.theta) <= tolerance
    assert -math.pi / 2 <= parsed.pose.theta < math.pi / 2
    if fmt.variant is AnswerVariant.RT:
        assert parsed.reasoning == text.strip()


@given(formats, poses, reasoning)
@settings(max_examples=60)
def test_grammar_accepts_every_rendered_answer(fmt, pose, text):
    assert parse_grammar(fmt.grammar()).matches(render(fmt, pose, text))


@pytest.mark.parametrize("variant", list(AnswerVariant))
def test_grammar_rejects_what_the_parser_rejects(variant):
    grammar = parse_grammar(AnswerFormat(variant).grammar())
    for bad in [
        "",
        "[0.5, 0.5], 0.1",
        "[1.500, 0.500], 0.100",
        "A mug [0.500, 0.500], 0.100 more",
        "[0.500, 0.500], 2.000",
    ]:
        assert not grammar.matches(bad)


@given(st.text(max_size=300), formats)
def test_garbage_never_crashes_the_parser(text, fmt):
    try:
        parsed = fmt.parse(text)
    except AnswerParseError as exc:
        assert exc.reason
    else:
        assert 0 <= parsed.pose.x <= 1 and 0 <= parsed.pose.y <= 1


@given(st.binary(max_size=100))
def test_decoded_bytes_never_crash_the_parser(data):
    with pytest.raises(AnswerParseError):
        AnswerFormat("rt").parse(data.decode("latin-1") + "]")


@pytest.mark.parametrize(
    "variant, text, reason",
    [
        ("rt", "A mug. [1.200, 0.500], 0.100", "x = 1.2 is outside [0, 1]"),
        ("rt", "A mug. [0.200, -0.500], 0.100", "y = -0.5 is outside [0, 1]"),
        ("rt", "A mug. [0.200, 0.500], 1.800", "theta = 1.8 is outside"),
        ("rt", "[0.200, 0.500], 0.100", "RT answer has no reasoning"),
        ("nr-a", "A mug. [0.200, 0.500], 0.100", "unexpected text before the nr-a pose"),
        ("nr-b", "[0.200, 0.500], 0.100", "no nr-b pose"),
        ("rt", "A mug, grasp it by the handle.", "no rt pose at the end"),
        ("rt", "   ", "empty answer"),
    ],
)
def test_parse_errors_say_what_is_wrong(variant, text, reason):
    with pytest.raises(AnswerParseError, match=re.escape(reason)):
        AnswerFormat(variant).parse(text)


def test_half_pi_rounding_parses_to_the_same_grasp():
    fmt = AnswerFormat("nr-a", decimals=3)
    text = fmt.render(GraspPose(0.5, 0.5, math.pi / 2 - 1e-6))
    assert text.endswith("1.571")
    assert angle_difference(fmt.parse(text).pose.theta, math.pi / 2) < 1e-3


def test_render_refuses_what_could_not_be_parsed():
    with pytest.raises(ValueError, match="needs reasoning"):
        AnswerFormat("rt").render(GraspPose(0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="no reasoning phase"):
        AnswerFormat("nr-a").render(GraspPose(0.5, 0.5, 0.0), "A mug.")
    with pytest.raises(ValueError, match="must not contain"):
        AnswerFormat("rt").render(GraspPose(0.5, 0.5, 0.0), "see [1]")
    with pytest.raises(ValueError, match="decimals"):
        AnswerFormat("rt", decimals=0)
    with pytest.raises(ValueError):
        AnswerFormat("xx")


@pytest.mark.parametrize("decimals", [1, 2, 3])
def test_grammar_accepts_exactly_the_angles_the_parser_accepts(decimals):
    """Constrained decoding must never produce a pose the range check then refuses."""
    from appliance.runtime.gbnf import parse_grammar

    fmt = AnswerFormat("nr-a", decimals)
    grammar = parse_grammar(fmt.grammar())
    unit = f"{0.5:.{decimals}f}"
    scale = 10**decimals
    for k in range(-2 * scale, 2 * scale + 1):
        text = f"[{unit}, {unit}], {k / scale:.{decimals}f}"
        try:
            fmt.parse(text)
            parsed = True
        except AnswerParseError:
            parsed = False
        assert grammar.matches(text) == parsed, text


@pytest.mark.parametrize("variant", ["rt", "nr-a", "nr-b"])
def test_a_refusal_parses_as_refused_and_the_grammar_allows_it_only_when_trained(variant):
    from appliance.answer import AnswerRefused
    from appliance.runtime.gbnf import parse_grammar

    trained, untrained = AnswerFormat(variant, 3, refusals=True), AnswerFormat(variant, 3)
    text = trained.render_refusal("toy block")
    assert text == "I see no toy block here."
    for fmt in (trained, untrained):  # a refusal is never a pose, whoever wrote it
        with pytest.raises(AnswerRefused) as refused:
            fmt.parse(text)
        assert refused.value.object == "toy block"
    parse_grammar(trained.grammar())
    assert "refusal" in trained.grammar() and "refusal" not in untrained.grammar()
    assert parse_grammar(trained.grammar()).matches(" " + text)
    seen = parse_grammar(trained.grammar(refusal=False))  # the object was found: the model may not refuse it
    assert not seen.matches(" " + text) and not seen.matches(text)
    pose = render(trained, GraspPose(0.5, 0.5, 0.0), "It is a mug.")
    assert seen.matches(pose) and parse_grammar(trained.grammar()).matches(pose)
    with pytest.raises(ValueError):
        trained.render_refusal("Banana!")


def test_a_refusal_inside_reasoning_is_no_refusal():
    fmt = AnswerFormat("rt", 3, refusals=True)
    parsed = fmt.parse("I see no reason to worry. The mug is a cylinder. [0.500, 0.500], 0.000")
    assert parsed.pose.x == 0.5


def test_a_lead_makes_an_rt_answer_open_with_that_sentence_and_never_refuse():
    fmt = AnswerFormat("rt", 2, refusals=True)
    lead = "The one on the left is a mug."
    grammar = parse_grammar(fmt.grammar(lead=lead))
    answer = render(fmt, GraspPose(0.25, 0.5, 0.1), lead + " A mug: hold it by the handle.")
    assert grammar.matches(answer) and grammar.matches(" " + answer)
    assert parse_grammar(fmt.grammar()).matches(answer)  # the plain grammar allows it too
    other = render(fmt, GraspPose(0.25, 0.5, 0.1), "The one on the left is a bowl. Hold the rim.")
    assert not grammar.matches(other)
    assert not grammar.matches(render(fmt, GraspPose(0.25, 0.5, 0.1), lead))  # the reasoning goes on after it
    assert not grammar.matches(" " + fmt.render_refusal("mug"))
    for bad in ("It is [0.5", "   ", "a\nb"):
        with pytest.raises(ValueError, match="lead"):
            fmt.grammar(lead=bad)
    with pytest.raises(ValueError, match="lead"):
        AnswerFormat("nr-a", 2).grammar(lead=lead)
