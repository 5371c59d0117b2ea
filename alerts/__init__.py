"""Alerts and cases: rules, lifecycle, notifications and the closed loop."""
