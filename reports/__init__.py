"""Plan indicators, their observations and evaluation, and the monthly operations reports."""
