
# Exactly-once into a postgres:// destination across crashes (issue 15).
#
# A source cluster streams, LOG_BASED, a keyed table k and a keyless table
# nk (primary_key_required false: appended) into a second cluster (the
# target, on 127.0.0.1, role "loader" with a SCRAM password), under a
# steady workload of INSERT / UPDATE / key-changing UPDATE / DELETE (k has
# a TOASTed column the UPDATEs leave alone: their rows are read again,
# deferred records whose positions are those of their place).  While
# batches are applied:
#   1. kill -9 of the CDC worker with a target transaction open: the
#      loader is held mid-apply by a lock the test takes on the target
#      table nk, so the kill lands inside the batch's transaction, which
#      the target rolls back; its changes are decoded and sent again;
#   2. kill -9 of the CDC worker after the target committed a round of a
#      backlog the source has not recorded as delivered (the test holds
#      the source's bookmark rows, where the worker then waits): the
#      changes are sent again, in batches cut differently, and the target
#      must skip what it holds by position;
#   3. kill -9 of the target's postmaster with a batch transaction open,
#      and a restart.
# (the TOASTed-row re-read may drop an UPDATE of a row deleted meanwhile:
# its soft-deleted row keeps older values; values of deleted rows are
# compared for rows without a TOASTed value)
# Then the target must equal the source exactly:
#   - k: the rows with _sdc_deleted_at NULL are the source's rows, every
#     column; the rows with _sdc_deleted_at set are exactly the keys the
#     source deleted (logged there by a trigger, a key-changing UPDATE
#     deletes the old key), _sdc_deleted_at = the commit time of the
#     deleting transaction, with the values they had when deleted;
#   - nk: the source's rows, each once (no duplicate, none missing);
#   - a trigger on the target tables logs every row the loader writes
#     (committed writes only): per key of k, the values applied are
#     strictly newer each time (a change applied twice, or an older one
#     after a newer one, breaks it), and no nk row was written twice;
#   - _sdc_extracted_at and _sdc_batched_at set on every row.
# Then FULL_TABLE: a kill -9 of the sync worker mid-sync (loader held by a
# lock again); the table ends equal to the source with no row soft-deleted;
# a second sync after deletes soft-deletes exactly the deleted keys.
#
# No sleeps: every wait polls with a deadline.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use EgressTest;

my $PASSWORD = 'Lo4der-s3cret';
my $BATCH = 50;

# ---------------------------------------------------------------------------
# The target cluster: 127.0.0.1 only over TCP, SCRAM for loader.
# ---------------------------------------------------------------------------
my $target = PostgreSQL::Test::Cluster->new('pgt_target');
$target->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$target->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
max_connections = 30
});
$target->append_conf('pg_hba.conf', "host all loader 127.0.0.1/32 scram-sha-256\n");
$target->start;
$target->safe_psql('postgres', qq{
CREATE ROLE loader LOGIN PASSWORD '$PASSWORD';
CREATE DATABASE analytics OWNER loader;
});

# the target answers (after a crash it may be restarting)
sub target_up
{
	return poll_until('the target to answer', 120,
		sub { ($target->psql('analytics', 'SELECT 1'))[0] == 0 });
}

sub tq
{
	my ($sql) = @_;
	target_up();
	return $target->safe_psql('analytics', $sql);
}

# ($ok, $out) of a query on the target; no failure when it does not answer
sub tq_try
{
	my ($sql) = @_;
	my ($ret, $out) = $target->psql('analytics', $sql);
	return ($ret == 0, $out);
}

# ---------------------------------------------------------------------------
# The source cluster.
# ---------------------------------------------------------------------------
my $node = create_node('pgt_source', cdc => 1);

sub sq { server_up($node); return $node->safe_psql('postgres', $_[0]); }

