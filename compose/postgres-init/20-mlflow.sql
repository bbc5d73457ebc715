-- MLflow's tracking and model registry database (the mlflow service). Runs once, when the
-- postgres-data volume is initialized; an existing volume gets it with: docker-compose down -v.
CREATE DATABASE mlflow;
