"""Link-layer helpers shared by the services that move an address between hosts.

ARP probes and announcements (arp), IPv6 unsolicited neighbour advertisements
(ndp) and address/route changes over rtnetlink (netlink): raw sockets and
netlink only, so nothing has to be installed on the target for them.
"""
