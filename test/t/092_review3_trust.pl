
# Trust review of issue 13's wave (chunked LOG_BASED backfills, parallel
# FULL_TABLE syncs and exports, heartbeats): an unprivileged role, or a
# tenant sharing the cluster, tries to stall other tenants' streams and to
# read through a part worker what the caller could not read.
#
# Checks marked [HOLE] fail on the code reviewed (ecfd8fb) and pass once
# the hole is closed; checks marked [GUARD] passed and stay as regression
# guards.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('review3_trust', cdc => 1);
my $out = new_outdir($node, 'd');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE ROLE tenant LOGIN;
CREATE DATABASE other;
CREATE ROLE reader LOGIN;
GRANT pg_write_server_files TO reader;
GRANT EXECUTE ON FUNCTION egress_export(text, text, text, integer), egress_export(text, text, text) TO reader;
});
add_destination($node, 'd', $out);

# Is a record with this id (of the given table) in any batch file?
sub delivered
{
	my ($table, $id) = @_;
	foreach my $f (list_dir($out))
	{
		next unless $f =~ /\.jsonl$/;
		open(my $fh, '<', "$out/$f") or next;
		while (my $l = <$fh>)
		{
			return 1
			  if $l =~ /"type":"RECORD"/
			  && $l =~ /"stream":"public-\Q$table\E"/
			  && $l =~ /"id":\Q$id\E[,}]/;
		}
		close $fh;
	}
	return 0;
}

# ---------------------------------------------------------------------------
# 1. [HOLE] An open transaction of anyone, anywhere in the cluster, stalls
#    the CDC worker of a destination that starts a chunked backfill.
#
# cdc_backfill.c (backfill start, "Transactions running now ..."): every
# xid of the snapshot's xip joins straggler_xids, and read_chunk()
# XactLockTableWait()s on each one in the CDC worker's main loop.  A
# transaction that holds an xid and never ends (idle in transaction, in
# another database, by a role with no rights on anything of pg_egress)
# therefore stops the backfill AND the decoding of every other stream of
# the destination, with no bound.  Only transactions whose commit record is
# already written can have been missed by the slot; one still running
# commits later and its changes are decoded (and join the check then).
# ---------------------------------------------------------------------------
sql(q{
CREATE TABLE live (id int PRIMARY KEY, v text);
INSERT INTO live VALUES (1, 'a');
SELECT egress_add_stream('live', 'live', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}');
});
wait_stream_state($node, 'live', 'streaming', 120);
sql(q{INSERT INTO live VALUES (2, 'b')});
ok(poll_until('live id 2 delivered', 60, sub { delivered('live', 2) }),
	'[GUARD] live stream delivers before the attack');

my $idle = $node->background_psql('other', extra_params => [ '-U', 'tenant' ]);
$idle->query_safe('BEGIN; SELECT pg_catalog.txid_current()');

sql(q{
CREATE TABLE big (id int PRIMARY KEY, v text);
INSERT INTO big SELECT g, 'x' FROM generate_series(1, 300) g;
SELECT egress_add_stream('big', 'big', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}');
});
# the backfill of big has started (its stream is syncing)
wait_stream_where($node, 'big', q{state IN ('syncing', 'streaming')}, 60,
	'[GUARD] big starts its backfill');
sql(q{INSERT INTO live VALUES (3, 'c')});

ok(poll_until('live id 3 delivered while a tenant holds an xid in another database', 45,
		sub { delivered('live', 3) }),
	'[HOLE] an idle transaction of another database does not stop the other streams of the destination');
wait_stream_where($node, 'big', q{state = 'streaming'}, 30,
	'[HOLE] an unrelated idle transaction does not stall a chunked backfill');
{
	my $w = $node->safe_psql('postgres',
		q{SELECT string_agg(coalesce(wait_event_type, '-') || '/' || coalesce(wait_event, '-') || ' ' || coalesce(query, ''), '; ')
		  FROM pg_stat_activity WHERE backend_type LIKE 'pg_egress%'});
	diag "pg_egress backends while the tenant's transaction is open: $w";
}

$idle->query_safe('COMMIT');
$idle->quit;
ok(poll_until('live id 3 delivered after the tenant commits', 120,
		sub { delivered('live', 3) }),
	'[GUARD] the destination recovers once the transaction ends');
wait_stream_state($node, 'big', 'streaming', 120);

