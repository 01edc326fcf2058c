"""The Redis side: the wire codec, key names and enqueue scripts, queue statistics, connections."""
