"""Hypothesis strategies for dawdle.backoff's strategies, shared by the property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from dawdle.backoff import Constant, DecorrelatedJitter, Exponential, Linear

seconds = st.floats(min_value=0.001, max_value=1e3)
caps = st.floats(min_value=1e3, max_value=1e9)
jitters = st.one_of(st.sampled_from(["none", "full", "equal"]), st.floats(0.01, 1.0))
backoffs = st.one_of(
    st.builds(Constant, seconds, jitter=jitters, max_delay=st.one_of(st.none(), caps)),
    st.builds(Linear, seconds, seconds, jitter=jitters, max_delay=caps),
    st.builds(Exponential, seconds, st.floats(1.0, 10.0), jitter=jitters, max_delay=caps),
    st.builds(DecorrelatedJitter, seconds, caps),
)
