-- Airflow's metadata database (the airflow service). Runs once, when the postgres-data volume is initialized.
CREATE DATABASE airflow;
