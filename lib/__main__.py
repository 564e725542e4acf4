"""`python -m dawdle`: the `dawdle` command."""

from __future__ import annotations

from dawdle._cli import main

raise SystemExit(main())
