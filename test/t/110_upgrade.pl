
# ALTER EXTENSION pg_egress UPDATE from 0.1 to 0.2 (issue 14, upgrades).
#
# 1. CREATE EXTENSION pg_egress VERSION '0.1' with the 0.2 library: a
#    FULL_TABLE stream owned by a non-superuser role that reads
#    egress_streams (granted SELECT on the view under 0.1), an INCREMENTAL
#    stream, a LOG_BASED stream on pgoutput (chunk_rows 10: on a 0.1
#    catalog, which has no backfill columns, its initial sync runs in one
#    transaction as 0.1's did) and one on wal2json; data flows and is
#    checked.  The workers say once (WARNING with the hint) that the
#    catalog is older, and never crash-loop.
# 2. ALTER EXTENSION pg_egress UPDATE while a FULL_TABLE sync is mid-run
#    and changes are being decoded.  Afterwards: the versions, bookmarks
#    and slots are the same, nothing is sent again (every record once) and
#    nothing lost (the destination equals the tables), the role still
#    reads egress_streams, the workers pick the new catalog up without a
#    restart (a stream added after the update is backfilled in chunks).
# 3. The upgraded catalog equals a fresh CREATE EXTENSION pg_egress: the
#    schema-only binary-upgrade dumps (which list every member object of
#    the extension, its grants and initial privileges) of a database
#    upgraded from 0.1 and of a fresh one are the same.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('upgrade', cdc => 1, extension => 0);
my $log_start = -s $node->logfile;
sub sql { return $node->safe_psql('postgres', $_[0]); }

my $fdir = new_outdir($node, 'full');    # etl's FULL_TABLE stream
my $idir = new_outdir($node, 'inc');     # INCREMENTAL
my $pdir = new_outdir($node, 'pgo');     # LOG_BASED, pgoutput
my $wdir = new_outdir($node, 'w2j');     # LOG_BASED, wal2json
chmod 0777, $fdir;

sql(q{CREATE EXTENSION pg_egress VERSION '0.1'});
is(sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_egress'}), '0.1', 'extension created at 0.1');

# ---------------------------------------------------------------------------
# 1. Streams on the 0.1 catalog
# ---------------------------------------------------------------------------

sql(q{
CREATE TABLE full_t (id integer PRIMARY KEY, v text);
INSERT INTO full_t SELECT g, 'f' || g FROM generate_series(1, 200) g;
CREATE TABLE inc_t (id integer PRIMARY KEY, v text);
INSERT INTO inc_t SELECT g, 'i' || g FROM generate_series(1, 50) g;
CREATE TABLE cdc_p (id integer PRIMARY KEY, v text);
INSERT INTO cdc_p SELECT g, 'p' || g FROM generate_series(1, 100) g;
CREATE TABLE cdc_w (id integer PRIMARY KEY, v text);
INSERT INTO cdc_w SELECT g, 'w' || g FROM generate_series(1, 100) g;

CREATE ROLE etl LOGIN;
GRANT EXECUTE ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_resync_stream(text)
TO etl;
GRANT pg_write_server_files TO etl;
GRANT SELECT ON full_t TO etl;
-- under 0.1 this was all a role needed to read egress_streams
GRANT SELECT ON egress_streams TO etl;
});
my ($ret, $out, $err) = query_as($node, 'etl',
	'SELECT egress_add_destination(' . sql_quote('de') . ', ' . sql_quote(file_url($fdir)) . q{);
SELECT egress_add_stream('full', 'full_t', 'FULL_TABLE', 'de', options => '{"batch_max_rows": 500}');});
is($ret, 0, 'etl adds a destination and a FULL_TABLE stream on the 0.1 catalog') or diag $err;

add_destination($node, 'di', $idir);
add_destination($node, 'dp', $pdir);
add_destination($node, 'dw', $wdir, '{"decoder": "wal2json"}');
sql(q{
SELECT egress_add_stream('inc', 'inc_t', 'INCREMENTAL', 'di', 'id', '{"interval": 1}');
SELECT egress_add_stream('cdc_p', 'cdc_p', 'LOG_BASED', 'dp', options => '{"chunk_rows": 10}');
SELECT egress_add_stream('cdc_w', 'cdc_w', 'LOG_BASED', 'dw');
});

wait_stream_state($node, 'full', 'synced');
wait_stream_state($node, 'inc', 'synced');
wait_stream_state($node, 'cdc_p', 'streaming');
wait_stream_state($node, 'cdc_w', 'streaming');

