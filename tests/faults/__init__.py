"""The fault suite (F1 to F16): real worker processes, real signals, real outages through a TCP proxy."""
