--
-- Publications of pgoutput destinations, the "decoder" option, and the
-- stream options "columns" and "filter".  (The workers serve another
-- database: nothing here is decoded.)
--
\set VERBOSITY default
CREATE EXTENSION IF NOT EXISTS pg_egress;

CREATE VIEW pub AS
SELECT p.pubname, p.pubowner = 10 AS bootstrap_owned, p.puballtables, p.pubinsert,
	   p.pubupdate, p.pubdelete, p.pubtruncate, p.pubviaroot,
	   obj_description(p.oid, 'pg_publication') AS comment
  FROM pg_publication p WHERE p.pubname LIKE 'pg\_egress\_%' ORDER BY 1;
CREATE VIEW pub_tables AS
SELECT pubname, schemaname, tablename, attnames, rowfilter
  FROM pg_publication_tables WHERE pubname LIKE 'pg\_egress\_%' ORDER BY 1, 2, 3;

CREATE SCHEMA shop;
CREATE TABLE shop.customers (id int PRIMARY KEY, email text, ssn text, region text, score int);
CREATE TABLE shop.orders (id int PRIMARY KEY, customer int, amount numeric, note text);
CREATE TABLE shop.full_ident (id int PRIMARY KEY, region text, secret text);
ALTER TABLE shop.full_ident REPLICA IDENTITY FULL;
CREATE TABLE shop.by_index (id int NOT NULL, code text NOT NULL, note text);
CREATE UNIQUE INDEX by_index_code ON shop.by_index (code);
ALTER TABLE shop.by_index REPLICA IDENTITY USING INDEX by_index_code;
CREATE TABLE shop.parted (id int PRIMARY KEY, region text) PARTITION BY RANGE (id);
CREATE TABLE shop.parted_1 PARTITION OF shop.parted FOR VALUES FROM (0) TO (100);
CREATE VIEW shop.customers_view AS SELECT * FROM shop.customers;
CREATE FUNCTION shop.is_eu(text) RETURNS boolean IMMUTABLE LANGUAGE sql AS $$ SELECT $1 = 'eu' $$;
CREATE FUNCTION shop.text_eq(text, text) RETURNS boolean IMMUTABLE LANGUAGE sql AS $$ SELECT $1 = $2 $$;
CREATE OPERATOR shop.=== (LEFTARG = text, RIGHTARG = text, FUNCTION = shop.text_eq);
CREATE DOMAIN shop.posint AS int CHECK (VALUE > 0);

-- a pgoutput destination (the default) gets its publication, owned by the
-- bootstrap superuser; a wal2json one gets none
SELECT egress_add_destination('lake', 'file:///tmp/pg_egress_publication_unused');
SELECT egress_add_destination('old', 'file:///tmp/pg_egress_publication_unused',
							  '{"decoder": "wal2json"}');
SELECT egress_add_destination('bad', 'file:///tmp/pg_egress_publication_unused',
							  '{"decoder": "test_decoding"}');
SELECT * FROM pub;
SELECT name, options FROM egress.destination ORDER BY 1;

-- a publication of that name that pg_egress did not make is never taken over
CREATE PUBLICATION pg_egress_taken;
SELECT egress_add_destination('taken', 'file:///tmp/pg_egress_publication_unused');
SELECT egress_add_destination('taken', 'file:///tmp/pg_egress_publication_unused',
							  '{"decoder": "wal2json"}');
SELECT egress_remove_destination('taken');
SELECT pubname FROM pg_publication WHERE pubname = 'pg_egress_taken';

-- the publication holds the tables of the destination's LOG_BASED streams
SELECT egress_add_stream('cust', 'shop.customers', 'LOG_BASED', 'lake');
SELECT egress_add_stream('ord_full', 'shop.orders', 'FULL_TABLE', 'lake');
SELECT egress_add_stream('ord_old', 'shop.orders', 'LOG_BASED', 'old');
SELECT * FROM pub_tables;
-- ... in the caller's transaction
BEGIN;
SELECT egress_add_stream('ord', 'shop.orders', 'LOG_BASED', 'lake');
SELECT * FROM pub_tables;
ROLLBACK;
SELECT * FROM pub_tables;
SELECT egress_remove_stream('cust');
SELECT * FROM pub_tables;
-- what PostgreSQL refuses in a publication refuses the stream, with its own error
CREATE UNLOGGED TABLE shop.scratch (id int PRIMARY KEY);
SELECT egress_add_stream('scratch', 'shop.scratch', 'LOG_BASED', 'lake');
SELECT count(*) FROM egress.stream WHERE name = 'scratch';

