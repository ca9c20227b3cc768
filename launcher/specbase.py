"""The base class of every job-spec section: unknown keys are errors, never ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A strict spec section: extra keys are rejected (with "did you mean" in the report)."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
        use_attribute_docstrings=True,
    )

    def explicitly_set(self, name: str) -> bool:
        """Whether the user wrote this key (as opposed to taking the schema default)."""
        return name in self.model_fields_set
