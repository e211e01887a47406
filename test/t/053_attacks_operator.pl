
# The workers against a careless operator (issue 10):
#  A. streams removed right after they were added (INCREMENTAL and
#     FULL_TABLE, many rounds): no worker crashes (0.1 segfaulted in
#     claim_run and the postmaster restarted the cluster), the workers end
#     quietly;
#  B. a database worker restarted during a sync: never two workers on one
#     stream (the claim is atomic in shared memory);
#  C. pause -> changes -> resume of one LOG_BASED stream of a destination
#     whose other stream keeps streaming: the resumed stream is synced again
#     (new version) and its target ends equal to the table (0.1 resumed it
#     at the slot's position: the paused interval was lost);
#  C2. a slot of pg_egress dropped and made again by someone else under the
#     same name (another plugin) is never dropped by pg_egress;
#  D. the hard WAL limit pg_egress.max_slot_wal with a dead destination:
#     the slot is dropped, the streams are marked for resync (WARNING,
#     last_error), and once the destination works the targets end equal to
#     the tables; with a file destination whose initial sync then fails
#     too, the database worker applies the limit to the slot nobody serves;
#  E. a slot invalidated by max_slot_wal_keep_size is recovered with a
#     resync instead of failing forever;
#  F. a crash right after streams were added: they are all served after it.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use EgressTest;
use EgressHttp;

my $node = create_node('attacks_op', cdc => 1, conf => "pg_egress.max_workers = 6\n");
my $log_start = -s $node->logfile;
# after a crash the postmaster restarts its children: a new checkpointer
my $ckpt_sql = q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'};
my $checkpointer = $node->safe_psql('postgres', $ckpt_sql);
my $rcv = EgressHttp->start($node);

sub sql { server_up($node); return $node->safe_psql('postgres', $_[0]); }

