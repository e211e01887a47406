-- Attacks on postgres:// destinations through the SQL surface (review H5):
-- loopback and private addresses spelled every way, socket directories,
-- libpq options smuggled as options, the password removed or a file named
-- afterwards, and a member of the owner role moving a destination that
-- carries another member's stream (its TLS settings included).  No target
-- server is reached: this database is not served by pg_egress's workers
-- (test/t/124_postgres_attacks.pl connects).
\set VERBOSITY terse
CREATE EXTENSION IF NOT EXISTS pg_egress;
CREATE ROLE pga_mallory IN ROLE egress_user;
SET ROLE pga_mallory;

-- the local server and its neighbours, however the host is written
SELECT egress_add_destination('pga', 'postgres://postgres@127.1/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@2130706433/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@0x7f000001/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@017700000001/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@0.0.0.0/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@0/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@[::]/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@[::ffff:7f00:1]/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@[64:ff9b::7f00:1]/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@[fe80::1]/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@169.254.169.254/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@LOCALHOST/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@127.0.0.1%2C93.184.216.34/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@[::1%25lo]/postgres', '{"password": "x"}');
-- socket directories: a path, an abstract socket, however encoded
SELECT egress_add_destination('pga', 'postgres://postgres@%2ftmp/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@%2F/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@%40pg/postgres', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://postgres@/tmp/postgres', '{"password": "x"}');
-- userinfo tricks: the last @ ends it; a colon anywhere in it is a password
SELECT egress_add_destination('pga', 'postgres://a@b@93.184.216.34/db', '{"password": "x"}');
SELECT egress_add_destination('pgb', 'postgres://a%3Ab@93.184.216.34/db', '{"password": "x"}');
SELECT name, location FROM egress_destinations WHERE name IN ('pga', 'pgb') ORDER BY name;
SELECT egress_remove_destination('pga'), egress_remove_destination('pgb');
SELECT egress_add_destination('pga', 'postgres://a:b@c@93.184.216.34/db', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://lo%00der@93.184.216.34/db', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/' || repeat('d', 64), '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://' || repeat('u', 64) || '@93.184.216.34/db', '{"password": "x"}');
SELECT egress_add_destination('pga', 'postgres://loader@' || repeat('h', 3000) || '/db', '{"password": "x"}');
SELECT egress_remove_destination(name) FROM egress_destinations WHERE name = 'pga';
-- libpq keywords are not options of the kind
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "options": "-c search_path=x"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "service": "s"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "passfile": "/etc/passwd"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "sslpassword": "x"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "hostaddr": "127.0.0.1"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "host": "/tmp"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "krbsrvname": "x"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "x", "gssencmode": "require"}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"Password": "x"}');
-- a password of blanks is a password; none is refused
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": null}');
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": ["x"]}');

-- a destination of the role: the password cannot be taken away, no file
-- can be named and the host cannot become local afterwards
SELECT egress_add_destination('pga', 'postgres://loader@93.184.216.34/db', '{"password": "pga-s3cr3t"}');
SELECT egress_alter_destination('pga', options => '{"password": null}');
SELECT egress_alter_destination('pga', options => '{"sslrootcert": "/etc/ssl/certs/ca-certificates.crt"}');
SELECT egress_alter_destination('pga', url => 'postgres://loader@%2Ftmp/db');
SELECT egress_alter_destination('pga', url => 'postgres://loader@[::ffff:127.0.0.1]/db');
SELECT name, location, options FROM egress_destinations WHERE name = 'pga';
SELECT egress_remove_destination('pga');
RESET ROLE;

-- a member of the owner role, and another member's stream
CREATE ROLE pga_team IN ROLE egress_user;
CREATE ROLE pga_sec IN ROLE pga_team;
CREATE ROLE pga_intruder IN ROLE pga_team;
CREATE TABLE pga_secret (id bigint PRIMARY KEY, ssn text);
GRANT SELECT ON pga_secret TO pga_sec;
SET ROLE pga_team;
SELECT egress_add_destination('pga_wh', 'postgres://loader@93.184.216.34/db',
	'{"password": "pga-s3cr3t", "sslmode": "verify-full", "default_target_schema": "secure"}');
SET ROLE pga_sec;
SELECT egress_add_stream('pga_s', 'pga_secret', 'FULL_TABLE', 'pga_wh');
SET ROLE pga_intruder;
-- where the rows go: refused
SELECT egress_alter_destination('pga_wh', url => 'postgres://loader@93.184.216.35/db');
SELECT egress_alter_destination('pga_wh', options => '{"default_target_schema": "public"}');
SELECT egress_alter_destination('pga_wh', options => '{"schema_mapping": {"public": "open"}}');
SELECT egress_alter_destination('pga_wh', options => '{"target_schema_privileges": "public"}');
-- how they travel: a TLS downgrade lets whoever is on the path read them,
-- or answer in the target's place (verify-full checked its name)
SELECT egress_alter_destination('pga_wh', options => '{"sslmode": "disable"}');
SELECT egress_alter_destination('pga_wh', options => '{"sslmode": "require"}');
SELECT egress_alter_destination('pga_wh', options => '{"sslmode": null}');
RESET ROLE;
SELECT name, location, options->>'sslmode' AS sslmode FROM egress_destinations WHERE name = 'pga_wh';

SELECT egress_remove_stream('pga_s');
SELECT egress_remove_destination('pga_wh');
DROP TABLE pga_secret;
DROP ROLE pga_sec, pga_intruder, pga_team, pga_mallory;
