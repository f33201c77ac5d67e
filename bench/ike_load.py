"""IKE_SA setups from many clients behind one NAT, run on a branch-office
machine (by bench/collaboration.py): one charon per client, each on random
UDP ports of this one address (so the NAT in front gives each its own
port), already running with its own configuration under DIR/c<N>; this
loads each one's connection, then asks all of them at once to set up their
IKE_SA (no CHILD_SA: IKE alone is measured) and waits for every answer,
bounded by TIMEOUT. The figure is the time from the first request until the
last client is in, and each client's own time. Prints one JSON line.

    python3 -c "$(cat ike_load.py)" DIR CLIENTS TIMEOUT
"""
import json
import os
import subprocess
import sys
import time


def swanctl(directory: str, *args: str) -> list[str]:
    return ["swanctl", *args, "--uri", f"unix://{directory}/charon.vici"]


def main() -> None:
    base, clients, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    directories = [f"{base}/c{i}" for i in range(clients)]
    deadline = time.monotonic() + 30
    while not all(os.path.exists(f"{d}/charon.vici") for d in directories):
        if time.monotonic() > deadline:
            raise SystemExit("the clients' charons did not start")
        time.sleep(0.1)
    for d in directories:
        subprocess.run(swanctl(d, "--load-all", "--noprompt", "--file", f"{d}/swanctl.conf"),
                       capture_output=True, check=True, timeout=30)
    start = time.monotonic()
    running = {d: subprocess.Popen(swanctl(d, "--initiate", "--ike", "bench", "--timeout", str(int(timeout))),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for d in directories}
    times: list[float] = []
    failed = 0
    while running:
        for d, process in list(running.items()):
            code = process.poll()
            if code is None and time.monotonic() - start > timeout + 5:
                process.kill()
                code = process.wait()
            if code is not None:
                del running[d]
                if code == 0:
                    times.append(time.monotonic() - start)
                else:
                    failed += 1
        time.sleep(0.005)
    times.sort()

    def percentile(p: float) -> float | None:
        return times[min(len(times) - 1, int(p * len(times)))] if times else None
    seconds = times[-1] if len(times) == clients else None
    print(json.dumps({"clients": clients, "established": len(times), "failed": failed, "seconds": seconds,
                      "rate": clients / seconds if seconds else None, "p50": percentile(0.5), "p99": percentile(0.99)}))


main()
