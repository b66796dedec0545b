"""The refusal detector, where the evaluation code and its users import it from.

The rules live in `drpo.nodes.refusal`, below the evaluation layer, because the search also
uses them: a proposed system prompt that itself refuses is rejected there.
"""

from drpo.nodes.refusal import OPENING_CHARS, RULES, is_refusal, refusal_rule

__all__ = ["OPENING_CHARS", "RULES", "is_refusal", "refusal_rule"]
