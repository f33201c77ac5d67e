"""dmzkit-device-agent: the device's auto-login, once per start.

`dmzkit-device-agent --config FILE [--check]`, run once as the device starts:

1. Registers (agent.hedged: the primary, the backup STAGGER later or at
   once when the primary fails), in rounds apart by a backoff with full
   jitter, for `register_seconds` at most. A server that failed
   `breaker_failures` times in a row (no connection, no answer; an `err`
   is an answer) is passed over for `breaker_seconds` while another may
   answer (its breaker, kept beside the cache, is open), then tried again.
2. Logs in to the business server with the granted account and password:
   `login_command`, the password on its standard input, the account and
   the first business server in DMZKIT_ACCOUNT and DMZKIT_SERVER.
3. When no server registered it, logs in with the cache's passwords
   instead (the one granted last first), unless the cache was written more
   than `cache_max_age` seconds ago; a login from the cache is kept in the
   cache and reported at the next registration.

Exit status: 0 logged in, 1 not (why, on standard error), 2 a
configuration that cannot be used.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace

from cryptography.exceptions import UnsupportedAlgorithm

from ..config import ConfigError, FileSettings
from ..files import write_atomically
from . import protocol
from .agent import Endpoint, Keeper, RegistrationFailed, ServerRefused, attempt, hedged, registration_context
from .cache import Cache, CacheError, cache_key, load, read_regular_file, save
from .rotation import Kept

log = logging.getLogger("dmzkit-device-agent")

BACKOFF_BASE = 0.25
BACKOFF_CAP = 2.0
MAX_SERVERS = 4


def _endpoint(value: object, name: str) -> Endpoint:
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be host:port, got {value!r}")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name} must be host:port, got {value!r}")
    return Endpoint(host.strip("[]"), int(port))


def _endpoints(value: object, name: str) -> tuple[Endpoint, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SERVERS:
        raise ConfigError(f"{name} must list 1 to {MAX_SERVERS} registration servers, primary first")
    return tuple(_endpoint(v, f"{name}[{i}]") for i, v in enumerate(value))


@dataclass(frozen=True)
class Settings(FileSettings):
    serial: str
    # The device's certificate and key, the CA chain of the registration
    # servers' certificates and its CRL.
    certificate: str
    private_key: str
    ca_chain: str
    crl: str
    # The sealed cache (cache.py); its breakers beside it (.breakers).
    cache: str
    servers: tuple[Endpoint, ...] = field(metadata={"parse": _endpoints})
    login_command: tuple[str, ...]
    register_seconds: float = 3.0
    login_seconds: float = 5.0
    cache_max_age: int = 30 * 86400
    breaker_failures: int = 3
    breaker_seconds: float = 60.0

    def check(self) -> None:
        try:
            protocol.serial(self.serial)
        except protocol.Malformed as e:
            raise ConfigError(f"serial: {e}") from None
        if not self.login_command:
            raise ConfigError("login_command must name a program")
        if not 0 < self.register_seconds <= 60 or not 0 < self.login_seconds <= 60:
            raise ConfigError("register_seconds and login_seconds must be more than 0 and at most 60")
        if self.cache_max_age < 0 or self.breaker_failures < 1 or self.breaker_seconds < 0:
            raise ConfigError("cache_max_age and breaker_seconds must be 0 or more, breaker_failures 1 or more")


class Breakers:
    """Each server's failures in a row and, once open, until when (wall
    clock: it outlives the agent), in a small file beside the cache."""

    def __init__(self, path: str, failures: int, seconds: float) -> None:
        self.path, self.failures, self.seconds = path, failures, seconds
        self.state: dict[str, tuple[int, float]] = {}
        try:
            # As the cache is read: a regular file (no link, no FIFO), small.
            state = json.loads(read_regular_file(path), parse_constant=lambda name: None)
            for name, (count, until) in state.items():
                if isinstance(count, int) and isinstance(until, (int, float)) and math.isfinite(until):
                    self.state[str(name)] = (count, min(float(until), time.time() + seconds))
        except (CacheError, ValueError, TypeError, AttributeError):
            self.state = {}  # none yet, or unreadable: every breaker closed

    def closed(self, endpoints: tuple[Endpoint, ...], now: float) -> list[Endpoint]:
        """The servers to try, in order: those whose breaker is closed, or
        all when every one is open (a breaker passes over a dead server
        while another may answer; it never leaves none to try)."""
        closed = [e for e in endpoints if self.state.get(str(e), (0, 0.0))[1] <= now]
        return closed or list(endpoints)

    def failed(self, endpoint: Endpoint, now: float) -> None:
        count = self.state.get(str(endpoint), (0, 0.0))[0] + 1
        self.state[str(endpoint)] = (count, now + self.seconds if count >= self.failures else 0.0)
        if count == self.failures:
            log.warning("%s failed %d times in a row: passed over for %g s while another may answer", endpoint, count, self.seconds)

    def answered(self, endpoint: Endpoint) -> None:
        self.state.pop(str(endpoint), None)

    def save(self) -> None:
        write_atomically(self.path, json.dumps(self.state).encode(), 0o600)


@dataclass
class Outcome:
    logged_in: bool
    how: str


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        try:
            with open(s.private_key, "rb") as f:
                self.key = cache_key(f.read())
            self.tls = registration_context(s.ca_chain, s.crl, s.certificate, s.private_key)
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as e:  # ssl.SSLError is an OSError
            # TypeError: a key with a passphrase, which the agent has no way to ask for.
            raise ConfigError(f"the device's TLS files cannot be used: {e}") from None
        self.breakers = Breakers(s.cache + ".breakers", s.breaker_failures, s.breaker_seconds)

    def _cache(self) -> Cache | None:
        try:
            return load(self.settings.cache, self.settings.serial, self.key)
        except CacheError as e:
            log.info("%s", e)
            return None

    async def register(self, keeper: Keeper) -> protocol.Grant:
        """Rounds of hedged registration until one grants, for register_seconds."""
        s, loop = self.settings, asyncio.get_running_loop()
        end = loop.time() + s.register_seconds

        async def tried(endpoint: Endpoint, handshaken: asyncio.Event) -> protocol.Grant:
            try:
                grant = await attempt(endpoint, self.tls, keeper, handshaken)
            except ServerRefused:
                self.breakers.answered(endpoint)
                raise
            except RegistrationFailed:
                self.breakers.failed(endpoint, time.time())
                raise
            self.breakers.answered(endpoint)
            return grant

        failures: list[str] = []
        for round_ in range(1_000):  # bounded by the deadline long before
            try:
                async with asyncio.timeout_at(end):
                    return await hedged(self.breakers.closed(s.servers, time.time()), tried)
            except RegistrationFailed as e:
                failures.append(str(e))
            except TimeoutError:
                failures.append(f"no registration within {s.register_seconds:g} s")
                break
            pause = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** round_))
            if loop.time() + pause >= end:
                break
            await asyncio.sleep(pause)
        raise RegistrationFailed(failures[-1] if failures else "no registration")

    async def login(self, account: str, password: str, server: protocol.Server | None) -> bool:
        s = self.settings
        env = {**os.environ, "DMZKIT_ACCOUNT": account,
               "DMZKIT_SERVER": f"{server.host}:{server.port}" if server else ""}
        try:
            process = await asyncio.create_subprocess_exec(*s.login_command, env=env, stdin=asyncio.subprocess.PIPE,
                                                           stdout=asyncio.subprocess.DEVNULL)
        except OSError as e:
            log.error("cannot run %s: %s", s.login_command[0], e.strerror or e)
            return False
        try:
            async with asyncio.timeout(s.login_seconds):
                await process.communicate(password.encode() + b"\n")
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            log.error("the business login did not end within %g s", s.login_seconds)
            return False
        return process.returncode == 0

    async def login_anywhere(self, account: str, passwords: tuple[str, ...],
                             servers: tuple[protocol.Server, ...]) -> bool:
        """Each password at each business server, in order, until one logs in."""
        for password in passwords:
            for server in servers or (None,):
                if await self.login(account, password, server):
                    return True
        return False

    async def run(self) -> Outcome:
        s = self.settings
        kept = self._cache()
        keeper = Keeper(kept or Cache(serial=s.serial, account=None, kept=Kept(), servers=()), s.cache, self.key)
        started = time.monotonic()
        try:
            grant = await self.register(keeper)
        except RegistrationFailed as e:
            log.warning("not registered: %s", e)
            return await self.from_cache(str(e))
        finally:
            try:
                self.breakers.save()
            except OSError as e:
                log.warning("the breakers' state is not kept: %s", e.strerror or e)
        registered = f"registered (epoch {grant.epoch}) in {time.monotonic() - started:.2f} s"
        if await self.login_anywhere(grant.account, (grant.password,), grant.servers):
            return Outcome(True, f"{registered}; logged in as {grant.account}")
        return Outcome(False, f"{registered}, but the business login as {grant.account} failed")

    async def from_cache(self, why: str) -> Outcome:
        s = self.settings
        cache = self._cache()  # again: an attempt may have kept a grant in it
        if cache is None or cache.account is None:
            return Outcome(False, f"no registration ({why}) and no cache to log in with")
        age = time.time() - cache.saved_at / 1000
        if age > s.cache_max_age:
            return Outcome(False, f"no registration ({why}) and the cache is {age / 86400:.1f} days old, "
                                  f"more than cache_max_age")
        if await self.login_anywhere(cache.account, tuple(cache.kept.passwords()), cache.servers):
            at = int(time.time() * 1000)
            try:
                await asyncio.to_thread(save, s.cache, replace(cache, cache_logins=(*cache.cache_logins, at)), self.key)
            except (OSError, CacheError) as e:
                log.warning("the login from the cache is not kept to report: %s", e)
            return Outcome(True, f"no registration ({why}); logged in from the cache as {cache.account}")
        return Outcome(False, f"no registration ({why}) and the cache's password was refused")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dmzkit-device-agent", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the agent's settings (JSON)")
    parser.add_argument("--check", action="store_true", help="validate the settings and the files they name, and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        agent = Agent(Settings.load(args.config))
    except ConfigError as e:
        print(f"dmzkit-device-agent: {e}", file=sys.stderr)
        return 2
    if args.check:
        print(f"{args.config}: ok")
        return 0
    outcome = asyncio.run(agent.run())
    print(outcome.how, file=sys.stdout if outcome.logged_in else sys.stderr)
    return 0 if outcome.logged_in else 1


if __name__ == "__main__":
    sys.exit(main())
