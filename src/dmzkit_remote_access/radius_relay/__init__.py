"""dmzkit-radius-relay: signs, for a NAS that cannot, what it asks AAA.

Debian 12's RADIUS clients send Access-Requests without a
Message-Authenticator (radcli 1.2.11, under ocserv, adds one for EAP only;
pam_radius_auth 2.0.0 never does) and do not check one in the answer, so AAA,
which requires it of every client (BlastRADIUS, CVE-2024-3596), drops them.
The relay listens on the loopback for the NAS on its own host, with a secret
of that host only; it asks AAA with the host's own secret, each request
signed with a Message-Authenticator and the password hidden afresh, and hands
back only answers whose Response Authenticator and Message-Authenticator are
right and that come from AAA's address. It passes PAP and accounting; it
never looks inside an answer beyond what makes it authentic.
"""
