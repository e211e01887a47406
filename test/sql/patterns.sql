--
-- egress_add_streams(): psql-style table patterns, all or nothing, and
-- follow_new_tables.  (The workers serve another database: the streams
-- made here only sit in the catalog.)
--
CREATE EXTENSION IF NOT EXISTS pg_egress;
SELECT egress_add_destination('pat', 'file:///tmp/pg_egress_patterns_unused');

CREATE SCHEMA sales;
CREATE SCHEMA "Sales";
CREATE TABLE sales.orders (id int PRIMARY KEY);
CREATE TABLE sales.order_items (id int PRIMARY KEY);
CREATE TABLE sales."Order_Mixed" (id int PRIMARY KEY);
CREATE TABLE sales.customers (id int PRIMARY KEY);
CREATE TABLE sales.nopk (x int);
CREATE TABLE sales."a$b" (id int PRIMARY KEY);
CREATE TABLE sales.parted (id int PRIMARY KEY) PARTITION BY RANGE (id);
CREATE TABLE sales.parted_1 PARTITION OF sales.parted FOR VALUES FROM (0) TO (10);
CREATE VIEW sales.order_view AS SELECT * FROM sales.orders;
CREATE TABLE "Sales".x (id int PRIMARY KEY);
CREATE TABLE public.things (id int PRIMARY KEY);

-- what a pattern matches; each call is undone afterwards
CREATE FUNCTION try(inc text, exc text DEFAULT NULL) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE r text[];
BEGIN
	r := egress_add_streams(inc, exc, method => 'FULL_TABLE', destination => 'pat');
	RAISE EXCEPTION USING MESSAGE = 'undo', DETAIL = coalesce(r::text, 'null');
EXCEPTION WHEN raise_exception THEN
	RETURN r;
END $$;

SELECT try('sales.order*');				-- unquoted: folded to lower case
SELECT try('sales."Order_Mixed"');		-- quoted: case kept
SELECT try('SALES.ORDERS');
SELECT try('sales.order?');				-- ? is one character
SELECT try('"Sales".*');
SELECT try('Sales.*', 'sales.order*, sales.nopk');	-- exclude
SELECT try('sales.a$b');				-- $ is literal
SELECT try('sales.[oc]*s');				-- other regex characters as in psql
SELECT try('sales."order*"');			-- * inside quotes is literal
SELECT try('thing*');					-- unqualified: the search path
SELECT try('sales.orders, public.things');
SELECT try('sales.parted*');			-- partitions are not streams of their own
SELECT try('sales.order_view');			-- views are not matched

-- nothing matches: WARNING, nothing created
SELECT egress_add_streams('nosuch.*', method => 'FULL_TABLE', destination => 'pat');
SELECT egress_add_streams('sales.*', 'sales.*', method => 'FULL_TABLE', destination => 'pat');
SELECT count(*) FROM egress_streams;

-- bad patterns
SELECT egress_add_streams('a.b.c', method => 'FULL_TABLE', destination => 'pat');
SELECT egress_add_streams('sales."open', method => 'FULL_TABLE', destination => 'pat');
SELECT egress_add_streams('', method => 'FULL_TABLE', destination => 'pat');
SELECT egress_add_streams('sales.', method => 'FULL_TABLE', destination => 'pat');
SELECT egress_add_streams('.x', method => 'FULL_TABLE', destination => 'pat');
SELECT egress_add_streams('sales.[', method => 'FULL_TABLE', destination => 'pat');
SELECT egress_add_streams('sales.*', method => 'FULL_TABLE', destination => 'nosuch');
SELECT egress_add_streams(NULL, method => 'FULL_TABLE', destination => 'pat');

-- all or nothing: one table cannot be INCREMENTAL (no primary key)
SELECT egress_add_streams('sales.*', method => 'INCREMENTAL', destination => 'pat',
	options => '{"replication_key": "id"}');
SELECT count(*) FROM egress_streams;
-- two tables, one stream name
CREATE SCHEMA sales_a;
CREATE TABLE sales_a.b (id int);
CREATE TABLE sales.a_b (id int);
SELECT egress_add_streams('sales*.*b', method => 'FULL_TABLE', destination => 'pat');
SELECT count(*) FROM egress_streams;

