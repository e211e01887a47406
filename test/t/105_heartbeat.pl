
# Heartbeats and idle slots (issue 13): a destination whose one watched
# table is idle while pgbench writes in another database.
#
#  - heartbeats off (pg_egress.heartbeat_interval = 0): the slot's
#    confirmed position still follows the WAL (the worker confirms what its
#    reader passed with nothing open), but restart_lsn moves only at the
#    bgwriter's running-xacts records (every 15 s): lag_bytes is tens of MB;
#  - heartbeats on (the default, 1min): for 60 s of pgbench, the slot's
#    confirmed_flush_lsn follows the WAL and egress_streams.lag_bytes of the
#    idle stream stays below one WAL segment in the second half of the run;
#    a row inserted into the watched table during the load is delivered
#    exactly once;
#  - a transaction left open elsewhere holds restart_lsn (PostgreSQL keeps
#    it before its first change): the worker does not write heartbeats in
#    vain meanwhile;
#  - the confirmed position never passes an unacknowledged change: a change
#    of the watched table in a batch left open (flush_interval 20s) holds
#    the slot back while the worker decodes the load's WAL; after kill -9 of
#    the CDC worker it is delivered, once;
#  - an idle cluster: no heartbeat is written, and the worker wakes no more
#    often than its flush interval asks.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use Time::HiRes qw(time usleep);
use EgressTest;

my $SEG = 16 * 1024 * 1024;

# flush_interval 1s (the default): the idle worker polls once a second
my $node = create_node(
	'hb', cdc => 1, conf => q{
log_statement = none
pg_egress.flush_interval = '1s'
checkpoint_timeout = '30min'
max_wal_size = '1GB'
});
my $out = new_outdir($node, 'hb');
# the same table to a destination decoded with wal2json: it gets the
# heartbeat messages in its own format
my $wout = new_outdir($node, 'hw');
$node->safe_psql('postgres', 'CREATE TABLE idle (id int PRIMARY KEY, v text)');
add_destination($node, 'hb', $out);
add_destination($node, 'hw', $wout, '{"decoder": "wal2json"}');
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('s', 'idle', method => 'LOG_BASED', destination => 'hb')});
$node->safe_psql('postgres',
	q{SELECT egress_add_stream('sw', 'idle', method => 'LOG_BASED', destination => 'hw')});
