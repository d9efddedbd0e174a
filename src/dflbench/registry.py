"""One registry helper for every named kind in dflbench: models, datasets, partitioners, P2P-FT algorithms and
AEDFL methods (timm's `register_model` pattern, with typed options).

    MODELS = Registry("model", context=("num_classes", "in_channels", "image_size"))

    @MODELS.register("lenet5")
    def lenet5(num_classes, in_channels, image_size): ...

    METHODS.make("fedbuff", {"buffer": 4})       # validated against FedBuff's options dataclass

An entry is a constructor, its typed options (a frozen dataclass) and metadata (the keys the registry declares,
all required). The options come from one of two places:

* declared, `register(name, options=SomeOptions)`: the constructor is called as `constructor(options, *args,
  **kwargs)` with an instance of `SomeOptions` (method classes, partitioners);
* derived from the constructor's signature when none is declared: every parameter with a default that is not a
  `context` parameter (what the caller supplies, e.g. a model's `num_classes`) becomes a field of a generated
  frozen dataclass, and the constructor is called as `constructor(*args, **kwargs, **fields)` (models, datasets).

`make(name, options)` checks option names (an unknown one raises a ValueError listing the valid options with their
types and defaults), coerces values to the field types (strings are parsed, so command-line text works; ints widen
to floats; anything else of the wrong type is an error), fills defaults, and lets the dataclass's `__post_init__`
validate the values.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dflbench.errors import UserError

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class NoOptions:
    """The options of an entry that takes none."""


@dataclass(frozen=True)
class Entry:
    """A registered name: its constructor, its options dataclass and its metadata."""

    name: str
    constructor: Callable
    options: type
    metadata: Mapping[str, Any]
    declared: bool  # options declared at registration (passed as one instance) or derived (passed as keywords)

    def fields(self) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(self.options)

    def field_types(self) -> dict[str, Any]:
        return typing.get_type_hints(self.options)

    def describe_options(self, sep: str = ", ") -> str:
        """'buffer: int = 10, server_lr: float = 1.0' (a field without default shows as 'alpha: float')."""
        types_ = self.field_types()
        return sep.join(f"{f.name}: {type_name(types_[f.name])}" + ("" if _default(f) is _MISSING else
                                                                    f" = {_default(f)!r}") for f in self.fields())

    def defaults(self) -> dict[str, Any]:
        """The options that have defaults, with them."""
        return {f.name: d for f in self.fields() if (d := _default(f)) is not _MISSING}


class Registry:
    """Named constructors of one kind (see the module docstring).

    `kind` names the kind in messages ("model", "method"). `metadata`: the metadata keys every entry must give
    (and the only ones it may give). `context`: constructor parameters supplied by the caller, never options.
    `sort`: `list()` in name order instead of registration order. `forms`: further accepted spellings that are
    not names (e.g. "npz:PATH"), shown after the names when an unknown name is reported.
    """

    def __init__(self, kind: str, *, metadata: tuple[str, ...] = (), context: tuple[str, ...] = (),
                 sort: bool = False, forms: tuple[str, ...] = ()):
        self.kind, self.metadata_keys, self.context = kind, tuple(metadata), frozenset(context)
        self.sort, self.forms = sort, tuple(forms)
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, options: type | None = None, **metadata) -> Callable[[Callable], Callable]:
        """Decorator: register the decorated constructor under `name` (returned unchanged)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name")
        missing = [k for k in self.metadata_keys if k not in metadata]
        extra = [k for k in metadata if k not in self.metadata_keys]
        if missing or extra:
            raise ValueError(f"{self.kind} {name!r}: registration needs exactly the metadata "
                             f"{list(self.metadata_keys)}; missing {missing}, unknown {extra}")
        if options is not None and not (dataclasses.is_dataclass(options) and isinstance(options, type)
                                        and options.__dataclass_params__.frozen):
            raise TypeError(f"{self.kind} {name!r}: options must be a frozen dataclass, got {options!r}")

        def deco(constructor: Callable) -> Callable:
            opts = options if options is not None else self._derive_options(name, constructor)
            self._entries[name] = Entry(name, constructor, opts, dict(metadata), options is not None)
            return constructor

        return deco

    def _derive_options(self, name: str, constructor: Callable) -> type:
        """A frozen dataclass of the constructor's defaulted, non-context parameters (annotations as types)."""
        fields = []
        for p in inspect.signature(constructor, eval_str=True).parameters.values():
            if p.name in self.context or p.default is inspect.Parameter.empty or p.kind in (
                    inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            tp = Any if p.annotation is inspect.Parameter.empty else p.annotation
            fields.append((p.name, tp, dataclasses.field(default=p.default)))
        cls_name = "".join(part.capitalize() for part in name.replace("-", "_").split("_")) + "Options"
        return dataclasses.make_dataclass(cls_name, fields, frozen=True)

    def list(self) -> list[str]:
        """The registered names (registration order, or name order for a `sort` registry)."""
        return sorted(self._entries) if self.sort else list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        """The names, as `list()` gives them."""
        return iter(self.list())

    def get(self, name: str) -> Entry:
        """The entry `name`; an unknown name raises a ValueError listing the valid ones."""
        if name not in self._entries:
            raise UserError(f"unknown {self.kind} {name!r}; valid: {', '.join([*self.list(), *self.forms])}")
        return self._entries[name]

    def options(self, name: str, options: Mapping[str, Any] | Any = None):
        """The options instance of entry `name` from a dict (coerced, defaults filled, validated), or `options`
        itself when it already is an instance of the entry's options class."""
        entry = self.get(name)
        if isinstance(options, entry.options):
            return options
        if options is not None and not isinstance(options, Mapping):
            raise TypeError(f"{self.kind} {name!r}: options must be a dict or {entry.options.__name__}, "
                            f"got {type(options).__name__}")
        options = dict(options or {})
        valid = {f.name for f in entry.fields()}
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise UserError(f"{self.kind} {name!r} has no option {', '.join(map(repr, unknown))}; valid: "
                            f"{entry.describe_options() or 'none (it takes no options)'}")
        missing = [f.name for f in entry.fields() if _default(f) is _MISSING and f.name not in options]
        if missing:
            raise UserError(f"{self.kind} {name!r} needs option(s) {', '.join(missing)}; its options: "
                            f"{entry.describe_options()}")
        types_ = entry.field_types()
        values = {k: coerce(v, types_[k], f"{self.kind} {name!r} option {k!r}") for k, v in options.items()}
        try:
            return entry.options(**values)
        except ValueError as exc:                                    # the dataclass's own validation
            raise UserError(f"{self.kind} {name!r}: {exc}") from None

    def parse_option(self, name: str, field: str, text: str):
        """The value of option `field` of entry `name` parsed from command-line `text` (ValueError when the entry
        has no such option or the text is not a value of its type)."""
        entry = self.get(name)
        types_ = entry.field_types()
        if field not in types_:
            raise UserError(f"{self.kind} {name!r} has no option {field!r}; valid: "
                            f"{entry.describe_options() or 'none (it takes no options)'}")
        return coerce(text, types_[field], f"{self.kind} {name!r} option {field!r}")

    def make(self, name: str, options: Mapping[str, Any] | Any = None, /, *args, **kwargs):
        """Build entry `name` with `options` (a dict or the entry's options instance; see `options`) and the
        caller's context arguments `*args, **kwargs`."""
        entry = self.get(name)
        opts = self.options(name, options)
        if entry.declared:
            return entry.constructor(opts, *args, **kwargs)
        return entry.constructor(*args, **kwargs, **{f.name: getattr(opts, f.name) for f in entry.fields()})


def option(default: Any = dataclasses.MISSING, doc: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field of an options or run config class: its default (none: required; `factory` for a mutable
    one) and a one-line doc (a run config field's doc is its command-line help)."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"doc": doc})


def field_default(source: Any, name: str) -> Any:
    """Field `name`'s default in dataclass `source` (its factory's value for a mutable one), or its value when
    `source` is an instance."""
    if not isinstance(source, type):
        return getattr(source, name)
    f = next(f for f in dataclasses.fields(source) if f.name == name)
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def option_doc(f: dataclasses.Field) -> str:
    return f.metadata.get("doc", "")


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


_MISSING = _Missing()


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _MISSING


def type_name(tp) -> str:
    """'int', 'float | None', 'str' for an annotation."""
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def coerce(value, tp, where: str):
    """`value` as a value of annotation `tp`: parsed from a string, an int widened to float; ValueError naming
    `where` otherwise. `X | None` accepts None (or the text 'none'); `typing.Any` accepts anything."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, where)
            except ValueError:
                continue
        raise UserError(f"{where} must be {type_name(tp)}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) or isinstance(origin, type):
        if isinstance(value, origin or tp):
            return value
    else:
        return value
    raise UserError(f"{where} must be {type_name(tp)}, got {value!r}")


def import_submodules(package: str, path: Sequence[str]) -> None:
    """Import every module of `package` (its `__path__`), in file-name order: a package of registered kinds (the
    server and gossip methods) registers whatever file it holds, so adding one is that file alone."""
    for module in pkgutil.iter_modules(path):
        importlib.import_module(f"{package}.{module.name}")
