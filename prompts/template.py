"""A named, versioned prompt template: prompt text is data, rendered with `string.Template`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from string import Template


@dataclass(frozen=True)
class PromptTemplate:
    """A system/user message pair with `$name` placeholders.

    `string.Template` is used rather than `str.format` because the prompts quote JSON, whose
    braces would otherwise need escaping everywhere.
    """

    name: str
    system: str
    user: str
    version: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(f"{self.name}\0{self.system}\0{self.user}".encode()).hexdigest()
        object.__setattr__(self, "version", digest[:12])

    def render(self, **values: str) -> tuple[str, str]:
        """Return (system, user) with every placeholder filled; a missing value is an error."""
        return Template(self.system).substitute(values), Template(self.user).substitute(values)
