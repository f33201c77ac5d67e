"""AAA: FreeRADIUS's password check against the user database and its
authorization answer per NAS, run inside FreeRADIUS by rlm_python3."""
