"""The userdb_user module's Argon2 policy, the collection's only one, and
when it sets a password hash again."""
from __future__ import annotations

from argon2 import Parameters, PasswordHasher, Type, extract_parameters

from ansible_collections.dmzkit.remote_access.plugins.modules.userdb_user import (
    ARGON2_POLICY,
    hasher,
    password_needs_setting,
)

PASSWORD = "correct horse battery staple"


def test_hashes_are_argon2id_with_rfc_9106s_second_recommended_setting() -> None:
    made = extract_parameters(hasher().hash(PASSWORD))
    assert made == Parameters(type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=3,
                              memory_cost=64 * 1024, parallelism=4)
    # What the lab reads back from the stored hashes (molecule/stack, test_stores).
    assert hasher().hash(PASSWORD).split("$")[3] == "m=65536,t=3,p=4"
    assert ARGON2_POLICY == {"time_cost": 3, "memory_cost": 65536, "parallelism": 4, "hash_len": 32,
                             "salt_len": 16}


def test_a_hash_that_verifies_the_password_under_the_policy_is_kept() -> None:
    ph = hasher()
    assert not password_needs_setting(ph, ph.hash(PASSWORD), PASSWORD)


def test_a_password_is_set_again_when_it_does_not_verify_or_the_policy_changed() -> None:
    ph = hasher()
    assert password_needs_setting(ph, None, PASSWORD)
    assert password_needs_setting(ph, ph.hash("another password"), PASSWORD)
    assert password_needs_setting(ph, "$argon2id$not a hash", PASSWORD)
    # Made with other parameters (argon2-cffi 21.1's defaults): replaced, so the
    # stored hashes, and the IdP's decoy made like them, follow the policy.
    assert password_needs_setting(ph, PasswordHasher().hash(PASSWORD), PASSWORD)
