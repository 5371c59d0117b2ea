"""Simulators: field-hardware stand-ins with fault injection and ground truth."""
