
# Chunked LOG_BASED initial sync (issue 13) of a 2,000,000-row table under a
# concurrent UPDATE/DELETE/INSERT load on the same table, with a kill -9 of
# the CDC worker half way.
#
# Set-up: table big (id bigint PRIMARY KEY, v int, w text), narrow rows, ids
# 2, 4, ..., 2N.  A writer (a bash loop of CALL load_burst(), reconnecting
# after the crash, with its own deadline) runs from before the stream is
# added until the backfill is over: single-row UPDATEs, DELETEs, INSERTs of
# odd keys (ON CONFLICT: UPDATE), key-changing UPDATEs, and transactions of
# several of these; half of them on keys anywhere (read or not yet read by
# the backfill), half right after the backfill's acknowledged position
# (egress.stream_state.backfill_after: the chunk being read or the next),
# so that many fall into chunks' (L, H] windows.  The stream has the default
# chunk_rows (50,000: 40 chunks) and "debug_lsn": true, which makes
# initial-sync RECORDs carry "_sdc_lsn": null and live ones their commit
# LSN: that is how backfill rows are told from changes at the destination.
#
# Checks, and the bug each catches:
#  1. Final state: every batch file replayed in delivery order (snapshot
#     files first, then change files by name; the last RECORD of a key
#     wins, _sdc_deleted_at deletes, ACTIVATE_VERSION drops older
#     versions), in SQL (replay_sql in EgressTest.pm), equals the table row
#     for row (the table's rows as to_jsonb renders them: for bigint, int
#     and text the same as pg_egress, and much faster on 2,000,000 rows).  Catches: a chunk row emitted after a newer change of its
#     key (the (L, H] filter or the straggler check missing: the stale
#     chunk value wins), changes lost or duplicated around chunk
#     boundaries or the crash, a chunk skipped on resume (rows missing), a
#     deleted row resurrected by a chunk (extra rows).
#  2. xmin: a sampler (a procedure in its own backend, restarted after
#     the crash) records every 10 ms the oldest backend_xmin of the
#     pg_egress processes (pg_stat_activity), the next xid, and
#     egress_streams.backfill_chunks; each sample commits, so xids map to
#     times at 10 ms resolution.  The age of a held xmin X at a sample
#     lies between now - (first sample at which X was assigned) and now -
#     (last sample at which it was not yet), searched within one session
#     of the sampler (xids handed out but never logged are handed out
#     again after the crash).  A chunk's duration is the time
#     between two values of backfill_chunks over the chunks between them
#     (it moves when a batch is acknowledged, maybe several chunks at
#     once).  Checks: every sample's age (lower bound: sampler delays on a
#     busy machine cannot fail it) <= the duration of the chunk in
#     progress + 0.1 s; the oldest age (upper bound) < a quarter of the
#     whole backfill.
#     Catches: a snapshot (or any transaction) kept across chunks, and the
#     0.1 one-transaction sync (run against the 0.1 code this check fails:
#     xmin age 0.78 s in a backfill of 0.9 s, backfill_chunks never moves).
#     At least a few samples must see an xmin (else the sampler proves
#     nothing) and backfill_chunks must take N/chunk_rows/4 values.
#  3. kill -9 of the CDC worker once backfill_rows >= N/2: the server log
#     says the backfill "resumed after chunk K" with K >= the
#     backfill_chunks read before the kill (acknowledged progress kept,
#     resumed at a chunk boundary); the initial-sync RECORDs of a key
#     beyond its first one (rows read again) are fewer than 2 chunks;
#     no key has more than two; the version of the stream and of every
#     RECORD and ACTIVATE_VERSION is the one before the kill (a resume, not
#     a new sync: a new sync would re-read everything, a new version, and
#     N duplicates); the first initial-sync key written after the kill is
#     above the key of the progress read before it.  Catches: progress
#     stored before the ack (a chunk lost: check 1), never stored (a full
#     re-read), restarting at the start or with a new version.
#
# Runtime: 47-142 s for 2,000,000 rows, measured on 2 cores shared with
# other builds and tests (load average 3-8): table 7-20 s, backfill 5-14 s
# (kill and crash recovery included), replay in SQL 33-112 s (the numbers
# are printed with note()).  EGRESS_T101_ROWS sets another row count (for
# a quick run; the chunk checks need >= 8 chunks); EGRESS_T101_CHUNK_ROWS=0
# runs the one-transaction sync of 0.1 instead: the chunk, xmin and resume
# checks then fail (xmin age 1.36 s in a backfill of 1.4 s).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use Time::HiRes qw(time usleep);
use List::Util qw(max min sum);
use EgressTest;

