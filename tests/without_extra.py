"""The check that `import dawdle` works without an optional extra, in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def run_without(module: str, program: str, *, named: str | None = None) -> str:
    """The output of `program`, run after `import dawdle, dawdle._cli` without `module`.

    `module` cannot be imported, as without its extra. Fails if importing them imported a
    module whose name contains `named` (`module` if None).
    """
    script = (
        "import sys\n"
        f"sys.modules[{module!r}] = None\n"
        "import dawdle, dawdle._cli\n"
        f"assert not [m for m in sys.modules if {named or module!r} in m and sys.modules[m]]\n"
        f"{program}"
    )
    done = subprocess.run(  # noqa: S603 (our arguments)
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout
