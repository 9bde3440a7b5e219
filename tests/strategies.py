"""Hypothesis strategies more than one test module needs.

``json_values`` is the one definition of "any JSON value". Callers narrow it where their
subject needs that, and say so at the call: the leaves (``scalars``), the object keys
(``keys``) and the size.
"""

from __future__ import annotations

from hypothesis import strategies as st

# Every kind of JSON scalar, with floats that JSON can carry (no NaN, no infinities).
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)


def json_values(
    *,
    scalars: st.SearchStrategy[object] = JSON_SCALARS,
    keys: st.SearchStrategy[str] | None = None,
    max_size: int = 4,
    max_leaves: int = 12,
) -> st.SearchStrategy[object]:
    """Nested lists and objects of ``scalars``, at most ``max_size`` items per container
    and ``max_leaves`` scalars in all; object keys from ``keys`` (default: any text)."""
    keys = st.text() if keys is None else keys
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=max_size)
        | st.dictionaries(keys, children, max_size=max_size),
        max_leaves=max_leaves,
    )
