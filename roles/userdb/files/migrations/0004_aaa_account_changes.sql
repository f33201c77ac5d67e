-- AAA keeps the accounts it has read (aaa_check_items) while nothing in
-- them has changed: any change to what that function reads is announced on
-- channel dmzkit_aaa_accounts, at commit, and AAA's account listener then
-- makes FreeRADIUS read every account afresh. One notification per
-- statement: what changed does not matter, only that something did.

CREATE FUNCTION aaa_accounts_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = dmzkit, pg_catalog AS $$
BEGIN
    PERFORM pg_notify('dmzkit_aaa_accounts', '');
    RETURN NULL;
END $$;

CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON credentials
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON memberships
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();
CREATE TRIGGER aaa_accounts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON groups
    FOR EACH STATEMENT EXECUTE FUNCTION aaa_accounts_changed();
