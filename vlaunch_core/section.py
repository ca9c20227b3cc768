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
        allow_inf_nan=False,  # no key means infinity or NaN; both break arithmetic later
    )

    def differs_from_default(self, name: str) -> bool:
        """Whether key `name` holds something other than its schema default.

        Cross-field rules use this rather than "was the key written": a resolved spec (every
        default written out, as `vlaunch validate` prints it) must validate again.
        """
        field = type(self).model_fields[name]
        default = field.get_default(call_default_factory=True)
        return bool(getattr(self, name) != default)
