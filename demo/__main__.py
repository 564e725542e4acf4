"""`python -m demo`: run the demo (see `python -m demo --help`)."""

from __future__ import annotations

from demo.run import main

raise SystemExit(main())
