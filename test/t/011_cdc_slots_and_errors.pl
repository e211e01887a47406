
# Replication slots of LOG_BASED streams and their errors: the default slot
# pg_egress_<destination> (pgoutput by default) appears with the first stream and goes
# with the last; an existing slot named by the destination option slot_name
# is adopted (the CDC worker holds it) and kept on removal unless
# drop_adopted_slot.  Refused at add time, with their SQLSTATEs: a table
# without primary key or REPLICA IDENTITY FULL, a view, no free slot,
# wal2json missing from output_plugin_libraries, wal_level replica.  A
# dropped source table puts its stream into state error without stopping
# the CDC worker or the destination's other streams.  pg_egress.max_slot_lag
# with a failing destination: lag_bytes, a WARNING, lag_policy pause ->
# state error (lag_policy continue keeps trying); after the destinations
# are fixed and the paused stream resumed both catch up without loss.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use EgressTest;

# ---------------------------------------------------------------------------
# Refusals that need another server configuration: a second cluster
# ---------------------------------------------------------------------------
{
	my $errs = create_node('cdc_errs', cdc => 1, conf => "max_replication_slots = 1\n");
	my $dir = new_outdir($errs, 'errs');
	$errs->safe_psql('postgres', 'CREATE TABLE e (id integer PRIMARY KEY)');
	add_destination($errs, 'de', $dir);
	my $add = q{SELECT egress_add_stream('se', 'e', method => 'LOG_BASED', destination => 'de')};
	my $none = sub { $errs->safe_psql('postgres', 'SELECT count(*) FROM egress.stream') };

	$errs->safe_psql('postgres', q{SELECT pg_create_logical_replication_slot('filler', 'test_decoding')});
	my ($state, $err) = sqlstate_of($errs, $add);
	is($state, '53400', 'no free replication slot: SQLSTATE 53400') or diag $err;
	is($none->(), '0', 'no free replication slot: nothing created');

	$errs->safe_psql('postgres', q{SELECT pg_drop_replication_slot('filler')});
	$errs->safe_psql('postgres', q{ALTER SYSTEM SET output_plugin_libraries = 'pgoutput, test_decoding'});
	$errs->restart;
	($state, $err) = sqlstate_of($errs, $add);
	is($state, '55000', 'wal2json not in output_plugin_libraries: SQLSTATE 55000') or diag $err;
	like($err, qr/HINT:.*output_plugin_libraries/, 'wal2json not in output_plugin_libraries: the hint names the setting')
	  or diag $err;
	is($none->(), '0', 'wal2json not in output_plugin_libraries: nothing created');

	$errs->safe_psql('postgres', q{ALTER SYSTEM RESET output_plugin_libraries});
	$errs->safe_psql('postgres', q{ALTER SYSTEM SET wal_level = 'replica'});
	$errs->restart;
	is($errs->safe_psql('postgres', 'SHOW wal_level'), 'replica', 'second cluster runs with wal_level replica');
	($state, $err) = sqlstate_of($errs, $add);
	is($state, '55000', 'wal_level replica: SQLSTATE 55000') or diag $err;
	like($err, qr/wal_level/, 'wal_level replica: the message names wal_level') or diag $err;
	is($none->(), '0', 'wal_level replica: nothing created');
	$errs->stop;
}

my $node = create_node('cdc_slots', cdc => 1);
my $log_start = -s $node->logfile;

# (waits for the server first: after a crash the later checks still run)
sub sql { server_up($node); return $node->safe_psql('postgres', $_[0]); }

my %dir = map { ($_ => new_outdir($node, $_)) } qw(d1 d2 d3 d4 d5 d6);

$node->safe_psql(
	'postgres', q{
CREATE TABLE nopk (a integer, b text);
CREATE VIEW v AS SELECT 1 AS id;
CREATE TABLE t1 (id integer PRIMARY KEY, v text);
CREATE TABLE t2 (id integer PRIMARY KEY, v text);
CREATE TABLE t3 (id integer PRIMARY KEY, v text);
CREATE TABLE ta (id integer PRIMARY KEY, v text);
CREATE TABLE tb (id integer PRIMARY KEY, v text);
CREATE TABLE tl (id integer PRIMARY KEY, v text);
INSERT INTO t1 SELECT i, 'v' || i FROM generate_series(1, 100) i;
INSERT INTO t2 SELECT i, 'v' || i FROM generate_series(1, 100) i;
INSERT INTO ta SELECT i, 'v' || i FROM generate_series(1, 100) i;
INSERT INTO tb SELECT i, 'v' || i FROM generate_series(1, 100) i;
INSERT INTO tl SELECT i, 'v' || i FROM generate_series(1, 100) i;
});

