-- Device auto-login (docs/device-autologin.md): the business account each
-- registering device logs in with, the business servers it may use and at
-- which site each is, and the two-phase rotation of the account's password.

-- Where a device is, by the address the registration server sees: the site
-- whose network holding it is the longest.
CREATE TABLE sites (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name     text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    networks cidr[] NOT NULL DEFAULT '{}'
);

CREATE TABLE business_servers (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id bigint NOT NULL REFERENCES sites ON DELETE CASCADE,
    -- A name (no label all digits at the end) or an address; registration
    -- also checks each as the protocol does, and skips one it would refuse.
    host    text NOT NULL CHECK (host ~ '^[A-Za-z0-9.:-]{1,253}$'),
    port    integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    UNIQUE (host, port)
);

-- A device that registers (a row of devices: its certificate's key and
-- serial), with an account of its own, since each registration gives the
-- account a new password. The rotation (registration/rotation.py):
-- `committed`, the epoch of the account's password; `issued`, the last
-- granted; the pending grant, its password sealed with the registration
-- servers' key, until it is acknowledged or expires.
CREATE TABLE device_logins (
    device_id        bigint PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    account_id       bigint NOT NULL UNIQUE REFERENCES users ON DELETE CASCADE,
    committed        bigint NOT NULL DEFAULT 0 CHECK (committed >= 0),
    issued           bigint NOT NULL DEFAULT 0 CHECK (issued >= committed),
    pending_epoch    bigint,
    pending_password bytea,
    pending_expires  timestamptz,
    CHECK (num_nulls(pending_epoch, pending_password, pending_expires) IN (0, 3)),
    CHECK (pending_epoch IS NULL OR pending_epoch = issued AND pending_epoch > committed)
);

-- The business servers a device may be sent to.
CREATE TABLE device_servers (
    device_id bigint NOT NULL REFERENCES device_logins ON DELETE CASCADE,
    server_id bigint NOT NULL REFERENCES business_servers ON DELETE CASCADE,
    PRIMARY KEY (device_id, server_id)
);

-- A device's password is random (128 bits or more, made by the
-- registration service): its hash is its SHA-256, checked in microseconds,
-- where guessing is hopeless anyway. People's passwords stay Argon2id.
ALTER TABLE credentials DROP CONSTRAINT credentials_password_hash_check;
ALTER TABLE credentials ADD CONSTRAINT credentials_password_hash_check
    CHECK (password_hash LIKE '$argon2id$%' OR password_hash ~ '^\$sha256\$[0-9a-f]{64}$');

-- The registration service sets the password of a device's own account,
-- only with a device password's hash, and of no other account: not one
-- that owns devices (a person's), not one with a person's hash. Every
-- name is qualified and pg_temp searched last, so a temporary table of the
-- caller's cannot stand in for ours.
CREATE FUNCTION set_device_password(device bigint, hash text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    account bigint;
BEGIN
    IF hash IS NULL OR hash !~ '^\$sha256\$[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'not the hash of a device password';
    END IF;
    SELECT l.account_id INTO account FROM dmzkit.device_logins l WHERE l.device_id = device;
    IF account IS NULL THEN
        RAISE EXCEPTION 'device % has no account', device;
    END IF;
    IF EXISTS (SELECT 1 FROM dmzkit.devices d WHERE d.user_id = account)
       OR EXISTS (SELECT 1 FROM dmzkit.credentials c
                  WHERE c.user_id = account AND c.password_hash !~ '^\$sha256\$') THEN
        RAISE EXCEPTION 'the account of device % is a person''s', device;
    END IF;
    INSERT INTO dmzkit.credentials (user_id, password_hash) VALUES (account, hash)
    ON CONFLICT (user_id) DO UPDATE
        SET password_hash = EXCLUDED.password_hash, changed_at = now(), failed_attempts = 0, locked_until = NULL;
END $$;

REVOKE ALL ON FUNCTION set_device_password(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION set_device_password(bigint, text) TO dmzkit_registration;

GRANT SELECT ON sites, business_servers, device_servers TO dmzkit_registration;
GRANT SELECT ON device_logins TO dmzkit_registration;
GRANT UPDATE (committed, issued, pending_epoch, pending_password, pending_expires) ON device_logins
    TO dmzkit_registration;
GRANT SELECT, INSERT, UPDATE, DELETE ON sites, business_servers, device_logins, device_servers TO dmzkit_admin;