# The rows a target holds that loaded the files of one version of a stream:
# its initial-sync files, then its change records of that version.
sub mirror_version
{
	my ($dir, $sid, $pk, $version) = @_;
	my %m;
	my @files = ((grep { $_->{name} =~ /-\Q$version\E-\d{6}\.jsonl$/ } sync_batches($dir)), cdc_batches($dir));
	foreach my $b (@files)
	{
		foreach my $msg (@{ $b->{messages} })
		{
			next unless ref $msg eq 'HASH' && ($msg->{stream} // '') eq $sid;
			next unless ($msg->{type} // '') eq 'RECORD' && ($msg->{version} // 0) == $version;
			my $r = $msg->{record};
			my $key = join("\x1f", map { defined $r->{$_} ? "$r->{$_}" : "\x00NULL" } @$pk);
			if (defined $r->{_sdc_deleted_at})
			{
				delete $m{$key};
			}
			else
			{
				$m{$key} = { map { ($_ => $r->{$_}) } grep { !/^_sdc_/ } keys %$r };
			}
		}
	}
	return \%m;
}

sub log_since { return slurp_file($node->logfile, $_[0]); }

# ---------------------------------------------------------------------------
# A. add two INCREMENTAL and two FULL_TABLE streams, remove them at once
# ---------------------------------------------------------------------------
my $dir_r = new_outdir($node, 'race');
add_destination($node, 'dr', $dir_r);
sql(q{
CREATE TABLE ri (id integer PRIMARY KEY, v text);
CREATE TABLE rf (id integer PRIMARY KEY, v text);
INSERT INTO ri SELECT i, 'v' || i FROM generate_series(1, 2000) i;
INSERT INTO rf SELECT i, 'v' || i FROM generate_series(1, 2000) i;
});
my $offset = -s $node->logfile;
my $deadline = time + 120;
my $rounds = 0;
srand(53);
for my $r (1 .. 60)
{
	last if time > $deadline;
	server_up($node, 30);
	$node->psql('postgres', qq{
SELECT egress_add_stream('i1_$r', 'ri', method => 'INCREMENTAL', destination => 'dr', replication_key => 'id', options => '{"interval": 0.1}');
SELECT egress_add_stream('i2_$r', 'ri', method => 'INCREMENTAL', destination => 'dr', replication_key => 'id', options => '{"interval": 0.1}');
SELECT egress_add_stream('f1_$r', 'rf', method => 'FULL_TABLE', destination => 'dr');
SELECT egress_add_stream('f2_$r', 'rf', method => 'FULL_TABLE', destination => 'dr');
});
	# the window moves over the workers' start, claim and run
	usleep(int(rand(250_000)));
	$node->psql('postgres', qq{
SELECT egress_remove_stream('i1_$r');
SELECT egress_remove_stream('f1_$r');
SELECT egress_remove_stream('i2_$r');
SELECT egress_remove_stream('f2_$r');
});
	$rounds++;
}
note "$rounds rounds of add + remove";
cmp_ok($rounds, '>=', 20, "at least 20 rounds of add + remove ($rounds)");
ok(server_up($node), 'the server answers after the rounds');
is(sql($ckpt_sql), $checkpointer, 'the server did not restart after a crash (same checkpointer)');
no_crash_since($node, $offset, 'add + remove: no server process crashed');
ok( poll_until(
		'stream workers to end', 60,
		sub {
			!backend_pids($node, 'pg_egress incremental') && !backend_pids($node, 'pg_egress sync');
		}),
	'the workers of the removed streams ended');
my @errors = grep { /ERROR:/ } split /\n/, log_since($offset);
ok(!@errors, 'a stream removed under its worker ends it quietly (no ERROR in the log)')
  or diag join("\n", @errors[ 0 .. ($#errors < 9 ? $#errors : 9) ]);
is(sql('SELECT count(*) FROM egress.stream_state'), '0', 'nothing left behind in egress.stream_state');

# ---------------------------------------------------------------------------
# B. the database worker restarts while a sync runs: one worker per stream
# ---------------------------------------------------------------------------
sql(q{
CREATE TABLE big (id integer PRIMARY KEY, v text);
INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 20000) i;
});
# a slow destination: the sync lasts a few seconds
sql("SELECT egress_add_destination('db', " . sql_quote($rcv->url('/b')) . ')');
$rcv->fault('delay', 1000, ms => 400);
$offset = -s $node->logfile;
sql(q{SELECT egress_add_stream('sbig', 'big', method => 'FULL_TABLE', destination => 'db', options => '{"batch_max_rows": 2000}')});
my $sid = sql(q{SELECT id FROM egress.stream WHERE name = 'sbig'});
ok(poll_until('the sync of sbig to run', 60,
		sub { sql("SELECT count(*) FROM egress_stream_activity() WHERE stream_id = $sid AND phase = 'reading'") eq '1' }),
	'the sync of sbig runs');
my ($dbw) = backend_pids($node, 'pg_egress worker');
ok(defined $dbw, 'the database worker runs');
sql("SELECT pg_terminate_backend($dbw)");
my $most = 0;
my $t_end = time + 60;
my $synced = 0;
while (time < $t_end)
{
	my $n = sql("SELECT count(*) FROM egress_stream_activity() WHERE stream_id = $sid");
	$most = $n if $n > $most;
	my ($new) = backend_pids($node, 'pg_egress worker');
	if (sql(q{SELECT state FROM egress.stream_state st JOIN egress.stream s ON s.id = st.stream_id WHERE s.name = 'sbig'}) eq 'synced')
	{
		$synced = 1;
		last;
	}
	usleep(50_000);
}
ok($synced, 'sbig synced after the database worker restarted');
cmp_ok($most, '<=', 1, "never more than one worker on the stream (egress_stream_activity: at most $most)");
my $starts = () = log_since($offset) =~ /FULL_TABLE sync of [^\n]*big started/g;
is($starts, 1, 'the sync was started once, not again by the restarted database worker');
my %bt = map { ($_ => 1) } backend_pids($node, 'pg_egress worker');
ok(scalar(keys %bt) == 1 && !$bt{$dbw}, 'a new database worker runs');
is(stream_row($node, 'sbig')->{rows_sent}, '20000', 'sbig: all rows sent once');
$rcv->fault('clear');
sql(q{SELECT egress_remove_stream('sbig')});

# ---------------------------------------------------------------------------
# C. pause one LOG_BASED stream while the other streams on
# ---------------------------------------------------------------------------
my $dir_p = new_outdir($node, 'pause');
add_destination($node, 'dp', $dir_p);
sql(q{
CREATE TABLE pa (id integer PRIMARY KEY, v text);
CREATE TABLE pb (id integer PRIMARY KEY, v text);
INSERT INTO pa SELECT i, 'v' || i FROM generate_series(1, 50) i;
INSERT INTO pb SELECT i, 'v' || i FROM generate_series(1, 50) i;
SELECT egress_add_stream('sa', 'pa', method => 'LOG_BASED', destination => 'dp');
SELECT egress_add_stream('sb', 'pb', method => 'LOG_BASED', destination => 'dp');
});
wait_stream_state($node, $_, 'streaming') foreach qw(sa sb);
sql(q{INSERT INTO pa VALUES (51, 'before'); INSERT INTO pb VALUES (51, 'before'); UPDATE pa SET v = 'b' WHERE id = 2});
wait_caught_up($node, $_) foreach qw(sa sb);
my $v0 = stream_row($node, 'sa')->{version};
sql(q{SELECT egress_pause_stream('sa')});
wait_stream_state($node, 'sa', 'paused');
# the CDC worker has let go of the paused stream (a new session without it)
ok( poll_until(
		'the CDC worker to drop sa', 30,
		sub {
			sql(q{SELECT count(*) FROM egress_stream_activity() a JOIN egress.stream s ON s.id = a.stream_id WHERE s.name = 'sa'}) eq '0';
		}),
	'the CDC worker no longer serves the paused stream');
sql(q{
INSERT INTO pa VALUES (52, 'paused');
UPDATE pa SET v = 'changed while paused' WHERE id = 3;
DELETE FROM pa WHERE id = 4;
INSERT INTO pb VALUES (52, 'paused');
DELETE FROM pb WHERE id = 4;
});
wait_caught_up($node, 'sb');
# the slot has moved past the paused interval for the other stream
my $slot = slot_row($node, 'pg_egress_dp');
cmp_ok(lsn_int($slot->{confirmed_flush_lsn}), '>=', lsn_int(stream_row($node, 'sb')->{confirmed_lsn}) - 1,
	'the slot advanced for the other stream');
sql(q{SELECT egress_resume_stream('sa')});
wait_stream_where($node, 'sa', "state = 'streaming' AND version > $v0", 60,
	'the resumed stream is synced again: streaming with a new version');
sql(q{INSERT INTO pa VALUES (53, 'after'); UPDATE pa SET v = 'a' WHERE id = 5; INSERT INTO pb VALUES (53, 'after')});
wait_caught_up($node, $_) foreach qw(sa sb);
my $v1 = stream_row($node, 'sa')->{version};
compare_states(mirror_version($dir_p, 'public-pa', ['id'], $v1), table_state($node, 'pa', ['id']),
	'pause -> changes -> resume: every change of the paused stream arrived');
compare_states(mirror($dir_p, 'public-pb', ['id']), table_state($node, 'pb', ['id']),
	'the other stream of the destination is unaffected');
is(stream_row($node, 'sb')->{version}, stream_row($node, 'sb')->{version}, 'sb keeps its version');
sql(q{SELECT egress_remove_stream('sa'); SELECT egress_remove_stream('sb')});

# ---------------------------------------------------------------------------
# C2. a slot pg_egress made was dropped by someone, who made another of the
# same name: pg_egress never drops that one
# ---------------------------------------------------------------------------
my $dir_x = new_outdir($node, 'other');
add_destination($node, 'dx', $dir_x);
sql(q{SELECT egress_add_stream('sx', 'pb', method => 'LOG_BASED', destination => 'dx')});
wait_stream_state($node, 'sx', 'streaming');
sql(q{SELECT egress_pause_stream('sx')});
ok( poll_until(
		'the CDC worker of dx to let go of its slot', 30,
		sub { my $r = slot_row($node, 'pg_egress_dx'); $r && !defined $r->{active_pid} }),
	'paused: no CDC worker holds pg_egress_dx');
sql(q{SELECT pg_drop_replication_slot('pg_egress_dx'); SELECT pg_create_logical_replication_slot('pg_egress_dx', 'test_decoding')});
$offset = -s $node->logfile;
sql(q{SELECT egress_remove_stream('sx')});
ok(poll_until('a WARNING about the foreign slot', 30,
		sub { log_since($offset) =~ /WARNING:.*did not drop replication slot "pg_egress_dx"/ }),
	'a WARNING says the slot of that name is not a slot of pg_egress');
is((slot_row($node, 'pg_egress_dx') // {})->{plugin}, 'test_decoding', 'the other slot of that name is kept');
sql(q{SELECT pg_drop_replication_slot('pg_egress_dx')});

# ---------------------------------------------------------------------------
# D. the hard WAL limit with a destination that always fails (HTTP 503)
# ---------------------------------------------------------------------------
sql("SELECT egress_add_destination('dg', " . sql_quote($rcv->url('/g'))
	  . q{, '{"retry_initial_interval": "200ms", "retry_max_interval": "1s", "flush_interval": "100ms"}')});
sql(q{
CREATE TABLE ga (id integer PRIMARY KEY, v text);
CREATE TABLE gb (id integer PRIMARY KEY, v text);
INSERT INTO ga SELECT i, 'v' || i FROM generate_series(1, 100) i;
INSERT INTO gb SELECT i, 'v' || i FROM generate_series(1, 100) i;
SELECT egress_add_stream('ga', 'ga', method => 'LOG_BASED', destination => 'dg');
SELECT egress_add_stream('gb', 'gb', method => 'LOG_BASED', destination => 'dg');
});
wait_stream_state($node, $_, 'streaming') foreach qw(ga gb);
my %gv = map { ($_ => stream_row($node, $_)->{version}) } qw(ga gb);
my $slot_before = slot_row($node, 'pg_egress_dg');
sql(q{ALTER SYSTEM SET pg_egress.max_slot_wal = '2MB'; SELECT pg_reload_conf()});
ok(poll_until('max_slot_wal reloaded', 30, sub { sql('SHOW pg_egress.max_slot_wal') eq '2MB' }),
	'pg_egress.max_slot_wal = 2MB');
$offset = -s $node->logfile;
$rcv->fault('fail', 1000000, status => 503);
# changes of the streams, whose batch cannot be delivered, then WAL of a
# table no stream reads (the slot holds all WAL after the oldest undelivered change)
sql(q{INSERT INTO ga SELECT i, 'outage' || i FROM generate_series(1000, 1100) i});
sql(q{UPDATE gb SET v = 'during the outage' WHERE id <= 10});
sql(q{CREATE TABLE filler (id integer, v text)});
sql(q{INSERT INTO filler SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 31000) i});
ok( poll_until(
		'a WARNING about max_slot_wal', 90,
		sub { log_since($offset) =~ /WARNING:.*dropped replication slot "pg_egress_dg".*max_slot_wal/ }),
	'a WARNING says the slot was dropped and names pg_egress.max_slot_wal');
ok( poll_until(
		'the slot to be dropped', 60,
		sub {
			my $s = slot_row($node, 'pg_egress_dg');
			!$s || lsn_int($s->{restart_lsn} // '0/0') > lsn_int($slot_before->{restart_lsn});
		}),
	'the slot that held too much WAL was dropped (gone or made anew)');
wait_stream_where($node, $_, q{last_error ~ 'max_slot_wal' AND state IN ('pending', 'syncing', 'retrying')}, 60,
	"$_: egress_streams shows it marked for resync, last_error explains")
  foreach qw(ga gb);
# WAL keeps coming while the destination is still down: the new slots are
# dropped in turn, so what a pg_egress slot holds stays near the limit
my $held = 0;
foreach my $i (1 .. 15)
{
	sql(qq{INSERT INTO ga VALUES (100000 + $i, 'still down'); INSERT INTO filler SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 4000) i});
	my $lag = sql(q{SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)), 0) FROM pg_replication_slots WHERE slot_name LIKE 'pg_egress%'});
	$held = $lag if $lag > $held;
	usleep(300_000);
}
note "largest WAL held by a pg_egress slot while the destination failed: $held bytes";
cmp_ok($held, '<', 12 * 1024 * 1024, 'the WAL held stays bounded while the destination fails');
$rcv->fault('clear');
wait_stream_where($node, $_, "state = 'streaming' AND version > $gv{$_}", 120, "$_ synced again after the outage")
  foreach qw(ga gb);
sql(q{INSERT INTO gb VALUES (1000, 'after'); DELETE FROM ga WHERE id = 1});
wait_caught_up($node, $_) foreach qw(ga gb);
my $gdir = $rcv->to_dir($node->basedir . '/guard_out');
foreach my $t (qw(ga gb))
{
	my $v = stream_row($node, $t)->{version};
	compare_states(mirror_version($gdir, "public-$t", ['id'], $v), table_state($node, $t, ['id']),
		"$t: after the slot was dropped and the destination came back: nothing lost");
}
sql(q{SELECT egress_remove_stream('ga'); SELECT egress_remove_stream('gb')});

# ---------------------------------------------------------------------------
# D2. the same with a file destination, which fails at once (no retries);
# its initial sync then fails too and the stream stops in state error: the
# database worker applies the limit to the slot no CDC worker serves
# ---------------------------------------------------------------------------
my $dir_f = new_outdir($node, 'fguard');
add_destination($node, 'df', $dir_f);
sql(q{
CREATE TABLE fa (id integer PRIMARY KEY, v text);
INSERT INTO fa SELECT i, 'v' || i FROM generate_series(1, 50) i;
SELECT egress_add_stream('fa', 'fa', method => 'LOG_BASED', destination => 'df');
});
wait_stream_state($node, 'fa', 'streaming');
my $fv = stream_row($node, 'fa')->{version};
$offset = -s $node->logfile;
chmod(0500, $dir_f) or die "chmod: $!";
sql(q{INSERT INTO fa VALUES (51, 'during the outage')});
sql(q{INSERT INTO filler SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 31000) i});
ok(poll_until('the CDC worker to drop the slot', 90,
		sub { log_since($offset) =~ /WARNING:.*dropped replication slot "pg_egress_df".*max_slot_wal/ }),
	'file destination: the CDC worker dropped the slot over max_slot_wal');
