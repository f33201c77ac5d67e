"""The B/S application the gateway's portal publishes."""
