"""One SFTP session as a user's machine runs it, with OpenSSH's sftp: the
password through SSH_ASKPASS from a file of this run only, the service's
host key pinned. Puts a file into /shared, reads it back, and lists where
the session starts and what its root holds. Prints JSON: "outcome"
(logged in, refused, unreachable), and for a login "start", "root" and
"read_back" (the file came back the same). The user, password, address,
host key and file content come on standard input as JSON, never on a
command line.

    python3 -c "$(cat sftp_session.py)"
"""
import json
import os
import subprocess
import sys
import tempfile


def main():
    options = json.loads(sys.stdin.read())
    with tempfile.TemporaryDirectory() as work:
        def write(name, content, mode=0o600):
            path = os.path.join(work, name)
            with open(path, "w", opener=lambda p, f: os.open(p, f, 0o600)) as out:
                out.write(content)
            os.chmod(path, mode)
            return path

        write("password", options["password"] + "\n")
        askpass = write("askpass", '#!/bin/sh\nexec cat "${0%/*}/password"\n', 0o700)
        known = write("known_hosts", f"{options['address']} {options['host_key']}\n")
        # A file the user shares with the group (sftp asks for its mode).
        upload = write("upload", options["content"], 0o660)
        back = os.path.join(work, "back")
        name = options["name"]
        commands = f"put {upload} /shared/{name}\nget /shared/{name} {back}\npwd\nls -1 /\n"
        run = subprocess.run(
            ["sftp", "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
             "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5", "-o", "NumberOfPasswordPrompts=1",
             "-o", "PreferredAuthentications=password", f"{options['user']}@{options['address']}"],
            input=commands, capture_output=True, text=True, timeout=60,
            env={"PATH": os.environ["PATH"], "SSH_ASKPASS": askpass, "SSH_ASKPASS_REQUIRE": "force"})
        if "Permission denied" in run.stderr:
            result = {"outcome": "refused"}
        elif "Connected to" not in run.stdout + run.stderr and "sftp>" not in run.stdout:
            result = {"outcome": "unreachable", "why": run.stderr.strip()[-300:]}
        else:
            # sftp echoes each command ("sftp> ..."), then its output.
            lines = run.stdout.splitlines()
            start = [line.split(": ", 1)[1] for line in lines if line.startswith("Remote working directory: ")]
            listed = lines[next((i + 1 for i, line in enumerate(lines) if line.startswith("sftp> ls")), len(lines)):]
            root = sorted(line.strip().strip("/") for line in listed if line.strip())
            read_back = os.path.exists(back) and open(back).read() == options["content"]
            result = {"outcome": "logged in", "start": start[0] if start else None, "root": root,
                      "read_back": read_back}
    print(json.dumps(result))


main()