sq(q{
CREATE SEQUENCE kid START 2001;
CREATE SEQUENCE vseq START 100000;
CREATE SEQUENCE gseq START 1001;
-- b: TOASTed out of line in some rows; UPDATEs leave it alone, so their
-- changes lack it and the rows are read again (deferred records)
CREATE TABLE k (id integer PRIMARY KEY, v integer NOT NULL, t text, b text);
ALTER TABLE k ALTER b SET STORAGE EXTERNAL;
INSERT INTO k SELECT i, i, md5(i::text), CASE WHEN i % 4 = 0 THEN repeat(md5(i::text), 100) END
	FROM generate_series(1, 2000) i;
CREATE TABLE nk (g bigint NOT NULL, v integer);
ALTER TABLE nk REPLICA IDENTITY FULL;
INSERT INTO nk SELECT i, i % 97 FROM generate_series(1, 1000) i;

-- every key the source deletes (DELETE, or the old key of an UPDATE that
-- changes it), with its values then; xmin gives the deleting transaction
CREATE TABLE k_deleted (id integer PRIMARY KEY, v integer, t text, b text);
CREATE FUNCTION log_k_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO k_deleted VALUES (OLD.id, OLD.v, OLD.t, OLD.b);
	RETURN NULL;
END
$$;
CREATE TRIGGER k_del AFTER DELETE ON k FOR EACH ROW EXECUTE FUNCTION log_k_deleted();
CREATE TRIGGER k_key AFTER UPDATE ON k FOR EACH ROW
	WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION log_k_deleted();

CREATE TABLE f (id integer PRIMARY KEY, v integer NOT NULL, t text);
INSERT INTO f SELECT i, i * 3, repeat(md5(i::text), 2) FROM generate_series(1, 100000) i;
});

my $url = 'postgres://loader@127.0.0.1:' . $target->port . '/analytics';
sq('SELECT egress_add_destination(' . sql_quote('wh') . ', ' . sql_quote($url) . ', '
	  . sql_quote(qq({"password": "$PASSWORD", "default_target_schema": "raw", "add_metadata_columns": true, "primary_key_required": false, "batch_size_rows": $BATCH}))
	  . '::jsonb)');
# small batches: the destination's batch_size_rows
sq(q{SELECT egress_add_stream('sk', 'k', method => 'LOG_BASED', destination => 'wh')});
sq(q{SELECT egress_add_stream('snk', 'nk', method => 'LOG_BASED', destination => 'wh')});
wait_stream_state($node, 'sk', 'streaming', 180);
wait_stream_state($node, 'snk', 'streaming', 180);

sub tcount
{
	my ($table, $where) = @_;
	my ($ok, $out) = tq_try("SELECT count(*) FROM raw.$table" . ($where ? " WHERE $where" : ''));
	return $ok ? $out : -1;
}

ok(poll_until('the initial syncs in the target', 120,
		sub { tcount('k') == 2000 && tcount('nk') == 1000 }),
	'the initial syncs are in the target (2000 + 1000 rows)')
  or diag 'target counts: k ' . tcount('k') . ', nk ' . tcount('nk');

# One change through CDC (the first positioned record activates the synced
# version), then the target's write log: the trigger sees every row the
# loader writes in a transaction that commits.
sq(q{UPDATE k SET v = nextval('vseq') WHERE id = 1; INSERT INTO nk VALUES (nextval('gseq'), 0);});
ok(poll_until('the first change in the target', 120, sub { tcount('nk') == 1001 }),
	'a change reaches the target through CDC');
tq(q{
CREATE TABLE public.wlog_k (n bigserial PRIMARY KEY, id integer, v integer, deleted boolean);
CREATE TABLE public.wlog_nk (n bigserial PRIMARY KEY, g bigint);
CREATE FUNCTION public.wlog_k() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO public.wlog_k (id, v, deleted) VALUES (NEW.id, NEW.v, NEW._sdc_deleted_at IS NOT NULL);
	RETURN NULL;
END
$$;
CREATE FUNCTION public.wlog_nk() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
	SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	INSERT INTO public.wlog_nk (g) VALUES (NEW.g);
	RETURN NULL;
END
$$;
CREATE TRIGGER wlog AFTER INSERT OR UPDATE ON raw.k FOR EACH ROW EXECUTE FUNCTION public.wlog_k();
CREATE TRIGGER wlog AFTER INSERT OR UPDATE ON raw.nk FOR EACH ROW EXECUTE FUNCTION public.wlog_nk();
-- also if the loader runs with session_replication_role = replica
ALTER TABLE raw.k ENABLE ALWAYS TRIGGER wlog;
ALTER TABLE raw.nk ENABLE ALWAYS TRIGGER wlog;
});

