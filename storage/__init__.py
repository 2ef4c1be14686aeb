"""Storage: the PostgreSQL / TimescaleDB schema and its tools.

Owns: the tables of docs/contracts.md, the versioned SQL migrations (`storage/migrations`,
with `plain/` and `timescale/` branches chosen per database), daily `readings` partitions,
the incremental `readings_hourly` / `readings_daily` rollups, the roles and city-scoped
row-level security, the Hive-partitioned Parquet archive and a fast Arrow read path.

Public API (signatures other components rely on):
- `storage.migrate.migrate(conninfo) -> list[str]`
- `storage.partitions.ensure_partitions(conn, start, end) -> int`
- `storage.rollups.refresh_rollups(conn) -> int`
- `storage.archive.export_parquet(conninfo, start, end, out_dir)`
- `storage.arrow.read_readings(conninfo, start, end, cities=None, quantities=None)`

May import: psycopg, pyarrow, `gateway.schema`, `kota_cli.errors`. Must not import the rest of
`gateway`, nor `ingest` or `indicators`. See docs/storage.md.
"""
