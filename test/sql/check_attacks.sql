-- Attacks on egress_check() and on the 0.1 -> 0.2 update (reviewer r2).
\set VERBOSITY terse
CREATE EXTENSION IF NOT EXISTS pg_egress;

CREATE ROLE atk_user IN ROLE egress_user;
CREATE ROLE atk_victim IN ROLE egress_user;

-- A non-superuser's HTTP destination that a superuser pointed at the
-- server itself (forms of loopback the hosts check must see through):
-- egress_check's probe connects through pg_egress.allowed_destination_hosts
-- as a delivery does, and says nothing of what listens there.
SET ROLE atk_victim;
SELECT egress_add_destination('atk_web', 'http://93.184.216.34:9/in',
	'{"connect_timeout": "1s", "headers": {"Authorization": "Bearer v1ct1m"}}');
RESET ROLE;
SELECT pg_catalog.set_config('atk.port', current_setting('port'), false) IS NOT NULL AS set;
CREATE FUNCTION pg_temp.probe_as_victim(url text) RETURNS TABLE (ok boolean, refused boolean, shows_secret boolean)
LANGUAGE plpgsql AS $$
BEGIN
	UPDATE egress.destination SET location = url WHERE name = 'atk_web';
	SET LOCAL ROLE atk_victim;
	RETURN QUERY SELECT c.ok, c.detail ~ 'allowed_destination_hosts|not allow', c.detail ~ 'v1ct1m'
	  FROM egress_check('atk_web') c WHERE c."check" = 'reachable (atk_web)';
END
$$;
BEGIN; SELECT * FROM pg_temp.probe_as_victim('http://127.0.0.1:' || current_setting('port') || '/'); COMMIT;
BEGIN; SELECT * FROM pg_temp.probe_as_victim('http://2130706433:' || current_setting('port') || '/'); COMMIT;
BEGIN; SELECT * FROM pg_temp.probe_as_victim('http://localhost:' || current_setting('port') || '/'); COMMIT;
BEGIN; SELECT * FROM pg_temp.probe_as_victim('http://[::ffff:127.0.0.1]:' || current_setting('port') || '/'); COMMIT;
BEGIN; SELECT * FROM pg_temp.probe_as_victim('http://[::1]:' || current_setting('port') || '/'); COMMIT;

-- Another role learns nothing of atk_web: the same rows as for a name
-- that does not exist, secrets nowhere.
SET ROLE atk_user;
SELECT (SELECT array_agg(ROW(c."check", c.ok, c.detail) ORDER BY 1)
		  FROM egress_check('atk_web') c WHERE c."check" LIKE '%(atk_%')
	   = (SELECT array_agg(ROW(replace(c."check", 'atk_nope', 'atk_web'), c.ok,
							   replace(c.detail, 'atk_nope', 'atk_web')) ORDER BY 1)
		  FROM egress_check('atk_nope') c WHERE c."check" LIKE '%(atk_%') AS same_as_missing;
SELECT count(*) AS secret_rows FROM egress_check() c WHERE c.detail ~ 'v1ct1m|atk_web';
-- a hostile search_path and pg_temp objects change nothing
CREATE FUNCTION pg_temp.count(anyelement) RETURNS bigint LANGUAGE sql AS 'SELECT 42::bigint';
SET search_path = pg_temp, public;
SELECT count(*) > 0 AS rows FROM public.egress_check();
RESET search_path;
RESET ROLE;

-- The update: ALTER EXTENSION UPDATE by a non-superuser owner is refused.
SELECT current_database() AS origdb \gset
CREATE DATABASE atk_upgrade;
\c atk_upgrade
\set VERBOSITY terse
CREATE EXTENSION pg_egress VERSION '0.1';
UPDATE pg_extension SET extowner = 'atk_user'::regrole WHERE extname = 'pg_egress';
SET ROLE atk_user;
ALTER EXTENSION pg_egress UPDATE TO '0.2';
RESET ROLE;
-- A pre-created "egress_user" that is a member of a powerful role (what a
-- CREATEROLE role could set up before pg_egress was installed): every
-- role the DBA grants egress_user to would get that power too.  The
-- update must warn, as it does for a role with attributes of its own.
GRANT pg_read_server_files TO egress_user;
ALTER EXTENSION pg_egress UPDATE TO '0.2';
SELECT extversion FROM pg_extension WHERE extname = 'pg_egress';
REVOKE pg_read_server_files FROM egress_user;
\c :origdb
DROP DATABASE atk_upgrade;

-- clean up
SELECT egress_remove_destination('atk_web');
DROP ROLE atk_user;
DROP ROLE atk_victim;