# ---------------------------------------------------------------------------
# The workload: short bounded pgbench runs in a loop (the source's crashes
# end its connections) until told to stop.  v comes from one sequence and
# one client writes: per key, a later change has a larger v.
# ---------------------------------------------------------------------------
my $PICK = q{(SELECT id FROM k WHERE id >= (SELECT (random() * last_value)::integer FROM kid) ORDER BY id LIMIT 1)};
my $script_file = write_file($node->basedir . '/writer.pgbench', <<"PGB");
BEGIN;
INSERT INTO k (id, v, t, b) VALUES (nextval('kid'), nextval('vseq'), md5(random()::text) || E' \\t\\\\"\\n''x', CASE WHEN random() < 0.4 THEN repeat(md5(random()::text), 100) END);
UPDATE k SET v = nextval('vseq'), t = md5(random()::text) WHERE id = $PICK;
INSERT INTO nk (g, v) SELECT nextval('gseq'), i FROM generate_series(1, 3) i;
COMMIT;
DELETE FROM k WHERE id = $PICK;
UPDATE k SET id = nextval('kid'), v = nextval('vseq') WHERE id = $PICK;
INSERT INTO nk (g, v) VALUES (nextval('gseq'), 0);
PGB
my $stop = $node->basedir . '/stop_writer';
my $wlog = $node->basedir . '/writer.log';
my $pgbench = $node->installed_command('pgbench');
my $loop = qq{
runs=0; ok=0
for i in \$(seq 1 2000); do
	[ -e '$stop' ] && break
	runs=\$((runs + 1))
	if '$pgbench' -n -f '$script_file' -c 1 -t 50 -R 20 "\$1" >>'$wlog' 2>&1; then ok=\$((ok + 1)); else sleep 0.3; fi
done
echo "runs=\$runs ok=\$ok" >>'$wlog'
};
my $writer = IPC::Run::start([ 'bash', '-c', $loop, 'writer', $node->connstr('postgres') ],
	'<', '/dev/null', '>', '/dev/null', '2>', '/dev/null');
# a test that dies leaves no writer behind
END
{
	if ($writer)
	{
		write_file($stop, '') unless -e $stop;
		eval { $writer->kill_kill(grace => 5); };
	}
}

# ---------------------------------------------------------------------------
# Helpers for the crashes.
# ---------------------------------------------------------------------------

# the latest state row write in the target ('' when none or no answer)
sub state_mark
{
	my ($ok, $out) = tq_try('SELECT max(updated_at)::text || count(*) FROM raw._pg_egress_state');
	return $ok ? $out : '';
}

# waits until the target commits another batch
sub wait_target_progress
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $mark = state_mark();
	ok(poll_until("a batch committed in the target ($what)", 180,
			sub { my $m = state_mark(); $m ne '' && $m ne $mark }),
		"$what: the target commits batches again");
}

# a loader session waits for a lock: held mid-apply, its transaction open
sub loader_waiting
{
	my ($ok, $out) = tq_try(q{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
		WHERE a.usename = 'loader' AND NOT l.granted AND a.xact_start IS NOT NULL});
	return $ok && $out > 0;
}

# a session on the target holding a lock that the loader's writes to
# raw.$table wait for
sub hold_table
{
	my ($table) = @_;
	my $bg = $target->background_psql('analytics', on_error_stop => 0);
	$bg->query_safe('BEGIN');
	$bg->query_safe("LOCK TABLE raw.$table IN SHARE MODE");
	return $bg;
}

# another session asks for the same lock, and waits behind the loader
sub queue_hold
{
	my ($table) = @_;
	my $bg = $target->background_psql('analytics', on_error_stop => 0);
	$bg->query_until(qr/queued/, "\\echo queued\nBEGIN;\nLOCK TABLE raw.$table IN SHARE MODE;\n");
	poll_until("a second session queued for raw.$table", 60, sub {
		my ($ok, $out) = tq_try(qq{SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE NOT l.granted AND a.usename <> 'loader' AND l.relation = 'raw.$table'::regclass});
		return $ok && $out > 0;
	});
	return $bg;
}

