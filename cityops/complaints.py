"""Storing a hotline complaint: the one write path shared by MQTT ingest and the HTTP API."""

from __future__ import annotations

# A complaint is stored once per complaint_id: a repeat (an MQTT redelivery, a hotline system
# posting twice) returns no row, so the caller knows it was not new.
INSERT_COMPLAINT_SQL = """
INSERT INTO complaints (complaint_id, received_at, category, area_code, address, lat, lon,
                        device_id, text, status, source)
VALUES (%(complaint_id)s, %(received_at)s, %(category)s, %(area_code)s, %(address)s, %(lat)s,
        %(lon)s, %(device_id)s, %(text)s, %(status)s, %(source)s)
ON CONFLICT (complaint_id) DO NOTHING
RETURNING complaint_id
"""