my $N = $ENV{EGRESS_T101_ROWS} // 2_000_000;
my $CHUNK = 50_000;    # the default of chunk_rows (not set on the stream)
my $T0 = time;

my $node = create_node(
	'backfill_load',
	cdc => 1,
	conf => "shared_buffers = 256MB\nmax_wal_size = 4GB\nlog_min_messages = debug1\n"
	  . "log_error_verbosity = terse\nlog_statement = none\n");
my $out = new_outdir($node, 'big');

sub elapsed { return sprintf('%.1f s', time - $T0); }

$node->safe_psql('postgres', qq{
CREATE TABLE big (id bigint PRIMARY KEY, v int NOT NULL, w text NOT NULL);
INSERT INTO big SELECT 2 * g, g % 1000, substr(md5(g::text), 1, 8) FROM generate_series(1, $N) g;
VACUUM ANALYZE big;
-- the writer: about 2 seconds of short transactions per call
CREATE PROCEDURE load_burst(secs float8) LANGUAGE plpgsql AS \$\$
DECLARE
	t0 timestamptz := clock_timestamp();
	r bigint;
	k bigint;
	base bigint;
	op int;
	n int;
BEGIN
	WHILE clock_timestamp() < t0 + secs * interval '1 second' LOOP
		n := 1 + (random() < 0.2)::int * 4;    -- sometimes five changes in one transaction
		FOR i IN 1 .. n LOOP
			op := floor(random() * 10)::int;
			IF random() < 0.5 THEN
				-- near the backfill's position: the chunk being read or the next
				-- one, so that changes fall into chunks' (L, H] windows
				SELECT coalesce(ss.backfill_after[1]::bigint, 0) INTO base
				  FROM egress.stream_state ss JOIN egress.stream s ON s.id = ss.stream_id
				 WHERE s.name = 'big';
				r := coalesce(base, 0) + 2 * (1 + floor(random() * 2 * $CHUNK)::bigint);
				r := r - r % 2;
			ELSE
				r := 2 * (1 + floor(random() * $N)::bigint);    -- an even (initial) key anywhere
			END IF;
			k := r + 1;                                        -- an odd key next to it
			IF op < 4 THEN
				UPDATE big SET v = v + 1, w = 'u' || substr(md5(random()::text), 1, 6) WHERE id = r;
			ELSIF op < 6 THEN
				DELETE FROM big WHERE id = r;
			ELSIF op < 8 THEN
				INSERT INTO big VALUES (k, -1, 'i') ON CONFLICT (id) DO UPDATE SET v = big.v - 1, w = 'c';
			ELSIF op < 9 THEN
				DELETE FROM big WHERE id = k;
			ELSE
				-- the key changes (into a free odd key)
				UPDATE big SET id = k, w = 'm' WHERE id = r AND NOT EXISTS (SELECT 1 FROM big WHERE id = k);
			END IF;
		END LOOP;
		COMMIT;
		PERFORM pg_sleep(0.001);
	END LOOP;
END
\$\$;
});
note 'table of ' . $node->safe_psql('postgres', 'SELECT count(*) FROM big') . ' rows built at ' . elapsed();

# ---------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------
my $stop = $node->basedir . '/stop_writer';
my $wlog = $node->basedir . '/writer.log';
my $psql = $node->installed_command('psql');
my $writer = IPC::Run::start(
	[
		'bash', '-c', qq{
deadline=\$((SECONDS + 400)); calls=0; ok=0
while [ ! -e '$stop' ] && [ \$SECONDS -lt \$deadline ]; do
	calls=\$((calls + 1))
	if '$psql' -X -q -v ON_ERROR_STOP=1 -d "\$1" -c 'CALL load_burst(2)' >>'$wlog' 2>&1; then ok=\$((ok + 1)); else sleep 0.3; fi
done
echo "calls=\$calls ok=\$ok" >>'$wlog'
}, 'writer', $node->connstr('postgres')
	],
	'<', '/dev/null', '>', '/dev/null', '2>', '/dev/null');

# let it start changing rows before the stream exists
my $xid_start = $node->safe_psql('postgres', 'SELECT pg_snapshot_xmax(pg_current_snapshot())');
ok( poll_until(
		'the writer commits', 60,
		sub { $node->safe_psql('postgres', 'SELECT pg_snapshot_xmax(pg_current_snapshot())') > $xid_start + 20 }),
	'the writer is running');

