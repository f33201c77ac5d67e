-- Revoking a device (devices.revoked_at) ends the logins of its account
-- (docs/device-autologin.md): in the revoking transaction, the account's
-- password is removed (AAA's account listener hears it, migration 0004)
-- and its pending grant dropped; no registration sets a password on it
-- again. The registration privilege may no longer change revoked_at
-- (migration 0001 let it): a revoked device stays revoked until an
-- administrator says otherwise.

CREATE FUNCTION device_revoked() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM dmzkit.credentials c USING dmzkit.device_logins l
        WHERE l.device_id = NEW.id AND c.user_id = l.account_id;
    UPDATE dmzkit.device_logins
        SET pending_epoch = NULL, pending_password = NULL, pending_expires = NULL
        WHERE device_id = NEW.id AND pending_epoch IS NOT NULL;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION device_revoked() FROM PUBLIC;

CREATE TRIGGER device_revoked AFTER UPDATE OF revoked_at ON devices
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION device_revoked();

-- As in migration 0005, and a revoked device's account gets no password.
CREATE OR REPLACE FUNCTION set_device_password(device bigint, hash text) RETURNS void
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
    IF EXISTS (SELECT 1 FROM dmzkit.devices d WHERE d.id = device AND d.revoked_at IS NOT NULL) THEN
        RAISE EXCEPTION 'device % is revoked', device;
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

REVOKE UPDATE (revoked_at) ON devices FROM dmzkit_registration;
