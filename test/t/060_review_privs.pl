
# Review of issue 10 (helper 7, attacker): holes left after the fix.
#
# Each block asserts the SAFE behaviour.  Blocks marked "FAILS NOW" reproduce
# a hole on the current code (the assertion fails until it is fixed).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('review_privs', cdc => 1);
sub sql { return $node->safe_psql('postgres', $_[0]); }

sub rolsuper
{
	return sql('SELECT rolsuper FROM pg_roles WHERE rolname = ' . sql_quote($_[0]));
}

# whoever runs mallory's code other than mallory herself, as text
sub ran_as_others
{
	my ($tag) = @_;
	return sql(q{SELECT coalesce(string_agg(DISTINCT tag || ' as ' || by_role || CASE WHEN by_super THEN ' (superuser)' ELSE '' END, ', '), '')
		FROM public.ran WHERE by_role <> 'mallory' AND tag LIKE } . sql_quote($tag));
}

sql(q{
CREATE TABLE public.ran (tag text, by_role text, by_super bool);
GRANT INSERT ON public.ran TO PUBLIC;
CREATE ROLE mallory LOGIN;
CREATE ROLE etl LOGIN;
GRANT pg_write_server_files TO etl;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb), egress_sync_now(text), egress_resync_stream(text) TO etl;
CREATE SCHEMA m AUTHORIZATION mallory;
});

# mallory's payload: a domain whose CHECK logs who runs it and escalates
# when that is a superuser.
my ($ret, $stdout, $stderr) = query_as($node, 'mallory', q{
CREATE FUNCTION m.chk(tag text, v int) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
	su pg_catalog.bool;
BEGIN
	SELECT r.rolsuper INTO su FROM pg_catalog.pg_roles r
	 WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER;
	INSERT INTO public.ran VALUES (tag, CURRENT_USER, su);
	IF su THEN
		EXECUTE 'ALTER ROLE mallory SUPERUSER';
	END IF;
	RETURN v > 0;
END
$$;
GRANT USAGE ON SCHEMA m TO PUBLIC;
CREATE DOMAIN m.posint AS int CHECK (m.chk('array of domain', VALUE));
CREATE DOMAIN m.posint2 AS int CHECK (m.chk('composite with domain', VALUE));
CREATE TYPE m.pair AS (a int, b m.posint2);
-- INCREMENTAL tables: an integer replication key, a primary key whose
-- ordering re-parses the bookmark through the domain
CREATE TABLE m.arr (k int, id m.posint[] PRIMARY KEY);
INSERT INTO m.arr VALUES (1, '{1}'), (2, '{2}');
CREATE TABLE m.comp (k int, id m.pair PRIMARY KEY);
INSERT INTO m.comp VALUES (1, '(1,1)'), (2, '(2,2)');
GRANT SELECT ON m.arr, m.comp TO PUBLIC;
});
is($ret, 0, 'mallory sets up her tables') or diag $stderr;
sql(q{TRUNCATE public.ran});

# ---- 1. INCREMENTAL: the bookmark's primary-key values are parsed with the
# primary key's own type (array of a domain, composite with a domain field):
# the table owner's CHECK ran as the stream owner (src/worker/incremental.c
# pos_column_init(): the WHERE cast "$n::m.posint[]" / "$n::m.pair", and
# array_in/record_in called domain_in).  Fixed: an array of a domain is
# compared as the array of the base type (egress_check_free_input_type);
# a composite with a domain field is refused by egress_add_stream.
my $inc_su = new_outdir($node, 'inc_su');
my $inc_etl = new_outdir($node, 'inc_etl');
sql('SELECT egress_add_destination(' . sql_quote('su_d') . ', ' . sql_quote(file_url($inc_su)) . ')');
sql(q{SELECT egress_add_stream('arr_su', 'm.arr', 'INCREMENTAL', 'su_d', 'k', '{"interval": "1 hour"}')});
# a composite with a domain field has no check-free twin to parse the
# bookmark with: refused when the stream is added
($ret, $stdout, $stderr) = $node->psql('postgres',
	q{SELECT egress_add_stream('comp_su', 'm.comp', 'INCREMENTAL', 'su_d', 'k', '{"interval": "1 hour"}')});
isnt($ret, 0, 'an INCREMENTAL stream keyed by a composite with a domain field is refused');
like($stderr, qr/primary key values cannot be read back safely.*\n.*column "id" has type m\.pair/,
	'the refusal names the column and its type');
($ret, $stdout, $stderr) = query_as($node, 'etl',
	'SELECT egress_add_destination(' . sql_quote('etl_d') . ', ' . sql_quote(file_url($inc_etl)) . ');'
	  . q{SELECT egress_add_stream('arr_etl', 'm.arr', 'INCREMENTAL', 'etl_d', 'k', '{"interval": "1 hour"}');});
