"""Device auto-login (seed 002): what a device and the registration
service say to each other."""