-- patterns, and tables created later (follow_new_tables)
SELECT egress_add_streams('shop.cust*', method => 'LOG_BASED', destination => 'lake',
						  options => '{"follow_new_tables": true}');
CREATE TABLE shop.customers_archive (id int PRIMARY KEY, email text);
SELECT * FROM pub_tables;

-- columns: names of the relation, the key included, readable by the owner
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": "id"}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": []}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": ["id", 3]}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": ["id", "id"]}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": ["id", "nope"]}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": ["id", "ctid"]}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": ["amount"]}');
SELECT egress_add_stream('c1', 'shop.orders', 'INCREMENTAL', 'lake', 'customer', '{"columns": ["id", "amount"]}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake',
						 options => '{"columns": ["id", "amount"], "fast_sync": true}');
SELECT egress_add_stream('c1', 'shop.by_index', 'LOG_BASED', 'lake', options => '{"columns": ["id", "note"]}');
SELECT egress_add_stream('c1', 'shop.full_ident', 'LOG_BASED', 'lake', options => '{"columns": ["id", "region"]}');
SELECT egress_add_stream('c1', 'shop.parted', 'LOG_BASED', 'lake', options => '{"columns": ["id"]}');
SELECT egress_add_stream('c1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"columns": ["id", "amount"]}');
SELECT egress_add_stream('c2', 'shop.customers_view', 'FULL_TABLE', 'lake', options => '{"columns": ["id", "region"]}');
SELECT egress_add_stream('c3', 'shop.by_index', 'LOG_BASED', 'lake', options => '{"columns": ["code", "note"]}');
SELECT egress_add_stream('c4', 'shop.orders', 'LOG_BASED', 'old', options => '{"columns": ["id", "amount"]}');