wait_stream_state($node, 's', 'streaming');
wait_stream_state($node, 'sw', 'streaming');
my $slot = stream_row_wait($node, 's')->{slot_name} // 'pg_egress_hb';
is((slot_row($node, stream_row_wait($node, 'sw')->{slot_name} // 'pg_egress_hw') // {})->{plugin},
	'wal2json', 'stream sw decodes with wal2json');

is($node->safe_psql('postgres', 'SHOW pg_egress.heartbeat_interval'), '1min',
	'pg_egress.heartbeat_interval defaults to 1min');

# the heartbeats written into the WAL of database postgres, seen by a
# test_decoding slot of our own (it consumes: a count per phase)
$node->safe_psql('postgres',
	q{SELECT pg_create_logical_replication_slot('hb_peek', 'test_decoding')});

# heartbeats since the last call: the total, or of one destination
my %hb_of;

sub heartbeats_since_last_call
{
	my ($dest) = @_;
	%hb_of = ();
	foreach my $l (split /\n/, $node->safe_psql('postgres',
		q{SELECT split_part(split_part(data, 'content:', 2), ' ', 1), count(*) FROM pg_logical_slot_get_changes('hb_peek', NULL, NULL) WHERE data LIKE 'message: transactional: 0 prefix: pg_egress.heartbeat,%' GROUP BY 1}))
	{
		my ($d, $n) = split /\|/, $l;
		$hb_of{$d} = $n;
	}
	return $hb_of{$dest} // 0 if defined $dest;
	my $t = 0;
	$t += $_ foreach values %hb_of;
	return $t;
}

$node->safe_psql('postgres', 'CREATE DATABASE bench');
my $pgbench = $node->installed_command('pgbench');
my ($io, $ie) = ('', '');
IPC::Run::run([ $pgbench, '-i', '-s', '2', '-q', $node->connstr('bench') ], '>', \$io, '2>', \$ie)
  or die "pgbench -i failed: $ie";

sub set_interval
{
	my ($v) = @_;
	$node->safe_psql('postgres',
		defined $v
		? "ALTER SYSTEM SET pg_egress.heartbeat_interval = '$v'"
		: 'ALTER SYSTEM RESET pg_egress.heartbeat_interval');
	$node->reload;
}

# Runs pgbench in database bench for $secs seconds; samples the slot every
# 0.5 s; $during->($elapsed) is called at each sample.  Returns the samples
# (t, flush, confirmed, restart, lag_bytes), pgbench's output.
sub load
{
	my ($secs, $during) = @_;
	my ($o, $e) = ('', '');
	my $h = IPC::Run::start([ $pgbench, '-n', '-c', '2', '-T', $secs, $node->connstr('bench') ],
		'>', \$o, '2>', \$e);
	my $t0 = time;
	my @samples;
	while ($h->pumpable || time - $t0 < 1)
	{
		my $r = $node->safe_psql('postgres',
			qq{SELECT pg_current_wal_flush_lsn() - '0/0', confirmed_flush_lsn - '0/0', restart_lsn - '0/0', (SELECT lag_bytes FROM egress_streams WHERE name = 's'), (SELECT lag_bytes FROM egress_streams WHERE name = 'sw') FROM pg_replication_slots WHERE slot_name = '$slot'}
		);
		my ($flush, $conf, $restart, $lag, $wlag) = split /\|/, $r;
		push @samples, { t => time - $t0, flush => $flush, confirmed => $conf, restart => $restart, lag => $lag, wlag => $wlag };
		$during->(time - $t0) if $during;
		$h->pump_nb;
		usleep(500_000);
		last if time - $t0 > $secs + 30;
	}
	$h->finish;
	my ($tps) = $o =~ /tps = ([\d.]+)/;
	return (\@samples, $tps // 'unknown', $e);
}

# maxima over the samples taken from $from to $to seconds into a run
sub window_max
{
	my ($samples, $from, $to) = @_;
	my ($max_lag, $max_unconfirmed, $max_held, $n) = (0, 0, 0, 0);
	my ($moves, $last, $max_wlag) = (0, undef, 0);
	foreach my $s (@$samples)
	{
		next if $s->{t} < $from || $s->{t} > $to;
		$n++;
		$moves++ if defined $last && $s->{restart} != $last;
		$last = $s->{restart};
		$max_lag = $s->{lag} if defined $s->{lag} && $s->{lag} ne '' && $s->{lag} > $max_lag;
		$max_wlag = $s->{wlag} if defined $s->{wlag} && $s->{wlag} ne '' && $s->{wlag} > $max_wlag;
		$max_unconfirmed = $s->{flush} - $s->{confirmed} if $s->{flush} - $s->{confirmed} > $max_unconfirmed;
		$max_held = $s->{flush} - $s->{restart} if $s->{flush} - $s->{restart} > $max_held;
	}
	return ($max_lag, $max_unconfirmed, $max_held, $n, $moves, $max_wlag);
}

sub mb { return sprintf('%.1f MB', $_[0] / 1024 / 1024); }

sub wal_written
{
	my ($samples, $secs) = @_;
	my @in = grep { $_->{t} <= $secs } @$samples;
	return $in[-1]{flush} - $in[0]{flush};
}

# ---------------------------------------------------------------------------
# heartbeats off: what confirming the reader's position does alone
# ---------------------------------------------------------------------------
set_interval('0');
# what pgbench -i wrote is freed first (the bgwriter's next running-xacts)
ok(poll_until('lag below 1 MB', 90, sub {
	my $l = stream_row($node, 's');
	return $l && defined $l->{lag_bytes} && $l->{lag_bytes} < 1024 * 1024;
}), 'heartbeats off, before the load: lag_bytes below 1 MB');
heartbeats_since_last_call();
my $OFF = 30;
my ($off, $off_tps) = load($OFF);
# from 15 s on: the bgwriter wrote a running-xacts record by then
my ($off_lag, $off_unconf, $off_held, $off_n, $off_moves) = window_max($off, 15, $OFF);
my $off_wal = wal_written($off, $OFF);
diag sprintf('heartbeats off, %d s of pgbench (%s tps, %s of WAL): from 15 s on (%d samples): max lag_bytes %s, max flush - confirmed_flush %s, max flush - restart_lsn %s, restart_lsn moved %d times',
	$OFF, $off_tps, mb($off_wal), $off_n, mb($off_lag), mb($off_unconf), mb($off_held), $off_moves);
# the bgwriter writes one every 15 s (a checkpoint may add one)
cmp_ok($off_moves, '<=', ($OFF - 15) / 15 + 2,
	"heartbeats off: restart_lsn moves only at the bgwriter's running-xacts records ($off_moves times in " . ($OFF - 15) . ' s)');
is(heartbeats_since_last_call(), 0, 'heartbeats off: no heartbeat written');
cmp_ok($off_unconf, '<', $SEG,
	'heartbeats off: confirmed_flush still follows the WAL (the reader\'s position is confirmed)');
SKIP:
{
	# restart_lsn trails by 15 to 30 s of WAL
	skip 'less than 1.5 segments of WAL per 30 s: the bgwriter alone keeps lag_bytes below a segment', 1
	  if $off_wal / $OFF * 30 < 1.5 * $SEG;
	cmp_ok($off_lag, '>', $SEG,
		'heartbeats off: restart_lsn trails by the bgwriter\'s running-xacts interval (lag_bytes above one segment)');
}

# ---------------------------------------------------------------------------
# heartbeats on (the default): 60 s of pgbench elsewhere
# ---------------------------------------------------------------------------
set_interval(undef);
my $ON = 60;
my $inserted = 0;
my ($on, $on_tps) = load(
	$ON,
	sub {
		my ($t) = @_;
		return if $inserted || $t < $ON / 3;
		$node->safe_psql('postgres', q{INSERT INTO idle VALUES (1, 'during the load')});
		$inserted = 1;
	});
my ($on_lag, $on_unconf, $on_held, $on_n, $on_moves, $on_wlag) = window_max($on, $ON / 2, $ON);
my $on_wal = wal_written($on, $ON);
my $on_hb = heartbeats_since_last_call();
diag sprintf('heartbeats on, %d s of pgbench (%s tps, %s of WAL, %d heartbeats): second half (%d samples): max lag_bytes %s, max flush - confirmed_flush %s, max flush - restart_lsn %s, restart_lsn moved %d times',
	$ON, $on_tps, mb($on_wal), $on_hb, $on_n, mb($on_lag), mb($on_unconf), mb($on_held), $on_moves);
{
	my $next = 0;
	my @shown;
	foreach (@$on)
	{
		next if $_->{t} < $next;
		push @shown, sprintf('%.0f:%s,%s', $_->{t}, mb($_->{flush} - $_->{confirmed}), mb($_->{lag} // 0));
		$next += 5;
	}
	diag 'samples (s: flush - confirmed, lag_bytes): ' . join(' ', @shown);
}
ok($on_n >= 20, "heartbeats on: $on_n samples in the second half");
cmp_ok($on_unconf, '<', $SEG, 'heartbeats on: confirmed_flush follows the WAL');
cmp_ok($on_lag, '<', $SEG,
	'heartbeats on: lag_bytes of the idle stream stays below one WAL segment in the second half');
cmp_ok($on_wlag, '<', $SEG,
	'heartbeats on: lag_bytes of the idle stream of the wal2json destination stays below one WAL segment too: ' . mb($on_wlag));
cmp_ok($on_hb, '>', 0, 'heartbeats were written during the load');
# the confirmed position moved with the WAL the whole run
my @c = map { $_->{confirmed} } grep { $_->{t} <= $ON } @$on;
cmp_ok($c[-1] - $c[0], '>=', 0.9 * $on_wal,
	'heartbeats on: the slot\'s confirmed position advanced with the WAL: ' . mb($c[-1] - $c[0]) . ' of ' . mb($on_wal));

# the row inserted during the load: delivered exactly once
sub deliveries
{
	my ($id, $dir) = @_;
	my $n = 0;
	foreach my $b (cdc_batches($dir // $out))
	{
		foreach my $r (records_of($b))
		{
			$n++ if $r->{record}{id} == $id;
		}
	}
	return $n;
}
ok($inserted, 'a row was inserted into the watched table during the load');
ok(poll_until('row 1 delivered', 60, sub { deliveries(1) >= 1 }), 'the row inserted during the load is delivered');
is(deliveries(1), 1, 'the row inserted during the load is delivered exactly once');
ok(poll_until('row 1 delivered (wal2json)', 60, sub { deliveries(1, $wout) >= 1 }), 'wal2json destination: the row is delivered');
is(deliveries(1, $wout), 1, 'wal2json destination: the row is delivered exactly once');

# ---------------------------------------------------------------------------
# a transaction left open in database bench holds restart_lsn before its
# first change: no heartbeat can free the WAL behind it, and after one that
# did not move the slot, the next waits for the interval (1min)
# ---------------------------------------------------------------------------
my ($lin, $lout, $lerr) = ('', '', '');
my $long = IPC::Run::start([ $node->installed_command('psql'), '-XAtq', '-v', 'ON_ERROR_STOP=1', $node->connstr('bench') ],
	'<', \$lin, '>', \$lout, '2>', \$lerr);
$lin .= "BEGIN;\nINSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, 1, 0, now());\nSELECT 'open';\n";
ok(poll_until('the long transaction has written', 30, sub { $long->pump_nb; $lout =~ /open/ }),
	'a transaction with a change stays open in database bench');
my $LONG = 12;
my ($lt, $lt_tps) = load($LONG);
my ($lt_lag, $lt_unconf, $lt_held, $lt_n, $lt_moves) = window_max($lt, 0, $LONG);
my $lt_hb = heartbeats_since_last_call('hb');
diag sprintf('a transaction open, %d s of pgbench (%s tps, %s of WAL, %d heartbeats): max lag_bytes %s, max flush - confirmed_flush %s, restart_lsn moved %d times',
	$LONG, $lt_tps, mb(wal_written($lt, $LONG)), $lt_hb, mb($lt_lag), mb($lt_unconf), $lt_moves);
cmp_ok($lt_unconf, '<', $SEG, 'a transaction open: confirmed_flush still follows the WAL');
cmp_ok($lt_hb, '<=', 2, "a transaction open: no heartbeat after one that did not move the slot ($lt_hb in $LONG s)");
cmp_ok($hb_of{hw} // 0, '<=', 2, 'a transaction open: the same for the wal2json destination (' . ($hb_of{hw} // 0) . ')');
$lin .= "COMMIT;\n\\q\n";
$long->finish;

# ---------------------------------------------------------------------------
# never past an unacknowledged change; kill -9 after confirming idle WAL
# ---------------------------------------------------------------------------
# A batch stays open for 20 s (flush_interval): the worker goes on
# decoding the load's WAL meanwhile, but the position of the open batch's
# change is not confirmed before the batch is acknowledged.
$node->safe_psql('postgres', q{ALTER SYSTEM SET pg_egress.flush_interval = '20s'});
$node->reload;
my ($o2, $e2) = ('', '');
my $h2 = IPC::Run::start([ $pgbench, '-n', '-c', '2', '-T', '30', $node->connstr('bench') ],
	'>', \$o2, '2>', \$e2);
usleep(2_000_000);
# nothing to send: the slot follows the load
my $flushed = $node->safe_psql('postgres', q{SELECT pg_current_wal_flush_lsn() - '0/0'});
ok(poll_until('confirmed past the load', 60, sub {
	$node->safe_psql('postgres', qq{SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = '$slot'}) >= $flushed
}), 'nothing to send: the slot is confirmed past the load\'s WAL');
my $before = $node->safe_psql('postgres', q{SELECT pg_current_wal_insert_lsn() - '0/0'});
$node->safe_psql('postgres', q{INSERT INTO idle VALUES (2, 'in a batch left open')});
my $after = $node->safe_psql('postgres', q{SELECT pg_current_wal_insert_lsn() - '0/0'});
my $t_insert = time;
# the load writes on; sample the slot and the bookmark for 10 s
my ($max_conf, $max_bm, $max_flush) = (0, 0, 0);
while (time - $t_insert < 10)
{
	my ($c, $b, $f) = split /\|/, $node->safe_psql('postgres',
		qq{SELECT (SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = '$slot'), (SELECT ss.confirmed_lsn - '0/0' FROM egress.stream_state ss JOIN egress.stream s ON s.id = ss.stream_id WHERE s.name = 's'), pg_current_wal_flush_lsn() - '0/0'});
	$max_conf = $c if $c > $max_conf;
	$max_bm = $b if $b > $max_bm;
	$max_flush = $f if $f > $max_flush;
	usleep(250_000);
}
diag sprintf('change of row 2 between WAL %s and %s; in the next 10 s the load wrote %s more; the slot was confirmed up to %s, the stream bookmark up to %s',
	$before, $after, mb($max_flush - $after), $max_conf, $max_bm);
cmp_ok($max_flush, '>', $after, 'the load wrote WAL after the change');
is(deliveries(2), 0, 'the batch with the change is still open (not delivered)');
cmp_ok($max_conf, '<', $after,
	'batch open: the slot is not confirmed past its change, though the worker decodes the load\'s WAL');
cmp_ok($max_bm, '<', $after, 'batch open: the stream\'s bookmark is not past the change either');

# kill -9 of the CDC worker with the batch still open, while pgbench runs
my $pid = stream_row($node, 's')->{worker_pid};
ok(defined $pid && grep({ $_ == $pid } cdc_worker_pids($node)), 'the CDC worker of destination hb runs');
kill 'KILL', $pid if defined $pid;
$h2->finish;
$node->safe_psql('postgres', q{ALTER SYSTEM RESET pg_egress.flush_interval}) if server_up($node, 120);
$node->reload;
ok(server_up($node, 120), 'the server is up again after the kill');
wait_stream_state($node, 's', 'streaming', 180);
ok(poll_until('row 2 delivered', 120, sub { deliveries(2) >= 1 }),
	'after the kill, the change of the batch left open is delivered');
$node->safe_psql('postgres', q{INSERT INTO idle VALUES (3, 'after the kill')});
ok(poll_until('row 3 delivered', 120, sub { deliveries(3) >= 1 }), 'a change after the kill is delivered');
is(deliveries(1), 1, 'after the kill: row 1 still delivered exactly once');
is(deliveries(2), 1, 'after the kill: row 2 delivered exactly once');
is(deliveries(3), 1, 'after the kill: row 3 delivered exactly once');
wait_stream_state($node, 'sw', 'streaming', 180);
ok(poll_until('rows 2 and 3 delivered (wal2json)', 120, sub { deliveries(2, $wout) >= 1 && deliveries(3, $wout) >= 1 }),
	'wal2json destination: rows 2 and 3 are delivered after the kill');
is(join(',', map { deliveries($_, $wout) } 1 .. 3), '1,1,1', 'wal2json destination: rows 1, 2 and 3 delivered exactly once');
is(scalar(tmp_files($out)) + scalar(tmp_files($wout)), 0, 'no temporary file left');

# ---------------------------------------------------------------------------
# an idle cluster
# ---------------------------------------------------------------------------
set_interval('2s');
heartbeats_since_last_call();
# the slot catches up with what was written before
my $t_idle = time;
ok(poll_until('lag below 1 MB', 60, sub {
	my $l = stream_row($node, 's');
	return $l && defined $l->{lag_bytes} && $l->{lag_bytes} < 1024 * 1024;
}), 'idle: lag_bytes of the idle stream falls below 1 MB');
diag sprintf('after the load: lag_bytes below 1 MB after %.1f s, %d heartbeats', time - $t_idle, heartbeats_since_last_call());

# an idle heartbeat: one 2 MB transaction in database bench, then nothing.
# The bgwriter's next running-xacts record may be 15 s away; a heartbeat
# follows once restart_lsn did not move for 2 s.
usleep(3_000_000);
heartbeats_since_last_call();
my $t_burst = time;
$node->safe_psql('bench',
	q{INSERT INTO pgbench_history (tid, bid, aid, delta, mtime, filler) SELECT 1, 1, 1, 0, now(), 'x' FROM generate_series(1, 20000)});
my $burst_end = $node->safe_psql('postgres', q{SELECT pg_current_wal_flush_lsn() - '0/0'});
ok(poll_until('both slots past the burst', 30, sub {
	my $r = $node->safe_psql('postgres',
		qq{SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('$slot', 'pg_egress_hw') AND restart_lsn - '0/0' >= $burst_end});
	return $r == 2;
}), 'idle: both slots\' restart_lsn pass a transaction written elsewhere');
my $t_healed = time - $t_burst;
heartbeats_since_last_call();
diag sprintf('idle heartbeat: restart_lsn of both slots past a 2 MB transaction of database bench after %.1f s; heartbeats: hb %d, hw %d',
	$t_healed, $hb_of{hb} // 0, $hb_of{hw} // 0);
ok(($hb_of{hb} // 0) <= 1 && ($hb_of{hw} // 0) <= 1, 'idle: at most one heartbeat per destination');
cmp_ok($t_healed, '<', 12, 'idle: the slots move within a few intervals, not only at the bgwriter\'s next running-xacts record');
usleep(5_000_000);
heartbeats_since_last_call();
my @pids = cdc_worker_pids($node);
is(scalar(@pids), 2, 'idle cluster: two CDC workers');
my $hz = `getconf CLK_TCK` + 0 || 100;
my $wal0 = $node->safe_psql('postgres', q{SELECT pg_current_wal_insert_lsn() - '0/0'});
my %before = map { ($_ => [ cpu_ticks($_), wakeups($_) ]) } @pids;
usleep(10_000_000);
my %after = map { ($_ => [ cpu_ticks($_), wakeups($_) ]) } @pids;
my $wal1 = $node->safe_psql('postgres', q{SELECT pg_current_wal_insert_lsn() - '0/0'});
my $idle_hb = heartbeats_since_last_call();
is($idle_hb, 0, 'idle cluster: no heartbeat is written (5 intervals)');
foreach $pid (@pids)
{
	my ($c0, $w0) = @{ $before{$pid} };
	my ($c1, $w1) = @{ $after{$pid} };
	my $cpu_ms = (defined $c0 && defined $c1) ? ($c1 - $c0) * 1000 / $hz : -1;
	my $woke = (defined $w0 && defined $w1) ? $w1 - $w0 : -1;
	diag sprintf('idle cluster, heartbeat_interval 2s, 10 s, CDC worker %d: %d heartbeats (all workers), %d wake-ups, %.0f ms of CPU, %d bytes of WAL (cluster)',
		$pid, $idle_hb, $woke, $cpu_ms, $wal1 - $wal0);
	# flush_interval 1s: ~10 polls in 10 s
	ok($woke >= 0 && $woke <= 25, "idle cluster: the worker wakes about once per flush interval ($woke wake-ups in 10 s)");
	ok($cpu_ms >= 0 && $cpu_ms <= 200, "idle cluster: the worker uses almost no CPU ($cpu_ms ms in 10 s)");
}

$node->safe_psql('postgres', q{SELECT pg_drop_replication_slot('hb_peek')});
$node->stop;
done_testing();
