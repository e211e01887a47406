-- Attacks on egress_alter_destination / egress_alter_stream / egress_user
-- (review r1).  The workers serve another database (test/regress.conf).
\set VERBOSITY default
CREATE EXTENSION IF NOT EXISTS pg_egress;

-- A team destination, a stream of a member who may read a table the other
-- members may not read.  Another member must not move the destination
-- (and with it that member's rows) to a URL of its choice.
CREATE ROLE aa_team IN ROLE egress_user;
CREATE ROLE aa_sec IN ROLE aa_team;
CREATE ROLE aa_mallory IN ROLE aa_team;
CREATE TABLE public.aa_secret (id bigint PRIMARY KEY, ssn text, changed timestamptz);
GRANT SELECT ON public.aa_secret TO aa_sec;
SET ROLE aa_team;
SELECT egress_add_destination('aa_team_web', 'http://93.184.216.34/team', '{}');
RESET ROLE;
SET ROLE aa_sec;
SELECT egress_add_stream('aa_sec_s', 'public.aa_secret', 'INCREMENTAL', 'aa_team_web',
	replication_key => 'changed');
RESET ROLE;
SET ROLE aa_mallory;
SELECT has_table_privilege('public.aa_secret', 'SELECT') AS mallory_may_read;
-- refused, and the stream is not named
SELECT egress_alter_destination('aa_team_web', url => 'http://93.184.216.35/mallory');
SELECT egress_alter_destination('aa_team_web', url => 'http://93.184.216.35/mallory',
	options => '{"timeout": "10s"}');
-- nor its headers: an ingest service's key picks the account the rows land in
SELECT egress_alter_destination('aa_team_web', options => '{"headers": {"X-Api-Key": "mallorys-account"}}');
-- options that do not move the data: allowed (the destination is the team's)
SELECT egress_alter_destination('aa_team_web', options => '{"timeout": "10s"}');
-- the same URL is no move
SELECT egress_alter_destination('aa_team_web', url => 'http://93.184.216.34/team');
RESET ROLE;
SELECT location, options FROM egress.destination WHERE name = 'aa_team_web';
-- a Kinesis destination's region is where the rows go too
GRANT EXECUTE ON FUNCTION egress_export(text, text, text) TO aa_team;
SET ROLE aa_team;
SELECT egress_add_destination('aa_team_k', 'kinesis://teamstream', '{"region": "eu-west-1"}');
RESET ROLE;
SET ROLE aa_sec;
SELECT egress_add_stream('aa_sec_k', 'public.aa_secret', 'FULL_TABLE', 'aa_team_k');
RESET ROLE;
SET ROLE aa_mallory;
SELECT egress_alter_destination('aa_team_k', options => '{"region": "us-east-1"}');
SELECT egress_alter_destination('aa_team_k', url => 'kinesis://mallorystream');
SELECT egress_alter_destination('aa_team_k', options => '{"partition_key": "id"}');
RESET ROLE;
SELECT location, options FROM egress.destination WHERE name = 'aa_team_k';
SELECT egress_remove_destination('aa_team_k', cascade => true);
REVOKE EXECUTE ON FUNCTION egress_export(text, text, text) FROM aa_team;
-- the stream's owner may move it; so may a superuser
SET ROLE aa_sec;
SELECT egress_alter_destination('aa_team_web', url => 'http://93.184.216.34/team2');
RESET ROLE;
SELECT egress_alter_destination('aa_team_web', url => 'http://93.184.216.34/team3');
SELECT location FROM egress.destination WHERE name = 'aa_team_web';
-- once the other role's stream is gone, the team's members may move it
SET ROLE aa_sec;
SELECT egress_remove_stream('aa_sec_s');
RESET ROLE;
SET ROLE aa_mallory;
SELECT egress_alter_destination('aa_team_web', url => 'http://93.184.216.35/mallory');
RESET ROLE;
SELECT location FROM egress.destination WHERE name = 'aa_team_web';

-- durations: no part below zero.  "1 mon -29 days" would be a day in C
-- (30-day months) but less than nothing when SQL adds it to a date in
-- February; "-1 days +24:00:00.5" is half a second only by adding up.
SET ROLE aa_team;
SELECT egress_alter_destination('aa_team_web', options => '{"flush_interval": "1 mon -29 days"}');
SELECT egress_alter_destination('aa_team_web', options => '{"error_retry_interval": "1 mon -29 days"}');
SELECT egress_alter_destination('aa_team_web', options => '{"timeout": "-1 days +24:00:00.5"}');
SELECT egress_alter_destination('aa_team_web', options => '{"timeout": "P1D-PT23H"}');
-- a huge JSON number is too long, not a double precision error
SELECT egress_alter_destination('aa_team_web', options => '{"timeout": 1e400}');
SELECT egress_alter_destination('aa_team_web', options => '{"timeout": -1e400}');
-- what is fine stays fine
SELECT egress_alter_destination('aa_team_web', options => '{"timeout": "1 day 00:00:01", "flush_interval": 1.5}');
RESET ROLE;
CREATE TABLE public.aa_t (id bigint PRIMARY KEY, changed timestamptz);
GRANT SELECT ON public.aa_t TO aa_team;
SET ROLE aa_team;
SELECT egress_add_stream('aa_inc', 'public.aa_t', 'INCREMENTAL', 'aa_team_web',
	replication_key => 'changed', options => '{"interval": "1 mon -29 days"}');
SELECT egress_add_stream('aa_inc', 'public.aa_t', 'INCREMENTAL', 'aa_team_web',
	replication_key => 'changed', options => '{"interval": "1 minute"}');
SELECT egress_alter_stream('aa_inc', '{"interval": "1 mon -29 days"}');
SELECT egress_alter_stream('aa_inc', '{"interval": "1 mon -30 days +1 second"}');
SELECT egress_alter_stream('aa_inc', '{"interval": 1e400}');
SELECT egress_alter_stream('aa_inc', '{"interval": "1 mon"}');
SELECT options FROM egress_streams WHERE name = 'aa_inc';
RESET ROLE;

-- clean up
SELECT egress_remove_destination('aa_team_web', cascade => true);
DROP TABLE public.aa_secret, public.aa_t;
DROP ROLE aa_sec, aa_mallory, aa_team;

-- egress_user made beforehand a member of another role: every pipeline
-- owner would get that role's privileges with it; say so
DROP EXTENSION pg_egress;
GRANT pg_read_server_files TO egress_user;
CREATE EXTENSION pg_egress;
REVOKE pg_read_server_files FROM egress_user;
DROP EXTENSION pg_egress;
-- another application's group role of that name, with members of its own
-- (no comment of pg_egress's): say so too
COMMENT ON ROLE egress_user IS 'reporting app';
CREATE ROLE aa_app_user IN ROLE egress_user;
CREATE EXTENSION pg_egress;
DROP EXTENSION pg_egress;
DROP ROLE aa_app_user;
COMMENT ON ROLE egress_user IS 'pg_egress: add, change and remove own destinations and streams; read egress_streams, egress_destinations';
CREATE EXTENSION pg_egress;
DROP EXTENSION pg_egress;
