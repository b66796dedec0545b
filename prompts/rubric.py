"""A task's own rubric: the aspects an answer is judged on, their weights and when they apply.

A rubric file (TOML or JSON) replaces the built-in aspect catalogue (`mode = "replace"`) or
extends it (`mode = "extend"`: the 14 built-in aspects stay, offered to the selector with weight
1, and same-named file aspects override them). Each aspect says when it applies:

- `"always"`: judged on every answer, without asking the selector;
- `{categories = ["coding", ...]}`: judged on every query of those categories;
- `"selector"` (the default): offered to the selector, which picks per query as in DRPO.

The rubric's hash keys the selector's choice cache and the selector's and judge's replies.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from drpo.prompts.aspects import ASPECT_DEFINITIONS, canonical_name
from drpo.state.settings import ConfigError
from drpo.state.types import Aspect, Category, Query


class RubricError(ConfigError):
    """A rubric file is missing or invalid; the message is one line naming the file."""


class CategoryRule(BaseModel):
    """Judge an aspect on every query of these categories."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    categories: tuple[Category, ...] = Field(min_length=1)


Applies = Literal["always", "selector"] | CategoryRule


class RubricAspect(BaseModel):
    """One aspect of a rubric: its definition, weight, and when it is judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=40)
    definition: str = Field(min_length=1, max_length=300)
    weight: float = Field(default=1.0, ge=0.0, allow_inf_nan=False)
    applies: Applies = "selector"

    @field_validator("name", "definition")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()

    def as_aspect(self) -> Aspect:
        """The aspect as the judge and the selector see it."""
        return Aspect(name=self.name, definition=self.definition, weight=self.weight)

    def fixed_for(self, query: Query) -> bool:
        """Judged on this query without the selector's say."""
        if isinstance(self.applies, CategoryRule):
            return query.category in self.applies.categories
        return self.applies == "always"


class Rubric(BaseModel):
    """The aspects a run is judged on: drpo's own, or a user's that replace or extend them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mode: Literal["replace", "extend"] = "replace"
    aspects: tuple[RubricAspect, ...] = Field(min_length=1)

    @field_validator("aspects")
    @classmethod
    def _unique_names(cls, aspects: tuple[RubricAspect, ...]) -> tuple[RubricAspect, ...]:
        seen: set[str] = set()
        for aspect in aspects:
            folded = aspect.name.lower()
            if folded in seen:
                raise ValueError(f"duplicate aspect name {aspect.name!r}")
            seen.add(folded)
        return aspects

    @property
    def hash(self) -> str:
        """A short hash of the rubric's content (part of the judge's cache key)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def is_builtin(self) -> bool:
        """Whether this is drpo's built-in rubric."""
        return self == BUILTIN_RUBRIC

    def fixed_for(self, query: Query) -> tuple[Aspect, ...]:
        """The aspects judged on `query` whatever the selector picks."""
        return tuple(a.as_aspect() for a in self.aspects if a.fixed_for(query))

    def selectable(self) -> tuple[Aspect, ...]:
        """The aspects the selector chooses from."""
        return tuple(a.as_aspect() for a in self.aspects if a.applies == "selector")

    def lookup(self, name: str) -> Aspect | None:
        """The selectable aspect a selector's spelling of `name` refers to, if any."""
        folded = canonical_name(name).lower().replace(" ", "-")
        for aspect in self.selectable():
            if aspect.name.lower().replace(" ", "-") == folded:
                return aspect
        return None


BUILTIN_RUBRIC = Rubric(
    aspects=tuple(
        RubricAspect(name=name, definition=definition)
        for name, definition in ASPECT_DEFINITIONS.items()
    )
)


def resolve(rubric: Rubric) -> Rubric:
    """An `extend` rubric as the built-in catalogue plus (or overridden by) its own aspects."""
    if rubric.mode == "replace":
        return rubric
    own = {a.name.lower(): a for a in rubric.aspects}
    kept = [a for a in BUILTIN_RUBRIC.aspects if a.name.lower() not in own]
    return Rubric(mode="replace", aspects=(*kept, *rubric.aspects))


def load_rubric(path: Path) -> Rubric:
    """Read and validate a rubric file (.toml or .json), resolved against the built-in catalogue."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise RubricError(f"rubric file not found: {path}") from None
    except OSError as exc:
        raise RubricError(f"rubric file {path} cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
        data = json.loads(text) if Path(path).suffix.lower() == ".json" else tomllib.loads(text)
    except UnicodeDecodeError:
        raise RubricError(f"rubric file {path} is not UTF-8 text") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RubricError(f"rubric file {path} is not valid {_kind(path)}: {exc}") from None
    return parse_rubric(data, str(path))


def parse_rubric(data: object, source: str) -> Rubric:
    """Validate rubric data (from a file or a run); `source` names it in the error."""
    try:
        return resolve(Rubric.model_validate(data))
    except ValidationError as exc:
        raise RubricError(f"rubric file {source}: {_first_error(exc, data)}") from None


def _kind(path: Path) -> str:
    return "JSON" if Path(path).suffix.lower() == ".json" else "TOML"


def _first_error(exc: ValidationError, data: object) -> str:
    first = exc.errors()[0]
    location = [str(part) for part in first["loc"]]
    where = _aspect_label(location, data)
    if "applies" in location:
        return (
            f'{where.strip() or "aspect"}: \'applies\' must be "always", "selector" or '
            f"{{categories = [...]}} with known categories"
        )
    message = str(first["msg"]).removeprefix("Value error, ")
    if where:
        return f"{where}{'.'.join(location[2:])}: {message}"
    return f"{'.'.join(location) or 'rubric'}: {message}"


def _aspect_label(location: list[str], data: object) -> str:
    """ "aspect 'Name' " for an error inside one aspect, so the user finds it in the file."""
    if len(location) < 2 or location[0] != "aspects" or not location[1].isdigit():
        return ""
    index = int(location[1])
    aspects = data.get("aspects") if isinstance(data, dict) else None
    if isinstance(aspects, list) and index < len(aspects) and isinstance(aspects[index], dict):
        name = aspects[index].get("name")
        if isinstance(name, str):
            return f"aspect {name!r} "
    return f"aspect {index + 1} "
