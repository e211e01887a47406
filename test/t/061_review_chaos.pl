
# Careless-operator / chaos review of issue 10 (helper 8).  Each part
# asserts the correct behaviour; parts A, C and D reproduced defects of the
# code under review (fixed since; the notes say what was wrong).
#
#  A. the destination's slot disappears while a destination fails (an
#     operator drops it to free pg_wal, as the hint of give_up_slot() tells
#     to do for adopted slots).  ensure_slot() then created a new slot and
#     marked every stream for a new sync in memory only.  If the session
#     ended before every stream was synced (the worker is terminated, or
#     the sync of an earlier stream fails), the next session adopted the
#     new slot and the streams not yet synced went on as 'streaming' from
#     their old bookmark: the changes made while no slot existed were
#     silently lost.  Now the streams are marked in the catalog, in the
#     transaction that records the new slot, before it exists.
#  B. kill -9 of the CDC worker during an initial sync (crash restart of
#     the cluster): the stream recovers with everything.
#  C. pause + resume at once: the promised resync never happened,
#     egress_streams showed 'pending' for good (the worker's configuration
#     fingerprint did not cover the state and resync flag).
#  D. pg_egress.max_slot_wal dropped the slot of a healthy, caught-up
#     destination when a long transaction elsewhere pinned restart_lsn,
#     and the new slot then waited for that transaction.  The hard limit
#     now counts the WAL the destination has not acknowledged
#     (confirmed_flush_lsn), not the WAL the slot retains.
#  E. the slot over the hard WAL limit is not pg_egress's any more (someone
#     replaced it by another plugin's): it used to be reported "dropped"
#     and the streams synced again; now a WARNING, and the streams stop in
#     state error with the reason.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use IPC::Run;
use EgressTest;

my $node = create_node('review_chaos', cdc => 1, conf => "pg_egress.max_workers = 6\n");

sub sql { server_up($node); return $node->safe_psql('postgres', $_[0]); }

