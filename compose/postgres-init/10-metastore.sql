-- The Hive metastore's own database beside the `sparkmaker` one (prediction log).
-- Runs once, when the postgres-data volume is initialized.
CREATE DATABASE metastore;