-- filter: one boolean expression; injection attempts are refused
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": ""}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "true) OR (1=1"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "true); DROP TABLE shop.orders; --"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "true) --"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "true; DELETE FROM shop.orders"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "'');DROP TABLE shop.orders;--"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "(amount > 0"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "amount > 0 UNION SELECT 1"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "amount >"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "amount + 1"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "nope > 1"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "id IN (SELECT id FROM shop.customers)"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "EXISTS (SELECT 1)"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "random() < 0.5"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "now() > ''2020-01-01''"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "shop.is_eu(note)"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "is_eu(note)"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "note OPERATOR(shop.===) ''eu''"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "id::shop.posint > 1"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "ctid > ''(0,1)''"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "count(*) > 1"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "pg_catalog.pg_sleep(1) IS NULL"}');
SELECT egress_add_stream('f1', 'shop.orders', 'FULL_TABLE', 'lake', options => '{"filter": "amount > 10 AND note IS NOT NULL -- comment"}');
SELECT egress_add_stream('f2', 'shop.orders', 'INCREMENTAL', 'lake', 'id',
						 '{"filter": "upper(note) LIKE ''A%'' OR amount BETWEEN 1 AND 2"}');
SELECT name, options FROM egress.stream WHERE name IN ('f1', 'f2') ORDER BY 1;

-- LOG_BASED: filter columns in the replica identity (unless FULL), not on
-- partitioned tables, not with wal2json
SELECT egress_add_stream('l1', 'shop.orders', 'LOG_BASED', 'lake', options => '{"filter": "amount > 10"}');
SELECT egress_add_stream('l1', 'shop.by_index', 'LOG_BASED', 'lake', options => '{"filter": "id > 10"}');
SELECT egress_add_stream('l1', 'shop.parted', 'LOG_BASED', 'lake', options => '{"filter": "id > 10"}');
SELECT egress_add_stream('l1', 'shop.orders', 'LOG_BASED', 'old', options => '{"filter": "id > 10"}');
SELECT egress_add_stream('l1', 'shop.orders', 'LOG_BASED', 'lake',
						 options => '{"filter": "id > 10 AND id <> 13", "columns": ["id", "amount"]}');
SELECT egress_add_stream('l2', 'shop.full_ident', 'LOG_BASED', 'lake', options => '{"filter": "region = ''eu''"}');
SELECT egress_add_stream('l3', 'shop.by_index', 'LOG_BASED', 'lake', options => '{"filter": "code LIKE ''x%''"}');
-- one column list and filter per table and destination
SELECT egress_add_stream('l4', 'shop.orders', 'LOG_BASED', 'lake');
SELECT * FROM pub_tables;
SELECT egress_remove_stream('l1');
SELECT egress_add_stream('l4', 'shop.orders', 'LOG_BASED', 'lake');
SELECT egress_add_stream('l5', 'shop.orders', 'LOG_BASED', 'lake', options => '{"filter": "id > 1"}');
SELECT * FROM pub_tables;

-- the owner's column privileges decide
CREATE ROLE egress_pub_user;
GRANT pg_write_server_files TO egress_pub_user;
GRANT USAGE ON SCHEMA shop TO egress_pub_user;
GRANT SELECT (id, email, region) ON shop.customers TO egress_pub_user;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb), egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_destination(text, boolean), egress_remove_stream(text) TO egress_pub_user;
GRANT CREATE ON DATABASE contrib_regression TO egress_pub_user;
SET ROLE egress_pub_user;
SELECT egress_add_destination('mine', 'file:///tmp/pg_egress_publication_unused');
SELECT egress_add_stream('u1', 'shop.customers', 'FULL_TABLE', 'mine', options => '{"columns": ["id", "ssn"]}');
SELECT egress_add_stream('u1', 'shop.customers', 'FULL_TABLE', 'mine', options => '{"columns": ["id", "email"], "filter": "ssn IS NULL"}');
SELECT egress_add_stream('u1', 'shop.customers', 'FULL_TABLE', 'mine', options => '{"columns": ["id", "email"], "filter": "region = ''eu''"}');
-- a column list or row filter in the publication binds the table's owner:
-- a LOG_BASED stream with them needs the owner's privileges (a plain one
-- needs only SELECT)
SELECT egress_add_stream('u2', 'shop.customers', 'LOG_BASED', 'mine', options => '{"columns": ["id", "email", "region"], "filter": "id > 0"}');
RESET ROLE;
CREATE TABLE shop.own (id int PRIMARY KEY, email text, ssn text);
ALTER TABLE shop.own OWNER TO egress_pub_user;
SET ROLE egress_pub_user;
SELECT egress_add_stream('u2', 'shop.own', 'LOG_BASED', 'mine', options => '{"columns": ["id", "email"], "filter": "id > 0"}');
-- the user cannot change or drop pg_egress's publication
ALTER PUBLICATION pg_egress_mine ADD TABLE shop.orders;
DROP PUBLICATION pg_egress_mine;
RESET ROLE;
SELECT * FROM pub_tables WHERE pubname = 'pg_egress_mine';
-- a filter checked again as its owner: the table given away, the stream's
-- owner may read only email; the stream that no longer passes is named
ALTER TABLE shop.own OWNER TO CURRENT_USER;
GRANT SELECT (email) ON shop.own TO egress_pub_user;
SELECT egress_add_stream('u4', 'shop.orders', 'LOG_BASED', 'mine');
SELECT * FROM pub_tables WHERE pubname = 'pg_egress_mine';
GRANT SELECT (id) ON shop.own TO egress_pub_user;