is($ret, 0, 'etl adds an INCREMENTAL stream of mallory\'s table') or diag $stderr;

for my $s (qw(arr_su arr_etl))
{
	wait_stream_where($node, $s, "state = 'synced' AND rows_sent = 2", 120, "$s: first run sends 2 rows");
}
# the next runs resume after the bookmark (key, primary key)
($ret, $stdout, $stderr) = query_as($node, 'mallory', q{
-- same key as the bookmark: the primary-key comparison must be evaluated
INSERT INTO m.arr VALUES (2, '{5}');
INSERT INTO m.comp VALUES (2, '(5,5)');
});
sql(q{TRUNCATE public.ran});
# one run at a time: two CHECKs running ALTER ROLE at once would make one
# run fail ("tuple concurrently updated") and roll its log row back
for my $s (qw(arr_su arr_etl))
{
	if ($s eq 'arr_etl') { query_as($node, 'etl', "SELECT egress_sync_now('$s')"); }
	else { sql("SELECT egress_sync_now('$s')"); }
	wait_stream_where($node, $s, "(state = 'synced' AND bookmark::text LIKE '%5%') OR last_error IS NOT NULL",
		120, "$s: second run done");
}
is(ran_as_others('array of domain'), '', 'primary key of an array of a domain: no code of mallory ran as another role');
is(ran_as_others('composite with domain'), '', 'composite primary key with a domain field: no code of mallory ran as another role');
is(rolsuper('mallory'), 'f', 'mallory did not become a superuser through an INCREMENTAL bookmark');
is(sql(q{SELECT string_agg(name || ': ' || state, ', ' ORDER BY name) FROM egress_streams
	WHERE name IN ('arr_su', 'arr_etl') AND bookmark::text LIKE '%{5}%'}),
	'arr_etl: synced, arr_su: synced', 'the runs after an array-of-domain bookmark succeed and send the new row');


# ---- 2. egress_streams / egress_stream_patterns are not security_barrier
# views: a cheap leaky function in the caller's WHERE clause is evaluated
# below "pg_has_role(s.owner, 'MEMBER')" and sees other roles' rows (stream
# and relation names, bookmarks -- key values of tables the caller cannot
# read --, last_error, options).  Fixed: both are security_barrier views.
# sql/pg_egress--0.1.sql: CREATE VIEW egress_streams / egress_stream_patterns.
sql(q{
CREATE SCHEMA hr;
CREATE TABLE hr.salaries (id int PRIMARY KEY, k int);
INSERT INTO hr.salaries VALUES (1, 424242);
SELECT egress_add_stream('hr_secret_stream', 'hr.salaries', 'INCREMENTAL', 'su_d', 'k', '{"interval": "1 hour"}');
SELECT egress_add_streams('hr.secret_pattern_*', method => 'FULL_TABLE', destination => 'su_d', options => '{"follow_new_tables": true}');
GRANT SELECT ON egress_streams, egress_stream_patterns TO etl;
GRANT EXECUTE ON FUNCTION egress_stream_activity() TO etl;
});
wait_stream_where($node, 'hr_secret_stream', "state = 'synced' AND rows_sent = 1", 120, 'hr_secret_stream synced');
($ret, $stdout, $stderr) = query_as($node, 'etl', q{
CREATE FUNCTION pg_temp.leak(text) RETURNS bool LANGUAGE plpgsql COST 0.0000001 AS
$$BEGIN RAISE NOTICE 'leak: %', $1; RETURN true; END$$;
SELECT count(*) FROM egress_streams WHERE pg_temp.leak(name);
SELECT count(*) FROM egress_streams WHERE pg_temp.leak(bookmark::text);
SELECT count(*) FROM egress_stream_patterns WHERE pg_temp.leak(include);
});
is($ret, 0, 'etl queries egress_streams with a leaky function') or diag $stderr;
unlike($stderr, qr/hr_secret_stream/, 'egress_streams does not leak other roles\' stream names');
unlike($stderr, qr/424242/, 'egress_streams does not leak other roles\' bookmarks (data of tables etl cannot read)');
unlike($stderr, qr/secret_pattern/, 'egress_stream_patterns does not leak other roles\' patterns');

