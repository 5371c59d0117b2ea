"""MQTT ingest: decode, validate, batch and COPY device messages into PostgreSQL."""
