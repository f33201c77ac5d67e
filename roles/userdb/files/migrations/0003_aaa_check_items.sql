-- What AAA (FreeRADIUS's rlm_sql) reads for every Access-Request: the
-- account's stored hash, failure count, lock and groups, as rlm_sql's
-- check items (id, username, attribute, value, op). A function, so that
-- each connection plans the query once (planning the join cost more than
-- running it, per request).

CREATE FUNCTION aaa_check_items(name text)
RETURNS TABLE (id integer, username text, attribute text, value text, op text)
LANGUAGE plpgsql STABLE SET search_path = dmzkit, pg_catalog AS $$
BEGIN
    RETURN QUERY
    SELECT 1, u.username, a.attribute, a.value, ':='::text
    FROM users u
    JOIN credentials c ON c.user_id = u.id
    CROSS JOIN LATERAL (VALUES
        ('Dmzkit-Password-Hash', c.password_hash),
        ('Dmzkit-Failed-Attempts', c.failed_attempts::text),
        ('Dmzkit-Locked', CASE WHEN c.locked_until > now() THEN '1' ELSE '0' END),
        -- ",a,b,": a group is matched as ",<name>,".
        ('Dmzkit-Groups', ',' || coalesce((SELECT string_agg(g.name, ',' ORDER BY g.name)
                                           FROM memberships m JOIN groups g ON g.id = m.group_id
                                           WHERE m.user_id = u.id), '') || ',')
    ) AS a(attribute, value)
    WHERE u.username = name AND u.enabled;
END $$;

REVOKE ALL ON FUNCTION aaa_check_items(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aaa_check_items(text) TO dmzkit_authn;
