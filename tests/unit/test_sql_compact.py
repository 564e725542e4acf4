"""The compact form of dawdle's statements: comments and whitespace go, quoted text stays."""

from __future__ import annotations

from dawdle._sql import FETCH_JOBS
from dawdle._sql.compact import compact


def test_comments_and_runs_of_whitespace_go() -> None:
    statement = """
    SELECT a,   b  -- the columns
      FROM t\t-- the table
     WHERE c = %(c)s
    """
    assert compact(statement) == "SELECT a, b FROM t WHERE c = %(c)s"


def test_quoted_text_is_kept_as_it_is() -> None:
    statement = """SELECT 'a  -- not a comment', 'it''s  here', "Odd  ""Name"" -- x"   FROM t"""
    assert compact(statement) == (
        """SELECT 'a  -- not a comment', 'it''s  here', "Odd  ""Name"" -- x" FROM t"""
    )


def test_the_claim_is_sent_compact() -> None:
    assert "--" not in FETCH_JOBS
    assert "  " not in FETCH_JOBS
    assert len(FETCH_JOBS) <= 4096  # psycopg caches the conversion of statements this short
