"""Sessions: `tests` (unit + durability, asyncio and trio), `topologies`, `perf`, `lint`."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")
LINT_DEPS = nox.project.dependency_groups(PYPROJECT, "lint")
PERF_DEPS = nox.project.dependency_groups(PYPROJECT, "perf")
PGBOUNCER = "/usr/sbin/pgbouncer"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the unit and durability suites on both runtimes, and the perf sanity floors."""
    session.install(".[trio,embedded]", *TEST_DEPS)
    session.run("pytest", "tests/unit", "tests/durability", "tests/perf", *session.posargs)


@nox.session
def topologies(session: nox.Session) -> None:
    """PgBouncer (both modes), failover to a promoted standby, 8 worker hosts (under 10 min).

    Installs PgBouncer where missing (as root, with apt-get); every server and pooler is
    started and stopped by the tests. The fleet runs $DAWDLE_FLEET_SECONDS (60); then the
    cost of unprepared statements is printed.
    """
    if not Path(PGBOUNCER).exists():
        session.run("apt-get", "install", "-y", "pgbouncer", external=True)
    session.install(".[trio,embedded]", *TEST_DEPS)
    session.run("pytest", "tests/topologies", "-s", *session.posargs)
    session.run("python", "-m", "tests.topologies.prepared_cost", "", "1000")


@nox.session
def soak(session: nox.Session) -> None:
    """Work a flaky stream on both runtimes for $DAWDLE_SOAK_SECONDS (600); check nothing leaks."""
    session.install(".[trio,embedded]", *TEST_DEPS)
    session.run("pytest", "tests/soak", "-m", "soak", "-s", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """Benchmark against Procrastinate (under 20 min; `nox -s perf -- --quick`: 2 to 4).

    Prints the table and the targets; writes JSON and charts to perf-results/ (`--output`).
    """
    session.install(".[trio,embedded]", *PERF_DEPS)
    session.run("python", "-m", "tests.perf.benchmark", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff (lint and format) on everything, mypy --strict on the package and on user programs."""
    session.install(".[trio,embedded]", *LINT_DEPS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # mypy reads the installed copy of lib/: it cannot follow the package-dir mapping in lib/.
    session.run("mypy", "--strict", "-p", "dawdle")
    # Programs as users write them must type-check; tests/typing/should_fail marks each typo'd
    # option with a `# type: ignore[code]`, which is an unused-ignore error if mypy accepts it.
    session.run("mypy", "--strict", "--warn-unused-ignores", "tests/typing")


@nox.session
def demo(session: nox.Session) -> None:
    """Work a mixed workload with live progress: `nox -s demo -- --backend trio --jobs 2000`."""
    session.install(".[trio,embedded]")
    session.run("python", "-m", "demo", *session.posargs)