# mirror() of one stream reading only its own sync files (the big tables'
# sync files are not parsed): the latest sync version, then the changes
sub mirror_of
{
	my ($dir, $stream, $sid, $pk) = @_;
	my %byv;
	foreach my $b (sync_batches($dir, $stream))
	{
		$b->{name} =~ /-(\d+)-\d{6}\.jsonl$/;
		push @{ $byv{$1} }, $b;
	}
	my ($v) = sort { $b <=> $a } keys %byv;
	my %m;
	foreach my $b ((defined $v ? @{ $byv{$v} } : ()), cdc_batches($dir))
	{
		foreach my $msg (@{ $b->{messages} })
		{
			next unless ref $msg eq 'HASH' && ($msg->{stream} // '') eq $sid;
			my $type = $msg->{type} // '';
			if ($type eq 'RECORD')
			{
				my $r = $msg->{record};
				my $key = join("\x1f", map { defined $r->{$_} ? "$r->{$_}" : "\x00NULL" } @$pk);
				if (defined $r->{_sdc_deleted_at}) { delete $m{$key}; next; }
				my %c = map { ($_ => $r->{$_}) } grep { !/^_sdc_/ } keys %$r;
				$m{$key} = { version => $msg->{version} // 0, record => \%c };
			}
			elsif ($type eq 'ACTIVATE_VERSION')
			{
				my $av = $msg->{version} // 0;
				foreach my $k (keys %m) { delete $m{$k} if $m{$k}{version} < $av; }
			}
		}
	}
	return { map { ($_ => $m{$_}{record}) } keys %m };
}

# ---------------------------------------------------------------------------
# A. slot gone while the destination fails, session ends mid-resync
#    (the big tables of A and B use the one-transaction sync, chunk_rows 0:
#    what is attacked here is that sync; 100 and 101 kill chunked ones)
# ---------------------------------------------------------------------------
my $dir_a = new_outdir($node, 'a');
END { chmod(0700, $dir_a) if defined $dir_a; }
add_destination($node, 'da', $dir_a);
sql(q{
CREATE TABLE ta (id integer PRIMARY KEY, v text);
CREATE TABLE tb (id integer PRIMARY KEY, v text);
INSERT INTO ta SELECT i, 'v' FROM generate_series(1, 1000000) i;
INSERT INTO tb SELECT i, 'v' || i FROM generate_series(1, 20) i;
SELECT egress_add_stream('ta', 'ta', method => 'LOG_BASED', destination => 'da',
	options => '{"chunk_rows": 0}');
SELECT egress_add_stream('tb', 'tb', method => 'LOG_BASED', destination => 'da');
});
wait_stream_state($node, $_, 'streaming') foreach qw(ta tb);
sql(q{INSERT INTO tb VALUES (21, 'before')});
wait_caught_up($node, 'tb');
my %va = map { ($_ => stream_row($node, $_)->{version}) } qw(ta tb);

# the destination fails: the worker releases the slot between retries
chmod(0500, $dir_a) or die "chmod: $!";
sql(q{INSERT INTO ta VALUES (-1, 'while failing')});
ok( poll_until(
		'the operator to drop the slot', 90,
		sub {
			my ($ret) = $node->psql('postgres', q{SELECT pg_drop_replication_slot('pg_egress_da')});
			return $ret == 0;
		}),
	'A: the operator dropped the slot of the failing destination');
# changes while no slot exists
sql(q{INSERT INTO tb SELECT i, 'no slot' FROM generate_series(200, 210) i});
sql(q{UPDATE tb SET v = 'updated without slot' WHERE id <= 5});

# the new session syncs ta (big) first; the worker is terminated meanwhile
chmod(0700, $dir_a) or die "chmod: $!";
# terminate the worker as soon as it syncs ta (one round trip)
my $killed = '';
ok( poll_until(
		'the CDC worker to sync ta again', 90,
		sub {
			$killed = sql(qq{SELECT pg_terminate_backend(a.pid) FROM egress_streams s, pg_stat_activity a
				WHERE s.name = 'ta' AND s.state = 'syncing' AND s.version > $va{ta}
				AND a.backend_type = 'pg_egress cdc'});
			return $killed =~ /t/;
		}),
	'A: the new session syncs ta first; the worker is terminated during that sync');
ok(slot_row($node, 'pg_egress_da'), 'A: a new slot exists');
{
	# tb's bookmark is from the old slot: the catalog must say it is synced
	# again before the new slot serves anything (until its sync is done)
	my $rb = sql(q{SELECT st.state || ' ' || st.resync || ' ' || st.version FROM egress.stream_state st
		JOIN egress.stream s ON s.id = st.stream_id WHERE s.name = 'tb'});
	my ($state, $resync, $version) = split / /, $rb;
	ok($version > $va{tb} || ($state ne 'streaming' && $resync eq 'true'),
		"A: tb is marked for resync in the catalog ($rb)");
}

wait_stream_where($node, 'ta', "state = 'streaming' AND version > $va{ta}", 90, 'A: ta synced again');
wait_stream_state($node, 'tb', 'streaming');
sql(q{INSERT INTO tb VALUES (1000, 'after')});
wait_caught_up($node, $_) foreach qw(ta tb);
note 'tb: ' . EgressTest::_short_row(stream_row($node, 'tb'));
compare_states(mirror_of($dir_a, 'tb', 'public-tb', ['id']), table_state($node, 'tb', ['id']),
	'A: tb, whose sync on the new slot was never done, lost nothing');
sql(q{SELECT egress_remove_stream('ta'); SELECT egress_remove_stream('tb')});

# ---------------------------------------------------------------------------
# B. kill -9 of the CDC worker during an initial sync
# ---------------------------------------------------------------------------
my $dir_b = new_outdir($node, 'b');
add_destination($node, 'db', $dir_b);
sql(q{
CREATE TABLE tc (id integer PRIMARY KEY, v text);
CREATE TABLE td (id integer PRIMARY KEY, v text);
INSERT INTO tc SELECT i, 'v' FROM generate_series(1, 1000000) i;
INSERT INTO td SELECT i, 'v' || i FROM generate_series(1, 20) i;
SELECT egress_add_stream('td', 'td', method => 'LOG_BASED', destination => 'db');
});
wait_stream_state($node, 'td', 'streaming');
sql(q{INSERT INTO td SELECT i, 'before the sync of tc' FROM generate_series(100, 110) i});
sql(q{SELECT egress_add_stream('tc', 'tc', method => 'LOG_BASED', destination => 'db', options => '{"chunk_rows": 0}')});
my $wpid2 = '';
ok( poll_until(
		'the CDC worker to sync tc', 90,
		sub {
			$wpid2 = sql(q{SELECT a.pid FROM egress_streams s, pg_stat_activity a
				WHERE s.name = 'tc' AND s.state = 'syncing' AND a.pid = s.worker_pid AND a.backend_type = 'pg_egress cdc'});
			return 0 if $wpid2 eq '';
			kill 'KILL', $wpid2;
			return 1;
		}),
	'B: tc is syncing; its CDC worker killed with SIGKILL');
poll_until('the cluster to come back', 60, sub { my ($r) = $node->psql('postgres', 'SELECT 1'); $r == 0 });
sql(q{INSERT INTO tc VALUES (-1, 'after crash'); INSERT INTO td VALUES (500, 'after crash')});
wait_stream_state($node, $_, 'streaming') foreach qw(tc td);
wait_caught_up($node, $_) foreach qw(tc td);
compare_states(mirror_of($dir_b, 'td', 'public-td', ['id']), table_state($node, 'td', ['id']),
	'B: td nothing lost after kill -9 during the sync of tc');

# ---------------------------------------------------------------------------
# C. pause and resume in quick succession (one transaction, or both before
# the CDC worker looked): egress_resume_stream() marks the stream 'pending'
# + resync, but config_fingerprint() (cdc.c) hashed enabled, state =
# 'error' and (resync AND state = 'streaming') only, which were all as
# before: the worker never started a new session, the resync never
# happened and egress_streams showed 'pending' for good, while
# persist_bookmarks() ("... AND state = 'streaming'") stopped recording the
# stream's progress.
# ---------------------------------------------------------------------------
my $dir_c = new_outdir($node, 'c');
add_destination($node, 'dc', $dir_c);
sql(q{
CREATE TABLE te (id integer PRIMARY KEY, v text);
CREATE TABLE tf (id integer PRIMARY KEY, v text);
INSERT INTO te SELECT i, 'v' || i FROM generate_series(1, 20) i;
INSERT INTO tf SELECT i, 'v' || i FROM generate_series(1, 20) i;
SELECT egress_add_stream('te', 'te', method => 'LOG_BASED', destination => 'dc');
SELECT egress_add_stream('tf', 'tf', method => 'LOG_BASED', destination => 'dc');
});
wait_stream_state($node, $_, 'streaming') foreach qw(te tf);
my $ve = stream_row($node, 'te')->{version};
sql(q{SELECT egress_pause_stream('te'); SELECT egress_resume_stream('te')});
sql(q{INSERT INTO te VALUES (100, 'after resume'); INSERT INTO tf VALUES (100, 'after resume')});
wait_stream_where($node, 'te', "state = 'streaming' AND version > $ve", 30,
	'C: pause + resume at once: the stream is synced again (new version), egress_streams shows streaming');
wait_caught_up($node, 'tf');
compare_states(mirror($dir_c, 'public-te', ['id']), table_state($node, 'te', ['id']), 'C: te nothing lost');

# ---------------------------------------------------------------------------
# D. the hard WAL limit and a long transaction elsewhere.  A slot's
# restart_lsn cannot pass the start of the oldest running transaction that
# wrote WAL, whatever table it touches.  One long bulk load (or a session
# idle in transaction with an xid) while other WAL is written made a
# HEALTHY, caught-up destination's slot "hold" more than
# pg_egress.max_slot_wal: enforce_wal_limit() (cdc.c) dropped it and
# resynced every stream, and the new slot's creation then waited for that
# transaction to end.  The limit now counts the WAL not acknowledged.
# ---------------------------------------------------------------------------
my $dir_d = new_outdir($node, 'd');
add_destination($node, 'dd', $dir_d);
sql(q{
CREATE TABLE tg (id integer PRIMARY KEY, v text);
CREATE TABLE unrelated (id integer);
CREATE TABLE filler (id integer, v text);
INSERT INTO tg SELECT i, 'v' || i FROM generate_series(1, 20) i;
SELECT egress_add_stream('tg', 'tg', method => 'LOG_BASED', destination => 'dd');
});
wait_stream_state($node, 'tg', 'streaming');
my $vg = stream_row($node, 'tg')->{version};
sql(q{ALTER SYSTEM SET pg_egress.max_slot_wal = '2MB'; SELECT pg_reload_conf()});
poll_until('max_slot_wal reloaded', 30, sub { sql('SHOW pg_egress.max_slot_wal') eq '2MB' });
my $offset_d = -s $node->logfile;
# a long transaction on a table no stream reads
my $long = IPC::Run::start(
	[ 'psql', '-X', '-q', '-d', $node->connstr('postgres') . ' application_name=longtx',
	  '-c', 'BEGIN; INSERT INTO unrelated VALUES (1); SELECT pg_sleep(60); COMMIT;' ],
	'>', '/dev/null', '2>', '/dev/null');
poll_until('the long transaction to have an xid', 30,
	sub { sql(q{SELECT count(*) FROM pg_stat_activity WHERE application_name = 'longtx' AND backend_xid IS NOT NULL}) eq '1' });
# ordinary traffic: 4 x 1.5 MB of WAL, and a change of the stream each time
foreach my $i (1 .. 4)
{
	sql(q{INSERT INTO filler SELECT i, repeat(md5(i::text), 2) FROM generate_series(1, 10000) i});
	sql(qq{INSERT INTO tg VALUES (100 + $i, 'healthy destination')});
	usleep(300_000);
}
my $delivered = poll_until('tg to deliver its changes while the long transaction runs', 20,
	sub { my @r = grep { $_->{id} >= 101 } map { $_->{record} } grep { ($_->{type} // '') eq 'RECORD' && ($_->{stream} // '') eq 'public-tg' }
			map { @{ $_->{messages} } } cdc_batches($dir_d);
		  return scalar(@r) >= 4; });
ok($delivered, 'D: a healthy destination delivers while a long transaction elsewhere runs');
unlike(substr(slurp_file($node->logfile), $offset_d), qr/dropped replication slot "pg_egress_dd"/,
	'D: the slot of a healthy, caught-up destination is not dropped by max_slot_wal');
$node->psql('postgres', q{SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'longtx'});
eval { $long->finish; };
sql(q{ALTER SYSTEM RESET pg_egress.max_slot_wal; SELECT pg_reload_conf()});
wait_stream_state($node, 'tg', 'streaming');
wait_caught_up($node, 'tg');
compare_states(mirror_of($dir_d, 'tg', 'public-tg', ['id']), table_state($node, 'tg', ['id']), 'D: tg nothing lost');

# ---------------------------------------------------------------------------
# E. the slot that the hard WAL limit would drop is not pg_egress's any more
# (someone dropped ours and made a test_decoding slot of that name).
# egress_slot_drop() used to answer "nothing left to drop" (true) for it, so
# the database worker (guard_idle_slots) and the CDC worker (give_up_slot)
# logged "dropped replication slot" and synced the streams again on a slot
# they could not use, though nothing was dropped.  Now: a WARNING that says
# it is not a slot of pg_egress, nothing "dropped", the streams stop in state
# error with that reason.
# ---------------------------------------------------------------------------
sub swap_for_foreign_slot
{
	my ($slot) = @_;
	# between retries the CDC worker lets go of its slot
	ok( poll_until(
			"to replace $slot", 90,
			sub {
				my ($ret) = $node->psql('postgres', qq{SELECT pg_drop_replication_slot('$slot');
					SELECT pg_create_logical_replication_slot('$slot', 'test_decoding')});
				return $ret == 0;
			}),
		"E: $slot replaced by a test_decoding slot of the same name");
	is((slot_row($node, $slot) // {})->{plugin}, 'test_decoding', "E: $slot is a test_decoding slot");
}

sub more_wal
{
	sql(q{INSERT INTO filler SELECT i, repeat(md5(i::text), 2) FROM generate_series(1, 10000) i}) foreach 1 .. 3;
}

# E1. no CDC worker serves the slot (its only stream is paused): the database worker's guard
my $dir_e = new_outdir($node, 'e');
add_destination($node, 'de', $dir_e);
sql(q{
CREATE TABLE th (id integer PRIMARY KEY, v text);
INSERT INTO th SELECT i, 'v' || i FROM generate_series(1, 20) i;
SELECT egress_add_stream('th', 'th', method => 'LOG_BASED', destination => 'de');
});
wait_stream_state($node, 'th', 'streaming');
sql(q{SELECT egress_pause_stream('th')});
swap_for_foreign_slot('pg_egress_de');
my $offset_e = -s $node->logfile;
sql(q{ALTER SYSTEM SET pg_egress.max_slot_wal = '1MB'; SELECT pg_reload_conf()});
poll_until('max_slot_wal reloaded', 30, sub { sql('SHOW pg_egress.max_slot_wal') eq '1MB' });
more_wal();
ok( poll_until(
		'a WARNING about the foreign slot of de', 60,
		sub { substr(slurp_file($node->logfile), $offset_e) =~ /WARNING:.*did not drop replication slot "pg_egress_de".*not a slot of pg_egress/ }),
	'E1: the database worker says the slot over max_slot_wal is not a slot of pg_egress');
# (egress_streams shows a paused stream as paused)
wait_stream_where($node, 'th', q{last_error ~ 'not a slot of pg_egress'}, 30,
	'E1: its stream says why');
is(sql(q{SELECT st.state FROM egress.stream_state st JOIN egress.stream s ON s.id = st.stream_id WHERE s.name = 'th'}),
	'error', 'E1: its stream is in state error in the catalog');
unlike(substr(slurp_file($node->logfile), $offset_e), qr/dropped replication slot "pg_egress_de"/,
	'E1: nothing claims the foreign slot was dropped');
is((slot_row($node, 'pg_egress_de') // {})->{plugin}, 'test_decoding', 'E1: the foreign slot is kept');
sql(q{ALTER SYSTEM RESET pg_egress.max_slot_wal; SELECT pg_reload_conf()});
sql(q{SELECT pg_drop_replication_slot('pg_egress_de'); SELECT egress_remove_stream('th')});

# E2. the CDC worker runs (its destination fails) and gives the slot up
my $dir_e2 = new_outdir($node, 'e2');
END { chmod(0700, $dir_e2) if defined $dir_e2; }
add_destination($node, 'de2', $dir_e2);
sql(q{
CREATE TABLE ti (id integer PRIMARY KEY, v text);
INSERT INTO ti SELECT i, 'v' || i FROM generate_series(1, 20) i;
SELECT egress_add_stream('ti', 'ti', method => 'LOG_BASED', destination => 'de2');
});
wait_stream_state($node, 'ti', 'streaming');
chmod(0500, $dir_e2) or die "chmod: $!";
sql(q{INSERT INTO ti VALUES (-1, 'while failing')});
swap_for_foreign_slot('pg_egress_de2');
$offset_e = -s $node->logfile;
sql(q{ALTER SYSTEM SET pg_egress.max_slot_wal = '1MB'; SELECT pg_reload_conf()});
poll_until('max_slot_wal reloaded', 30, sub { sql('SHOW pg_egress.max_slot_wal') eq '1MB' });
more_wal();
ok( poll_until(
		'a WARNING about the foreign slot of de2', 60,
		sub { substr(slurp_file($node->logfile), $offset_e) =~ /WARNING:.*did not drop replication slot "pg_egress_de2".*not a slot of pg_egress/ }),
	'E2: the CDC worker says the slot over max_slot_wal is not a slot of pg_egress');
wait_stream_where($node, 'ti', q{state = 'error' AND last_error ~ 'not a slot of pg_egress'}, 30,
	'E2: its stream stops in state error, saying why');
unlike(substr(slurp_file($node->logfile), $offset_e), qr/dropped replication slot "pg_egress_de2"/,
	'E2: nothing claims the foreign slot was dropped');
is((slot_row($node, 'pg_egress_de2') // {})->{plugin}, 'test_decoding', 'E2: the foreign slot is kept');
sql(q{ALTER SYSTEM RESET pg_egress.max_slot_wal; SELECT pg_reload_conf()});
chmod(0700, $dir_e2);

$node->stop;
done_testing();