wait_stream_where($node, 'fa', q{state = 'error'}, 60,
	'file destination: the initial sync on the new slot fails, the stream stops in state error');
my $n0 = () = log_since($offset) =~ /dropped replication slot "pg_egress_df"/g;
sql(q{INSERT INTO filler SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 31000) i});
ok( poll_until(
		'the database worker to drop the idle slot', 60,
		sub {
			my $n = () = log_since($offset) =~ /dropped replication slot "pg_egress_df"/g;
			$n > $n0 && !slot_row($node, 'pg_egress_df');
		}),
	'no CDC worker serves the slot: the database worker drops it over max_slot_wal');
chmod(0700, $dir_f) or die "chmod: $!";
sql(q{SELECT egress_resume_stream('fa')});
wait_stream_where($node, 'fa', "state = 'streaming' AND version > $fv", 60, 'fa synced again after resume');
sql(q{UPDATE fa SET v = 'after' WHERE id = 7});
wait_caught_up($node, 'fa');
compare_states(mirror_version($dir_f, 'public-fa', ['id'], stream_row($node, 'fa')->{version}),
	table_state($node, 'fa', ['id']), 'fa: nothing lost');
sql(q{SELECT egress_remove_stream('fa')});
sql(q{ALTER SYSTEM RESET pg_egress.max_slot_wal; SELECT pg_reload_conf()});

