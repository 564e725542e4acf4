"""The embedded PostgreSQL server: pgserver's binaries, run by dawdle, reachable by its owner only.

`EmbeddedServer(data_dir)` starts the server if needed (`ensure_running`), reports on it
(`status`) and stops it (`stop`). Its Unix socket lives in a directory dawdle makes 0700
for each start, the socket itself is 0700, and it listens on no TCP address. As root it
runs as the system user `dawdle-postgres` (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

from dawdle._embedded._account import SERVICE_USER as SERVICE_USER
from dawdle._embedded._account import Account as Account
from dawdle._embedded._binaries import bundled_binaries as bundled_binaries
from dawdle._embedded._server import EmbeddedServer as EmbeddedServer
from dawdle._embedded._server import ServerStatus as ServerStatus
