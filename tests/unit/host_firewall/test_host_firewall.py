"""The host firewall's templates and loader against nft itself.

`check` runs `nft --check`, which changes nothing; `load` runs only inside a
private network namespace (unshare --net), whose tables vanish with it. Both
need root (CAP_NET_ADMIN); without it the tests that run nft are skipped.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jinja2
import pytest
import yaml

ROLE = Path(__file__).resolve().parents[3] / "roles" / "host_firewall"
LOADER = ROLE / "files" / "dmzkit-host-firewall"
ROLE_VARS = yaml.safe_load((ROLE / "vars" / "main.yml").read_text(encoding="utf-8"))

GATEWAY = {
    "input": ['ip daddr 198.18.1.10 tcp dport 443 accept comment "VPN (TLS) and portal"', "", None],
    "forward": ['iifname "vpns*" ip daddr { 198.18.2.0/24 } accept'],
    "postrouting": ['ip saddr 198.18.8.0/24 oifname != "vpns*" masquerade'],
}
IPSEC = {"input": ["ip daddr 198.18.1.10 udp dport { 500, 4500 } accept", "ip daddr 198.18.1.10 meta l4proto esp accept"]}
BROKEN = {"input": ["tcp dport 443 acept"]}

needs_nft = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft --check needs root")


def render(template: str, **variables: Any) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"), trim_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: "#\n# " + text + "\n#"
    return env.get_template(template).render(ansible_managed="Ansible managed", **ROLE_VARS, **variables)


def contribution(owner: str, rules: dict[str, list[str | None]]) -> str:
    return render("rules.nft.j2", host_firewall_owner=owner, host_firewall_rules=rules)


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    """A configuration directory holding the base table and no contribution."""
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "table.nft").write_text(render("table.nft.j2"), encoding="utf-8")
    return tmp_path


def add(conf: Path, owner: str, rules: dict[str, list[str | None]]) -> Path:
    path = conf / "rules.d" / f"{owner}.nft"
    path.write_text(contribution(owner, rules), encoding="utf-8")
    return path


def candidate(tmp_path: Path, text: str) -> Path:
    """A file outside the configuration, as Ansible's validate sees it."""
    path = tmp_path.parent / f"{tmp_path.name}-candidate"
    path.write_text(text, encoding="utf-8")
    return path


def loader(*args: str | Path, netns: bool = False) -> subprocess.CompletedProcess[str]:
    command = [str(LOADER), *map(str, args)]
    return subprocess.run(["unshare", "--net", *command] if netns else command,
                          capture_output=True, text=True, check=False, timeout=30)


def test_a_contribution_holds_its_rules_only_and_leaves_out_the_empty_ones() -> None:
    text = contribution("ssl_vpn_gateway", GATEWAY)
    body = text[text.index("table inet dmzkit_host {"):]
    assert "ssl_vpn_gateway's rules" in text
    assert body.count("chain ") == 3 and "chain output" not in body  # no empty chain
    assert "hook" not in body and "policy" not in body  # the base owns those
    assert "None" not in body and "\t\t\n" not in body
    assert body.rstrip().endswith("}")


@needs_nft
def test_the_base_alone_and_with_the_roles_contributions_passes(conf: Path) -> None:
    assert loader("check", conf).returncode == 0
    add(conf, "ssl_vpn_gateway", GATEWAY)
    add(conf, "ipsec_gateway", IPSEC)
    result = loader("check", conf)
    assert result.returncode == 0, result.stderr


@needs_nft
def test_a_broken_contribution_fails_the_check_naming_its_line(conf: Path, tmp_path: Path) -> None:
    add(conf, "ssl_vpn_gateway", GATEWAY)
    broken = candidate(tmp_path, contribution("ipsec_gateway", BROKEN))
    result = loader("check", conf, broken, "rules.d/ipsec_gateway.nft")  # a new contribution is checked too
    assert result.returncode != 0
    assert f"{broken}:" in result.stderr and "acept" in result.stderr


