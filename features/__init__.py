"""Feature pipeline: raw loans CSV -> validated, point-in-time features as Parquet and Hive tables."""
