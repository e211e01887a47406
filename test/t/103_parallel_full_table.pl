
# Parallel FULL_TABLE syncs (stream option "parallel"): the same multiset
# of rows as parallel 1, one valid Singer stream (one SCHEMA/ACTIVATE_VERSION
# before all parts, the final ACTIVATE_VERSION + STATE after them), exactly
# one snapshot (rows a concurrent writer commits after the run started are
# in no part, made deterministic with an advisory lock the parts wait for
# in a row level security policy), parallel beyond pg_egress.max_workers
# refused, and a part worker terminated mid-run failing the sync cleanly.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('parallel_ft', conf => "pg_egress.max_workers = 3\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE TABLE t (id integer PRIMARY KEY, payload text NOT NULL);
INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 30000) i;
CREATE ROLE etl LOGIN;
GRANT EXECUTE ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_stream(text),
	egress_resync_stream(text)
TO etl;
GRANT pg_write_server_files TO etl;
});

my $d1 = new_outdir($node, 'p1');
my $d2 = new_outdir($node, 'p2');
add_destination($node, 'd1', $d1);
add_destination($node, 'd2', $d2);

# The multiset of (id, payload) of the RECORDs of some batches.
sub rows_of
{
	my @batches = @_;
	my %n;
	$n{"$_->{record}{id}|$_->{record}{payload}"}++ foreach records_of(@batches);
	return \%n;
}

# ---- parallel 2 gives what parallel 1 gives ---------------------------------
sql(q{SELECT egress_add_stream('s1', 't', 'FULL_TABLE', 'd1', options => '{"batch_max_rows": 1000}')});
sql(q{SELECT egress_add_stream('s2', 't', 'FULL_TABLE', 'd2', options => '{"batch_max_rows": 1000, "parallel": 2}')});
wait_stream_state($node, 's1', 'synced');
wait_stream_state($node, 's2', 'synced');

my @b1 = read_batches($d1, qr/^s1-/);
my @b2 = read_batches($d2, qr/^s2-/);
my $r1 = rows_of(@b1);
is(scalar(keys %$r1), 30000, 'parallel 1: 30,000 distinct rows');
is_deeply(rows_of(@b2), $r1, 'parallel 2: the same multiset of rows as parallel 1');
is(scalar(records_of(@b2)), 30000, 'parallel 2: 30,000 RECORDs, none twice');

my ($v) = $b2[0]{name} =~ /^s2-(\d+)-/;
is($b2[0]{name}, "s2-$v-000001.jsonl", 'first batch: s2-V-000001');
is($b2[-1]{name}, "s2-$v-000003.jsonl", 'last batch: s2-V-000003');
my @parts = grep { $_->{name} =~ /^s2-\Q$v\E-000002-p\d{3}-\d{6}\.jsonl$/ } @b2;
is(scalar(@parts), scalar(@b2) - 2, 'every other batch is a part batch s2-V-000002-pKKK-NNNNNN');
ok((grep { $_->{name} =~ /-p001-/ } @parts) && (grep { $_->{name} =~ /-p002-/ } @parts),
	'both parts sent batches');
is_deeply([ map { check_batch_file($_) } @b2 ], [], 'every batch starts with SCHEMA and ends with STATE');
is_deeply([ map { $_->{type} } @{ $b2[0]{messages} } ], [ 'SCHEMA', 'ACTIVATE_VERSION', 'STATE' ],
	'first batch: SCHEMA, ACTIVATE_VERSION, STATE, no RECORD');
is_deeply([ map { $_->{type} } @{ $b2[-1]{messages} } ], [ 'SCHEMA', 'ACTIVATE_VERSION', 'STATE' ],
	'last batch: SCHEMA, the final ACTIVATE_VERSION, STATE');