@needs_nft
def test_the_candidate_stands_in_for_the_file_it_replaces(conf: Path, tmp_path: Path) -> None:
    add(conf, "ssl_vpn_gateway", BROKEN)  # a broken file on disk, edited by hand
    assert loader("check", conf).returncode != 0
    repaired = candidate(tmp_path, contribution("ssl_vpn_gateway", GATEWAY))
    result = loader("check", conf, repaired, "rules.d/ssl_vpn_gateway.nft")
    assert result.returncode == 0, result.stderr


@needs_nft
def test_a_new_base_is_checked_with_every_contribution(conf: Path, tmp_path: Path) -> None:
    base = candidate(tmp_path, render("table.nft.j2"))
    broken = add(conf, "ssl_vpn_gateway", BROKEN)
    result = loader("check", conf, base, "table.nft")
    assert result.returncode != 0 and f"{broken}:" in result.stderr
    add(conf, "ssl_vpn_gateway", GATEWAY)
    result = loader("check", conf, base, "table.nft")
    assert result.returncode == 0, result.stderr
    result = loader("check", conf, candidate(tmp_path, "table inet dmzkit_host {"), "table.nft")
    assert result.returncode != 0, "the candidate, not the base on disk, was checked"


@pytest.mark.parametrize("args", [[], ["check"], ["load"], ["unload", "/etc"], ["check", "/etc", "/tmp/x", "../x.nft"],
                                  ["check", "/etc", "/tmp/x"]])
def test_usage_errors(args: list[str]) -> None:
    result = loader(*args)
    assert result.returncode == 2 and "usage:" in result.stderr


@needs_nft
def test_a_load_replaces_the_table_whole_and_a_failed_one_changes_nothing(conf: Path) -> None:
    add(conf, "ssl_vpn_gateway", GATEWAY)
    add(conf, "ipsec_gateway", IPSEC)
    # Two loads (a reload replaces the table, never doubles it), a listing,
    # a broken contribution that must not load, and a listing again.
    script = (f"{LOADER} load {conf} && {LOADER} load {conf} && nft list ruleset && echo ==== "
              f"&& echo 'tcp dport 1 acept' > {conf}/rules.d/zz.nft && ! {LOADER} load {conf} 2>/dev/null "
              "&& nft list ruleset")
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    loaded, after_failure = result.stdout.split("====\n")
    assert loaded == after_failure
    assert loaded.count("table inet dmzkit_host") == 1 and loaded.count("masquerade") == 1
    input_chain = loaded[loaded.index("chain input"):loaded.index("chain forward")]
    # The base's rules first, then each contribution's in name order.
    assert input_chain.index("ct state invalid drop") < input_chain.index("esp") < input_chain.index("dport 443")


@needs_nft
def test_a_failed_load_at_boot_shuts_the_host_and_says_so(conf: Path) -> None:
    """With no table in force (a boot), a ruleset that does not load must not
    leave the host unfiltered: the base alone is loaded and the load fails."""
    add(conf, "ssl_vpn_gateway", GATEWAY)
    (conf / "rules.d" / "zz.nft").write_text("tcp dport 1 acept\n", encoding="utf-8")
    script = f"! {LOADER} load {conf} && nft list ruleset"
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "loading the base table alone" in result.stderr
    assert "policy drop" in result.stdout and "dport 443" not in result.stdout


@needs_nft
def test_stale_tells_files_the_kernel_does_not_have(conf: Path, tmp_path: Path) -> None:
    """A run that wrote a file and died before loading it: the next run must
    see the difference and load, although no file changes then."""
    loaded = tmp_path / "loaded"
    script = (f"sed 's|^LOADED=.*|LOADED={loaded}|' {LOADER} > {tmp_path}/loader && "
              f"L='sh {tmp_path}/loader'; "
              f"$L stale {conf}; echo fresh=$?; $L load {conf}; $L stale {conf}; echo loaded=$?; "
              f"echo 'tcp dport 22 accept' > {conf}/rules.d/new.nft; $L stale {conf}; echo written=$?")
    result = subprocess.run(["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.stdout.split() == ["fresh=0", "loaded=1", "written=0"], result.stderr
