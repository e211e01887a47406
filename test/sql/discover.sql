--
-- egress_discover(): the Singer catalog, shaped like "tap-postgres
-- --discover", with the schemas of the type map RECORDs use.
--
CREATE EXTENSION IF NOT EXISTS pg_egress;
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE SCHEMA disc;
CREATE SCHEMA disc_other;
CREATE TYPE disc.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN disc.price AS numeric(5,1);

-- every type of the contract
CREATE TABLE disc.every (
	id integer,
	c_int2 smallint,
	c_int8 bigint NOT NULL,
	c_num12_2 numeric(12,2),
	c_num numeric,
	c_real real,
	c_double double precision,
	c_bool boolean,
	c_bit1 bit(1),
	c_bit4 bit(4),
	c_varbit varbit,
	c_text text,
	c_dropped text,
	c_varchar varchar(10),
	c_char char(5),
	c_name name,
	c_citext citext,
	c_uuid uuid,
	c_money money,
	c_inet inet,
	c_cidr cidr,
	c_macaddr macaddr,
	c_enum disc.mood,
	c_date date,
	c_ts timestamp,
	c_tstz timestamptz,
	c_time time,
	c_timetz timetz,
	c_json json,
	c_jsonb jsonb,
	c_hstore hstore,
	c_int_arr integer[],
	c_text_arr text[],
	c_num_arr numeric(4,2)[],
	c_varchar_arr varchar(20)[],
	c_tstz_arr timestamptz[],
	c_interval interval,
	c_bytea bytea,
	c_tsvector tsvector,
	c_point point,
	c_xml xml,
	c_int4range int4range,
	c_price disc.price NOT NULL,
	PRIMARY KEY (c_int8, id)
);
ALTER TABLE disc.every DROP COLUMN c_dropped;
INSERT INTO disc.every (id, c_int8, c_price) SELECT i, i, 1 FROM generate_series(1, 3) i;
ANALYZE disc.every;

-- a view, a partitioned table (its partitions are not streams of their own)
CREATE VIEW disc.every_view AS SELECT id, c_text FROM disc.every;
CREATE TABLE disc.parted (id bigint PRIMARY KEY, "Mixed Case" text) PARTITION BY RANGE (id);
CREATE TABLE disc.parted_1 PARTITION OF disc.parted FOR VALUES FROM (0) TO (100);
CREATE TABLE disc_other.elsewhere (x int);

SELECT jsonb_pretty(egress_discover(ARRAY['disc']));

-- the filter: one schema, several, none matching
SELECT s->>'tap_stream_id' AS tap_stream_id
  FROM jsonb_array_elements(egress_discover(ARRAY['disc', 'disc_other'])->'streams') s;
SELECT egress_discover(ARRAY['nosuch']);

-- only what the caller may read: a table, some columns of another
CREATE ROLE disc_reader;
GRANT USAGE ON SCHEMA disc, disc_other TO disc_reader;
GRANT SELECT (id, c_text) ON disc.every TO disc_reader;
GRANT SELECT ON disc_other.elsewhere TO disc_reader;
SET ROLE disc_reader;
SELECT jsonb_pretty(egress_discover(ARRAY['disc', 'disc_other']));
-- no schema filter: everything readable, never the egress catalog
SELECT s->>'tap_stream_id' AS tap_stream_id
  FROM jsonb_array_elements(egress_discover()->'streams') s
 WHERE s->>'tap_stream_id' LIKE 'disc%' OR s->>'tap_stream_id' LIKE 'egress%';
RESET ROLE;
SELECT count(*) AS egress_catalog_listed
  FROM jsonb_array_elements(egress_discover()->'streams') s
 WHERE s->'metadata'->0->'metadata'->>'schema-name' = 'egress';

-- the schema of a stream is the one its SCHEMA messages carry
SELECT (egress_discover(ARRAY['disc'])->'streams'->0->'schema') =
	egress_preview_schema('disc.every')::jsonb AS same_schema_as_records;

DROP SCHEMA disc, disc_other CASCADE;
DROP OWNED BY disc_reader;
DROP ROLE disc_reader;