my $log = slurp_file($node->logfile, $log_start);
like($log, qr/WARNING:.*pg_egress: the extension's objects in database "postgres" are at version 0\.1, older than the library \(0\.2\)/,
	'the database worker says the catalog is older');
like($log, qr/HINT:\s+Run ALTER EXTENSION pg_egress UPDATE in that database\./, '... with the hint');
my @warnings = $log =~ /are at version 0\.1, older than the library/g;
ok(@warnings <= 2, 'said once (per worker that checks), not at every cycle: ' . scalar(@warnings));
like($log, qr/stream "cdc_p": initial sync finished, 100 rows/,
	'on the 0.1 catalog the LOG_BASED initial sync runs in one transaction (chunk_rows 10 notwithstanding)');
unlike($log, qr/chunked backfill/, 'no chunked backfill on the 0.1 catalog');
unlike($log, qr/backfill_after|column .* does not exist/, 'no error about missing columns');

# every function of 0.1's script runs on the 0.1 catalog (they call the 0.2
# library)
{
	my $xdir = new_outdir($node, 'x');
	sql(q{CREATE TABLE extra_a (id integer PRIMARY KEY); CREATE TABLE extra_b (id integer PRIMARY KEY);});
	my @calls = (
		q{SELECT egress_add_destination('dx', } . sql_quote(file_url($xdir)) . q{)},
		q{SELECT array_length(egress_add_streams('public.extra_*', NULL, 'FULL_TABLE', 'dx', '{"follow_new_tables": true}'), 1)},
		q{SELECT count(*) FROM egress_stream_patterns},
		q{SELECT egress_remove_stream_pattern((SELECT max(id) FROM egress_stream_patterns))},
		q{SELECT egress_pause_stream('inc')},
		q{SELECT egress_resume_stream('inc')},
		q{SELECT egress_sync_now('inc')},
		q{SELECT egress_resync_stream('public_extra_a')},
		q{SELECT egress_remove_stream('public_extra_a')},
		q{SELECT egress_remove_destination('dx', cascade => true)},
		q{SELECT egress_discover(ARRAY['public']) IS NOT NULL},
		q{SELECT egress_preview_schema('full_t') IS NOT NULL},
		q{SELECT egress_preview_record(f) IS NOT NULL FROM full_t f WHERE id = 1},
		q{SELECT egress_preview_record_via_text(f) IS NOT NULL FROM full_t f WHERE id = 1},
		q{SELECT rows_uploaded FROM egress_export('SELECT 1', } . sql_quote(file_url("$xdir/export.csv")) . q{)},
		q{SELECT count(*) >= 4 FROM egress_stream_activity()},
	);
	foreach my $c (@calls)
	{
		my ($r, $o, $e) = $node->psql('postgres', $c);
		ok($r == 0 && $e !~ /ERROR/, "0.1 catalog: $c") or diag $e;
	}
	wait_stream_state($node, 'inc', 'synced');
}

# changes on the 0.1 catalog
my $nchanges_p = 0;
my $nchanges_w = 0;
sub changes
{
	my ($round) = @_;
	foreach my $t ([ 'cdc_p', \$nchanges_p ], [ 'cdc_w', \$nchanges_w ])
	{
		my ($tab, $n) = @$t;
		my $base = 1000 * $round;
		sql(qq{
INSERT INTO $tab SELECT g, 'r$round-' || g FROM generate_series($base + 1, $base + 20) g;
UPDATE $tab SET v = 'u$round-' || id WHERE id BETWEEN $round * 3 + 1 AND $round * 3 + 3;
DELETE FROM $tab WHERE id = $round * 3 + 50;
});
		$$n += 20 + 3 + 1;
	}
	sql(qq{INSERT INTO inc_t SELECT g, 'r$round-' || g FROM generate_series(1000 * $round + 1, 1000 * $round + 10) g});
	return;
}
changes(1);
wait_caught_up($node, 'cdc_p');
wait_caught_up($node, 'cdc_w');
wait_stream_where($node, 'inc', q{(bookmark->>'replication_key_value')::int >= 1010}, undef,
	'INCREMENTAL stream ran after the inserts')
  or diag sql(q{SELECT bookmark FROM egress_streams WHERE name = 'inc'});

($ret, $out, $err) = query_as($node, 'etl', q{SELECT name, state FROM egress_streams ORDER BY name});
is($out, 'full|synced', 'etl reads egress_streams under 0.1 (its own stream)') or diag $err;

