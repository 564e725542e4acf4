"""Production topologies: PgBouncer, failover to a standby, many worker hosts."""
