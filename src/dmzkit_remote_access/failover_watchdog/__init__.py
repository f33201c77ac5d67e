"""The VNC backup host's failover watchdog (seed 000's detection/control daemon).

It watches the SSL VPN gateway from the standby NIC, takes the gateway's
address (the VIP) when the gateway is dead, and gives it back when the
gateway is healthy again. The design and its goals: docs/failover.md.
"""
