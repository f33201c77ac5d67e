-- Revoking a device (devices.revoked_at) ends the logins of its account
-- (docs/device-autologin.md): in the revoking transaction, the account's
-- password is removed (AAA's account listener hears it, migration 0004)
-- and its pending grant dropped; nobody sets a password on it again. The
-- registration privilege may no longer change revoked_at (migration 0001
-- let it): a revoked device stays revoked until an administrator says
-- otherwise.

CREATE FUNCTION device_revoked() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A device password's hash only: never a person's, whatever the row says.
    DELETE FROM dmzkit.credentials c USING dmzkit.device_logins l
        WHERE l.device_id = NEW.id AND c.user_id = l.account_id AND c.password_hash ~ '^\$sha256\$';
    UPDATE dmzkit.device_logins
        SET pending_epoch = NULL, pending_password = NULL, pending_expires = NULL
        WHERE device_id = NEW.id AND pending_epoch IS NOT NULL;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION device_revoked() FROM PUBLIC;

CREATE TRIGGER device_revoked AFTER UPDATE OF revoked_at ON devices
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL)
    EXECUTE FUNCTION device_revoked();

-- However it is set (set_device_password, an administrator), a revoked
-- device's account gets no password.
CREATE FUNCTION device_account_password() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A revocation in flight is waited for (the lock), then seen (a new
    -- snapshot); one that comes later waits for this transaction, and its
    -- trigger removes what this one sets.
    PERFORM 1 FROM dmzkit.devices d JOIN dmzkit.device_logins l ON l.device_id = d.id
        WHERE l.account_id = NEW.user_id FOR SHARE OF d;
    IF EXISTS (SELECT 1 FROM dmzkit.device_logins l JOIN dmzkit.devices d ON d.id = l.device_id
               WHERE l.account_id = NEW.user_id AND d.revoked_at IS NOT NULL) THEN
        RAISE EXCEPTION 'the account of a revoked device gets no password';
    END IF;
    RETURN NEW;
END $$;

REVOKE ALL ON FUNCTION device_account_password() FROM PUBLIC;

CREATE TRIGGER device_account_password BEFORE INSERT OR UPDATE OF password_hash, user_id ON credentials
    FOR EACH ROW EXECUTE FUNCTION device_account_password();

-- As AAA's (migration 0004): a session with session_replication_role =
-- replica does not skip them.
ALTER TABLE devices ENABLE ALWAYS TRIGGER device_revoked;
ALTER TABLE credentials ENABLE ALWAYS TRIGGER device_account_password;

REVOKE UPDATE (revoked_at) ON devices FROM dmzkit_registration;
