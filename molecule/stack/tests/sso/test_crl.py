"""The IdP and the SAML proxy share idp1 and one CRL fetching job: a newer
CRL from the CA restarts both, so both check certificates against it."""
from __future__ import annotations

import re

CA = "ca1"
IDP = "idp1"
CONSUMERS = ("dmzkit-sso-idp.service", "dmzkit-sso-proxy.service")
RESIGN = "dmzkit-crl-resign.service"
FORCE_DROP_IN = f"/run/systemd/system/{RESIGN}.d/force.conf"


def resign_now(ca) -> None:
    """Run the CA's CRL job once with --force (it otherwise waits for half
    the CRL's validity), through a runtime drop-in removed afterwards."""
    shown = ca.run_test(f"systemctl show -p ExecStart --value {RESIGN}").stdout
    argv = re.search(r"argv\[\]=(.+?) ;", shown).group(1)
    ca.run_test(f"mkdir -p /run/systemd/system/{RESIGN}.d")
    ca.run_test(f"printf '[Service]\\nExecStart=\\nExecStart=%s --force\\n' '{argv}' > {FORCE_DROP_IN}")
    try:
        ca.run_test("systemctl daemon-reload")
        ca.run_test(f"systemctl start {RESIGN}")
    finally:
        ca.run(f"rm -f {FORCE_DROP_IN}")
        ca.run("systemctl daemon-reload")


def invocations(idp) -> list[str]:
    return [idp.run_test(f"systemctl show -p InvocationID --value {unit}").stdout.strip() for unit in CONSUMERS]


def test_a_newer_crl_restarts_the_idp_and_the_proxy(lab):
    ca, idp = lab[CA].host, lab[IDP].host
    registered = idp.run_test("ls /etc/dmzkit-pki/reload.d").stdout.split()
    assert set(CONSUMERS) <= set(registered)
    before = invocations(idp)
    crl_before = idp.file("/etc/dmzkit-pki/crl.pem").content_string
    resign_now(ca)
    idp.run_test("systemctl start dmzkit-crl-fetch.service")
    assert idp.file("/etc/dmzkit-pki/crl.pem").content_string != crl_before
    after = invocations(idp)
    assert all(old != new for old, new in zip(before, after)), (before, after)
    assert idp.run(f"systemctl is-active {' '.join(CONSUMERS)}").stdout.split() == ["active", "active"]
    # Every other verifier fetches it too, as its timer would: the lab is
    # left as a converge leaves it.
    for other in lab:
        if other.name not in (CA, IDP) and other.host.file("/etc/systemd/system/dmzkit-crl-fetch.service").exists:
            other.host.run_test("systemctl start dmzkit-crl-fetch.service")