# what must survive the update
my $state_sql = q{SELECT s.name || ' v=' || coalesce(st.version::text, '-') || ' lsn_set=' || (st.confirmed_lsn IS NOT NULL)
  FROM egress.stream s JOIN egress.stream_state st ON st.stream_id = s.id
 WHERE s.name IN ('full', 'inc', 'cdc_p', 'cdc_w') ORDER BY s.name};
my $states_before = sql($state_sql);
my $slots_sql = q{SELECT string_agg(slot_name || ' ' || plugin, ', ' ORDER BY slot_name) FROM pg_replication_slots};
my $slots_before = sql($slots_sql);
like($slots_before, qr/pg_egress_dp pgoutput.*pg_egress_dw wal2json/, "slots: $slots_before");
my %sync_files_before = (cdc_p => scalar(sync_batches($pdir, 'cdc_p')), cdc_w => scalar(sync_batches($wdir, 'cdc_w')));
ok($sync_files_before{cdc_p} >= 1 && $sync_files_before{cdc_w} >= 1, 'initial sync files of cdc_p and cdc_w');
my %versions;
foreach my $s (qw(full inc cdc_p cdc_w))
{
	$versions{$s} = sql(qq{SELECT version FROM egress_streams WHERE name = '$s'});
}

# ---------------------------------------------------------------------------
# 2. The update, while a FULL_TABLE sync runs and changes are decoded
# ---------------------------------------------------------------------------

# A FULL_TABLE sync held mid-run: it reads a view whose function waits for
# an advisory lock at row 10000 (as in 004), after 10 batches were sent.
sql(q{
CREATE TABLE gated_t (id integer PRIMARY KEY, v text);
INSERT INTO gated_t SELECT g, 'g' || g FROM generate_series(1, 20000) g;
CREATE FUNCTION gate(id int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
	IF id = 10000 THEN
		PERFORM pg_advisory_lock_shared(4242);
		PERFORM pg_advisory_unlock_shared(4242);
	END IF;
	RETURN id;
END
$$;
CREATE VIEW gated AS SELECT t.*, gate(t.id) AS g FROM gated_t t ORDER BY id;
});
my $gdir = new_outdir($node, 'gated');
add_destination($node, 'dg', $gdir);
my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4242)');
sql(q{SELECT egress_add_stream('gated', 'gated', 'FULL_TABLE', 'dg', options => '{"batch_max_rows": 1000}')});
ok( poll_until(
		'the FULL_TABLE sync to stop at the gate',
		120,
		sub {
			sql(q{SELECT state = 'syncing' AND worker_pid IS NOT NULL AND rows_sent >= 9000 FROM egress_streams WHERE name = 'gated'})
			  eq 't';
		}),
	'a FULL_TABLE sync is under way (9 batches sent, waiting at the gate)');
my $gated_version = sql(q{SELECT version FROM egress_streams WHERE name = 'gated'});
my $gated_pid = sql(q{SELECT worker_pid FROM egress_streams WHERE name = 'gated'});

# a steady flow of small transactions being decoded meanwhile
my $bg = $node->background_psql('postgres');
$bg->query_until(qr/go/, q{\echo go
DO $$
BEGIN
	FOR i IN 1..100 LOOP
		INSERT INTO cdc_p VALUES (5000 + i, 'bg' || i);
		INSERT INTO cdc_w VALUES (5000 + i, 'bg' || i);
		COMMIT;
		PERFORM pg_sleep(0.01);
	END LOOP;
END
$$;
});
$nchanges_p += 100;
$nchanges_w += 100;