-- a table without a usable replica identity is never kept in the
-- publication (PostgreSQL would fail every UPDATE and DELETE of it)
CREATE TABLE shop.ident (id int PRIMARY KEY);
CREATE TABLE shop.pident (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE shop.pident_1 PARTITION OF shop.pident FOR VALUES FROM (0) TO (100);
CREATE TABLE shop.pident_2 PARTITION OF shop.pident FOR VALUES FROM (100) TO (200);
SELECT egress_add_stream('ri', 'shop.ident', 'LOG_BASED', 'mine');
SELECT egress_add_stream('pri', 'shop.pident', 'LOG_BASED', 'mine');
SELECT tablename FROM pub_tables WHERE pubname = 'pg_egress_mine';
ALTER TABLE shop.ident REPLICA IDENTITY NOTHING;
ALTER TABLE shop.pident_2 REPLICA IDENTITY NOTHING;
SELECT egress_resync_stream('u4');
SELECT tablename FROM pub_tables WHERE pubname = 'pg_egress_mine';
-- DEFAULT without a primary key, a dropped identity index: likewise
ALTER TABLE shop.ident REPLICA IDENTITY DEFAULT;
ALTER TABLE shop.pident_2 REPLICA IDENTITY DEFAULT;
SELECT egress_resync_stream('ri');
SELECT tablename FROM pub_tables WHERE pubname = 'pg_egress_mine';
ALTER TABLE shop.ident DROP CONSTRAINT ident_pkey;
SELECT egress_resync_stream('ri');
SELECT tablename FROM pub_tables WHERE pubname = 'pg_egress_mine';
ALTER TABLE shop.ident ALTER id SET NOT NULL;
CREATE UNIQUE INDEX ident_key ON shop.ident (id);
ALTER TABLE shop.ident REPLICA IDENTITY USING INDEX ident_key;
SELECT egress_resync_stream('ri');
SELECT tablename FROM pub_tables WHERE pubname = 'pg_egress_mine';
DROP INDEX shop.ident_key;
SELECT egress_resync_stream('ri');
SELECT egress_remove_stream('pri');
SELECT tablename FROM pub_tables WHERE pubname = 'pg_egress_mine';
SELECT egress_remove_stream('ri');

-- a publication replaced by another role's is left alone
DROP PUBLICATION pg_egress_mine;
ALTER ROLE egress_pub_user SUPERUSER;
SET ROLE egress_pub_user;
CREATE PUBLICATION pg_egress_mine;
RESET ROLE;
ALTER ROLE egress_pub_user NOSUPERUSER;
SELECT egress_add_stream('u3', 'shop.orders', 'LOG_BASED', 'mine');
SELECT egress_remove_stream('u2');
SELECT egress_remove_destination('mine', true);
SELECT pubname, pubowner::regrole FROM pg_publication WHERE pubname = 'pg_egress_mine';
DROP PUBLICATION pg_egress_mine;

-- a destination taking over a tap's wal2json slot decodes with wal2json
SELECT 1 FROM pg_create_logical_replication_slot('tap_slot', 'wal2json');
SELECT 1 FROM pg_create_logical_replication_slot('other_pgoutput', 'pgoutput');
SELECT egress_add_destination('tap', 'file:///tmp/pg_egress_publication_unused',
							  '{"slot_name": "tap_slot", "decoder": "pgoutput"}');
SELECT egress_add_destination('tap', 'file:///tmp/pg_egress_publication_unused',
							  '{"slot_name": "tap_slot"}');
SELECT egress_add_destination('tap2', 'file:///tmp/pg_egress_publication_unused',
							  '{"slot_name": "other_pgoutput"}');
SELECT options FROM egress.destination WHERE name = 'tap';
SELECT pubname FROM pg_publication WHERE pubname IN ('pg_egress_tap', 'pg_egress_tap2');
SELECT egress_add_stream('tapcust', 'shop.customers', 'LOG_BASED', 'tap', options => '{"filter": "id > 1"}');
SELECT egress_remove_destination('tap');
SELECT pg_drop_replication_slot('tap_slot');
SELECT pg_drop_replication_slot('other_pgoutput');

-- removing a destination drops its publication with its streams
SELECT egress_remove_destination('lake', true);
SELECT egress_remove_destination('old', true);
SELECT * FROM pub;
SELECT count(*) FROM egress.stream_pattern;

DROP PUBLICATION pg_egress_taken;
DROP SCHEMA shop CASCADE;
DROP VIEW pub_tables;
DROP VIEW pub;
REVOKE ALL ON DATABASE contrib_regression FROM egress_pub_user;
REVOKE ALL ON FUNCTION egress_add_destination(text, text, jsonb), egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_destination(text, boolean), egress_remove_stream(text) FROM egress_pub_user;
DROP ROLE egress_pub_user;