sub add_stream
{
	my ($name, $table, $dest, $options) = @_;
	$node->safe_psql('postgres',
		"SELECT egress_add_stream('$name', '$table', method => 'LOG_BASED', destination => '$dest'"
		  . (defined $options ? ", options => '$options'" : '') . ')');
}

sub slot_gone
{
	my ($slot, $desc) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok(poll_until("slot $slot dropped", 60, sub { !slot_row($node, $slot) }), $desc);
}

# ---------------------------------------------------------------------------
# bad relations
# ---------------------------------------------------------------------------
add_destination($node, 'd1', $dir{d1});
my ($state, $err) = sqlstate_of($node,
	q{SELECT egress_add_stream('bad1', 'nopk', method => 'LOG_BASED', destination => 'd1')});
is($state, '55000', 'a table without primary key or REPLICA IDENTITY FULL: SQLSTATE 55000') or diag $err;
like($err, qr/HINT:/, '... with a hint') or diag $err;
($state, $err) = sqlstate_of($node,
	q{SELECT egress_add_stream('bad2', 'v', method => 'LOG_BASED', destination => 'd1')});
is($state, '42809', 'a view: SQLSTATE 42809') or diag $err;
is(sql('SELECT count(*) FROM egress.stream'), '0', 'nothing created');

