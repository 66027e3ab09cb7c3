"""Registry of problem kinds: ``problem.kind`` in a configuration names one of these builders.

A builder turns the ``problem`` section of a configuration into a :class:`dmtl.problem.Problem`. It
declares its parameters and their defaults; the configuration is checked against them, so every family
adds its problems in its own module without touching the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dmtl.errors import ConfigError
from dmtl.problem import Problem
from dmtl.seeding import RunStreams

__all__ = ["ProblemKind", "PROBLEMS", "register_problem", "problem_params", "build"]

Builder = Callable[[dict[str, Any], int, RunStreams], Problem]


@dataclass(frozen=True)
class ProblemKind:
    """A registered problem kind: its builder, parameters with defaults, and a one-line summary."""

    name: str
    builder: Builder
    defaults: dict[str, Any]
    summary: str


PROBLEMS: dict[str, ProblemKind] = {}


def register_problem(name: str, defaults: dict[str, Any], summary: str) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(params, n_nodes, streams) -> Problem`` as ``problem.kind=name``.

    ``defaults`` lists every accepted parameter; ``None`` means "no default, any type".
    """

    def deco(builder: Builder) -> Builder:
        PROBLEMS[name] = ProblemKind(name, builder, dict(defaults), summary)
        return builder

    return deco


# Parameters that kinds declare with a None default ("not set") still take one type when they are set;
# the defaults cannot say which, so the shared ones are named here: a wrong value would otherwise reach
# numpy or pathlib and end in a traceback instead of a message naming the field.
_OPTIONAL_TYPES: dict[str, type] = {"split_seed": int, "data_dir": str}
_MINIMUM: dict[str, int] = {"split_seed": 0}  # numpy refuses negative seeds


def problem_params(section: dict[str, Any], texts: dict[str, str] | None = None) -> dict[str, Any]:
    """Validate a ``problem`` section against its kind; return it with defaults filled in.

    ``texts`` maps field names to the raw command-line text they were given, if any: a string field
    keeps that text where it looked like a number (``problem.name=2024``).
    """
    from dmtl.config import parse_value

    texts = texts or {}
    kind = section.get("kind")
    if kind not in PROBLEMS:
        raise ConfigError(f"unknown problem.kind {kind!r}; known kinds: {', '.join(sorted(PROBLEMS))}")
    spec = PROBLEMS[kind]
    out: dict[str, Any] = {"kind": kind, **spec.defaults}
    for key, value in section.items():
        if key == "kind":
            continue
        if key not in spec.defaults:
            raise ConfigError(
                f"unknown field problem.{key} for problem.kind={kind}; its fields: {', '.join(spec.defaults)}"
            )
        default = spec.defaults[key]
        expected = type(default) if default is not None else _OPTIONAL_TYPES.get(key)
        if default is None and value is None:
            out[key] = None  # left unset
            continue
        if expected is str and key in texts and isinstance(value, (int, float)):
            value = texts[key]  # numeric-looking text for a string field stays text
        if isinstance(value, str) and expected is not str:
            value = parse_value(value)
        if expected is bool:
            ok = isinstance(value, bool)
        elif expected is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif expected is str:
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok and expected is not None:
            name = expected.__name__ + (" or null" if default is None else "")
            raise ConfigError(f"problem.{key} must be {name}, got {value!r}")
        if key in _MINIMUM and value < _MINIMUM[key]:
            raise ConfigError(f"problem.{key} must be >= {_MINIMUM[key]}, got {value!r}")
        out[key] = value
    return out


def build(section: dict[str, Any], n_nodes: int, streams: RunStreams) -> Problem:
    """Build the problem a (validated) ``problem`` section describes."""
    params = problem_params(section)
    return PROBLEMS[params.pop("kind")].builder(params, n_nodes, streams)
