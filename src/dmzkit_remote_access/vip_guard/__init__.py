"""The gateway's side of the VIP: claim the service address only when nobody holds it.

The failover watchdog on the VNC backup host takes the VIP over when the
gateway dies and hands it back when the gateway is healthy again; this guard
is what makes the gateway wait for that handback instead of adding the
address blindly at boot. Run by the `gateway_vip` role as
`dmzkit-gateway-vip.service`; the design: docs/failover.md.
"""
