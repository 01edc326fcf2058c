"""The PostgreSQL side: the worker's pool, schema and migrations, the fleet's connection budget, dead letters."""
