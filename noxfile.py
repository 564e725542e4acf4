"""Sessions: `tests` (unit + durability, both runtimes), `browser`, `topologies`, `perf`, `lint`."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
TEST_DEPS = nox.project.dependency_groups(PYPROJECT, "test")
LINT_DEPS = nox.project.dependency_groups(PYPROJECT, "lint")
PERF_DEPS = nox.project.dependency_groups(PYPROJECT, "perf")
BROWSER_DEPS = nox.project.dependency_groups(PYPROJECT, "browser")
CHROMIUM = Path("/usr/bin/chromium")
PGBOUNCER = Path("/usr/sbin/pgbouncer")


def apt_install(session: nox.Session, *packages: str) -> None:
    """Install Debian packages a session needs (CI runs as root, as this machine does)."""
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    session.run("apt-get", "update", external=True, env=env)
    session.run("apt-get", "install", "-y", *packages, external=True, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the unit and durability suites on both runtimes, and the perf sanity floors."""
    # otel: OpenTelemetryHooks' tests (the test group brings the SDK's in-memory exporters).
    session.install(".[trio,embedded,prometheus,otel,dashboard]", *TEST_DEPS)
    session.run("pytest", "tests/unit", "tests/durability", "tests/perf", *session.posargs)


@nox.session
def browser(session: nox.Session) -> None:
    """Drive a real dashboard and worker in Debian's headless Chromium (apt-installed if absent).

    Playwright's Python package drives /usr/bin/chromium; it downloads no browser. Screenshots
    go to browser-results/ (or $DAWDLE_SCREENSHOTS).
    """
    if not CHROMIUM.exists():
        apt_install(session, "chromium", "chromium-driver")
    session.env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    session.install(".[trio,embedded,dashboard]", *TEST_DEPS, *BROWSER_DEPS)
    session.run("pytest", "tests/browser", *session.posargs)


@nox.session
def topologies(session: nox.Session) -> None:
    """PgBouncer (both modes), failover to a promoted standby, 8 worker hosts (under 10 min).

    Installs PgBouncer where missing (as root, with apt-get); every server and pooler is
    started and stopped by the tests. The fleet runs $DAWDLE_FLEET_SECONDS (60); then the
    cost of unprepared statements is printed.
    """
    if not PGBOUNCER.exists():
        apt_install(session, "pgbouncer")
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
    session.install(".[trio,embedded,prometheus,dashboard]", *LINT_DEPS)
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
