"""dflbench.registry.Registry: registration, listing, unknown names, typed options (names, coercion, validation)."""

from dataclasses import dataclass

import pytest

from dflbench.registry import Registry, coerce, option


@dataclass(frozen=True)
class BufOptions:
    buffer: int = option(10, "models per server step")
    lr: float = option(1.0, "server learning rate")
    tol: float | None = option(None, "optional tolerance")
    strict: bool = option(False, "a flag")

    def __post_init__(self):
        if self.buffer < 1:
            raise ValueError(f"buffer must be >= 1, got {self.buffer}")


@dataclass(frozen=True)
class Required:
    alpha: float = option(doc="no default")


def registry():
    reg = Registry("widget", metadata=("paper",), context=("n",))

    @reg.register("zeta", options=BufOptions, paper="Z 2020")
    class Zeta:
        def __init__(self, options, n):
            self.options, self.n = options, n

    @reg.register("alpha", paper="A 2021")
    def alpha(n, width: int = 3, name: str = "a"):
        return ("alpha", n, width, name)

    return reg


def test_list_is_registration_order_or_sorted():
    assert registry().list() == ["zeta", "alpha"] == list(registry())
    reg = Registry("thing", sort=True)
    for name in ("b", "c", "a"):
        reg.register(name)(lambda: None)
    assert reg.list() == ["a", "b", "c"] and "b" in reg and "d" not in reg


def test_duplicate_name_and_bad_registrations_raise():
    reg = registry()
    with pytest.raises(ValueError, match="widget 'zeta' is already registered"):
        reg.register("zeta", paper="x")(lambda n: n)
    with pytest.raises(ValueError, match=r"missing \['paper'\], unknown \['year'\]"):
        reg.register("beta", year=2020)(lambda n: n)
    with pytest.raises(TypeError, match="frozen dataclass"):
        reg.register("gamma", options=dict, paper="x")(lambda o, n: n)
    assert reg.list() == ["zeta", "alpha"]


def test_unknown_name_lists_valid_names_and_forms():
    with pytest.raises(ValueError, match="unknown widget 'omega'; valid: zeta, alpha$"):
        registry().get("omega")
    reg = Registry("dataset", forms=("npz:PATH",))
    reg.register("digits")(lambda: 0)
    with pytest.raises(ValueError, match="valid: digits, npz:PATH"):
        reg.make("mnist")


def test_make_declared_options_from_dict_strings_and_instance():
    reg = registry()
    z = reg.make("zeta", {"buffer": "4", "lr": 2, "tol": "none", "strict": "true"}, n=5)
    assert z.options == BufOptions(buffer=4, lr=2.0, tol=None, strict=True) and z.n == 5
    assert isinstance(z.options.lr, float)
    same = BufOptions(buffer=7)
    assert reg.make("zeta", same, n=1).options is same
    assert reg.make("zeta", None, n=1).options == BufOptions()
    assert reg.options("zeta", {"tol": "0.5"}).tol == 0.5
    assert reg.get("zeta").metadata == {"paper": "Z 2020"}


def test_unknown_option_lists_valid_ones_with_types_and_defaults():
    with pytest.raises(ValueError) as e:
        registry().make("zeta", {"bufer": 3}, n=1)
    assert str(e.value) == ("widget 'zeta' has no option 'bufer'; valid: buffer: int = 10, lr: float = 1.0, "
                            "tol: float | None = None, strict: bool = False")
    with pytest.raises(ValueError, match="has no option 'x'; valid: width: int = 3, name: str = 'a'"):
        registry().parse_option("alpha", "x", "1")


@pytest.mark.parametrize("options,match", [
    ({"buffer": "ten"}, "widget 'zeta' option 'buffer' must be int, got 'ten'"),
    ({"buffer": 2.5}, "option 'buffer' must be int, got 2.5"),
    ({"buffer": True}, "option 'buffer' must be int, got True"),
    ({"lr": "fast"}, "option 'lr' must be float, got 'fast'"),
    ({"strict": "maybe"}, "option 'strict' must be bool, got 'maybe'"),
    ({"tol": "x"}, r"option 'tol' must be float \| None, got 'x'"),
    ({"buffer": 0}, "buffer must be >= 1, got 0"),                        # the dataclass's own validation
])
def test_bad_values_raise(options, match):
    with pytest.raises(ValueError, match=match):
        registry().make("zeta", options, n=1)


def test_required_option_must_be_given():
    reg = Registry("split")
    reg.register("dirichlet", options=Required)(lambda o: o.alpha)
    with pytest.raises(ValueError, match="split 'dirichlet' needs option"):
        reg.make("dirichlet", {})
    assert reg.make("dirichlet", {"alpha": "0.5"}) == 0.5


def test_options_derived_from_signature_exclude_context_and_pass_as_keywords():
    reg = registry()
    entry = reg.get("alpha")
    assert [f.name for f in entry.fields()] == ["width", "name"] and entry.defaults() == {"width": 3, "name": "a"}
    assert reg.make("alpha", {"width": "5"}, n=2) == ("alpha", 2, 5, "a")
    assert reg.make("alpha", None, 9) == ("alpha", 9, 3, "a")
    assert reg.parse_option("alpha", "width", "8") == 8


def test_coerce_against_python_parsing():
    for text, tp in [("3", int), ("-2.5e-3", float), ("abc", str), ("7", float)]:
        assert coerce(text, tp, "x") == tp(text)
    assert coerce("off", bool, "x") is False and coerce("Yes", bool, "x") is True
    assert coerce((3, 4), tuple[int, ...], "x") == (3, 4)
    with pytest.raises(ValueError, match=r"x must be tuple\[int, ...\]"):
        coerce("3,4", tuple[int, ...], "x")