# ---------------------------------------------------------------------------
# the default slot
# ---------------------------------------------------------------------------
add_stream('s1', 't1', 'd1');
ok( poll_until(
		'slot pg_egress_d1', 60,
		sub { my $s = slot_row($node, 'pg_egress_d1'); $s && ($s->{plugin} // '') eq 'pgoutput' }),
	'the default slot pg_egress_d1 (pgoutput, the default decoder) exists once the stream is added');
is(slot_row($node, 'pg_egress_d1')->{slot_type}, 'logical', 'it is a logical slot');
wait_stream_state($node, 's1', 'streaming');
is(stream_row_wait($node, 's1')->{slot_name}, 'pg_egress_d1', 'egress_streams.slot_name');
sql(q{INSERT INTO t1 VALUES (101, 'new'); UPDATE t1 SET v = 'u' WHERE id = 1; DELETE FROM t1 WHERE id = 2});
wait_caught_up($node, 's1');
compare_states(mirror($dir{d1}, 'public-t1', ['id']), table_state($node, 't1', ['id']), 's1');
sql(q{SELECT egress_remove_stream('s1')});
slot_gone('pg_egress_d1', 'removing the last LOG_BASED stream drops the default slot');

# ---------------------------------------------------------------------------
# an adopted slot
# ---------------------------------------------------------------------------
sql(q{SELECT pg_create_logical_replication_slot('tap_slot', 'wal2json')});
add_destination($node, 'd2', $dir{d2}, '{"slot_name": "tap_slot"}');
add_stream('s2', 't2', 'd2');
wait_stream_state($node, 's2', 'streaming');
is(stream_row_wait($node, 's2')->{slot_name}, 'tap_slot', 'egress_streams.slot_name is the adopted slot');
my $holder;
ok( poll_until(
		'the CDC worker to hold tap_slot', 60,
		sub {
			my $s = slot_row($node, 'tap_slot');
			return 0 unless $s && defined $s->{active_pid};
			$holder = $s->{active_pid};
			return grep { $_ == $holder } cdc_worker_pids($node);
		}),
	'the adopted slot is held by a CDC worker (active_pid)');
ok(!slot_row($node, 'pg_egress_d2'), 'no default slot was created for d2');
sql(q{INSERT INTO t2 VALUES (101, 'new'); DELETE FROM t2 WHERE id = 3});
wait_caught_up($node, 's2');
compare_states(mirror($dir{d2}, 'public-t2', ['id']), table_state($node, 't2', ['id']), 's2 through the adopted slot');
sql(q{SELECT egress_remove_stream('s2')});
ok( poll_until(
		'tap_slot released', 60,
		sub { my $s = slot_row($node, 'tap_slot'); !$s || !defined $s->{active_pid} }),
	'after removing the stream the CDC worker releases tap_slot');
# A negative check: watch the slot for three pg_egress.naptime periods.
my $kept = 1;
my $until = time + 3;
while (time < $until)
{
	if (!slot_row($node, 'tap_slot'))
	{
		$kept = 0;
		last;
	}
	usleep(200_000);
}
ok($kept, 'the adopted slot is not dropped when the last stream is removed');

# ---------------------------------------------------------------------------
# an adopted slot with drop_adopted_slot
# ---------------------------------------------------------------------------
sql(q{SELECT pg_create_logical_replication_slot('tap_slot2', 'wal2json')});
add_destination($node, 'd3', $dir{d3}, '{"slot_name": "tap_slot2", "drop_adopted_slot": true}');
add_stream('s3', 't3', 'd3');
wait_stream_state($node, 's3', 'streaming');
sql(q{SELECT egress_remove_stream('s3')});
slot_gone('tap_slot2', 'with drop_adopted_slot the adopted slot is dropped with the last stream');

# ---------------------------------------------------------------------------
# adopting an existing slot needs the REPLICATION attribute of the
# destination's owner: also for the default slot name, and again at every
# CDC session (here: after the attribute was taken away)
# ---------------------------------------------------------------------------
{
	my $rdir = new_outdir($node, 'rep');
	sql(q{
CREATE ROLE rep LOGIN REPLICATION;
CREATE ROLE norep LOGIN;
GRANT pg_write_server_files TO rep, norep;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_destination(text, boolean) TO rep, norep;
CREATE TABLE tr (id integer PRIMARY KEY, v text);
GRANT SELECT ON tr TO rep, norep;
SELECT pg_create_logical_replication_slot('pg_egress_rt', 'wal2json');
});
	my ($ret, $out, $err) = query_as($node, 'rep',
		'SELECT egress_add_destination(' . sql_quote('rt') . ', ' . sql_quote(file_url($rdir)) . ');'
		  . q{SELECT egress_add_stream('sr', 'tr', method => 'LOG_BASED', destination => 'rt')});
	is($ret, 0, 'a role with REPLICATION adopts an existing slot under the default name') or diag $err;
	wait_stream_state($node, 'sr', 'streaming');
	is(sql(q{SELECT slot_name || ' ' || slot_owned FROM egress.destination WHERE name = 'rt'}),
		'pg_egress_rt false', 'the slot is recorded as adopted');

	# no REPLICATION any more: the next session refuses the slot
	sql(q{ALTER ROLE rep NOREPLICATION});
	sql(q{SELECT egress_pause_stream('sr')});
	ok(poll_until('the CDC worker of rt releases its slot', 60,
			sub { my $s = slot_row($node, 'pg_egress_rt'); $s && !defined $s->{active_pid} }),
		'pausing the only stream ends the session');
	my $lsn = sql(q{SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_egress_rt'});
	sql(q{INSERT INTO tr VALUES (1, 'after')});
	sql(q{SELECT egress_resume_stream('sr')});
	wait_stream_where($node, 'sr', q{state = 'error'}, 60,
		'without REPLICATION the owner\'s stream goes to error instead of consuming the adopted slot');
	like(stream_row_wait($node, 'sr')->{last_error} // '', qr/pg_egress_rt.*REPLICATION/,
		'last_error says why');
	is(sql(q{SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'pg_egress_rt'}), $lsn,
		'the slot was not consumed');
	ok(slot_row($node, 'pg_egress_rt'), 'the adopted slot is left alone');

	# add time: a role without REPLICATION may not adopt it either
	my ($state, $serr) = sqlstate_of($node, q{SET ROLE norep; SELECT egress_add_destination('rt2', }
		  . sql_quote(file_url($rdir)) . q{, '{}'); RESET ROLE; SELECT pg_create_logical_replication_slot('pg_egress_rt2', 'wal2json'); SET ROLE norep; SELECT egress_add_stream('sr2', 'tr', method => 'LOG_BASED', destination => 'rt2')});
	is($state, '42501', 'add time: the default-name slot exists and the owner has no REPLICATION: SQLSTATE 42501')
	  or diag $serr;
	like($serr, qr/HINT:/, '... with a hint') or diag $serr;
	is(sql(q{SELECT count(*) FROM egress.stream WHERE name = 'sr2'}), '0', 'nothing created');

	# a destination removed and added again under its name by a role
	# without REPLICATION: its own slot (maybe still waiting to be dropped)
	# is no adoption
	($ret, $out, $err) = query_as($node, 'norep',
		'SELECT egress_add_destination(' . sql_quote('rr') . ', ' . sql_quote(file_url($rdir)) . ');'
		  . q{SELECT egress_add_stream('srr', 'tr', method => 'LOG_BASED', destination => 'rr')});
	is($ret, 0, 'a role without REPLICATION adds a LOG_BASED stream (a slot of its own)') or diag $err;
	wait_stream_state($node, 'srr', 'streaming');
	($ret, $out, $err) = query_as($node, 'norep',
		q{SELECT egress_remove_destination('rr', true);}
		  . 'SELECT egress_add_destination(' . sql_quote('rr') . ', ' . sql_quote(file_url($rdir)) . ');'
		  . q{SELECT egress_add_stream('srr', 'tr', method => 'LOG_BASED', destination => 'rr')});
	is($ret, 0, 'it removes the destination and adds it again at once') or diag $err;
	wait_stream_state($node, 'srr', 'streaming');
	sql(q{INSERT INTO tr VALUES (2, 're-added')});
	wait_caught_up($node, 'srr');
	is(stream_row_wait($node, 'srr')->{state}, 'streaming', 'the re-added destination streams');

	# the right to write server files is checked again as of the next change
	my $files = scalar(cdc_batches($rdir));
	sql(q{REVOKE pg_write_server_files FROM norep});
	sql(q{INSERT INTO tr VALUES (3, 'after the revoke')});
	wait_stream_where($node, 'srr', q{state = 'error'}, 60,
		'LOG_BASED: an owner who lost pg_write_server_files: the stream goes to error');
	like(stream_row_wait($node, 'srr')->{last_error} // '', qr/pg_write_server_files/, 'last_error names it');
	is(scalar(cdc_batches($rdir)), $files, 'the change after the revoke was not written');
	sql(q{SELECT egress_remove_destination('rr', true); SELECT egress_remove_destination('rt', true);
		SELECT egress_remove_destination('rt2', true); SELECT pg_drop_replication_slot('pg_egress_rt2')});
	# adopted, not pg_egress's: left alone on removal
	ok(slot_row($node, 'pg_egress_rt'), 'the adopted slot is kept when its destination is removed');
	ok(poll_until('pg_egress_rt is free', 30,
			sub { my $s = slot_row($node, 'pg_egress_rt'); $s && !defined $s->{active_pid} }),
		'no worker holds it');
	sql(q{SELECT pg_drop_replication_slot('pg_egress_rt')});
	slot_gone('pg_egress_rr', 'the re-added destination\'s slot goes with it');
}

# ---------------------------------------------------------------------------
# a dropped source table
# ---------------------------------------------------------------------------
add_destination($node, 'd4', $dir{d4});
add_stream('sa', 'ta', 'd4');
add_stream('sb', 'tb', 'd4');
wait_stream_state($node, $_, 'streaming') foreach qw(sa sb);
sql(q{INSERT INTO ta VALUES (101, 'new'); INSERT INTO tb VALUES (101, 'new')});
wait_caught_up($node, $_) foreach qw(sa sb);
my $pid;
ok( poll_until(
		'the CDC worker of d4', 60,
		sub { my $s = slot_row($node, 'pg_egress_d4'); $pid = $s->{active_pid} if $s; defined $pid }),
	'the CDC worker of d4 holds pg_egress_d4');
$pid //= 0;
my $log_offset = -s $node->logfile;
sql('DROP TABLE ta');
wait_stream_where($node, 'sa', q{state = 'error'}, 30, 'a dropped source table puts its stream into state error');
diag 'last_error: ' . (stream_row_wait($node, 'sa')->{last_error} // 'null');
like(stream_row_wait($node, 'sa')->{last_error} // '', qr/ta/, 'last_error names the table');
sql(q{INSERT INTO tb VALUES (102, 'after'); UPDATE tb SET v = 'u' WHERE id = 5});
wait_caught_up($node, 'sb');
compare_states(mirror($dir{d4}, 'public-tb', ['id']), table_state($node, 'tb', ['id']),
	'the other stream of the destination keeps streaming');
is(stream_row_wait($node, 'sa')->{state}, 'error', 'the stream of the dropped table stays in error');
is(slot_row($node, 'pg_egress_d4')->{active_pid}, $pid, "the same CDC worker $pid holds the slot (no crash loop)");
ok(kill(0, $pid), "CDC worker $pid still runs");
ok(!$node->log_contains(qr/terminated by signal|terminating any other active server processes/, $log_offset),
	'no process crashed');
sql(q{SELECT egress_remove_stream('sa'); SELECT egress_remove_stream('sb')});
slot_gone('pg_egress_d4', 'd4: the slot goes with the last stream');

# ---------------------------------------------------------------------------
# pg_egress.max_slot_lag with failing destinations: d5 (lag_policy pause)
# and d6 (lag_policy continue, the default) both stream table tl
# ---------------------------------------------------------------------------
sql(q{SELECT pg_drop_replication_slot('tap_slot')});
sql(q{ALTER SYSTEM SET pg_egress.max_slot_lag = '1MB'; SELECT pg_reload_conf()});
ok(poll_until('max_slot_lag reloaded', 30, sub { sql('SHOW pg_egress.max_slot_lag') eq '1MB' }),
	'pg_egress.max_slot_lag = 1MB');
add_destination($node, 'd5', $dir{d5});
add_destination($node, 'd6', $dir{d6});
add_stream('s5', 'tl', 'd5', '{"lag_policy": "pause"}');
add_stream('s6', 'tl', 'd6');
wait_stream_state($node, $_, 'streaming') foreach qw(s5 s6);
sql(q{INSERT INTO tl VALUES (101, 'new')});
wait_caught_up($node, $_) foreach qw(s5 s6);

$log_offset = -s $node->logfile;
chmod(0500, $dir{d5}) or die "chmod: $!";
chmod(0500, $dir{d6}) or die "chmod: $!";
my $lsn0 = sql('SELECT pg_current_wal_lsn()');
sql(q{INSERT INTO tl SELECT i, repeat(md5(i::text), 4) FROM generate_series(1000, 21000) i});
my $wal = sql("SELECT pg_current_wal_lsn() - '$lsn0'::pg_lsn");
cmp_ok($wal, '>', 2 * 1024 * 1024, "more than 2 MB of WAL written to the table ($wal bytes)");
my %max_lag = (s5 => 0, s6 => 0);
my $lag_ok = poll_until(
	'lag_bytes > 1 MB', 30,
	sub {
		foreach my $s (qw(s5 s6))
		{
			my $r = stream_row($node, $s);
			$max_lag{$s} = $r->{lag_bytes} if $r && defined $r->{lag_bytes} && $r->{lag_bytes} > $max_lag{$s};
		}
		return $max_lag{s5} > 1024 * 1024 && $max_lag{s6} > 1024 * 1024;
	});
ok($max_lag{s6} > 1024 * 1024, "lag_policy continue: egress_streams.lag_bytes exceeds 1 MB (max seen $max_lag{s6})");
ok($max_lag{s5} > 1024 * 1024, "lag_policy pause: egress_streams.lag_bytes exceeds 1 MB (max seen $max_lag{s5})");
wait_stream_where($node, 's5', q{state = 'error' AND last_error ~* 'lag'}, 60,
	'lag_policy pause: the stream goes to state error, last_error mentions the lag');
my $r5 = stream_row($node, 's5');
diag 's5 after the pause: last_error: ' . ($r5->{last_error} // 'null') . '; lag_bytes: ' . ($r5->{lag_bytes} // 'null');
my $r6 = stream_row($node, 's6');
diag 's6 (continue): state ' . ($r6->{state} // '?') . '; last_error: ' . ($r6->{last_error} // 'null') . '; lag_bytes: ' . ($r6->{lag_bytes} // 'null');
isnt($r6->{state}, 'error', 'lag_policy continue: the stream is not stopped');
ok(poll_until('a WARNING about the lag', 15, sub { $node->log_contains(qr/WARNING:.*(lag|max_slot_lag)/i, $log_offset) }),
	'a WARNING about the slot lag in the server log');
my @warnings = grep { /WARNING/ } split /\n/, slurp_file($node->logfile, $log_offset);
diag 'WARNING lines: ' . scalar(@warnings) . (@warnings ? "; first: $warnings[0]" : '');

chmod(0700, $dir{d5}) or die "chmod: $!";
chmod(0700, $dir{d6}) or die "chmod: $!";
wait_caught_up($node, 's6', 60);
sql(q{SELECT egress_resume_stream('s5')});
if (!wait_caught_up($node, 's5', 60))
{
	diag 'with max_slot_lag still 1MB the resumed stream did not catch up; retrying with max_slot_lag off';
	diag 's5: ' . join(', ', map { "$_=" . (stream_row_wait($node, 's5')->{$_} // 'null') } qw(state last_error last_error_at));
	sql(q{ALTER SYSTEM RESET pg_egress.max_slot_lag; SELECT pg_reload_conf()});
	sql(q{SELECT egress_resume_stream('s5')});
	wait_caught_up($node, 's5', 60);
}
my $table = table_state($node, 'tl', ['id']);
compare_states(mirror($dir{d5}, 'public-tl', ['id']), $table,
	'lag_policy pause: after the destination is fixed and the stream resumed: nothing lost');
compare_states(mirror($dir{d6}, 'public-tl', ['id']), $table,
	'lag_policy continue: after the destination is fixed: nothing lost');

no_crash_since($node, $log_start, 'no server process crashed');

$node->stop;
done_testing();
