"""The running worker: lifecycle, arq functions, the execution policy, the consumer, leases, metrics, the endpoint."""
