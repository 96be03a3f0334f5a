import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.runtime.gbnf import GrammarError, parse_grammar


def test_parses_llama_cpp_style_grammar():
    grammar = parse_grammar(
        """# a comment
root ::= greeting ("," ws name)? "!"
greeting ::= "hello" | "hi"   # trailing comment
name ::= [A-Z] [a-z]{1,8}
ws ::= [ \\t]*
"""
    )
    assert grammar.matches("hello!")
    assert grammar.matches("hi, Ada!")
    assert not grammar.matches("hi, ada!")
    assert not grammar.matches("hi, Abcdefghij!")


def test_alternatives_may_continue_after_a_bar_and_inside_parentheses():
    grammar = parse_grammar('root ::= "a" |\n  "b"\nother ::= (\n "c"\n "d" )\n')
    assert grammar.matches("b") and grammar.matches("c", rule="other") is False
    assert grammar.matches("cd", rule="other")


@pytest.mark.parametrize(
    "source, message",
    [
        ("", "empty grammar"),
        ('start ::= "a"\n', "no 'root' rule"),
        ("root ::= missing\n", "undefined rule 'missing'"),
        ('root ::= ("a"\n', r"unclosed '\('"),
        ('root ::= "a\n', "unterminated"),
        ("root ::= [a-\n", "unterminated"),
        ("root ::= [z-a]\n", "reversed range"),
        ('root ::= "\\q"\n', "unknown escape"),
        ('root ::= "a"\nroot ::= "b"\n', "defined twice"),
        ("root ::= \n", "empty alternative"),
        ('root ::= "a"{3,1}\n', "repetition maximum below minimum"),
        ('root ::= "a" )\n', "expected the end of the line"),
    ],
)
def test_malformed_grammars_are_refused(source, message):
    with pytest.raises(GrammarError, match=message):
        parse_grammar(source)


@given(st.text(max_size=120))
def test_random_text_either_parses_or_raises_grammar_error(source):
    try:
        parse_grammar(source)
    except GrammarError:
        pass
