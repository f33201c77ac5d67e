"""alice's headless Chromium on the external client (browser_sign_in.py,
copied there and run with her password on standard input)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

CLIENT = "client1"
PORTAL = "https://portal.lab.dmzkit.test/"
SECRETS = Path("/var/lib/dmzkit-lab/secrets")
DRIVER = Path(__file__).resolve().parents[4] / "lab/journeys/browser_sign_in.py"
SCREENSHOT = "/root/bs-sso.png"


def browser_sign_in(lab, hold_artifact: bool = False) -> dict:
    subprocess.run(["podman", "cp", str(DRIVER), f"{CLIENT}:/root/{DRIVER.name}"], check=True)
    password = (SECRETS / "sso_alice").read_text().split()[0]
    argv = ["timeout", "90", "python3", f"/root/{DRIVER.name}", PORTAL, "alice", SCREENSHOT]
    run = lab[CLIENT].run_with_input(argv + (["--hold-artifact"] if hold_artifact else []), password + "\n")
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def screenshot(to: Path) -> None:
    """Copy the last sign-in's screenshot off the client."""
    to.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["podman", "cp", f"{CLIENT}:{SCREENSHOT}", str(to)], check=True)