my $log_update = -s $node->logfile;
my $alter = $node->background_psql('postgres');
$alter->query_until(qr/started/, q{\echo started
ALTER EXTENSION pg_egress UPDATE;
});
my $updated = poll_until(
	'ALTER EXTENSION pg_egress UPDATE to commit',
	60,
	sub { sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_egress'}) eq '0.2' });
ok($updated, 'ALTER EXTENSION pg_egress UPDATE commits while the FULL_TABLE sync is held mid-run')
  or diag 'locks waited for: ' . sql(q{SELECT string_agg(l.locktype || ' ' || coalesce(l.relation::regclass::text, '') || ' ' || l.mode || ' pid ' || l.pid, '; ') FROM pg_locks l WHERE NOT l.granted});
is(sql(qq{SELECT pid FROM pg_stat_activity WHERE pid = $gated_pid}), $gated_pid, 'the sync worker is still there, mid-run');
$gate->query_safe('SELECT pg_advisory_unlock(4242)');
$gate->quit;
$alter->quit;
ok($updated || poll_until('the update after the gate opened', 60,
		sub { sql(q{SELECT extversion FROM pg_extension WHERE extname = 'pg_egress'}) eq '0.2' }),
	'updated to 0.2');
$bg->quit;

wait_stream_state($node, 'gated', 'synced');
is(sql(q{SELECT version FROM egress_streams WHERE name = 'gated'}), $gated_version,
	'the FULL_TABLE sync under way during the update finished under its version (not started again)');
{
	my @recs = map { $_->{record} } records_of(sync_batches($gdir, 'gated'));
	my %n;
	$n{ $_->{id} }++ foreach @recs;
	is(scalar(@recs), 20000, 'FULL_TABLE across the update: 20000 records');
	is(scalar(keys %n), 20000, '... each row once');
}

wait_stream_state($node, 'full', 'synced');
changes(2);
wait_caught_up($node, 'cdc_p');
wait_caught_up($node, 'cdc_w');
wait_stream_where($node, 'inc', q{(bookmark->>'replication_key_value')::int >= 2010}, undef,
	'INCREMENTAL stream ran after the update');

# kept
is(sql($state_sql), $states_before, 'versions and bookmarks (LSNs) of every stream kept by the update');
is(sql($slots_sql), $slots_before, 'slots kept');
foreach my $s (qw(full inc cdc_p cdc_w))
{
	is(sql(qq{SELECT version FROM egress_streams WHERE name = '$s'}), $versions{$s}, "stream $s keeps its version");
}
is(scalar(sync_batches($pdir, 'cdc_p')), $sync_files_before{cdc_p}, 'no new initial sync of cdc_p');
is(scalar(sync_batches($wdir, 'cdc_w')), $sync_files_before{cdc_w}, 'no new initial sync of cdc_w');
is(sql(q{SELECT count(*) FROM egress_streams WHERE state = 'error' OR last_error IS NOT NULL}), '0',
	'no stream has an error') or diag sql(q{SELECT name, last_error FROM egress_streams});

# nothing lost: the destinations equal the tables
compare_states(mirror($pdir, 'public-cdc_p', ['id']), table_state($node, 'cdc_p', ['id']), 'cdc_p (pgoutput)');
compare_states(mirror($wdir, 'public-cdc_w', ['id']), table_state($node, 'cdc_w', ['id']), 'cdc_w (wal2json)');

# nothing sent twice: every change record once (each change writes a value
# of its own), exactly as many as changes were made
sub records_once
{
	my ($dir, $sid, $nchanges, $label) = @_;
	my %seen;
	my @dups;
	my $n = 0;
	foreach my $b (cdc_batches($dir))
	{
		foreach my $m (@{ $b->{messages} })
		{
			next unless ($m->{type} // '') eq 'RECORD' && ($m->{stream} // '') eq $sid;
			my $r = $m->{record};
			my $k = join('|', $r->{id}, $r->{v} // '', defined $r->{_sdc_deleted_at} ? 'D' : '');
			push @dups, $k if $seen{$k}++;
			$n++;
		}
	}
	ok(!@dups, "$label: no change record sent twice") or diag 'twice: ' . join(' ', @dups[ 0 .. ($#dups < 9 ? $#dups : 9) ]);
	is($n, $nchanges, "$label: one change record per change");
	return;
}
records_once($pdir, 'public-cdc_p', $nchanges_p, 'cdc_p');
records_once($wdir, 'public-cdc_w', $nchanges_w, 'cdc_w');

# INCREMENTAL: every row once
{
	my @b = sort { $a->{name} cmp $b->{name} } read_batches($idir, qr/^inc-\d+-\d{13}-\d{6}\.jsonl$/);
	my @ids = map { $_->{record}{id} } records_of(@b);
	my %n;
	$n{$_}++ foreach @ids;
	my @twice = grep { $n{$_} > 1 } sort { $a <=> $b } keys %n;
	ok(!@twice, 'INCREMENTAL: no row sent twice') or diag "twice: @twice";
	is_deeply([ sort { $a <=> $b } keys %n ], [ split /\n/, sql(q{SELECT id FROM inc_t ORDER BY id}) ],
		'INCREMENTAL: every row sent');
}

# the role that read egress_streams under 0.1 still does
($ret, $out, $err) = query_as($node, 'etl', q{SELECT name, state FROM egress_streams ORDER BY name});
is($ret, 0, 'etl still reads egress_streams after the update') or diag $err;
is($out, 'full|synced', '... and sees its stream');
is(sql(q{SELECT has_function_privilege('etl', 'egress_stream_activity()', 'EXECUTE')}), 't',
	'etl got EXECUTE on egress_stream_activity() (the view calls it)');
is(sql(q{SELECT has_function_privilege('public', 'egress_stream_activity()', 'EXECUTE')}), 'f',
	'... which PUBLIC no longer has');
is(sql(q{SELECT has_table_privilege('etl', 'egress_streams', 'SELECT')}), 't', 'etl keeps SELECT on egress_streams');

# the workers use the new catalog without a restart: a stream added now is
# backfilled in chunks
sql(q{
CREATE TABLE cdc_new (id integer PRIMARY KEY, v text);
INSERT INTO cdc_new SELECT g, 'n' || g FROM generate_series(1, 100) g;
SELECT egress_add_stream('cdc_new', 'cdc_new', 'LOG_BASED', 'dp', options => '{"chunk_rows": 10}');
});
wait_stream_state($node, 'cdc_new', 'streaming');
is(sql(q{SELECT backfill_chunks >= 10 AND backfill_rows = 100 FROM egress_streams WHERE name = 'cdc_new'}), 't',
	'a stream added after the update is backfilled in chunks (columns of 0.2 in use)')
  or diag sql(q{SELECT backfill_chunks, backfill_rows FROM egress_streams WHERE name = 'cdc_new'});
compare_states(mirror($pdir, 'public-cdc_new', ['id']), table_state($node, 'cdc_new', ['id']), 'cdc_new');
$log = slurp_file($node->logfile, $log_update);
like($log, qr/pg_egress: the extension's objects in database "postgres" are now at the library's version/,
	'the database worker notes the update');
unlike($log, qr/older than the library/, 'and no longer warns');

$log = slurp_file($node->logfile, 0);
unlike($log, qr/pg_egress[^\n]*(exited with exit code|terminated by signal)/, 'no pg_egress worker exited with an error');
no_crash_since($node, 0, 'no server process crashed');

# ---------------------------------------------------------------------------
# 3. Upgraded catalog == fresh catalog
# ---------------------------------------------------------------------------

sub ext_dump
{
	my ($db) = @_;
	my ($stdout, $stderr);
	IPC::Run::run [ $node->installed_command('pg_dump'), '--schema-only', '--binary-upgrade', '-d', $node->connstr($db) ],
	  '>', \$stdout, '2>', \$stderr
	  or die "pg_dump $db failed: $stderr";
	my @keep;
	foreach my $line (split /\n/, $stdout)
	{
		# object identities of this database, not definitions
		next if $line =~ /binary_upgrade_set_next_|binary_upgrade_set_type_oids|pg_catalog\.setval/;
		# columns added by ALTER TABLE ... DEFAULT keep their default for
		# existing rows as a "missing value": storage, not definition
		next if $line =~ /binary_upgrade_set_missing_value/;
		next if $line =~ /^-- set missing value\.$/;
		# the relations' transaction horizons, toast tables by oid
		next if $line =~ /relfrozenxid|^WHERE oid = '\d+';$/;
		# a random key per dump
		next if $line =~ /^\\(un)?restrict /;
		next if $line =~ /^-- (Dumped|Started|Completed)/;
		push @keep, $line;
	}
	my $text = join("\n", @keep) . "\n";
	$text =~ s/\n{3,}/\n\n/g;
	return $text;
}
sql(q{CREATE DATABASE fresh});
sql(q{CREATE DATABASE up});
$node->safe_psql('fresh', q{CREATE EXTENSION pg_egress});
$node->safe_psql('up', q{CREATE EXTENSION pg_egress VERSION '0.1'});
$node->safe_psql('up', q{ALTER EXTENSION pg_egress UPDATE});
is($node->safe_psql('up', q{SELECT extversion FROM pg_extension WHERE extname = 'pg_egress'}), '0.2', 'database up updated');
my $fresh = ext_dump('fresh');
my $up = ext_dump('up');
like($fresh, qr/ALTER EXTENSION pg_egress ADD TABLE egress\.stream_state/, 'the dump lists the extension\'s member objects');
if ($up eq $fresh)
{
	pass('the catalog upgraded from 0.1 equals a fresh 0.2 install (schema-only binary-upgrade dumps)');
}
else
{
	my $dir = $node->basedir;
	PostgreSQL::Test::Utils::append_to_file("$dir/fresh.sql", $fresh);
	PostgreSQL::Test::Utils::append_to_file("$dir/up.sql", $up);
	my ($d) = run_command([ 'diff', '-u', "$dir/fresh.sql", "$dir/up.sql" ]);
	fail('the catalog upgraded from 0.1 equals a fresh 0.2 install (schema-only binary-upgrade dumps)');
	diag substr($d, 0, 6000);
}

done_testing();
