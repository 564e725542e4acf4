"""The compact form of a statement, as sent: without its comments and runs of whitespace.

The statements' source keeps its comments; the server and psycopg need none of them.
psycopg converts a statement's `%(name)s` placeholders at every execution unless it is at
most 4,096 bytes long (then the conversion is cached), and the server parses it whole.
"""

from __future__ import annotations


def compact(statement: str) -> str:
    """`statement` without `--` comments, each run of whitespace one space, outside quotes."""
    parts: list[str] = []
    index, end = 0, len(statement)
    while index < end:
        char = statement[index]
        if char in "'\"":  # a literal or a quoted name, kept as it is
            close = statement.index(char, index + 1)
            while statement.startswith(char, close + 1):  # a doubled quote inside it
                close = statement.index(char, close + 2)
            parts.append(statement[index : close + 1])
            index = close + 1
        elif statement.startswith("--", index):
            newline = statement.find("\n", index)
            index = end if newline < 0 else newline
        elif char.isspace():
            index += 1
            if parts and parts[-1] != " ":
                parts.append(" ")
        else:
            parts.append(char)
            index += 1
    return "".join(parts).strip()
