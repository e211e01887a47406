-- postgres:// destinations (issue 15): URL grammar, options, the rules for
-- roles that are not superusers, and the password never shown.  No target
-- server is reached here (test/t/120_postgres_connect.pl connects).
\set VERBOSITY default
CREATE EXTENSION IF NOT EXISTS pg_egress;

-- URLs: the location stored is user@host:port/dbname, port filled in
SELECT egress_add_destination('pg_a', 'postgres://loader@wh.example.com/analytics', '{}');
SELECT egress_add_destination('pg_b', 'postgresql://loader@203.0.113.5:6543/analytics', '{}');
SELECT egress_add_destination('pg_c', 'postgres://lo%40der@[2001:db8::1]:5433/my%20db', '{}');
SELECT egress_add_destination('pg_d', 'postgres://loader@%2Fvar%2Frun%2Fpostgresql/analytics', '{}');
SELECT name, kind, location FROM egress_destinations WHERE name LIKE 'pg\_%' ORDER BY name;

-- URL errors: never the whole URL
SELECT egress_add_destination('pg_e', 'postgres://loader:s3cr3t@wh.example.com/analytics', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader:@wh.example.com/analytics', '{}');
SELECT egress_add_destination('pg_e', 'postgres://wh.example.com/analytics', '{}');
SELECT egress_add_destination('pg_e', 'postgres://@wh.example.com/analytics', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db?sslmode=disable&password=s3cr3t', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db#frag', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com:0/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com:65536/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com:54x/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com:/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@a,b/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@a:5432,b:5432/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@[2001:db8::1/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@[not-v6]/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@[::1]x/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://lo%zzder@wh.example.com/db', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/d%00b', '{}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/my db', '{}');
SELECT egress_add_destination('pg_e', 'pgsql://loader@wh.example.com/db', '{}');

-- options
SELECT egress_add_destination('pg_o', 'postgres://loader@wh.example.com/db',
	'{"password": "s3cr3t", "sslmode": "verify-full", "sslrootcert": "/etc/ssl/ca.pem",
	  "sslcert": "/etc/ssl/c.pem", "sslkey": "/etc/ssl/c.key", "connect_timeout": "5s",
	  "default_target_schema": "raw_app",
	  "schema_mapping": {"public": {"target_schema": "raw_public"}, "sales": "raw_sales"},
	  "hard_delete": true, "add_metadata_columns": true, "primary_key_required": false,
	  "batch_size_rows": 5000, "flush_interval": "2s", "parallelism": 4,
	  "validate_records": true, "target_schema_privileges": ["analyst", "bi"]}');
SELECT egress_add_destination('pg_o2', 'postgres://loader@wh.example.com/db',
	'{"target_schema_privileges": "analyst", "parallelism": 16, "batch_max_rows": 10}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"password": ""}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"password": 12345}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"sslmode": "sometimes"}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"parallelism": 0}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"parallelism": 17}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"parallelism": 2.5}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"batch_size_rows": -1}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"connect_timeout": "soon"}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"default_target_schema": ""}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"default_target_schema": "pg_raw"}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db',
	'{"default_target_schema": "a_schema_name_that_is_much_too_long_to_be_a_postgresql_identifier"}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"schema_mapping": "raw"}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"schema_mapping": {"public": {"schema": "raw"}}}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"schema_mapping": {"public": {}}}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"schema_mapping": {"public": 1}}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"target_schema_privileges": [1]}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"target_schema_privileges": {"a": 1}}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"hard_delete": "yes"}');
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"batch_size_rows": 10, "batch_max_rows": 20}');
-- HTTP options are not postgres options, and the other way round
SELECT egress_add_destination('pg_e', 'postgres://loader@wh.example.com/db', '{"headers": {"A": "b"}}');
SELECT egress_add_destination('pg_e', 'http://93.184.216.34/in', '{"password": "s3cr3t"}');
-- connect_timeout is an option of both
SELECT egress_add_destination('pg_h', 'http://93.184.216.34/in', '{"connect_timeout": "3s"}');

-- the password is never shown
SELECT name, options FROM egress_destinations WHERE name LIKE 'pg\_o%' ORDER BY name;
SELECT count(*) AS shown FROM egress_destinations WHERE options::text LIKE '%s3cr3t%';

-- roles that are not superusers
CREATE ROLE pgd_user IN ROLE egress_user;
SET ROLE pgd_user;
-- a password is required (as postgres_fdw requires one)
SELECT egress_add_destination('pgu_a', 'postgres://loader@93.184.216.34/db', '{}');
-- files of the server: superusers only
SELECT egress_add_destination('pgu_a', 'postgres://loader@93.184.216.34/db', '{"password": "x", "sslrootcert": "/etc/passwd"}');
SELECT egress_add_destination('pgu_a', 'postgres://loader@93.184.216.34/db', '{"password": "x", "sslcert": "/etc/passwd"}');
SELECT egress_add_destination('pgu_a', 'postgres://loader@93.184.216.34/db', '{"password": "x", "sslkey": "/etc/ssl/private/ssl-cert-snakeoil.key"}');
-- no socket directories, no local or private hosts
SELECT egress_add_destination('pgu_a', 'postgres://loader@%2Ftmp/db', '{"password": "x"}');
SELECT egress_add_destination('pgu_a', 'postgres://loader@127.0.0.1/db', '{"password": "x"}');
SELECT egress_add_destination('pgu_a', 'postgres://loader@[::1]:5432/db', '{"password": "x"}');
SELECT egress_add_destination('pgu_a', 'postgres://loader@localhost/db', '{"password": "x"}');
SELECT egress_add_destination('pgu_a', 'postgres://loader@10.1.2.3/db', '{"password": "x"}');
SELECT egress_add_destination('pgu_a', 'postgres://loader@[::ffff:127.0.0.1]/db', '{"password": "x"}');
-- allowed: a public address with a password
SELECT egress_add_destination('pgu_a', 'postgres://loader@93.184.216.34/db',
	'{"password": "v1ct1m", "sslmode": "verify-full"}');
SELECT name, location, options FROM egress_destinations WHERE name = 'pgu_a';
-- the owner cannot take the password out or add a file afterwards
SELECT egress_alter_destination('pgu_a', options => '{"sslmode": "require"}');
SELECT egress_alter_destination('pgu_a', options => '{"password": "n3w", "sslkey": "/etc/passwd"}');
SELECT egress_alter_destination('pgu_a', url => 'postgres://loader@127.0.0.1/db');
SELECT egress_alter_destination('pgu_a', options => '{"password": null}');
SELECT name, location, options FROM egress_destinations WHERE name = 'pgu_a';
RESET ROLE;
-- egress_check refuses the connection as a delivery would (the host is
-- checked again at connect time: here a superuser moved it to loopback)
UPDATE egress.destination SET location = 'loader@127.0.0.1:1/db' WHERE name = 'pgu_a';
SET ROLE pgd_user;
SELECT "check", ok, detail FROM egress_check('pgu_a') WHERE "check" LIKE 'reachable%';
SELECT count(*) AS secret_rows FROM egress_check() c WHERE c.detail ~ 'v1ct1m';
RESET ROLE;
-- a superuser's destination connects wherever it says: here nobody listens
SELECT egress_add_destination('pg_f', 'postgres://loader@127.0.0.1:1/db', '{"password": "s3cr3t", "connect_timeout": "2s"}');
SELECT "check", ok, detail ~ '^could not connect to PostgreSQL destination loader@127\.0\.0\.1:1/db: ' AS says,
	   detail ~ 's3cr3t' AS shows_secret
  FROM egress_check('pg_f') WHERE "check" LIKE 'reachable%';

SELECT egress_remove_destination(name) FROM egress.destination WHERE name LIKE 'pg%' ORDER BY name;
DROP ROLE pgd_user;