is(scalar(messages_of_type('ACTIVATE_VERSION', @b2)), 2, 'two ACTIVATE_VERSIONs in all');
is($b2[-1]{messages}[-1]{value}{currently_syncing}, undef, 'the last STATE ends the sync');
is(scalar(grep { ($_->{messages}[-1]{value}{currently_syncing} // '') eq 'public-t' } @b2[ 0 .. $#b2 - 1 ]),
	scalar(@b2) - 1, 'every earlier STATE says currently_syncing');
is(sql(q{SELECT rows_sent FROM egress_streams WHERE name = 's2'}), '30000', 'egress_streams: rows_sent 30000');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress part'}), '0',
	'no part worker left');

# ---- beyond pg_egress.max_workers: a clean error ------------------------------
my ($ret, $out, $err) = $node->psql('postgres',
	q{\set VERBOSITY verbose
SELECT egress_add_stream('s4', 't', 'FULL_TABLE', 'd2', options => '{"parallel": 4}')});
isnt($ret, 0, 'parallel 4 with pg_egress.max_workers = 3 is refused');
like($err, qr/53400: parallel => 4 is more than pg_egress.max_workers \(3\)/, '... with SQLSTATE 53400 and the limit');
like($err, qr/HINT:  Use at most 3, or raise pg_egress.max_workers/, '... and a hint');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_add_stream('s5', 't', 'LOG_BASED', 'd2', options => '{"parallel": 2}')});
like($err, qr/only valid for FULL_TABLE streams/, 'parallel is refused for LOG_BASED streams');
sql(q{CREATE VIEW tv AS SELECT * FROM t});
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT egress_add_stream('s6', 'tv', 'FULL_TABLE', 'd2', options => '{"parallel": 2}')});
like($err, qr/cannot be read in parallel/, 'parallel 2 is refused for a view');
is(sql(q{SELECT count(*) FROM egress.stream WHERE name IN ('s4', 's5', 's6')}), '0', 'nothing was added');

# ---- exactly one snapshot -----------------------------------------------------
# The parts read g through a policy that waits for advisory lock 4242: while
# a session holds it, the coordinator (part 1) and part 2 have their
# snapshot and wait.  Then another session inserts, updates and deletes and
# commits; none of it may show.
sql(q{
CREATE FUNCTION public.gate() RETURNS boolean LANGUAGE sql VOLATILE
	AS $$ SELECT true FROM pg_catalog.pg_advisory_xact_lock_shared(4242) $$;
CREATE TABLE g (id integer PRIMARY KEY, payload text NOT NULL);
INSERT INTO g SELECT i, 'old' || i FROM generate_series(1, 20000) i;
ALTER TABLE g OWNER TO etl;
ALTER TABLE g ENABLE ROW LEVEL SECURITY;
ALTER TABLE g FORCE ROW LEVEL SECURITY;
CREATE POLICY gp ON g USING (public.gate());
});
my $d3 = new_outdir($node, 'p3');
$node->safe_psql('postgres', 'SELECT egress_add_destination(' . sql_quote('d3') . ', ' . sql_quote(file_url($d3)) . ')',
	extra_params => [ '-U', 'etl' ]);
my $holder = $node->background_psql('postgres');
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('g2', 'g', 'FULL_TABLE', 'd3', options => '{"parallel": 2, "batch_max_rows": 500}')},
	extra_params => [ '-U', 'etl' ]);
ok( poll_until(
		'the coordinator and its part wait for the advisory lock', 60,
		sub {
			sql(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}) eq '2';
		}),
	'coordinator and part 2 have their snapshot and wait for the gate');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress part'}), '1',
	'one part worker runs');

# Part workers count against pg_egress.max_workers (3): with g2's sync
# worker and its part running, the database worker starts one more sync,
# not two (both would wait at the gate too).
sql(q{CREATE TABLE gb (id integer PRIMARY KEY); INSERT INTO gb SELECT generate_series(1, 10);
	  ALTER TABLE gb OWNER TO etl; ALTER TABLE gb ENABLE ROW LEVEL SECURITY;
	  ALTER TABLE gb FORCE ROW LEVEL SECURITY; CREATE POLICY gbp ON gb USING (public.gate());});
foreach my $n (1, 2)
{
	$node->safe_psql('postgres', qq{SELECT egress_add_stream('gb$n', 'gb', 'FULL_TABLE', 'd3')},
		extra_params => [ '-U', 'etl' ]);
}
ok( poll_until(
		'a third worker waits at the gate', 60,
		sub {
			sql(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}) eq '3';
		}),
	'one more sync worker started');
# three naptimes (1s) of the database worker: a fourth worker would have started
sleep 3;
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress sync'}), '2',
	'two sync workers and one part worker: pg_egress.max_workers = 3 reached');
