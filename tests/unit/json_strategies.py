"""Hypothesis strategies shared by the unit tests (imported as ``json_strategies``)."""

from __future__ import annotations

from hypothesis import strategies as st

# Any JSON value: what a forged record in etcd can hold.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 70), max_value=1 << 70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=20,
)
