
# The chunked initial sync of LOG_BASED streams (DBLog watermarks): chunks
# shown in egress_streams, changes during the backfill (in and out of the
# chunks' windows) end in the table's state at the destination, a kill -9
# resumes at a chunk boundary with the same version, chunk_rows 0 keeps the
# one-transaction sync, a table without a key is read in block ranges and
# falls back to one snapshot when written meanwhile, a resync of one stream
# leaves the other streaming, and a transaction that committed but is still
# running (waiting for a synchronous standby) holds the chunk back.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use EgressTest;

# synchronous_commit local: only the session that asks waits for the
# (missing) synchronous standby of the straggler case
my $node = create_node('backfill', cdc => 1, conf => qq{
log_min_messages = debug1
synchronous_commit = local
});
my $out = new_outdir($node, 'bf');
sub sql { return $node->safe_psql('postgres', $_[0]); }

add_destination($node, 'd', $out);

sub stream_of
{
	my ($name) = @_;
	return stream_row($node, $name);
}

sub cdc_waits_for
{
	my ($what, $cond) = @_;
	return poll_until($what, 60, sub {
		sql(qq{SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
			WHERE a.backend_type = 'pg_egress cdc' AND NOT l.granted AND $cond}) eq '1';
	});
}

# The CDC worker's pg_stat_activity query matches $like (it waits for other
# transactions without blocking: no lock wait to see in pg_locks)
sub cdc_activity
{
	my ($what, $like) = @_;
	return poll_until($what, 60, sub {
		sql(qq{SELECT count(*) FROM pg_stat_activity
			WHERE backend_type = 'pg_egress cdc' AND query LIKE '$like'}) eq '1';
	});
}