# ---------------------------------------------------------------------------
# the sampler: a procedure in its own backend, every 10 ms (committing each
# sample: its xids also map xids to times at that resolution), restarted
# after the crash like the writer
# ---------------------------------------------------------------------------
$node->safe_psql('postgres', q{
CREATE TABLE xmin_sample (sess int, t float8, next_xid bigint, held int, oldest_xmin bigint,
                          state text, chunks bigint, rows bigint, version bigint);
CREATE TABLE sampler_ctl (stop boolean NOT NULL);
INSERT INTO sampler_ctl VALUES (false);
CREATE PROCEDURE sampler() LANGUAGE plpgsql AS $$
BEGIN
	WHILE NOT (SELECT stop FROM sampler_ctl) LOOP
		INSERT INTO xmin_sample
		SELECT pg_backend_pid(), extract(epoch FROM clock_timestamp()), pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
		       (SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pg_egress%' AND backend_xmin IS NOT NULL),
		       (SELECT min(backend_xmin::text::bigint) FROM pg_stat_activity
		         WHERE backend_type LIKE 'pg_egress%' AND backend_xmin IS NOT NULL),
		       s.state, coalesce((to_jsonb(s)->>'backfill_chunks')::bigint, 0),
		       coalesce((to_jsonb(s)->>'backfill_rows')::bigint, 0), s.version
		  FROM egress_streams s WHERE s.name = 'big';
		COMMIT;
		PERFORM pg_sleep(0.01);
	END LOOP;
END
$$;
});
my $sampler = IPC::Run::start(
	[
		'bash', '-c', qq{
deadline=\$((SECONDS + 400))
while [ ! -e '$stop' ] && [ \$SECONDS -lt \$deadline ]; do
	'$psql' -X -q -d "\$1" -c 'CALL sampler()' >>'$wlog' 2>&1 || sleep 0.2
done
}, 'sampler', $node->connstr('postgres')
	],
	'<', '/dev/null', '>', '/dev/null', '2>', '/dev/null');

# ---------------------------------------------------------------------------
# the stream; kill -9 of its worker at 50%
# ---------------------------------------------------------------------------
add_destination($node, 'bf', $out);
my $log_offset = -s $node->logfile;
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('big', 'big', method => 'LOG_BASED', destination => 'bf', options => '{"debug_lsn": true}'}
	  . (defined $ENV{EGRESS_T101_CHUNK_ROWS} ? qq{::jsonb || '{"chunk_rows": $ENV{EGRESS_T101_CHUNK_ROWS}}'} : '')
	  . ')');
my $t_added = time;

