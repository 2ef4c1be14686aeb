-- TimescaleDB provides time_bucket() itself; the plain branch defines a compatible one
-- (see plain/0006_grafana_compat.sql). Nothing to do here; the number keeps both plans aligned.
SELECT 1;
