"""Push-to-talk devices: the device simulator (a client of the sidecar's device protocol)."""