is(sql(q{SELECT count(*) FROM egress_streams WHERE name IN ('gb1', 'gb2') AND state = 'pending'}), '1',
	'the other stream waits');

sql(q{INSERT INTO g SELECT i, 'new' || i FROM generate_series(20001, 20100) i;
	  UPDATE g SET payload = 'changed' WHERE id <= 100;
	  DELETE FROM g WHERE id BETWEEN 101 AND 200;});
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
wait_stream_state($node, 'g2', 'synced');
wait_stream_state($node, 'gb1', 'synced');
wait_stream_state($node, 'gb2', 'synced');
my @bg = read_batches($d3, qr/^g2-/);
my %ids;
my @wrong;
foreach my $r (records_of(@bg))
{
	$ids{ $r->{record}{id} }++;
	push @wrong, $r->{record}{id} if $r->{record}{payload} ne "old$r->{record}{id}";
}
is(scalar(keys %ids), 20000, 'the sync has the 20,000 rows of its snapshot');
is(scalar(grep { $ids{$_} != 1 } keys %ids), 0, 'each once');
is(scalar(grep { $_ > 20000 } keys %ids), 0, 'no row inserted after the run started');
is(scalar(grep { $_ >= 101 && $_ <= 200 } keys %ids), 100, 'rows deleted after the run started are still there');
is(scalar(@wrong), 0, 'no value updated after the run started');

# ---- a part worker that is terminated fails the sync ------------------------
$holder->query_safe('SELECT pg_advisory_lock(4242)');
sql(q{SELECT egress_resync_stream('g2')});
my $part_pid;
ok( poll_until(
		'part 2 waits', 60,
		sub {
			$part_pid = sql(q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_egress part'});
			$part_pid ne ''
			  && sql(qq{SELECT count(*) FROM pg_locks WHERE pid = $part_pid AND locktype = 'advisory' AND NOT granted}) eq '1';
		}),
	'the resync runs and part 2 waits');
my $v_before = stream_row($node, 'g2')->{version};
sql("SELECT pg_terminate_backend($part_pid)");
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
wait_stream_state($node, 'g2', 'error');
like(stream_row($node, 'g2')->{last_error}, qr/part 2 of 2 ended without finishing/,
	'the stream shows the failed part');
my @last = grep { $_->{name} =~ /^g2-\Q$v_before\E-000003/ } read_batches($d3, qr/^g2-/);
is(scalar(@last), 0, 'no final ACTIVATE_VERSION for the failed version');
is(scalar(tmp_files($d3)), 0, 'no temporary file left');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_egress part%'}), '0',
	'no part worker left');

# ---- not enough of pg_egress.max_workers free: a sync reads with fewer parts ---
# gb3 waits at the gate (one worker), t3's worker is the second: one part
# worker fits, not two.
$holder->query_safe('SELECT pg_advisory_lock(4242)');
$node->safe_psql('postgres', q{SELECT egress_add_stream('gb3', 'gb', 'FULL_TABLE', 'd3')},
	extra_params => [ '-U', 'etl' ]);
ok(poll_until('gb3 waits', 60,
		sub { sql(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted}) eq '1' }),
	'a sync worker waits at the gate');
my $d4 = new_outdir($node, 'p4');
add_destination($node, 'd4', $d4);
sql(q{SELECT egress_add_stream('t3', 't', 'FULL_TABLE', 'd4', options => '{"parallel": 3}')});
wait_stream_state($node, 't3', 'synced');
ok($node->log_contains(qr/parallel 3 reduced to 2: 2 of pg_egress.max_workers \(3\) are busy/),
	'the sync says it runs with 2 parts instead of 3');
my @b4 = read_batches($d4, qr/^t3-/);
is_deeply(rows_of(@b4), $r1, 'and sends every row once');
is(scalar(grep { $_->{name} =~ /-p003-/ } @b4), 0, 'from two parts');
$holder->query_safe('SELECT pg_advisory_unlock(4242)');
wait_stream_state($node, 'gb3', 'synced');
$holder->quit;

# parts are not a second sync of the stream
ok($node->log_contains(qr/is already served by process/) ? 0 : 1, 'no part was taken for a second sync');

$node->stop;
done_testing();