sub release
{
	my ($bg) = @_;
	eval { $bg->query('COMMIT'); };
	eval { $bg->quit; };
	return;
}

sub lsn_of_position
{
	my ($p) = @_;
	return undef unless defined $p && $p =~ /^([0-9A-F]{16})-\d{10}$/;
	return lsn_int($1);
}

# Is the target ahead of the source's persisted bookmarks (a kill now makes
# the source send changes the target already applied)?
my $ahead_kills = 0;
my @bad_positions;
sub target_ahead
{
	my ($ok, $pos) = tq_try(q{SELECT string_agg(position, ' ' ORDER BY position) FROM raw._pg_egress_state WHERE position IS NOT NULL});
	return 0 unless $ok && $pos ne '';
	my @p = split / /, $pos;
	push @bad_positions, grep { !defined lsn_of_position($_) } @p;
	my $max = lsn_of_position($p[-1]) // 0;
	my ($ret, $persisted) = $node->psql('postgres', q{SELECT min(ss.confirmed_lsn) FROM egress.stream_state ss JOIN egress.stream s ON s.id = ss.stream_id WHERE s.name IN ('sk', 'snk')});
	return 0 unless $ret == 0 && $persisted ne '';
	note "target position $p[-1], source bookmarks persisted up to $persisted";
	return $max > lsn_int($persisted);
}

sub kill_cdc_worker
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @pids = cdc_worker_pids($node);
	is(scalar(@pids), 1, "$what: one CDC worker") or diag "pids: @pids";
	my $pid = $pids[0];
	return unless $pid;
	$ahead_kills++ if target_ahead();
	my $offset = -s $node->logfile;
	ok(kill('KILL', $pid), "$what: sent SIGKILL to the CDC worker $pid");
	ok(poll_until('the CDC worker gone', 60,
			sub { $node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $offset) }),
		"$what: the postmaster saw the CDC worker die of signal 9");
	ok(poll_until('a new CDC worker', 120,
			sub { my @p = cdc_worker_pids($node); @p == 1 && $p[0] != $pid }),
		"$what: a new CDC worker runs");
	return;
}

# wait until the workload has written $n more nk rows (a backlog grows)
sub wait_backlog
{
	my ($n) = @_;
	my $base;
	poll_until('the source answers', 60, sub { my ($r, $o) = $node->psql('postgres', 'SELECT count(*) FROM nk'); $base = $o if $r == 0; $r == 0 });
	return poll_until("$n more source rows", 120,
		sub { my ($r, $o) = $node->psql('postgres', 'SELECT count(*) FROM nk'); $r == 0 && $o >= $base + $n });
}

wait_target_progress('under the workload');

# 1. kill -9 of the CDC worker mid-apply, three times
for my $i (1 .. 3)
{
	my $what = "kill -9 mid-apply #$i";
	my $bg = hold_table('nk');
	ok(poll_until('the loader held mid-apply', 120, \&loader_waiting),
		"$what: a loader transaction waits mid-apply");
	wait_backlog(40 * $i);
	kill_cdc_worker($what);
	release($bg);
	wait_target_progress("after $what");
}

