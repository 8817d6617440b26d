"""The registered knobs, and the config and recipe types that follow whatever is registered.

edgetune's own knobs, and any package's, are Python entry points of the group
``edgetune.knobs`` (``pyproject.toml``), each naming a ``Knob``; they are loaded the first time a
knob is looked up, so that declaring a knob beside its build step (in ``edgetune.objectives``)
needs no import of the build steps here. ``register`` adds one at run time (a test's throwaway
scheme, a notebook's experiment).

Example:
    >>> from edgetune.spaces.registry import knob
    >>> knob("quantization", "dynamic").steps.keys()
    dict_keys(['quantize'])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import entry_points
from typing import Annotated, Any, ClassVar

import optuna
from pydantic import (
    ConfigDict,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails

from edgetune.spaces.base import Strict, suggest_choice
from edgetune.spaces.knob import DEFAULT_RUNTIME, Knob, Slot

ENTRY_POINTS = "edgetune.knobs"
# The field of a slot's recipe that names its knob (the graph slot's one knob is switched on by
# ``GraphRecipe.fusion``).
KEYS: dict[Slot, str] = {"pruning": "method", "quantization": "scheme"}

_knobs: dict[Slot, dict[str, Knob]] = {}
_edgetunes_own: set[tuple[Slot, str]] = set()


def knobs(slot: Slot) -> dict[str, Knob]:
    """The knobs registered for ``slot``, by name: the entry points' (in the order Python lists
    them), then those ``register`` added."""
    if not _knobs:
        for point in entry_points(group=ENTRY_POINTS):
            loaded: Knob = point.load()
            _add(loaded)
            if point.dist is not None and point.dist.name == "edgetune":
                _edgetunes_own.add((loaded.slot, loaded.name))
    return _knobs.get(slot, {})


def knob(slot: Slot, name: str) -> Knob:
    """The knob ``name`` of ``slot``.

    Raises:
        ValueError: no such knob (a config or recipe naming it is invalid).
    """
    found = knobs(slot).get(name)
    if found is None:
        raise ValueError(f"unknown {slot} {KEYS.get(slot, 'knob')} {name!r} (expected one of: "
                         f"{', '.join(knobs(slot))})")
    return found


def knob_of(recipe: Strict, slot: Slot) -> Knob:
    """The knob a recipe of ``slot`` was sampled by."""
    return knob(slot, getattr(recipe, KEYS[slot]))


def is_builtin(slot: Slot, name: str) -> bool:
    """Whether knob ``name`` is edgetune's own (an entry point of the edgetune package)."""
    knobs(slot)
    return (slot, name) in _edgetunes_own


def register(new: Knob) -> Knob:
    """Add ``new`` (after the entry points); a knob of the same slot and name is refused."""
    knobs(new.slot)
    _add(new)
    return new


@contextmanager
def registered(new: Knob) -> Iterator[Knob]:
    """``new`` registered for the block, and unregistered after it."""
    register(new)
    try:
        yield new
    finally:
        del _knobs[new.slot][new.name]


def _add(new: Knob) -> None:
    slot = _knobs.setdefault(new.slot, {})
    if new.name in slot:
        raise ValueError(f"a {new.slot} knob named {new.name!r} is registered already")
    slot[new.name] = new


def recipe_of(slot: Slot) -> Any:
    """The type of a recipe field holding a recipe of any knob of ``slot``: validated by the
    knob its discriminator (``method``, ``scheme``) names, dumped with all of its fields."""

    def validate(value: Any) -> Strict:
        if isinstance(value, Strict):
            if type(value) is not knob_of(value, slot).recipe:
                raise ValueError(f"{type(value).__name__} is not the recipe of its {slot} knob")
            return value
        if not isinstance(value, dict) or KEYS[slot] not in value:
            raise ValueError(f"expected a mapping with a {KEYS[slot]!r}")
        return knob(slot, value[KEYS[slot]]).recipe.model_validate(value)

    return Annotated[SerializeAsAny[Strict], PlainValidator(validate)]


class SlotSpace(Strict):
    """A slot's config section: which of its knobs the search may choose (``choice``), and one
    section per knob with a space, named after the knob (defaults where not given).

    Example:
        >>> from edgetune.spaces.quantization import QuantizationSpace
        >>> space = QuantizationSpace.model_validate({"schemes": ["none", "dynamic"]})
        >>> space.dynamic.per_channel
        [False, True]
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    slot: ClassVar[Slot]
    choice: ClassVar[str]  # the field listing the knobs to choose from

    @model_validator(mode="wrap")
    @classmethod
    def _knob_sections(cls, data: Any, handler: Any) -> SlotSpace:
        if isinstance(data, dict):
            data = dict(data)
            errors = cls._unknown_choices(data) + cls._validate_sections(data)
            if errors:
                raise ValidationError.from_exception_data(cls.__name__, errors)
            chosen = data.get(cls.choice) or []
            for name, declared in knobs(cls.slot).items():
                # A section is part of a study's config, and so of its fingerprint: another
                # package's knob gets one only where a config chooses it, so that installing a
                # plug-in leaves every existing study's fingerprint as it was.
                if (declared.space is not None and name not in data
                        and ((cls.slot, name) in _edgetunes_own or name in chosen)):
                    data[name] = declared.space()
        return handler(data)

    @classmethod
    def _unknown_choices(cls, data: dict[str, Any]) -> list[InitErrorDetails]:
        known, chosen = knobs(cls.slot), data.get(cls.choice)
        expected = ", ".join(repr(name) for name in known)
        return [InitErrorDetails(type="literal_error", loc=(cls.choice, i), input=name,
                                 ctx={"expected": expected})
                for i, name in enumerate(chosen if isinstance(chosen, list) else [])
                if isinstance(name, str) and name not in known]

    @classmethod
    def _validate_sections(cls, data: dict[str, Any]) -> list[InitErrorDetails]:
        """Validate in place each knob's section of ``data``; return the errors, each located
        under its section."""
        errors: list[InitErrorDetails] = []
        for key, value in data.items():
            declared = knobs(cls.slot).get(key)
            if key in cls.model_fields:
                continue
            if declared is None or declared.space is None:
                errors.append(InitErrorDetails(type="extra_forbidden", loc=(key,), input=value))
                continue
            try:
                data[key] = declared.space.model_validate(value)
            except ValidationError as error:
                errors += [InitErrorDetails(type=e["type"], loc=(key, *e["loc"]),
                                            input=e["input"], ctx=e.get("ctx", {}))
                           for e in error.errors(include_url=False)]
        return errors

    def section(self, name: str) -> Strict | None:
        """The settings of knob ``name`` (None for a knob without a space)."""
        return (self.__pydantic_extra__ or {}).get(name)

    def runnable(self, runtime: str) -> list[str]:
        """The chosen knobs that can build for ``runtime``."""
        return [name for name in getattr(self, self.choice)
                if knob(self.slot, name).runs_on(runtime)]

    def sample(self, trial: optuna.Trial, runtime: str = DEFAULT_RUNTIME,
               parameter: str | None = None) -> Strict:
        """A recipe of one of the chosen knobs that can build for ``runtime``, the knob sampled as
        ``parameter`` (by default ``<slot>.<method or scheme>``)."""
        name = suggest_choice(trial, parameter or f"{self.slot}.{KEYS[self.slot]}",
                              self.runnable(runtime))
        section = self.section(name)
        if section is None:
            return knob(self.slot, name).recipe()
        return section.sample(trial)  # type: ignore[attr-defined]