# ---------------------------------------------------------------------------
# 2. [HOLE] A part of egress_export(parallel => N) runs with the session
#    user's is_superuser, not the caller's role.
#
# export.c export_part(): RestoreGUCState() skips "role" (PG15
# can_skip_gucvar), the part logs in as the session user and only
# SetUserIdAndSecContext(current_user) is done; SetCurrentRoleId(outer_user,
# outer_is_superuser) is never called (parallel.c stores both and nobody
# uses them).  A superuser who SET ROLE reader runs parts with
# is_superuser = on and role = none: a row-level security policy (or any
# function) that looks at current_setting('is_superuser') shows the parts
# rows that the caller, and parallel => 1, do not see.
# ---------------------------------------------------------------------------
sql(q{
CREATE TABLE doc (id int, owner text, body text);
INSERT INTO doc SELECT g, CASE WHEN g % 10 = 0 THEN 'reader' ELSE 'admin' END, repeat('y', 200)
  FROM generate_series(1, 20000) g;
ALTER TABLE doc ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON doc USING (owner = current_user OR pg_catalog.current_setting('is_superuser') = 'on');
GRANT SELECT ON doc TO reader;
});
my $nblocks = sql(q{SELECT pg_relation_size('doc') / current_setting('block_size')::int});
cmp_ok($nblocks, '>', 4, 'doc spans several blocks (every part reads some)');

my $visible = sql(q{SET ROLE reader; SELECT count(*) FROM doc});
is($visible, '2000', '[GUARD] reader sees its 2000 rows');
my $one = sql(qq{SET ROLE reader; SELECT rows_uploaded FROM egress_export('SELECT * FROM doc', 'file://$out/doc1.txt', '')});
is($one, '2000', '[GUARD] parallel => 1 after SET ROLE exports the caller\'s rows');
my $par = sql(qq{SET ROLE reader; SELECT rows_uploaded FROM egress_export('SELECT * FROM doc', 'file://$out/doc2.txt', '', parallel => 2)});
is($par, '2000', '[HOLE] parallel => 2 after SET ROLE exports only the rows the caller may see');
my $role_seen = sql(qq{SET ROLE reader;
SELECT rows_uploaded FROM egress_export('SELECT pg_catalog.current_setting(''role'') AS r, pg_catalog.current_setting(''is_superuser'') AS s, id FROM doc', 'file://$out/doc3.txt', '', parallel => 2)});
{
	my %vals;
	foreach my $f (list_dir($out))
	{
		next unless $f =~ /^doc3\.txt/;
		open(my $fh, '<', "$out/$f") or next;
		while (my $l = <$fh>)
		{
			my ($r, $s) = split /\t/, $l;
			$vals{"$f:$r/$s"} = 1;
		}
		close $fh;
	}
	my @bad = grep { !/:reader\/off$/ } sort keys %vals;
	is_deeply(\@bad, [], '[HOLE] every part sees role = reader and is_superuser = off, as the caller did');
}