# ---- 3. fast_sync reads as the owner without pinning search_path: user
# code it runs (a row security policy's function) resolves names through
# the worker's default search_path ("$user", public), unlike every other
# sync path (snapshot.c pins it).  Fixed: fast_sync pins it too.
# src/export/fast_sync.c egress_fast_sync_write(): SetUserIdAndSecContext()
# around egress_export_run() without NewGUCNestLevel()+egress_pin_search_path().
sql(q{
CREATE TABLE public.sp_log (how text, by_role text, path text);
GRANT INSERT ON public.sp_log TO PUBLIC;
CREATE FUNCTION public.sp_probe(how text) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO public.sp_log VALUES (how, CURRENT_USER, pg_catalog.current_setting('search_path'));
	RETURN true;
END $$;
CREATE TABLE public.fs_t (id int PRIMARY KEY);
INSERT INTO public.fs_t VALUES (1);
ALTER TABLE public.fs_t ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON public.fs_t FOR SELECT USING (public.sp_probe(pg_catalog.current_setting('application_name')));
GRANT SELECT ON public.fs_t TO etl;
});
($ret, $stdout, $stderr) = query_as($node, 'etl', q{
SELECT egress_add_stream('fs_plain', 'public.fs_t', 'FULL_TABLE', 'etl_d');
SELECT egress_add_stream('fs_fast', 'public.fs_t', 'FULL_TABLE', 'etl_d', options => '{"fast_sync": true, "fast_sync_format": "batch"}');
});
is($ret, 0, 'etl adds a plain and a fast_sync FULL_TABLE stream') or diag $stderr;
wait_stream_where($node, $_, "state IN ('synced', 'error')", 120, "$_ done") for qw(fs_plain fs_fast);
is(sql(q{SELECT coalesce(string_agg(DISTINCT by_role || ': ' || path, '; '), '') FROM public.sp_log}),
	'etl: pg_catalog, pg_temp',
	'every sync (fast_sync too) runs policies as the owner with search_path pg_catalog, pg_temp');

# ---- 4. pg_write_server_files is checked only when a file destination or
# stream is added: once it is revoked, the role still has the workers
# (running as the bootstrap superuser) write server files for it, e.g.
# through egress_resync_stream().  Fixed: workers check the owner's right
# to use the destination (egress_destination_use_problem) before they open it.
# src/worker/sync.c / snapshot.c / cdc.c / fast_sync.c open the file sink
# without checking the stream owner's (or destination owner's) rights.
my $ver = sql(q{SELECT version FROM egress_streams WHERE name = 'fs_plain'});
sql(q{REVOKE pg_write_server_files FROM etl});
($ret, $stdout, $stderr) = query_as($node, 'etl', q{SELECT egress_resync_stream('fs_plain')});
if ($ret == 0)
{
	wait_stream_where($node, 'fs_plain', "state = 'error' OR (state = 'synced' AND version <> $ver)", 120,
		'fs_plain: resync after the REVOKE done');
	is(sql(q{SELECT state FROM egress_streams WHERE name = 'fs_plain'}), 'error',
		'a role that lost pg_write_server_files gets no more server files written');
}
else
{
	pass('egress_resync_stream refused after REVOKE pg_write_server_files');
}

