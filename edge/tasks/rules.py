"""What a zone requires of the people in it: a hard hat (of some colours), workwear (of some
colours, or reflective), and which rule a person breaks.

A :class:`Requirement` judges the subjects of :class:`edge.tasks.compliance.SubjectDetector`
(people with their status and the classname seen on them), vectorized over a frame:

- a ``violation`` subject breaks it (no hat / no workwear: ``"hardhat required; saw
  no_hat"``);
- a ``compliant`` subject breaks it when the colour seen is not allowed
  (``"hardhat colour must be one of red, white; saw yellow_hat"``);
- a ``cannot_tell`` subject never does.

Colour names: hard hats ``red``, ``white``, ``blue``, ``yellow``, ``other`` (``red_hat``
etc. also accepted); workwear ``light``, ``blue``, ``red``, ``dark``, ``yellow``, ``other``.
``reflective`` workwear means hi-vis colour: the ``yellow`` class, which includes
fluorescent orange (:data:`edge.tasks.colour.WORKWEAR_COLOURS`); the models see colour,
not retroreflective tape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.tasks.compliance import CLASSNAME, COMPLIANT, REASON, REASONS, STATUS, STATUSES, VIOLATION
from edge.types import BoolArray, Detections

__all__ = [
    "HAT_COLOUR_NAMES",
    "REFLECTIVE_COLOURS",
    "WORKWEAR_COLOUR_NAMES",
    "AttrValue",
    "Requirement",
    "hat_colour",
    "workwear_colour",
]

RuleKind = Literal["hardhat", "workwear"]
AttrValue = str | int | float | bool

HAT_COLOUR_NAMES: tuple[str, ...] = ("red", "white", "blue", "yellow", "other")
WORKWEAR_COLOUR_NAMES: tuple[str, ...] = ("light", "blue", "red", "dark", "yellow", "other")
REFLECTIVE_COLOURS: tuple[str, ...] = ("yellow",)
"""Workwear colours that count as reflective (hi-vis yellow, fluorescent orange included)."""


def hat_colour(name: str) -> str:
    """``red`` or ``red_hat`` -> ``red``.

    Raises:
        ValueError: not a hat colour (the message lists the valid ones).
    """
    n = name.strip().lower()
    n = n[: -len("_hat")] if n.endswith("_hat") else n
    if n not in HAT_COLOUR_NAMES:
        raise ValueError(f"unknown hard-hat colour {name!r}; valid: {', '.join(HAT_COLOUR_NAMES)}")
    return n


def workwear_colour(name: str) -> str:
    """A workwear colour name, checked.

    Raises:
        ValueError: not a workwear colour (the message lists the valid ones).
    """
    n = name.strip().lower()
    if n not in WORKWEAR_COLOUR_NAMES:
        raise ValueError(
            f"unknown workwear colour {name!r}; valid: {', '.join(WORKWEAR_COLOUR_NAMES)}"
        )
    return n


@dataclass(frozen=True, kw_only=True)
class Requirement:
    """What one zone requires.

    Attributes:
        kind: ``hardhat`` or ``workwear``.
        colours: allowed colour names (see the module docstring); ``None``: any colour.
        reflective: workwear only: it must be hi-vis (:data:`REFLECTIVE_COLOURS`).
    """

    kind: RuleKind
    colours: tuple[str, ...] | None = None
    reflective: bool = False

    def __post_init__(self) -> None:
        check = hat_colour if self.kind == "hardhat" else workwear_colour
        if self.colours is not None:
            if not self.colours:
                raise ValueError("colours must not be empty (omit it for any colour)")
            checked = tuple(dict.fromkeys(check(c) for c in self.colours))
            object.__setattr__(self, "colours", checked)
        if self.reflective and self.kind != "workwear":
            raise ValueError("reflective applies to workwear only")
        if (
            self.reflective
            and self.colours is not None
            and not set(self.colours) & set(REFLECTIVE_COLOURS)
        ):
            raise ValueError(
                f"reflective workwear is {', '.join(REFLECTIVE_COLOURS)} (hi-vis); "
                f"colours {list(self.colours)} exclude it"
            )

    @property
    def allowed(self) -> frozenset[str] | None:
        """Allowed contract classnames (``red_hat``, ``yellow`` ...); ``None``: any."""
        names: Iterable[str] | None = self.colours
        if self.reflective:
            names = [c for c in (self.colours or REFLECTIVE_COLOURS) if c in REFLECTIVE_COLOURS]
        if names is None:
            return None
        if self.kind == "hardhat":
            return frozenset("other_hat" if c == "other" else f"{c}_hat" for c in names)
        return frozenset(names)

    def describe(self) -> str:
        """The rule in words, e.g. ``hardhat colour must be one of red, white``."""
        if self.reflective:
            return "reflective (hi-vis yellow/orange) workwear required"
        if self.colours is not None:
            return f"{self.kind} colour must be one of {', '.join(self.colours)}"
        return f"{self.kind} required"

    def broken(self, subjects: Detections, classnames: tuple[str, ...]) -> BoolArray:
        """(S,) bool: subjects that break the requirement (``classnames``: the subject
        classnames that ``data["classname"]`` indexes)."""
        n = len(subjects)
        if n == 0:
            return np.zeros((0,), dtype=np.bool_)
        status = subjects.data[STATUS]
        out = status == VIOLATION
        allowed = self.allowed
        if allowed is not None:
            ok_ids = np.array([i for i, c in enumerate(classnames) if c in allowed], np.int16)
            seen = subjects.data[CLASSNAME]
            out |= (status == COMPLIANT) & ~np.isin(seen, ok_ids)
        return np.asarray(out, dtype=np.bool_)

    def explain(
        self, subjects: Detections, i: int, classnames: tuple[str, ...]
    ) -> Mapping[str, AttrValue]:
        """Event attributes for subject ``i``: ``compliance`` (its status),
        ``compliance_reason``, ``classname`` (seen; ``""``: nothing) and, when it breaks
        the requirement, ``rule`` (``"<rule>; saw <classname>"``) and ``compliance`` is
        ``violation``."""
        status = int(subjects.data[STATUS][i])
        cls = int(subjects.data[CLASSNAME][i])
        seen = classnames[cls] if cls >= 0 else ""
        attrs: dict[str, AttrValue] = {
            "compliance": STATUSES[status],
            "compliance_reason": REASONS[int(subjects.data[REASON][i])],
            "classname": seen,
        }
        if bool(self.broken(subjects[i], classnames)[0]):
            if status == VIOLATION:
                attrs["rule"] = f"{self.kind} required; saw {seen or 'nothing'}"
            else:
                attrs["rule"] = f"{self.describe()}; saw {seen}"
                attrs["compliance"] = STATUSES[VIOLATION]
                attrs["compliance_reason"] = "colour_not_allowed"
        return attrs
