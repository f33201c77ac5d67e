"""The gateway's VPN health agent (issue 15, finding 7): judges ocserv and
nginx on the gateway itself, on positive evidence only, and tells the
failover watchdog over mutual TLS on the management address, a path no
internet user shares."""