# 2. kill -9 of the CDC worker after the target committed a batch whose
#    changes the source has not recorded as delivered: the test holds the
#    loader (a backlog grows), then locks the source's bookmark rows
#    (egress.stream_state) and lets the loader go; the worker commits the
#    batch in the target, then waits to record its bookmarks: killed
#    there, it sends the batch again (cut differently: decoding goes on
#    into the backlog) and the target must skip what it holds.
for my $i (1 .. 3)
{
	my $what = "kill -9 after a commit #$i";
	my $bg = hold_table('nk');
	ok(poll_until('the loader held', 120, \&loader_waiting), "$what: a loader transaction waits");
	wait_backlog(100);
	server_up($node);
	my $bookmarks = $node->background_psql('postgres', on_error_stop => 0);
	$bookmarks->query_safe('BEGIN');
	$bookmarks->query_safe('SELECT stream_id FROM egress.stream_state FOR UPDATE');
	my $mark = state_mark();
	release($bg);
	ok( poll_until(
			'a batch committed, the worker waiting to record it', 120,
			sub {
				my $m = state_mark();
				my ($r, $w) = $node->psql('postgres',
					q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc' AND wait_event_type = 'Lock'});
				return $m ne '' && $m ne $mark && $r == 0 && $w > 0 && target_ahead();
			}),
		"$what: the target committed changes the source has not recorded as delivered");
	kill_cdc_worker($what);
	eval { $bookmarks->quit; };
	wait_target_progress("after $what");
}
cmp_ok($ahead_kills, '>=', 3,
	"kills that left the target ahead of the source's bookmarks: $ahead_kills");

# 3. kill -9 of the target's postmaster with a batch transaction open
for my $i (1 .. 2)
{
	my $what = "target kill -9 #$i";
	my $bg = hold_table('nk');
	ok(poll_until('the loader held mid-apply', 120, \&loader_waiting),
		"$what: a loader transaction waits mid-apply");
	wait_backlog(30);
	# the postmaster and every process of the target
	my @procs = split /\n/, $target->safe_psql('analytics',
		'SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()');
	push @procs, (split /\n/, slurp_file($target->data_dir . '/postmaster.pid'))[0];
	$target->kill9;
	eval { $bg->quit; };
	# orphaned processes leave after the postmaster: start once they are gone
	ok(poll_until('the target postmaster and its processes gone', 60,
			sub { !grep { kill(0, $_) } @procs }),
		"$what: the target's processes are gone");
	ok($target->start(fail_ok => 1), "$what: the target restarted");
	wait_target_progress("after $what");
}

# stop the workload; the source delivers everything
write_file($stop, '');
eval { $writer->finish; };
{
	my $w = slurp_file($wlog);
	my %why;
	$why{$_}++ for map { s/^.*?(ERROR|FATAL|error):\s*//r } grep { /ERROR|FATAL|error:/ } split /\n/, $w;
	diag 'writer: ' . ($w =~ /(runs=\d+ ok=\d+)/ ? $1 : '?') . '; failures: '
	  . join('; ', map { "$why{$_} x $_" } grep { defined } (sort { $why{$b} <=> $why{$a} } keys %why)[0 .. 4]);
}
wait_caught_up($node, 'sk');
wait_caught_up($node, 'snk');

# ---------------------------------------------------------------------------
# The checks.
# ---------------------------------------------------------------------------
my $HEX = q{coalesce(encode(convert_to(t, 'UTF8'), 'hex'), '-') || ' ' || coalesce(md5(b), '-')};
my $src_live = sq("SELECT string_agg(id || ' ' || v || ' ' || $HEX, E'\\n' ORDER BY id) FROM k");
my $tgt_live_sql = "SELECT string_agg(id || ' ' || coalesce(v::text, '-') || ' ' || $HEX, E'\\n' ORDER BY id) FROM raw.k WHERE _sdc_deleted_at IS NULL";
my $src_nk = sq(q{SELECT string_agg(g || ' ' || coalesce(v::text, '-'), E'\n' ORDER BY g) FROM nk});
my $tgt_nk_sql = q{SELECT string_agg(g || ' ' || coalesce(v::text, '-'), E'\n' ORDER BY g) FROM raw.nk};

# the target catches up (its last batches may still be applied)
poll_until('the target equals the source', 180, sub {
	my ($ok1, $a) = tq_try($tgt_live_sql);
	my ($ok2, $b) = tq_try($tgt_nk_sql);
	return $ok1 && $ok2 && $a eq $src_live && $b eq $src_nk;
});

sub same_lines
{
	my ($got, $want, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my @g = split /\n/, $got;
	my @w = split /\n/, $want;
	my (%g, %w);
	$g{$_}++ for @g;
	$w{$_}++ for @w;
	my @missing = grep { ($g{$_} // 0) < $w{$_} } sort keys %w;
	my @extra = grep { ($w{$_} // 0) < $g{$_} } sort keys %g;
	ok(!@missing && !@extra && $got eq $want, "$label (" . scalar(@w) . ' rows)')
	  or diag "$label: missing " . scalar(@missing) . ': ' . join('; ', @missing[0 .. ($#missing < 4 ? $#missing : 4)])
	  . "\nextra or twice " . scalar(@extra) . ': ' . join('; ', @extra[0 .. ($#extra < 4 ? $#extra : 4)]);
	return;
}

same_lines(tq($tgt_live_sql), $src_live, 'k: the live target rows are the source rows, every column');

my $ndel = sq('SELECT count(*) FROM k_deleted');
cmp_ok($ndel, '>', 20, "the workload deleted keys ($ndel)");
same_lines(
	tq(q{SELECT string_agg(id || ' ' || to_char(_sdc_deleted_at, 'YYYY-MM-DD HH24:MI:SS.US'), E'\n' ORDER BY id)
		FROM raw.k WHERE _sdc_deleted_at IS NOT NULL}),
	sq(q{SELECT string_agg(id || ' ' || to_char(pg_xact_commit_timestamp(xmin) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), E'\n' ORDER BY id)
		FROM k_deleted}),
	'k: the soft-deleted target rows are the deleted keys, _sdc_deleted_at the commit time of the deletion');

# A deleted row keeps the values it had when it was deleted.  Not checked
# for rows with a TOASTed b: an UPDATE whose row is read again (b was not
# in the WAL) after the row was deleted is dropped (the DELETE carries the
# row's fate), so the target keeps the values before that UPDATE.
my $plain_ids = sq(q{SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM k_deleted WHERE b IS NULL});
same_lines(
	tq(qq{SELECT string_agg(id || ' ' || coalesce(v::text, '-') || ' ' || $HEX, E'\\n' ORDER BY id)
		FROM raw.k WHERE _sdc_deleted_at IS NOT NULL AND id = ANY ('{$plain_ids}'::integer[])}),
	sq(qq{SELECT string_agg(id || ' ' || v || ' ' || $HEX, E'\\n' ORDER BY id) FROM k_deleted WHERE b IS NULL}),
	'k: soft-deleted rows keep their last values (rows without a TOASTed value)');
{
	my %src = map { /^(\d+) (.*)$/ ? ($1 => $2) : () } split /\n/,
	  sq(qq{SELECT string_agg(id || ' ' || v || ' ' || $HEX, E'\\n') FROM k_deleted WHERE b IS NOT NULL});
	my %tgt = map { /^(\d+) (.*)$/ ? ($1 => $2) : () } split /\n/,
	  tq(qq{SELECT string_agg(id || ' ' || coalesce(v::text, '-') || ' ' || $HEX, E'\\n') FROM raw.k
			WHERE _sdc_deleted_at IS NOT NULL AND NOT id = ANY ('{$plain_ids}'::integer[])});
	my $older = grep { ($tgt{$_} // '') ne $src{$_} } keys %src;
	diag "deleted rows with a TOASTed value that keep values older than their last UPDATE's: $older of " . scalar(keys %src);
}

same_lines(tq($tgt_nk_sql), $src_nk, 'nk (no key): the target rows are the source rows');
is(tq('SELECT count(*) - count(DISTINCT g) FROM raw.nk'), '0', 'nk: no row twice');
is(tq('SELECT count(*) FROM raw.nk WHERE _sdc_deleted_at IS NOT NULL'), '0', 'nk: no row deleted');

foreach my $t ('k', 'nk')
{
	is(tq("SELECT count(*) FROM raw.$t WHERE _sdc_extracted_at IS NULL OR _sdc_batched_at IS NULL"),
		'0', "$t: _sdc_extracted_at and _sdc_batched_at set on every row");
}

# what the loader wrote, as the target's trigger logged it
my $writes = tq('SELECT count(*) FROM public.wlog_k WHERE NOT deleted');
cmp_ok($writes, '>', 100, "the write log saw the loader's writes of k ($writes)");
is(tq(q{SELECT count(*) FROM (SELECT v, lag(v) OVER (PARTITION BY id ORDER BY n) AS pv
		FROM public.wlog_k WHERE NOT deleted) s WHERE v <= pv}),
	'0', 'k: per key, every write applied a newer change (none applied twice, none older after newer)')
  or diag tq(q{SELECT string_agg(id || ':' || v || '<=' || pv, ' ') FROM (SELECT id, v, lag(v) OVER (PARTITION BY id ORDER BY n) AS pv
		FROM public.wlog_k WHERE NOT deleted) s WHERE v <= pv LIMIT 10});
is(tq('SELECT count(*) FROM (SELECT g FROM public.wlog_nk GROUP BY g HAVING count(*) > 1) s'),
	'0', 'nk: no row written twice');
is_deeply(\@bad_positions, [], 'the state rows hold positions of the documented form');
cmp_ok(tq('SELECT count(*) FROM raw._pg_egress_state'), '>=', 2, 'a state row per stream');

# ---------------------------------------------------------------------------
# FULL_TABLE: kill -9 of the sync worker mid-sync.
# ---------------------------------------------------------------------------
sq(q{SELECT egress_add_stream('fs', 'f', 'FULL_TABLE', 'wh', options => '{"batch_max_rows": 2000}')});
ok(poll_until('raw.f has rows', 180, sub { tcount('f') > 0 }), 'FULL_TABLE: the first rows are in the target');
{
	my $bg = hold_table('f');
	my $held = poll_until('the loader held mid-sync', 60, \&loader_waiting);
	my $mid = tcount('f');
	my $state = stream_row_wait($node, 'fs')->{state} // '?';
	ok($held && $mid < 100000 && $state ne 'synced',
		"FULL_TABLE: a loader transaction waits mid-sync ($mid rows committed, state $state)");
	my ($pid) = backend_pids($node, 'pg_egress sync');
	ok(defined $pid && kill('KILL', $pid), 'FULL_TABLE: sent SIGKILL to the sync worker');
	release($bg);
}
server_up($node);
wait_stream_state($node, 'fs', 'synced', 240);

my $HEXF = q{coalesce(encode(convert_to(t, 'UTF8'), 'hex'), '-')};
my $src_f_sql = "SELECT string_agg(id || ' ' || v || ' ' || $HEXF, E'\\n' ORDER BY id) FROM f";
my $tgt_f_sql = "SELECT string_agg(id || ' ' || coalesce(v::text, '-') || ' ' || $HEXF, E'\\n' ORDER BY id) FROM raw.f WHERE _sdc_deleted_at IS NULL";
same_lines(tq($tgt_f_sql), sq($src_f_sql), 'FULL_TABLE after kill -9 mid-sync: the target table equals the source');
is(tq('SELECT count(*) FROM raw.f WHERE _sdc_deleted_at IS NOT NULL'), '0', 'FULL_TABLE: no row soft-deleted');
is(tq(q{SELECT count(*) FROM pg_tables WHERE schemaname = 'raw' AND tablename LIKE 'f\_\_v%'}), '0',
	'FULL_TABLE: no shadow table left');

# a second sync after deletes and updates: the deleted keys are soft-deleted
my $finished = stream_row_wait($node, 'fs')->{sync_finished_at} // '';
sq(q{DELETE FROM f WHERE id % 1000 = 7; UPDATE f SET v = -v WHERE id % 1000 = 8; SELECT egress_resync_stream('fs');});
ok(poll_until('the second sync', 240, sub {
	my $r = stream_row_wait($node, 'fs');
	return ($r->{state} // '') eq 'synced' && ($r->{sync_finished_at} // '') ne $finished;
}), 'FULL_TABLE: a second sync ran');
same_lines(tq($tgt_f_sql), sq($src_f_sql), 'FULL_TABLE second sync: the live target rows equal the source');
is(tq(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM raw.f WHERE _sdc_deleted_at IS NOT NULL}),
	sq(q{SELECT string_agg(i::text, ',' ORDER BY i) FROM generate_series(1, 100000) i WHERE i % 1000 = 7}),
	'FULL_TABLE second sync: exactly the deleted keys are soft-deleted');

$node->stop;
$target->stop;
done_testing();