# ---- 5. CDC TOAST re-read of a table whose primary key is an array of a
# domain: the key text is parsed with array_in -> domain_in, i.e. the table
# owner's CHECK runs as the stream's owner (here a superuser, who can then
# run programs on the server).  src/worker/cdc.c reselect_row() unwrapped a
# top-level domain only.  Fixed: the key is parsed as the array of the base
# type (egress_check_free_input_type) and relabelled.
my $cdc_out = new_outdir($node, 'cdc');
my $flag = $node->basedir . '/pwned_by_check';
my $big = q{(SELECT string_agg(md5(i::text || 'x'), '') FROM generate_series(1, 3125) i)};
# block 1 may have made mallory a superuser: undo that first
sql(q{ALTER ROLE mallory NOSUPERUSER});
($ret, $stdout, $stderr) = query_as($node, 'mallory', qq{
CREATE FUNCTION m.chk3(v int) RETURNS bool LANGUAGE plpgsql AS \$\$
BEGIN
	PERFORM pg_catalog.pg_try_advisory_lock_shared(4343, pg_catalog.hashtext(current_user::pg_catalog.text));
	IF current_user::pg_catalog.text OPERATOR(pg_catalog.<>) 'mallory' THEN
		EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch $flag''';
	END IF;
	BEGIN
		NULL;
	EXCEPTION WHEN others THEN NULL;
	END;
	RETURN true;
END \$\$;
CREATE DOMAIN m.posint3 AS int CHECK (m.chk3(VALUE));
CREATE TABLE m.tt (id m.posint3[] PRIMARY KEY, big text, small int);
ALTER TABLE m.tt ALTER COLUMN big SET STORAGE EXTERNAL;
INSERT INTO m.tt VALUES ('{1}', $big, 1);
GRANT SELECT ON m.tt TO PUBLIC;
});
is($ret, 0, 'mallory creates a table keyed by an array of a domain') or diag $stderr;
sql('SELECT egress_add_destination(' . sql_quote('cdc_d') . ', ' . sql_quote(file_url($cdc_out)) . ')');
sql(q{SELECT egress_add_stream('tt_su', 'm.tt', method => 'LOG_BASED', destination => 'cdc_d')});
wait_stream_state($node, 'tt_su', 'streaming');
query_as($node, 'mallory', q{UPDATE m.tt SET small = small + 10});
poll_until('the update of m.tt arrives', 60, sub {
	return grep { ($_->{type} // '') eq 'RECORD' && "$_->{record}{small}" eq '11' }
	  map { @{ $_->{messages} } } cdc_batches($cdc_out);
});
ok((grep { ($_->{type} // '') eq 'RECORD' && "$_->{record}{small}" eq '11' && length($_->{record}{big} // '') > 1000 }
	  map { @{ $_->{messages} } } cdc_batches($cdc_out)),
	'the update re-read by its array-of-domain key arrived, TOASTed value included');
is(sql(q{SELECT state FROM egress_streams WHERE name = 'tt_su'}), 'streaming', 'tt_su still streams');
ok(!-e $flag, 'mallory\'s CHECK did not run a program as the superuser stream owner (TOAST re-read)');
is(sql(q{
SELECT coalesce(string_agg(DISTINCT CASE WHEN l.objid = pg_catalog.hashtext('mallory')::oid THEN 'mallory' ELSE 'another role' END, ','), 'none')
FROM pg_locks l JOIN pg_stat_activity a USING (pid)
WHERE l.locktype = 'advisory' AND l.classid = 4343 AND a.backend_type = 'pg_egress cdc'}),
	'none', 'no code of mallory ran in the CDC worker');

# ---- 6. egress_stream_activity() (EXECUTE granted to readers of
# egress_streams, as the docs say to) lists every stream's live figures,
# not only the caller's: stream ids, phases, rows sent, slot lag, confirmed
# LSN of other roles' streams.  Fixed: src/shmem.c egress_stream_activity()
# shows the entries of the streams of roles the caller is a member of.
my $tt_id = sql(q{SELECT id FROM egress.stream WHERE name = 'tt_su'});
ok(poll_until('tt_su has a worker slot', 30,
	sub { sql("SELECT count(*) FROM egress_stream_activity() WHERE stream_id = $tt_id") eq '1' }),
	'the superuser sees the activity of tt_su');
($ret, $stdout, $stderr) = query_as($node, 'etl', "SELECT count(*) FROM egress_stream_activity() WHERE stream_id = $tt_id");
is($stdout, '0', 'etl does not see the live figures of the superuser\'s stream');

# ---- 7. Slot adoption without REPLICATION through the default slot name:
# "slot_name" needs REPLICATION, but a destination named <x> uses slot
# "pg_egress_<x>" and adopts it silently when it exists (another tool's
# wal2json slot, or another destination's adopted slot), consuming and
# advancing it.  Fixed: adopting an existing slot pg_egress did not create
# needs the REPLICATION attribute of the destination's owner.
# src/catalog/sqlfuncs.c check_slot_available() (called for the default
# name too) and src/worker/cdc.c ensure_slot() (adopts, slot_owned false).
sql(q{
SELECT pg_create_logical_replication_slot('pg_egress_tool', 'wal2json');
CREATE TABLE public.lb (id int PRIMARY KEY);
GRANT SELECT ON public.lb TO etl;
GRANT pg_write_server_files TO etl;
});
my $tool_lsn = sql(q{SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_egress_tool'});
my $lb_out = new_outdir($node, 'lb');
($ret, $stdout, $stderr) = query_as($node, 'etl',
	'SELECT egress_add_destination(' . sql_quote('tool') . ', ' . sql_quote(file_url($lb_out)) . ');'
	  . q{SELECT egress_add_stream('lb_etl', 'public.lb', method => 'LOG_BASED', destination => 'tool');});
if ($ret == 0)
{
	wait_stream_where($node, 'lb_etl', "state IN ('streaming', 'error')", 120, 'lb_etl started');
	sql(q{INSERT INTO public.lb VALUES (1)});
	poll_until('etl\'s destination consumes the tool\'s slot', 30, sub {
		return sql(q{SELECT confirmed_flush_lsn > '} . $tool_lsn . q{' FROM pg_replication_slots WHERE slot_name = 'pg_egress_tool'}) eq 't';
	});
	is(sql(q{SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_egress_tool'}), $tool_lsn,
		'a role without REPLICATION did not consume another tool\'s slot (default slot name)');
}
else
{
	like($stderr, qr/42501|slot/, 'etl may not adopt an existing slot through the default slot name');
}

done_testing();
