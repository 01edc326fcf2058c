"""Operator tools: the command line, status and inspect, the dashboard, the supervisor, seeding."""