# What a target holds of version $version of a stream: its initial-sync
# files of that version, then the RECORDs of that version in the change
# files (a stream synced again after change files of an older version).
sub mirror_version
{
	my ($sid, $name, $version, $key) = @_;
	my %m;
	foreach my $b ((grep { $_->{name} =~ /^\Q$name\E-$version-/ } sync_batches($out, $name)),
		cdc_batches($out))
	{
		foreach my $msg (@{ $b->{messages} })
		{
			next unless ($msg->{type} // '') eq 'RECORD' && $msg->{stream} eq $sid
			  && ($msg->{version} // 0) == $version;
			my $r = $msg->{record};
			my $k = join("\x1f", map { defined $r->{$_} ? "$r->{$_}" : "\x00NULL" } @$key);
			if (defined $r->{_sdc_deleted_at}) { delete $m{$k}; next; }
			$m{$k} = { map { ($_ => $r->{$_}) } grep { !/^_sdc_/ } keys %$r };
		}
	}
	return \%m;
}

# ---- a plain chunked backfill -----------------------------------------------
sql(q{
CREATE TABLE plain (id int PRIMARY KEY, v text);
INSERT INTO plain SELECT i, 'row ' || i FROM generate_series(1, 5000) i;
});
sql(q{SELECT egress_add_stream('plain', 'plain', 'LOG_BASED', 'd', NULL,
	'{"chunk_rows": 100}')});
wait_stream_state($node, 'plain', 'streaming');
my $row = stream_of('plain');
is($row->{backfill_rows}, 5000, 'egress_streams: 5000 rows backfilled');
cmp_ok($row->{backfill_chunks}, '>=', 50, "egress_streams: $row->{backfill_chunks} chunks");
compare_states(mirror($out, 'public-plain', ['id']), table_state($node, 'plain', ['id']),
	'plain');

# chunk_bytes ends a chunk before chunk_rows
sql(q{
CREATE TABLE wide (id int PRIMARY KEY, v text);
INSERT INTO wide SELECT i, repeat('x', 1000) FROM generate_series(1, 2000) i;
});
sql(q{SELECT egress_add_stream('wide', 'wide', 'LOG_BASED', 'd', NULL,
	'{"chunk_rows": 1000, "chunk_bytes": 100000}')});
wait_stream_state($node, 'wide', 'streaming');
$row = stream_of('wide');
is($row->{backfill_rows}, 2000, 'chunk_bytes: 2000 rows backfilled');
cmp_ok($row->{backfill_chunks}, '>=', 20, "chunk_bytes: about 100 rows per chunk ($row->{backfill_chunks} chunks)");
compare_states(mirror($out, 'public-wide', ['id']), table_state($node, 'wide', ['id']), 'wide');
is(scalar(sync_batches($out, 'plain')), 0, 'no one-transaction sync files');
like(slurp_file($node->logfile), qr/stream "plain": chunked backfill of \S+ started/,
	'the start is logged');

# a partitioned table is read in key chunks through its root
sql(q{
CREATE TABLE parted (id int PRIMARY KEY, v text) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (MINVALUE) TO (1000);
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (1000) TO (MAXVALUE);
INSERT INTO parted SELECT i, 'p ' || i FROM generate_series(1, 3000) i;
});
sql(q{SELECT egress_add_stream('parted', 'parted', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
wait_stream_state($node, 'parted', 'streaming');
$row = stream_of('parted');
is($row->{backfill_rows}, 3000, 'partitioned: 3000 rows backfilled');
cmp_ok($row->{backfill_chunks}, '>=', 30, "partitioned: $row->{backfill_chunks} chunks");
sql(q{UPDATE parted SET v = 'moved', id = id + 10000 WHERE id BETWEEN 990 AND 1010});
wait_caught_up($node, 'parted');
compare_states(mirror($out, 'public-parted', ['id']), table_state($node, 'parted', ['id']), 'parted');

# options "columns" and "filter" apply to the chunks as to the one-transaction sync
sql(q{
CREATE TABLE flt (id int PRIMARY KEY, region text NOT NULL, secret text);
INSERT INTO flt SELECT i, CASE WHEN i % 3 = 0 THEN 'eu' ELSE 'us' END, 's' || i
  FROM generate_series(1, 3000) i;
});
sql(q{SELECT egress_add_stream('flt', 'flt', 'LOG_BASED', 'd', NULL,
	'{"chunk_rows": 100, "columns": ["id", "region"], "filter": "id % 3 = 0"}')});
wait_stream_state($node, 'flt', 'streaming');
{
	my @recs = grep { $_->{stream} eq 'public-flt' } records_of(cdc_batches($out));
	is(scalar(@recs), 1000, 'filter: the 1000 rows of the filter, once each');
	is(scalar(grep { $_->{record}{region} ne 'eu' || exists $_->{record}{secret} } @recs), 0,
		'filter and columns: no other row, no other column');
	cmp_ok(stream_of('flt')->{backfill_chunks}, '>=', 10, 'filter: read in chunks');
}

# ---- changes while the backfill runs ------------------------------------------
# Updates, deletes, inserts and key changes from two clients while a table of
# 60,000 rows is backfilled in chunks of 100; a second table sees TRUNCATEs.
sql(q{
CREATE TABLE busy (id int PRIMARY KEY, v int NOT NULL, pad text);
INSERT INTO busy SELECT i, 0, 'pad ' || i FROM generate_series(1, 60000) i;
CREATE SEQUENCE busy_new START 1000001;
CREATE TABLE tr (id int PRIMARY KEY, v text);
INSERT INTO tr SELECT i, 'tr ' || i FROM generate_series(1, 20000) i;
CREATE SEQUENCE tr_new START 1000001;
});
my $pb = start_pgbench($node, 'busy', q{
\set r random(1, 60000)
\set op random(1, 100)
BEGIN;
UPDATE busy SET v = v + 1 WHERE id = :r AND :op <= 50;
DELETE FROM busy WHERE id = :r AND :op > 50 AND :op <= 65;
INSERT INTO busy SELECT nextval('busy_new'), 1, 'new' WHERE :op > 65 AND :op <= 85;
UPDATE busy SET id = -id WHERE id = :r AND :op > 85;
INSERT INTO tr SELECT nextval('tr_new'), 'later' WHERE :op <= 98;
COMMIT;
}, '-c', '2', '-T', '8');
my $pb2 = start_pgbench($node, 'tr', q{
\set op random(1, 200)
TRUNCATE tr;
\sleep 1500 ms
}, '-c', '1', '-T', '8');
sql(q{SELECT egress_add_stream('busy', 'busy', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
sql(q{SELECT egress_add_stream('tr', 'tr', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
ok(poll_until('busy backfilling', 60, sub { (stream_of('busy')->{backfill_chunks} // 0) > 0 }),
	'busy is backfilled in chunks');
ok(finish_pgbench($pb), 'the load on busy ran');
ok(finish_pgbench($pb2), 'the TRUNCATEs of tr ran');
wait_stream_state($node, 'busy', 'streaming', 180);
wait_stream_state($node, 'tr', 'streaming', 180);
wait_caught_up($node, 'busy', 120);
wait_caught_up($node, 'tr', 120);
compare_states(mirror($out, 'public-busy', ['id']), table_state($node, 'busy', ['id']),
	'busy after a backfill under load');
compare_states(mirror($out, 'public-tr', ['id']), table_state($node, 'tr', ['id']),
	'tr after a backfill with TRUNCATEs');

# ---- changes in a chunk's window, deterministically ----------------------------
# The worker is held before its first chunk of w by a transaction that
# wrote w (holds its RowExclusiveLock) and was running when the backfill
# started; meanwhile a session queues for w's lock.  Once the transaction
# ends, the session has the lock and the worker takes its snapshot and waits
# for w's lock; the session changes rows of the first chunk and commits: the
# chunk was read in a snapshot without those changes, which are decoded
# between L and H and drop their rows.
sql(q{
CREATE TABLE dummy (id int PRIMARY KEY, v int);
INSERT INTO dummy VALUES (1, 0);
CREATE TABLE w (id int PRIMARY KEY, v text);
INSERT INTO w SELECT i, 'w ' || i FROM generate_series(1, 1000) i;
CREATE TABLE wt (id int PRIMARY KEY, v text);
INSERT INTO wt SELECT i, 'wt ' || i FROM generate_series(1, 1000) i;
});


# $changes run in the session that holds $table's lock, once the worker
# waits for it with its snapshot of $table's first chunk taken
sub in_first_window
{
	my ($table, $changes) = @_;
	my $x = $node->background_psql('postgres');
	$x->query_safe("BEGIN; UPDATE $table SET v = v WHERE id = -1");
	sql(qq{SELECT egress_add_stream('$table', '$table', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
	ok(cdc_activity("the worker waiting for the writer of $table before its first chunk",
		"%waiting for 1 transactions writing %$table"),
		"$table: the first chunk waits for a writer running at the start");
	my $y = $node->background_psql('postgres');
	$y->query_until(qr/go/, "BEGIN;\n\\echo go\nLOCK TABLE $table IN ACCESS EXCLUSIVE MODE;\n");
	ok(poll_until("the lock of $table queued", 30, sub {
		sql(qq{SELECT count(*) FROM pg_locks WHERE relation = '$table'::regclass
			AND mode = 'AccessExclusiveLock' AND NOT granted}) eq '1' }),
		"$table: a session queues for its lock");
	$x->query_safe('COMMIT');
	ok(cdc_waits_for("the worker waiting for $table\'s lock",
		"l.locktype = 'relation' AND l.relation = '$table'::regclass"),
		"$table: the first chunk's snapshot is taken, its read waits");
	$y->query_safe($changes);
	$y->query_safe('COMMIT');
	$x->quit;
	$y->quit;
	wait_stream_state($node, $table, 'streaming');
	wait_caught_up($node, $table);
}

in_first_window('w', q{
UPDATE w SET v = 'changed' WHERE id = 5;
DELETE FROM w WHERE id = 6;
UPDATE w SET id = -7 WHERE id = 7;
DELETE FROM w WHERE id = 8;
UPDATE w SET id = 8, v = 'moved here' WHERE id = 900;
UPDATE w SET v = 'early' WHERE id = 450;
INSERT INTO w VALUES (0, 'inserted');
});
compare_states(mirror($out, 'public-w', ['id']), table_state($node, 'w', ['id']),
	'w: changes in the window');
{
	my $log = slurp_file($node->logfile);
	like($log, qr/stream "w": chunked backfill of \S+: chunk 1, 100 rows read, 96 sent/,
		'w: the first chunk dropped the 4 rows changed in its window (5, 6, 7, 8)');
	my @recs = grep { $_->{stream} eq 'public-w' && $_->{record}{id} == 450 }
	  records_of(cdc_batches($out));
	ok(@recs >= 2, 'w: row 450 came as a change and in its chunk');
	is(scalar(grep { $_->{record}{v} ne 'early' } @recs), 0,
		'w: row 450, changed before its chunk, came with its newer value only');
}

in_first_window('wt', q{
TRUNCATE wt;
INSERT INTO wt SELECT i, 'after ' || i FROM generate_series(1, 10) i;
});
compare_states(mirror($out, 'public-wt', ['id']), table_state($node, 'wt', ['id']),
	'wt: a TRUNCATE in the window');
# TRUNCATE is not MVCC-safe: the chunk's older snapshot reads the new, empty
# relation; either way nothing of the chunk may be sent
like(slurp_file($node->logfile), qr/stream "wt": chunked backfill of \S+: chunk 1, \d+ rows read, 0 sent/,
	'wt: nothing of the chunk with a TRUNCATE in its window was sent');

# ---- kill -9 of the CDC worker in the middle -----------------------------------
sql(q{
CREATE TABLE big (id int PRIMARY KEY, v text);
INSERT INTO big SELECT i, 'big ' || i FROM generate_series(1, 50000) i;
});
sql(q{SELECT egress_add_stream('big', 'big', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
# the worker's xmin while big is backfilled: held for one chunk's read only
my (%xmin_chunks, $samples, $with_xmin);
ok(poll_until('big past 100 chunks', 60, sub {
	my $r = sql(q{SELECT coalesce(a.backend_xmin::text, '-') || ' ' || s.backfill_chunks
		FROM pg_stat_activity a, egress_streams s
		WHERE a.backend_type = 'pg_egress cdc' AND s.name = 'big'});
	my ($xmin, $chunks) = split / /, $r;
	if (defined $chunks)
	{
		$samples++;
		if ($xmin ne '-')
		{
			$with_xmin++;
			push @{ $xmin_chunks{$xmin} }, $chunks;
		}
	}
	return ($chunks // 0) >= 100;
}), 'big recorded 100 chunks');
{
	my $longest = 0;
	foreach my $x (keys %xmin_chunks)
	{
		my @c = sort { $a <=> $b } @{ $xmin_chunks{$x} };
		$longest = $c[-1] - $c[0] if $c[-1] - $c[0] > $longest;
	}
	cmp_ok($longest, '<=', 2,
		"the CDC worker's backend_xmin never outlived a chunk or two ($samples samples, $with_xmin with an xmin)");
}
my $before = stream_of('big');
my $log_offset = -s $node->logfile;
my ($cdc_pid) = cdc_worker_pids($node);
kill 'KILL', $cdc_pid;
wait_stream_state($node, 'big', 'streaming', 180);
my $after = stream_of('big');
is($after->{version}, $before->{version}, 'the version survived the kill');
is($after->{backfill_rows}, 50000, 'every row of big was backfilled once');
{
	my $log = slurp_file($node->logfile, $log_offset);
	like($log, qr/stream "big": chunked backfill of \S+ resumed after chunk (\d+)/,
		'the backfill resumed after a chunk');
	my ($n) = $log =~ /stream "big": chunked backfill of \S+ resumed after chunk (\d+)/;
	cmp_ok($n // 0, '>=', 100, "resumed after chunk " . ($n // '?'));
	my ($records) = count_records_raw($out, 'public-big');
	cmp_ok($records - 50000, '<', 200, 'rows sent twice: fewer than 2 chunks (' . ($records - 50000) . ')');
}
compare_states(mirror($out, 'public-big', ['id']), table_state($node, 'big', ['id']),
	'big after a kill -9');

# ---- chunk_rows 0: the one-transaction sync ----------------------------------------
sql(q{
CREATE TABLE once (id int PRIMARY KEY, v text);
INSERT INTO once SELECT i, 'once ' || i FROM generate_series(1, 300) i;
});
sql(q{SELECT egress_add_stream('once', 'once', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 0}')});
wait_stream_state($node, 'once', 'streaming');
cmp_ok(scalar(sync_batches($out, 'once')), '>=', 1, 'chunk_rows 0: initial sync files');
is(stream_of('once')->{backfill_chunks}, 0, 'chunk_rows 0: no chunks');
compare_states(mirror($out, 'public-once', ['id']), table_state($node, 'once', ['id']), 'once');

# ---- a table without a key: block ranges ------------------------------------------
sql(q{
CREATE TABLE nk (a int NOT NULL, b text);
ALTER TABLE nk REPLICA IDENTITY FULL;
INSERT INTO nk SELECT i, 'nk ' || i FROM generate_series(1, 20000) i;
ANALYZE nk;
CREATE TABLE nk2 (a int NOT NULL, b text);
ALTER TABLE nk2 REPLICA IDENTITY FULL;
INSERT INTO nk2 SELECT i, 'nk2 ' || i FROM generate_series(1, 20000) i;
ANALYZE nk2;
CREATE SEQUENCE nk2_new START 1000001;
});
sql(q{SELECT egress_add_stream('nk', 'nk', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 1000}')});
wait_stream_state($node, 'nk', 'streaming');
$row = stream_of('nk');
is($row->{backfill_rows}, 20000, 'no key: 20000 rows backfilled');
cmp_ok($row->{backfill_chunks}, '>', 5, "no key: in $row->{backfill_chunks} block ranges");
compare_states(mirror($out, 'public-nk', ['a', 'b']), table_state($node, 'nk', ['a', 'b']), 'nk');

# written during its backfill: the one-snapshot sync instead
my $pbk = start_pgbench($node, 'nk2', q{
INSERT INTO nk2 VALUES (nextval('nk2_new'), 'during');
}, '-c', '1', '-T', '5', '-R', '200');
sql(q{SELECT egress_add_stream('nk2', 'nk2', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
ok(finish_pgbench($pbk), 'inserts into nk2 ran');
wait_stream_state($node, 'nk2', 'streaming', 120);
wait_caught_up($node, 'nk2');
like(slurp_file($node->logfile), qr/stream "nk2": chunked backfill of \S+ given up/,
	'no key, written during the backfill: the chunked backfill was given up');
$row = stream_of('nk2');
cmp_ok(scalar(sync_batches($out, 'nk2')), '>=', 1, 'nk2 was synced in one snapshot');
is($row->{backfill_chunks}, 0, 'nk2: no chunks in its version');
compare_states(mirror_version('public-nk2', 'nk2', $row->{version}, ['a', 'b']),
	table_state($node, 'nk2', ['a', 'b']), 'nk2 after the fallback');

# ---- egress_resync_stream of one stream while another streams -------------------------
sql(q{
CREATE TABLE ra (id int PRIMARY KEY, v text);
INSERT INTO ra SELECT i, 'ra ' || i FROM generate_series(1, 30000) i;
CREATE TABLE rb (id int PRIMARY KEY, v text);
INSERT INTO rb SELECT i, 'rb ' || i FROM generate_series(1, 1000) i;
CREATE SEQUENCE rb_new START 1000001;
});
sql(q{SELECT egress_add_stream('ra', 'ra', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
sql(q{SELECT egress_add_stream('rb', 'rb', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
wait_stream_state($node, 'ra', 'streaming');
wait_stream_state($node, 'rb', 'streaming');
my $va = stream_of('ra')->{version};
my $vb = stream_of('rb')->{version};
my $pbr = start_pgbench($node, 'rb', q{
\set r random(1, 1000)
INSERT INTO rb VALUES (nextval('rb_new'), 'during');
UPDATE rb SET v = 'updated' WHERE id = :r;
}, '-c', '1', '-T', '6', '-R', '300');
usleep(500_000);
sql(q{SELECT egress_resync_stream('ra')});
ok(poll_until('ra in a new version', 60, sub { (stream_of('ra')->{version} // 0) > $va }),
	'ra is synced again in a new version');
ok(finish_pgbench($pbr), 'changes of rb ran');
wait_stream_state($node, 'ra', 'streaming');
wait_caught_up($node, 'ra');
wait_caught_up($node, 'rb');
is(stream_of('rb')->{version}, $vb, 'rb kept its version');
compare_states(mirror($out, 'public-ra', ['id']), table_state($node, 'ra', ['id']), 'ra after its resync');
compare_states(mirror($out, 'public-rb', ['id']), table_state($node, 'rb', ['id']), 'rb during the resync of ra');
{
	my $v2 = stream_of('ra')->{version};
	my ($activations, $rb_between) = (0, 0);
	foreach my $msg (map { @{ $_->{messages} } } cdc_batches($out))
	{
		if (($msg->{type} // '') eq 'ACTIVATE_VERSION' && $msg->{stream} eq 'public-ra'
			&& $msg->{version} == $v2)
		{
			$activations++;
		}
		elsif ($activations == 1 && ($msg->{type} // '') eq 'RECORD' && $msg->{stream} eq 'public-rb')
		{
			$rb_between++;
		}
	}
	is($activations, 2, 'ra: one ACTIVATE_VERSION opens the new version, one closes it');
	cmp_ok($rb_between, '>', 0, "rb's changes kept flowing during ra's backfill ($rb_between records)");
}

# ---- the straggler: committed, decoded, still running -----------------------------------
# A transaction waiting for a synchronous standby that is not there has its
# commit record in the WAL (its change is decoded and sent) but is still
# running: a chunk read meanwhile would not show it and send the older row
# after the change.  The worker waits for it.
sql(q{
CREATE TABLE sg (id int PRIMARY KEY, v text);
INSERT INTO sg SELECT i, 'sg ' || i FROM generate_series(1, 1000) i;
});
{
	my $x1 = $node->background_psql('postgres');
	$x1->query_safe('BEGIN; UPDATE sg SET v = v WHERE id = -1');
	sql(q{SELECT egress_add_stream('sg', 'sg', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
	ok(cdc_activity('the worker held before the first chunk of sg', '%waiting for 1 transactions writing %sg'),
		'sg: the first chunk waits for a writer running at the start');
	sql(q{ALTER SYSTEM SET synchronous_standby_names = 'nosuch'});
	sql(q{SELECT pg_reload_conf()});
	my $x2 = $node->background_psql('postgres');
	$x2->query_until(qr/go/, "SET synchronous_commit = on;\n\\echo go\nUPDATE sg SET v = 'straggler' WHERE id = 500;\n");
	ok(poll_until('the update of sg waiting for the standby', 30, sub {
		sql(q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'}) eq '1' }),
		'sg: an update committed and waits for a synchronous standby');
	my $xid = sql(q{SELECT backend_xid FROM pg_stat_activity WHERE wait_event = 'SyncRep'});
	$x1->query_safe('COMMIT');
	ok(cdc_activity("the worker waiting for transaction $xid",
		"%waiting for transaction $xid (committed, still running)"),
		'sg: a chunk waits for the committed transaction still running');
	is(stream_of('sg')->{state}, 'syncing', 'sg: still syncing meanwhile');
	sql(q{ALTER SYSTEM RESET synchronous_standby_names});
	sql(q{SELECT pg_reload_conf()});
	$x2->quit;
	$x1->quit;
	wait_stream_state($node, 'sg', 'streaming');
	wait_caught_up($node, 'sg');
	compare_states(mirror($out, 'public-sg', ['id']), table_state($node, 'sg', ['id']), 'sg after a straggler');
	my $v = stream_of('sg')->{version};
	my @recs = grep { $_->{stream} eq 'public-sg' && $_->{record}{id} == 500 && $_->{version} == $v }
	  records_of(cdc_batches($out));
	is(scalar(grep { $_->{record}{v} ne 'straggler' } @recs), 0,
		'sg: row 500 was never sent with its value from before the straggler');
}

# ---- a writer committed before the start, still running ---------------------------------
# An update of sb has written its commit record (before sb joined the
# stream: it is never decoded for it) and waits for a synchronous standby:
# a chunk read meanwhile would send row 700 from before it, and nothing
# sends it later.  The first chunk waits for the writers of sb running at
# the start.
sql(q{
CREATE TABLE sb (id int PRIMARY KEY, v text);
INSERT INTO sb SELECT i, 'sb ' || i FROM generate_series(1, 1000) i;
});
sql(q{ALTER SYSTEM SET synchronous_standby_names = 'nosuch'});
sql(q{SELECT pg_reload_conf()});
{
	my $x3 = $node->background_psql('postgres');
	$x3->query_until(qr/go/, "SET synchronous_commit = on;\n\\echo go\nUPDATE sb SET v = 'before the start' WHERE id = 700;\n");
	ok(poll_until('the update of sb waiting for the standby', 30, sub {
		sql(q{SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'}) eq '1' }),
		'sb: an update committed before the stream and waits for a synchronous standby');
	sql(q{SELECT egress_add_stream('sb', 'sb', 'LOG_BASED', 'd', NULL, '{"chunk_rows": 100}')});
	ok(cdc_activity('the worker held before the first chunk of sb', '%waiting for 1 transactions writing %sb'),
		'sb: the first chunk waits for the committed writer still running');
	is(stream_of('sb')->{state}, 'syncing', 'sb: still syncing meanwhile');
	sql(q{ALTER SYSTEM RESET synchronous_standby_names});
	sql(q{SELECT pg_reload_conf()});
	$x3->quit;
	wait_stream_state($node, 'sb', 'streaming');
	wait_caught_up($node, 'sb');
	compare_states(mirror($out, 'public-sb', ['id']), table_state($node, 'sb', ['id']),
		'sb after a writer committed before the start');
}

done_testing();