-- for real
SELECT egress_add_streams('sales.*', 'sales.nopk, sales.a*', method => 'INCREMENTAL',
	destination => 'pat', options => '{"replication_key": "id", "interval": 60}');
SELECT name, relation, method, options FROM egress_streams ORDER BY name;
SELECT egress_add_streams('sales.orders', method => 'FULL_TABLE', destination => 'pat');

-- follow_new_tables
SELECT egress_add_streams('sales.new_*', method => 'FULL_TABLE', destination => 'pat',
	options => '{"follow_new_tables": true, "batch_max_rows": 10}');
SELECT egress_add_streams('new_*', method => 'FULL_TABLE', destination => 'pat',
	options => '{"follow_new_tables": true}');
SELECT egress_add_streams('sales.new_*', method => 'INCREMENTAL', destination => 'pat',
	options => '{"follow_new_tables": true}');
SELECT egress_add_streams('sales.new_*', method => 'FULL_TABLE', destination => 'pat',
	options => '{"follow_new_tables": 1}');
SELECT include, exclude, method, destination, options FROM egress_stream_patterns;
CREATE TABLE sales.new_one (id int PRIMARY KEY);
CREATE TABLE sales.not_new (id int PRIMARY KEY);
CREATE TABLE sales.new_two AS SELECT 1 AS id;
BEGIN;
CREATE TABLE sales.new_rolled_back (id int);
ROLLBACK;
SELECT name, relation, method, options FROM egress_streams WHERE name LIKE 'sales_new%' ORDER BY name;
-- a table of a role whose privileges the rule's owner does not have, by a
-- role that cannot read the egress catalog: the table is made, the stream
-- is not
CREATE ROLE pat_owner;
CREATE ROLE pat_user;
GRANT CREATE, USAGE ON SCHEMA sales TO pat_user;
GRANT pg_write_server_files TO pat_owner;
GRANT EXECUTE ON FUNCTION egress_add_streams(text, text, text, text, jsonb),
	egress_add_destination(text, text, jsonb) TO pat_owner;
GRANT USAGE ON SCHEMA sales TO pat_owner;
SET ROLE pat_owner;
SELECT egress_add_destination('pat2', 'file:///tmp/pg_egress_patterns_unused2');
SELECT egress_add_streams('sales.mine_*', method => 'FULL_TABLE', destination => 'pat2',
	options => '{"follow_new_tables": true}');
RESET ROLE;
SET ROLE pat_user;
CREATE TABLE sales.mine_1 (id int);
SELECT count(*) FROM sales.mine_1;
RESET ROLE;
-- followed once the rule's owner has the privileges of the table's owner
GRANT pat_user TO pat_owner;
SET ROLE pat_user;
CREATE TABLE sales.mine_2 (id int PRIMARY KEY);
RESET ROLE;
-- a LOG_BASED rule and a table that cannot be keyed
SELECT egress_add_streams('sales.cdc_*', method => 'LOG_BASED', destination => 'pat',
	options => '{"follow_new_tables": true}');
CREATE TABLE sales.cdc_keyed (id int PRIMARY KEY);
CREATE TABLE sales.cdc_unkeyed (x int);
SELECT name, method FROM egress_streams WHERE name LIKE 'sales_cdc%' OR name LIKE 'sales_mine%' ORDER BY name;
-- removing a rule
SELECT egress_remove_stream_pattern(id) FROM egress_stream_patterns WHERE include = 'sales.new_*';
SELECT egress_remove_stream_pattern(12345);
CREATE TABLE sales.new_three (id int PRIMARY KEY);
SELECT count(*) FROM egress_streams WHERE name = 'sales_new_three';

SELECT egress_remove_destination('pat', cascade => true);
SELECT count(*) FROM egress.stream_pattern;
DROP SCHEMA sales, "Sales", sales_a CASCADE;
DROP TABLE public.things;
DROP FUNCTION try;
SELECT egress_remove_destination('pat2', cascade => true);
DROP OWNED BY pat_owner, pat_user;
DROP ROLE pat_owner, pat_user;