my ($kill, $t_done, $last);
my $progress_sql = q{
SELECT s.state, coalesce((to_jsonb(s)->>'backfill_rows')::bigint, 0),
       coalesce((SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc'), '')
  FROM egress_streams s WHERE s.name = 'big'};
my $deadline = time + 600;
while (time < $deadline)
{
	my ($ret, $o) = $node->psql('postgres', $progress_sql);
	if ($ret == 0 && $o ne '')
	{
		my ($state, $rows, $cdc) = split /\|/, $o, -1;
		$last = $o;
		if ($state eq 'streaming')
		{
			$t_done = time;
			last;
		}
		last if $state eq 'error';
		if (!$kill && $rows >= $N / 2 && $cdc =~ /^\d+$/)
		{
			# acknowledged progress just before the kill
			my $st = $node->safe_psql('postgres',
				q{SELECT ss.backfill_chunks || '|' || ss.backfill_rows || '|' || coalesce(ss.backfill_after[1], '') || '|' || ss.version
				    FROM egress.stream_state ss JOIN egress.stream s ON s.id = ss.stream_id WHERE s.name = 'big'});
			my ($kc, $kr, $ka, $kv) = split /\|/, $st, -1;
			my %files = map { ($_ => 1) } list_dir($out);
			$kill = {
				t => time, pid => $cdc, chunks => $kc, rows => $kr, after => $ka,
				version => $kv, files => \%files, log_offset => -s $node->logfile
			};
			ok(kill('KILL', $cdc), "kill -9 of the CDC worker $cdc at backfill_rows $kr of $N (chunk $kc, after key $ka)");
			server_up($node);
			next;
		}
	}
	usleep(50_000);
}
ok(defined $t_done, 'the backfill finished (state streaming)')
  or diag "last state|backfill_rows|cdc pid: $last; error: " . ((stream_row($node, 'big') // {})->{last_error} // '');
ok($kill, 'the CDC worker was killed at 50%');
my $backfill_s = ($t_done // time) - $t_added;
note sprintf('backfill of %d rows: %.1f s; finished at %s', $N, $backfill_s, elapsed());

# stop the writer and the sampler, let everything arrive
write_file($stop, '');
$node->safe_psql('postgres', 'UPDATE sampler_ctl SET stop = true');
ok(eval { $writer->finish; 1 }, 'the writer stopped');
ok(eval { $sampler->finish; 1 }, 'the sampler stopped');
note 'writer: ' . join(' | ', grep { /calls=/ } split /\n/, slurp_file($wlog)) . '; changes of big: '
  . $node->safe_psql('postgres',
	q{SELECT format('%s inserts, %s updates, %s deletes (since the last crash)', n_tup_ins, n_tup_upd, n_tup_del) FROM pg_stat_user_tables WHERE relname = 'big'});
wait_caught_up($node, 'big', 180);

# ---------------------------------------------------------------------------
# 2. xmin held by pg_egress vs the chunk durations
# ---------------------------------------------------------------------------
{
	my @samples = map {
		my @f = split /\|/, $_, -1;
		+{ t => $f[0], next_xid => $f[1], held => $f[2], xmin => $f[3], state => $f[4], chunks => $f[5], sess => $f[6] }
	} grep { $_ ne '' } split /\n/, $node->safe_psql('postgres',
		"SELECT t, next_xid, held, coalesce(oldest_xmin, 0), state, chunks, sess FROM xmin_sample WHERE t >= $t_added ORDER BY t");
	# chunk k+1 is in progress while backfill_chunks = k; backfill_chunks
	# moves when a batch is acknowledged, maybe by several chunks at once:
	# a chunk's duration is the time between two values over the chunks
	# between them (intervals spanning the kill left out)
	my (@chunk_at, %dur);
	foreach my $s (@samples)
	{
		push @chunk_at, $s if !@chunk_at || $s->{chunks} != $chunk_at[-1]{chunks};
	}
	for my $i (0 .. $#chunk_at - 1)
	{
		my ($a, $b) = @chunk_at[ $i, $i + 1 ];
		next if $kill && $a->{t} < $kill->{t} && $b->{t} >= $kill->{t};
		next unless $b->{chunks} > $a->{chunks};
		$dur{ $a->{chunks} } = ($b->{t} - $a->{t}) / ($b->{chunks} - $a->{chunks});
	}
	my @d = sort { $a <=> $b } values %dur;
	my $median = @d ? $d[ $#d / 2 ] : 0;
	note sprintf('%d samples; backfill_chunks took %d values; chunk durations: median %.3f s, max %.3f s',
		scalar @samples, scalar @chunk_at, $median, @d ? $d[-1] : 0);
	cmp_ok(scalar @chunk_at, '>=', int($N / $CHUNK / 4), 'backfill_chunks moved chunk by chunk');

	# When was xid X assigned?  After the last sample at which it was not
	# yet (next_xid <= X) and before the first at which it was: the age of
	# a held xmin X at a sample lies between t - (that first sample) and
	# t - (that last one).  next_xid never decreases within one session of
	# the sampler (binary search), but may across the crash restart (xids
	# handed out but never logged are handed out again): each session is
	# searched on its own.  An xmin older than every sample of its session
	# is at least t - (the session's first sample) old (no upper bound
	# then: the age shown is that lower bound).  The check uses the lower
	# bound (a late sampler on a busy machine widens the interval, never
	# moves the lower bound up), the notes show both.
	my %sess;
	push @{ $sess{ $_->{sess} } }, $_ foreach @samples;
	my $age_of = sub {
		my ($x, $s) = @_;
		my $l = $sess{ $s->{sess} };
		return ($s->{t} - $l->[0]{t}, $s->{t} - $l->[0]{t}) if $l->[0]{next_xid} > $x;
		my ($lo, $hi) = (0, $#$l);
		while ($lo < $hi)
		{
			my $mid = int(($lo + $hi + 1) / 2);
			if ($l->[$mid]{next_xid} <= $x) { $lo = $mid; } else { $hi = $mid - 1; }
		}
		my $assigned = $lo < $#$l && $l->[ $lo + 1 ]{t} <= $s->{t} ? $l->[ $lo + 1 ]{t} : $s->{t};
		return ($s->{t} - $assigned, $s->{t} - $l->[$lo]{t});
	};
	my ($n_held, $max_age, $max_age_lo, $worst_excess, $worst) = (0, 0, 0, -1e9, '');
	foreach my $s (@samples)
	{
		next unless $s->{held} && $s->{state} ne 'streaming';
		$n_held++;
		my ($age_lo, $age) = $age_of->($s->{xmin}, $s);
		my $limit = $dur{ $s->{chunks} } // $median;
		$max_age = $age if $age > $max_age;
		$max_age_lo = $age_lo if $age_lo > $max_age_lo;
		if ($age_lo - $limit > $worst_excess)
		{
			$worst_excess = $age_lo - $limit;
			$worst = sprintf('xmin %s at +%.2f s (backfill_chunks %d): age %.3f..%.3f s, chunk duration %.3f s',
				$s->{xmin}, $s->{t} - $t_added, $s->{chunks}, $age_lo, $age, $limit);
		}
	}
	note sprintf('%d samples saw a pg_egress backend_xmin; oldest age %.3f s (at least %.3f s); closest to its limit: %s',
		$n_held, $max_age, $max_age_lo, $worst);
	cmp_ok($n_held, '>=', 3, 'the sampler saw pg_egress hold an xmin (reads in progress)');
	cmp_ok($worst_excess, '<=', 0.1, 'no held xmin dates back more than the chunk in progress (+0.1 s sampling slack)')
	  or diag $worst;
	cmp_ok($max_age, '<', $backfill_s / 4, 'the oldest held xmin is far younger than the backfill (no snapshot across chunks)');
}

# ---------------------------------------------------------------------------
# 3. the resume after kill -9
# ---------------------------------------------------------------------------
my ($resumed_after) = slurp_file($node->logfile, $kill ? $kill->{log_offset} : 0)
  =~ /chunked backfill of \S+ resumed after chunk (\d+)/;
ok(defined $resumed_after, 'the server log says where the backfill resumed')
  and cmp_ok($resumed_after, '>=', $kill->{chunks},
	"resumed after chunk $resumed_after, not before the acknowledged chunk $kill->{chunks}");

# ---------------------------------------------------------------------------
# 1. the destination's final state, and the records re-read
# ---------------------------------------------------------------------------
my $t_replay = time;
my $r = replay_sql($node, prefix => 'rp', files => [ replay_files($out, 'big') ],
	sid => 'public-big', relation => 'big', key => ['id'], render => 'to_jsonb');
note sprintf('replayed %d files, %d messages, %d RECORDs of public-big (%d initial-sync, %d deletes) in %.1f s',
	$r->{files}, $r->{messages}, $r->{records}, $r->{initial}, $r->{deletes}, time - $t_replay);
replay_check('after the backfill under load and kill -9', $r);
is_deeply($r->{bad_files}, [], 'every batch file starts with SCHEMA and ends with STATE');
cmp_ok($r->{initial}, '>=', $N * 0.9, 'the rows came as initial-sync RECORDs ("_sdc_lsn": null)');
note "initial-sync RECORDs sent twice: $r->{dup_initial} (keys: $r->{dup_keys}, at most $r->{dup_max} times)";
cmp_ok($r->{dup_initial}, '<', 2 * $CHUNK, 'rows re-read after kill -9: fewer than 2 chunks');
cmp_ok($r->{dup_max}, '<=', 2, 'no row sent by the backfill more than twice');
if ($kill)
{
	is_deeply($r->{versions}, [ $kill->{version} ], 'every RECORD has the version of before the kill');
	ok(@{ $r->{activations} } && !grep({ $_ ne $kill->{version} } @{ $r->{activations} }),
		'every ACTIVATE_VERSION has the version of before the kill')
	  or diag "ACTIVATE_VERSIONs: @{ $r->{activations} }";
	is(stream_row($node, 'big')->{version}, $kill->{version}, 'egress_streams.version unchanged by the resume');
	my $new = join(',', map { sql_quote($_) } grep { !$kill->{files}{$_} } list_dir($out)) || "''";
	my $first = $node->safe_psql('postgres', qq{
SELECT min(r.k::bigint) FROM rp_rec r JOIN rp_files f USING (f)
 WHERE r.initial AND f.name IN ($new)});
	note "first initial-sync key after the kill: $first (acknowledged progress before it: after key '$kill->{after}')";
	cmp_ok($first, '>', $kill->{after} eq '' ? 0 : $kill->{after}, 'the backfill resumed after the acknowledged key')
	  if $first ne '';
}

note 'total runtime ' . elapsed();
$node->stop('fast');
done_testing();
