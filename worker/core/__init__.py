"""Shared low-level helpers: logging, masking of secrets, cron expressions."""