# ---------------------------------------------------------------------------
# E. a slot invalidated by max_slot_wal_keep_size
# ---------------------------------------------------------------------------
my $dir_k = new_outdir($node, 'keep');
add_destination($node, 'dk', $dir_k, '{"error_retry_interval": "1s"}');
sql(q{
CREATE TABLE ka (id integer PRIMARY KEY, v text);
INSERT INTO ka SELECT i, 'v' || i FROM generate_series(1, 100) i;
SELECT egress_add_stream('ka', 'ka', method => 'LOG_BASED', destination => 'dk');
});
wait_stream_state($node, 'ka', 'streaming');
my $kv = stream_row($node, 'ka')->{version};
sql(q{ALTER SYSTEM SET pg_egress.max_slot_wal = 0; ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'; SELECT pg_reload_conf()});
ok(poll_until('max_slot_wal_keep_size reloaded', 30, sub { sql('SHOW max_slot_wal_keep_size') eq '1MB' }),
	'max_slot_wal_keep_size = 1MB');
$offset = -s $node->logfile;
chmod(0500, $dir_k) or die "chmod: $!";
my $lost = 0;
foreach my $i (1 .. 30)
{
	sql(qq{INSERT INTO ka SELECT i, repeat(md5(i::text), 4) FROM generate_series($i * 10000, $i * 10000 + 5000) i; SELECT pg_switch_wal(); CHECKPOINT});
	my $s = slot_row($node, 'pg_egress_dk');
	if ($s && ($s->{wal_status} // '') eq 'lost' || $node->log_contains(qr/invalidating (replication )?slot "pg_egress_dk"/, $offset))
	{
		$lost = 1;
		last;
	}
}
ok($lost, 'the slot was invalidated by max_slot_wal_keep_size');
chmod(0700, $dir_k) or die "chmod: $!";
sql(q{ALTER SYSTEM RESET max_slot_wal_keep_size; SELECT pg_reload_conf()});
wait_stream_where($node, 'ka', "state = 'streaming' AND version > $kv", 120,
	'after the invalidation the stream is synced again (new version)');
sql(q{INSERT INTO ka VALUES (1, 'x') ON CONFLICT (id) DO UPDATE SET v = 'after'});
wait_caught_up($node, 'ka');
$kv = stream_row($node, 'ka')->{version};
compare_states(mirror_version($dir_k, 'public-ka', ['id'], $kv), table_state($node, 'ka', ['id']),
	'after the invalidated slot was replaced: nothing lost');
isnt(slot_row($node, 'pg_egress_dk')->{wal_status} // 'none', 'lost', 'the new slot is not lost');

is(sql($ckpt_sql), $checkpointer, 'the server never restarted after a crash');
no_crash_since($node, $log_start, 'no server process crashed');

# ---------------------------------------------------------------------------
# F. a crash right after egress_add_stream: kill -9 of the first worker that
# serves the new streams (the postmaster restarts everything); nothing is
# left behind half-started: every stream is served afterwards
# ---------------------------------------------------------------------------
sql(q{
SELECT egress_add_stream('c_inc', 'ri', method => 'INCREMENTAL', destination => 'dr', replication_key => 'id');
SELECT egress_add_stream('c_full', 'rf', method => 'FULL_TABLE', destination => 'dr');
SELECT egress_add_stream('c_log', 'rf', method => 'LOG_BASED', destination => 'dr');
});
my $victim;
poll_until(
	'a worker of the new streams', 30,
	sub {
		($victim) = grep { $_ } map { backend_pids($node, $_) } ('pg_egress sync', 'pg_egress incremental', 'pg_egress cdc');
		return defined $victim;
	});
ok(defined $victim && kill('KILL', $victim), 'kill -9 of a worker right after the streams were added');
ok( poll_until(
		'the crash restart', 60,
		sub {
			my ($ret, $out) = $node->psql('postgres', $ckpt_sql);
			return $ret == 0 && $out ne '' && $out ne $checkpointer;
		}),
	'the server restarted after the crash and answers');
wait_stream_state($node, 'c_full', 'synced', 60);
wait_stream_state($node, 'c_inc', 'synced', 60);
wait_stream_state($node, 'c_log', 'streaming', 60);
sql(q{INSERT INTO rf VALUES (5000, 'after the crash')});
wait_caught_up($node, 'c_log', 60);
$node->stop;
done_testing();
