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


def problem_params(section: dict[str, Any]) -> dict[str, Any]:
    """Validate a ``problem`` section against its kind; return it with defaults filled in."""
    from dmtl.config import parse_value

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
        if isinstance(value, str) and not isinstance(default, str):
            value = parse_value(value)
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"problem.{key} must be {type(default).__name__}, got {value!r}")
        out[key] = value
    return out


def build(section: dict[str, Any], n_nodes: int, streams: RunStreams) -> Problem:
    """Build the problem a (validated) ``problem`` section describes."""
    params = problem_params(section)
    return PROBLEMS[params.pop("kind")].builder(params, n_nodes, streams)