# The reverse: a SECURITY DEFINER function of reader called by a superuser
# session: the parts read as reader (current user), RLS included.
sql(q{
CREATE FUNCTION public.export_as_reader(uri text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$ SELECT rows_uploaded FROM public.egress_export('SELECT id, owner FROM public.doc WHERE owner = ''reader''', uri, '', 2) $$;
ALTER FUNCTION public.export_as_reader(text) OWNER TO reader;
});
my $def = sql(qq{SELECT public.export_as_reader('file://$out/doc4.txt')});
is($def, '2000', '[GUARD] SECURITY DEFINER (reader) caller: parts read as reader');

# A role without pg_write_server_files cannot write parts to a file.
my ($ret, $o, $err) = query_as($node, 'tenant',
	qq{SELECT * FROM egress_export('SELECT 1 FROM pg_class', 'file://$out/t.txt', '', 2)});
isnt($ret, 0, '[GUARD] tenant cannot run a parallel export without EXECUTE / pg_write_server_files');

# ---------------------------------------------------------------------------
# 3. [GUARD] a parallel export of a view or of a function-backed query is
#    refused (it would escape the single-table split), and a temp table.
# ---------------------------------------------------------------------------
sql(q{CREATE VIEW doc_v AS SELECT * FROM doc; GRANT SELECT ON doc_v TO reader;});
foreach my $q ('SELECT * FROM doc_v', 'SELECT * FROM pg_catalog.generate_series(1, 10)',
	'SELECT * FROM doc, LATERAL (SELECT 1) x', 'SELECT * FROM doc WHERE id IN (SELECT 1)')
{
	my ($r2, $o2, $e2) = $node->psql('postgres',
		'SET ROLE reader; SELECT rows_uploaded FROM egress_export(' . sql_quote($q)
		  . ", 'file://$out/v.txt', '', parallel => 2)");
	isnt($r2, 0, "[GUARD] parallel export refuses: $q");
}

# ---------------------------------------------------------------------------
# 4. [GUARD] the stream owner's RLS holds in the parts of a parallel
#    FULL_TABLE sync (part workers log in as the bootstrap superuser) and in
#    the chunks of a LOG_BASED backfill; user code of a key type (a domain
#    whose CHECK calls a function) runs as the owner, never as the worker.
# ---------------------------------------------------------------------------
my $out2 = new_outdir($node, 'r');
sql(q{
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb) TO reader;
GRANT SELECT ON egress_streams TO reader;
CREATE SCHEMA r AUTHORIZATION reader;
CREATE TABLE kdoc (id int PRIMARY KEY, owner text, body text);
INSERT INTO kdoc SELECT g, CASE WHEN g % 10 = 0 THEN 'reader' ELSE 'admin' END, 'z'
  FROM generate_series(1, 3000) g;
ALTER TABLE kdoc ENABLE ROW LEVEL SECURITY;
CREATE POLICY p ON kdoc USING (owner = current_user OR pg_catalog.current_setting('is_superuser') = 'on');
GRANT SELECT ON kdoc TO reader;
ALTER TABLE doc REPLICA IDENTITY FULL;
});
ok_reader(q{SELECT egress_add_destination('r', } . sql_quote(file_url($out2)) . ')');
my $out1 = new_outdir($node, 'r1');
ok_reader(q{SELECT egress_add_destination('r1', } . sql_quote(file_url($out1)) . ')');
ok_reader(q{SELECT egress_add_stream('sdoc', 'public.doc', 'FULL_TABLE', 'r1', NULL, '{"batch_max_rows": 500}')});
ok_reader(q{SELECT egress_add_stream('pdoc', 'public.doc', 'FULL_TABLE', 'r', NULL, '{"parallel": 2, "batch_max_rows": 500}')});
wait_stream_state($node, 'sdoc', 'synced', 180);
wait_stream_state($node, 'pdoc', 'synced', 180);
# [HOLE] worker reads switch to the owner with SetUserIdAndSecContext only:
# is_superuser stays 'on' (the worker logged in as the bootstrap
# superuser), so a policy or function that consults it grants the owner
# rows it cannot see in its own session (snapshot.c snapshot_write and
# egress_snapshot_read_chunk; parallel parts too).
{
	my @recs = grep { $_->{stream} eq 'public-doc' } records_of(read_batches($out1));
	is(scalar(grep { $_->{record}{owner} ne 'reader' } @recs), 0,
		'[HOLE] FULL_TABLE (parallel 1) of a non-superuser owner: is_superuser is off while it reads, no row it cannot see');
}
{
	my @recs = grep { $_->{stream} eq 'public-doc' } records_of(read_batches($out2));
	my @foreign = grep { $_->{record}{owner} ne 'reader' } @recs;
	is(scalar(@recs), 2000, '[HOLE] parallel FULL_TABLE of a non-superuser owner: only its 2000 rows');
	is(scalar(@foreign), 0, '[HOLE] no part shows a row the owner cannot see (is_superuser of the part worker)');
}

sub ok_reader
{
	my ($q) = @_;
	my ($ret, $o, $err) = query_as($node, 'reader', $q);
	is($ret, 0, "as reader: $q") or diag $err;
	return $o;
}

# a key whose type is a domain over text whose CHECK calls the owner's function
ok_reader(q{
CREATE FUNCTION r.spy(text) RETURNS bool LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
	RAISE WARNING 'pg_egress review3 spy: current_user=% is_superuser=%', current_user, pg_catalog.current_setting('is_superuser');
	RETURN true;
END $$;
CREATE DOMAIN r.k AS text COLLATE "C" CHECK (r.spy(VALUE));
CREATE TABLE r.kt (id r.k PRIMARY KEY, v int);
INSERT INTO r.kt SELECT pg_catalog.lpad(g::text, 5, '0'), g FROM pg_catalog.generate_series(1, 300) g;
});
my $logpos = -s $node->logfile;
ok_reader(q{SELECT egress_add_stream('kt', 'r.kt', 'LOG_BASED', 'r', NULL, '{"chunk_rows": 100}')});
{
	my ($ret, $o, $err) = query_as($node, 'reader',
		q{SELECT egress_add_stream('kdoc', 'public.kdoc', 'LOG_BASED', 'r', NULL, '{"chunk_rows": 100}')});
	isnt($ret, 0, '[GUARD] a LOG_BASED stream of a table whose RLS applies to the owner is refused (chunks never read around it)');
}
wait_stream_state($node, 'kt', 'streaming', 180);
{
	my @recs = records_of(read_batches($out2));
	my @kt = grep { $_->{stream} eq 'r-kt' } @recs;
	my %ids = map { $_->{record}{id} => 1 } @kt;
	is(scalar(keys %ids), 300, '[GUARD] a domain key over text is backfilled in chunks, every row');
	my $log = slurp_file($node->logfile, $logpos);
	my @spy = $log =~ /pg_egress review3 spy: (current_user=\S+)/g;
	my @bad = grep { $_ ne 'current_user=reader' } @spy;
	is_deeply(\@bad, [], '[GUARD] the key domain\'s CHECK function runs as the stream owner only (' . scalar(@spy) . ' calls)');
	my @su = $log =~ /pg_egress review3 spy: current_user=\S+ (is_superuser=\S+)/g;
	my @on = grep { $_ ne 'is_superuser=off' } @su;
	is_deeply(\@on, [], '[HOLE] the owner\'s code in a chunk read sees is_superuser = off (' . scalar(@su) . ' calls)');
}

done_testing();
