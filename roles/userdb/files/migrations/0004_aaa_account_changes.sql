-- AAA keeps the accounts it has read (aaa_check_items) while nothing in
-- them has changed: a change to what that function reads is announced on
-- channel dmzkit_aaa_accounts, at commit, and AAA's account listener then
-- makes FreeRADIUS read every account afresh. Row triggers, so that a
-- statement that changes nothing announces nothing; an update announces
-- only what AAA reads: for the failure count, only whether there are any
-- (FreeRADIUS clears them at a success, and counts nothing itself), so
-- that each failed password does not empty AAA's cache. ENABLE ALWAYS, so
-- that a session with session_replication_role = replica cannot change an
-- account unannounced; the listener holds no lease unless all of them are
-- so (aaa.accounts.TRIGGERS).

CREATE FUNCTION aaa_accounts_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = dmzkit, pg_catalog AS $$
BEGIN
    PERFORM pg_notify('dmzkit_aaa_accounts', '');
    RETURN NULL;
END $$;

CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_updated AFTER UPDATE ON users
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.username IS DISTINCT FROM NEW.username
                       OR OLD.enabled IS DISTINCT FROM NEW.enabled)
    EXECUTE FUNCTION aaa_accounts_changed();

CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR DELETE ON credentials
    FOR EACH ROW EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_updated AFTER UPDATE ON credentials
    FOR EACH ROW WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id
                       OR OLD.password_hash IS DISTINCT FROM NEW.password_hash
                       OR OLD.locked_until IS DISTINCT FROM NEW.locked_until
                       OR (OLD.failed_attempts > 0) IS DISTINCT FROM (NEW.failed_attempts > 0))
    EXECUTE FUNCTION aaa_accounts_changed();

CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR UPDATE OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION aaa_accounts_changed();

CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR DELETE ON groups
    FOR EACH ROW EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_updated AFTER UPDATE ON groups
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id OR OLD.name IS DISTINCT FROM NEW.name)
    EXECUTE FUNCTION aaa_accounts_changed();

CREATE TRIGGER aaa_accounts_truncated AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_truncated AFTER TRUNCATE ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_truncated AFTER TRUNCATE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_truncated AFTER TRUNCATE ON groups
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();

ALTER TABLE users ENABLE ALWAYS TRIGGER aaa_accounts_changed;
ALTER TABLE users ENABLE ALWAYS TRIGGER aaa_accounts_updated;
ALTER TABLE users ENABLE ALWAYS TRIGGER aaa_accounts_truncated;
ALTER TABLE credentials ENABLE ALWAYS TRIGGER aaa_accounts_changed;
ALTER TABLE credentials ENABLE ALWAYS TRIGGER aaa_accounts_updated;
ALTER TABLE credentials ENABLE ALWAYS TRIGGER aaa_accounts_truncated;
ALTER TABLE memberships ENABLE ALWAYS TRIGGER aaa_accounts_changed;
ALTER TABLE memberships ENABLE ALWAYS TRIGGER aaa_accounts_truncated;
ALTER TABLE groups ENABLE ALWAYS TRIGGER aaa_accounts_changed;
ALTER TABLE groups ENABLE ALWAYS TRIGGER aaa_accounts_updated;
ALTER TABLE groups ENABLE ALWAYS TRIGGER aaa_accounts_truncated;
