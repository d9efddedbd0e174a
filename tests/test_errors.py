"""`dflbench.errors`: UserError is a ValueError; `user_input` turns a package's ValueError into a UserError naming
the option, and leaves every other exception alone."""

import pytest

from dflbench.errors import UserError, user_input
from dflbench.topology import make_topology


def test_user_error_is_a_value_error():
    assert issubclass(UserError, ValueError)
    with pytest.raises(ValueError, match="bad"):
        raise UserError("bad")


def test_user_input_names_the_option_and_keeps_the_cause():
    with pytest.raises(UserError) as info:
        with user_input("--topology"):
            make_topology("moebius", 4)
    assert str(info.value).startswith("--topology: unknown topology 'moebius'")
    assert type(info.value.__cause__) is ValueError


def test_user_input_passes_user_errors_and_other_types_through():
    original = UserError("already a user error")
    with pytest.raises(UserError) as info:
        with user_input("--x"):
            raise original
    assert info.value is original
    with pytest.raises(RuntimeError):
        with user_input("--x"):
            raise RuntimeError("a bug")
    with pytest.raises(TypeError):
        with user_input("--x"):
            raise TypeError("not asked for")


def test_user_input_catches_only_the_types_it_is_given():
    with pytest.raises(UserError, match=r"^--model-kwargs: unexpected keyword 'foo'$"):
        with user_input("--model-kwargs", TypeError):
            raise TypeError("unexpected keyword 'foo'")
    with pytest.raises(ValueError) as info:
        with user_input("--model-kwargs", TypeError):
            raise ValueError("a bug, not bad input")
    assert type(info.value) is ValueError
