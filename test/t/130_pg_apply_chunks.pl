
# postgres:// destinations, LOG_BASED: the apply paths of a batch of
# changes of one stream with a key (src/sink/pg_apply_early.c, "Early load of
# changes in chunks"): the batch's first rows streamed straight into the
# table (COPY under SAVEPOINT pg_egress_chunk), the fallback through the
# staging table and MERGE when the table has a key of the chunk (23505),
# the batches after it in chunks (stream_skip), a key twice in a streamed
# chunk, deletes cutting the stream (soft and hard deletes), a table
# without a unique index on the key (never streamed), the target stopped
# mid-stream and the CDC worker killed after a batch was committed.
#
# Each case ends with the target table equal to the source table row by
# row on every column, deleted keys gone (hard_delete) or with
# _sdc_deleted_at set (soft), one row per key, and the stream's position in
# _pg_egress_state advanced.  No sleeps: every wait polls with a deadline.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

# rows per batch: each batch's COPY text (rows of ~350 bytes) is well over
# the 256 kB of a chunk
my $BATCH = 2000;
my $WIDE = 300;

my $src = create_node('src', cdc => 1,
	conf => "listen_addresses = '127.0.0.1'\nmax_worker_processes = 24\npg_egress.max_workers = 16\n");

# the target: role loader (password secret-pw), database wh it owns
my ($tgt) = create_target_node('tgt', password => 'secret-pw', dbname => 'wh', conf => "log_statement = 'all'");
my $port = $tgt->port;

# the target answers (it may be restarting)
sub tgt_up
{
	return poll_until('the target to answer', 60,
		sub { ($tgt->psql('wh', 'SELECT 1'))[0] == 0 });
}

sub tq
{
	my ($sql) = @_;
	tgt_up();
	return $tgt->safe_psql('wh', $sql);
}

# ($ok, $out) of a query on the target; no failure when it does not answer
sub tq_try
{
	my ($sql) = @_;
	my ($ret, $out) = $tgt->psql('wh', $sql);
	return ($ret == 0, $out);
}

sub sq { server_up($src); return $src->safe_psql('postgres', $_[0]); }

# two destinations: soft deletes into schema raw, hard deletes into rawh
for my $d (['soft', 'raw', 'false'], ['hard', 'rawh', 'true'], ['third', 'rawc', 'false'])
{
	my ($name, $schema, $hard) = @$d;
	sq(qq{SELECT egress_add_destination('$name', 'postgres://loader\@127.0.0.1:$port/wh',
	    '{"password": "secret-pw", "default_target_schema": "$schema", "add_metadata_columns": true,
	      "hard_delete": $hard, "batch_size_rows": $BATCH}')});
}

# case 5: the target table made by hand before the stream starts, the
# right columns but no primary key nor unique index on id
tq(q{
SET ROLE loader;
CREATE SCHEMA raw;
CREATE TABLE raw.t5 (id bigint, v text, n integer,
	_sdc_extracted_at timestamp, _sdc_batched_at timestamp, _sdc_deleted_at timestamp);
CREATE INDEX ON raw.t5 (id);
});

# the source tables: t3, t4 have a twin for each destination
my %dest_of = (t1 => 'soft', t2 => 'soft', t3s => 'soft', t3h => 'hard',
	t4s => 'soft', t4h => 'hard', t5 => 'soft', t6 => 'soft', t7s => 'soft', t7h => 'hard', t8 => 'third');
for my $t (sort keys %dest_of)
{
	sq(qq{CREATE TABLE $t (id bigint PRIMARY KEY, v text, n integer);
INSERT INTO $t SELECT i, 'init' || i, i FROM generate_series(1, 10) i;});
}
for my $t (sort keys %dest_of)
{
	sq(qq{SELECT egress_add_stream('$t', 'public.$t', 'LOG_BASED', '$dest_of{$t}')});
}
for my $t (sort keys %dest_of)
{
	wait_stream_state($src, $t, 'streaming', 120);
}

sub schema_of { return { soft => 'raw', hard => 'rawh', third => 'rawc' }->{ $dest_of{ $_[0] } }; }

# every column of every live row, as one md5 and a count
sub src_rows
{
	my ($t) = @_;
	return sq(qq{SELECT count(*) || '/' || coalesce(md5(string_agg(id || ':' || coalesce(v, 'N') || ':' || coalesce(n::text, 'N'), ',' ORDER BY id)), '')
		FROM $t});
}

sub tgt_rows_sql
{
	my ($t) = @_;
	my $s = schema_of($t);
	return qq{SELECT count(*) || '/' || coalesce(md5(string_agg(id || ':' || coalesce(v, 'N') || ':' || coalesce(n::text, 'N'), ',' ORDER BY id)), '')
		FROM $s.$t WHERE _sdc_deleted_at IS NULL};
}

sub same_rows
{
	my ($t) = @_;
	my $want = src_rows($t);
	my ($ok, $got) = tq_try(tgt_rows_sql($t));
	return $ok && $got eq $want;
}

sub position_of
{
	my ($t) = @_;
	my $s = schema_of($t);
	return tq(qq{SELECT coalesce(max(position), '') FROM $s._pg_egress_state WHERE destination = '$s.$t'});
}

# the checks every case ends with; $deleted: the keys the source deleted
# in the case (soft: their rows must have _sdc_deleted_at)
sub check_table
{
	my ($what, $t, $pos_before, $deleted) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $s = schema_of($t);
	my $ok = poll_until("$what: $t equals the source", 90, sub { same_rows($t) });
	ok($ok, "$what: $s.$t equals the source on every column");
	if (!$ok)
	{
		diag 'source ' . src_rows($t) . ', target ' . tq(tgt_rows_sql($t));
		diag 'stream row: ' . explain(stream_row($src, $t));
	}
	is(tq(qq{SELECT count(*) - count(DISTINCT id) FROM $s.$t}), '0', "$what: one row per key");
	if ($deleted && @$deleted)
	{
		my $list = join(',', @$deleted);
		if ($dest_of{$t} eq 'hard')
		{
			is(tq(qq{SELECT count(*) FROM $s.$t WHERE id IN ($list) OR _sdc_deleted_at IS NOT NULL}),
				'0', "$what: hard delete: the deleted keys are gone");
		}
		else
		{
			my $n = scalar @$deleted;
			is(tq(qq{SELECT count(*) FROM $s.$t WHERE id IN ($list) AND _sdc_deleted_at IS NOT NULL}),
				"$n", "$what: soft delete: the deleted keys have _sdc_deleted_at");
			is(tq(qq{SELECT count(*) FROM $s.$t WHERE _sdc_deleted_at IS NOT NULL AND id NOT IN ($list)}),
				'0', "$what: soft delete: no other row has _sdc_deleted_at");
		}
	}
	my $pos = position_of($t);
	ok($pos gt $pos_before, "$what: the position in _pg_egress_state advanced ($pos_before -> $pos)");
	is(stream_row($src, $t)->{last_error}, undef, "$what: $t has no error");
	return $ok;
}

ok(poll_until('initial sync', 90, sub {
	for my $t (keys %dest_of) { return 0 unless same_rows($t); }
	return 1;
}), 'initial sync of every table');

my $log = $tgt->logfile;
my $wide = "repeat('x', $WIDE)";

# ---------------------------------------------------------------------------
# 1. inserts only, several batches: streamed straight into the table
# ---------------------------------------------------------------------------
my $pos = position_of('t1');
my $offset = -s $log;
sq(qq{INSERT INTO t1 SELECT i, $wide || i, i FROM generate_series(11, 6010) i});
check_table('1. inserts', 't1', $pos);
my $text = slurp_file($log, $offset);
like($text, qr/statement: SAVEPOINT pg_egress_chunk;\s*COPY "?raw"?\."?t1"? \(/,
	'1. inserts: streamed into the table under the savepoint');
unlike($text, qr/MERGE INTO/, '1. inserts: nothing merged');
unlike($text, qr/ROLLBACK TO SAVEPOINT/, '1. inserts: no fallback');

# ---------------------------------------------------------------------------
# 2. a batch with inserts of new keys and updates of keys the target has:
#    the streamed COPY meets a key (23505), falls back to staging + MERGE;
#    the next batches go in merged chunks (stream_skip)
# ---------------------------------------------------------------------------
sq(qq{INSERT INTO t2 SELECT i, $wide || i, i FROM generate_series(11, 3010) i});
check_table('2. setup', 't2', position_of('t2') . '');
$pos = position_of('t2');
$offset = -s $log;
sq(qq{
BEGIN;
INSERT INTO t2 SELECT i, $wide || 'new' || i, -i FROM generate_series(3011, 4000) i;
UPDATE t2 SET v = $wide || 'upd' || id, n = n + 1000000 WHERE id BETWEEN 1 AND 1500;
INSERT INTO t2 SELECT i, $wide || 'more' || i, i FROM generate_series(4001, 6000) i;
UPDATE t2 SET v = 'upd2-' || id WHERE id BETWEEN 2000 AND 3500;
COMMIT;
});
check_table('2. updates', 't2', $pos);
$text = slurp_file($log, $offset);
like($text, qr/ROLLBACK TO SAVEPOINT pg_egress_chunk/, '2. updates: a streamed chunk fell back');
like($text, qr/MERGE INTO "?raw"?\."?t2"?/, '2. updates: merged');
# the next batches: chunks merged (stream_skip), the result the same
$pos = position_of('t2');
sq(qq{
BEGIN;
INSERT INTO t2 SELECT i, $wide || i, i FROM generate_series(6001, 9000) i;
UPDATE t2 SET n = 7 WHERE id % 3 = 0;
COMMIT;
});
check_table('2. after the fallback', 't2', $pos);
$text = slurp_file($log, $offset);
like($text, qr/MERGE INTO "?raw"?\."?t2"?.*MERGE INTO "?raw"?\."?t2"?/s,
	'2. after the fallback: the next batches merge chunks');

# ---------------------------------------------------------------------------
# 3. in one batch: a key inserted then updated, another inserted, updated
#    and deleted (a key twice in a streamed chunk): the last values win
# ---------------------------------------------------------------------------
for my $t ('t3s', 't3h')
{
	$pos = position_of($t);
	$offset = -s $log;
	sq(qq{
BEGIN;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(11, 1000) i;
INSERT INTO $t VALUES (100001, 'first', 1), (100002, 'doomed', 2);
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(1001, 1500) i;
UPDATE $t SET v = 'second', n = 11 WHERE id = 100001;
UPDATE $t SET v = 'doomed2', n = 22 WHERE id = 100002;
UPDATE $t SET v = 'x' || id WHERE id BETWEEN 500 AND 600;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(1501, 1900) i;
DELETE FROM $t WHERE id = 100002;
UPDATE $t SET v = 'third', n = 111 WHERE id = 100001;
COMMIT;
});
	check_table("3. key twice ($t)", $t, $pos, [100002]);
	is(tq("SELECT v || ':' || n FROM " . schema_of($t) . ".$t WHERE id = 100001"), 'third:111',
		"3. key twice ($t): the last values win");
	like(slurp_file($log, $offset), qr/ROLLBACK TO SAVEPOINT pg_egress_chunk/,
		"3. key twice ($t): the streamed chunk fell back");
}

# ---------------------------------------------------------------------------
# 4. deletes in the middle of a big batch: the stream ends at the delete,
#    later rows go in chunks
# ---------------------------------------------------------------------------
for my $t ('t4s', 't4h')
{
	$pos = position_of($t);
	$offset = -s $log;
	sq(qq{
BEGIN;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(11, 1200) i;
DELETE FROM $t WHERE id IN (3, 5, 700, 701);
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(1201, 1900) i;
DELETE FROM $t WHERE id = 1300;
UPDATE $t SET v = 'after-delete', n = 0 WHERE id BETWEEN 1250 AND 1260;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(1901, 5000) i;
DELETE FROM $t WHERE id BETWEEN 4000 AND 4010;
COMMIT;
});
	check_table("4. deletes ($t)", $t, $pos, [3, 5, 700, 701, 1300, 4000 .. 4010]);
	$text = slurp_file($log, $offset);
	like($text, qr/SAVEPOINT pg_egress_chunk;\s*COPY "?rawh?"?\."?$t"? \(/,
		"4. deletes ($t): the first rows streamed");
	like($text, qr/COPY _pg_egress_stage FROM STDIN/, "4. deletes ($t): later rows staged");
}

# the next batch: a delete cuts the stream, later chunks update keys the
# stream inserted and insert again keys deleted before (soft: the rows
# with _sdc_deleted_at come back to life)
for my $t ('t4s', 't4h')
{
	$pos = position_of($t);
	sq(qq{
BEGIN;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(10001, 10500) i;
DELETE FROM $t WHERE id = 10;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(10501, 11500) i;
UPDATE $t SET v = 'later' || id, n = -1 WHERE id BETWEEN 10001 AND 10050;
INSERT INTO $t VALUES (3, 'back', 3), (5, 'back', 5), (700, 'back', 700);
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(11501, 11900) i;
COMMIT;
});
	check_table("4. deletes, next batch ($t)", $t, $pos, [10, 701, 1300, 4000 .. 4010]);
	is(tq('SELECT string_agg(v, \',\' ORDER BY id) FROM ' . schema_of($t) . ".$t WHERE id IN (3, 5, 700) AND _sdc_deleted_at IS NULL"),
		'back,back,back', "4. deletes, next batch ($t): keys deleted before are back");
}

# ---------------------------------------------------------------------------
# 5. a table without a unique index on the key: never streamed, merged
# ---------------------------------------------------------------------------
$pos = position_of('t5');
$offset = -s $log;
sq(qq{
BEGIN;
INSERT INTO t5 SELECT i, $wide || i, i FROM generate_series(11, 3000) i;
UPDATE t5 SET v = 'u' || id, n = -n WHERE id BETWEEN 1 AND 2000;
INSERT INTO t5 SELECT i, $wide || i, i FROM generate_series(3001, 5000) i;
UPDATE t5 SET v = 'w' || id WHERE id % 7 = 0;
COMMIT;
});
check_table('5. no unique key', 't5', $pos);
$text = slurp_file($log, $offset);
unlike($text, qr/COPY "?raw"?\."?t5"? \(/, '5. no unique key: nothing COPYed straight into the table');
$pos = position_of('t5');
sq(qq{UPDATE t5 SET n = 5 WHERE id <= 4000});
check_table('5. no unique key, updates', 't5', $pos);

# ---------------------------------------------------------------------------
# 7. COPY text that is not plain (tabs, newlines, backslashes, NULLs,
#    multibyte) in the streamed rows, a key deleted and inserted again in
#    the batch, a key changed by an UPDATE (a delete of the old key), and a
#    column added in the middle of a big batch (a second segment)
# ---------------------------------------------------------------------------
for my $t ('t7s', 't7h')
{
	$pos = position_of($t);
	sq(qq{
BEGIN;
INSERT INTO $t SELECT i, $wide || E'\\t\\n\\\\N\\\\' || chr(233) || chr(8364) || i, CASE WHEN i % 5 = 0 THEN NULL ELSE i END
	FROM generate_series(11, 1500) i;
INSERT INTO $t VALUES (200001, NULL, NULL), (200002, E'a\\tb', 2);
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(1501, 1800) i;
DELETE FROM $t WHERE id = 200002;
INSERT INTO $t VALUES (200002, 'reborn', 3);
UPDATE $t SET id = 300001 WHERE id = 1600;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(1801, 2600) i;
COMMIT;
});
	check_table("7. special text ($t)", $t, $pos, [1600]);
	is(tq('SELECT v || n FROM ' . schema_of($t) . ".$t WHERE id = 200002 AND _sdc_deleted_at IS NULL"), 'reborn3',
		"7. special text ($t): a key deleted and inserted again has its new values");
	# a column added mid-batch: the batch's rows after it are of a new schema
	$pos = position_of($t);
	sq(qq{
BEGIN;
INSERT INTO $t SELECT i, $wide || i, i FROM generate_series(3001, 4200) i;
ALTER TABLE $t ADD COLUMN extra text;
INSERT INTO $t SELECT i, $wide || i, i, 'e' || i FROM generate_series(4201, 4500) i;
UPDATE $t SET extra = 'x' || id, n = 42 WHERE id BETWEEN 3001 AND 3100;
COMMIT;
});
	check_table("7. column added ($t)", $t, $pos);
	my $s = schema_of($t);
	my $want = sq(qq{SELECT coalesce(md5(string_agg(id || ':' || coalesce(extra, 'N'), ',' ORDER BY id)), '') FROM $t});
	ok(poll_until("$t extra", 30, sub {
		my ($ok, $got) = tq_try(qq{SELECT coalesce(md5(string_agg(id || ':' || coalesce(extra, 'N'), ',' ORDER BY id)), '') FROM $s.$t WHERE _sdc_deleted_at IS NULL});
		return $ok && $got eq $want; }), "7. column added ($t): the new column equals the source");
}

# ---------------------------------------------------------------------------
# 6a. the target stopped (immediate) while a big batch streams, started
#     again: exactly once
# ---------------------------------------------------------------------------
$pos = position_of('t6');
$offset = -s $log;
sq(qq{INSERT INTO t6 SELECT i, $wide || i, i FROM generate_series(11, 20010) i});
my $hit = poll_until('t6 streaming into the target', 60, sub {
	slurp_file($log, $offset) =~ /COPY "?raw"?\."?t6"? \(/ });
ok($hit, '6a. a batch of t6 streams into the target');
$tgt->stop('immediate');
$tgt->start;
my $n_before = (tq_try('SELECT count(*) FROM raw.t6'))[1];
note "t6 rows in the target after the restart: $n_before";
check_table('6a. target stopped mid-stream', 't6', $pos);

# ---------------------------------------------------------------------------
# 6b. kill -9 of the CDC worker right after a batch was committed on the
#     target, before the source recorded it (its bookmark rows locked)
# ---------------------------------------------------------------------------
$pos = position_of('t6');
my $bookmarks = $src->background_psql('postgres', on_error_stop => 0);
$bookmarks->query_safe('BEGIN');
$bookmarks->query_safe('SELECT stream_id FROM egress.stream_state FOR UPDATE');
sq(qq{
BEGIN;
INSERT INTO t6 SELECT i, $wide || i, i FROM generate_series(30001, 38000) i;
UPDATE t6 SET v = 'k' || id WHERE id BETWEEN 100 AND 200;
COMMIT;
});
my $waiting = poll_until('a batch committed on the target, the worker waiting to record it', 60, sub {
	my ($ok, $p) = tq_try(q{SELECT coalesce(max(position), '') FROM raw._pg_egress_state WHERE destination = 'raw.t6'});
	my ($r, $w) = $src->psql('postgres',
		q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc' AND wait_event_type = 'Lock'});
	return $ok && $p gt $pos && $r == 0 && $w > 0;
});
ok($waiting, '6b. the target committed a batch the source has not recorded');
# the CDC worker of destination soft waits for the lock (that of hard may
# too: both are killed then)
my @victims = split / /, sq(q{SELECT string_agg(pid::text, ' ') FROM pg_stat_activity WHERE backend_type = 'pg_egress cdc' AND wait_event_type = 'Lock'});
cmp_ok(scalar(@victims), '>=', 1, "6b. CDC workers waiting for the lock: @victims");
my $nworkers = scalar(cdc_worker_pids($src));
my $soffset = -s $src->logfile;
ok(kill('KILL', @victims), "6b. SIGKILL to the CDC worker(s) @victims");
# the postmaster logs the first death only (the crash restart that follows
# ends the others): one victim's signal 9, and every victim gone
my $victims_re = join('|', @victims);
ok(poll_until('a CDC worker killed', 60,
		sub { $src->log_contains(qr/\(PID (?:$victims_re)\) was terminated by signal 9/, $soffset) }),
	"6b. a CDC worker died of signal 9");
ok(poll_until('the CDC workers gone', 60, sub { !grep { kill(0, $_) } @victims }),
	"6b. the CDC worker(s) @victims are gone");
eval { $bookmarks->quit; };
ok(poll_until('new CDC workers', 120,
		sub {
			my @p = cdc_worker_pids($src);
			return @p == $nworkers && !grep { my $p = $_; grep { $_ == $p } @victims } @p;
		}),
	'6b. the CDC workers run again');
check_table('6b. kill -9 after a commit', 't6', $pos);

# ---------------------------------------------------------------------------
# 8. the target's COMMIT of a batch fails once (a deferred constraint
#    trigger raises at COMMIT, the first time only: a sequence counts).
#    The first batch of a big transaction is committed while the next one
#    is decoded (its COMMIT acknowledged later).  A refused COMMIT puts the
#    stream in state error (8b, as the old path); it is resumed.  Should it
#    be sent again by itself instead, it arrives once.  Either way: nothing
#    lost, nothing twice.
# ---------------------------------------------------------------------------
$pos = position_of('t8');
tq(q{
CREATE SEQUENCE public.boom_seq;
CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	IF NEW.v = 'boom' AND nextval('public.boom_seq') = 1 THEN
		RAISE EXCEPTION 'boom at commit';
	END IF;
	RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER boom AFTER INSERT OR UPDATE ON rawc.t8
	DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.boom();
});
$offset = -s $log;
my $soffset8 = -s $src->logfile;
sq(qq{
BEGIN;
INSERT INTO t8 SELECT i, $wide || i, i FROM generate_series(11, 100) i;
INSERT INTO t8 VALUES (101, 'boom', 1);
INSERT INTO t8 SELECT i, $wide || i, i FROM generate_series(102, 6000) i;
UPDATE t8 SET n = 8 WHERE id BETWEEN 50 AND 150;
COMMIT;
});
ok(poll_until('the COMMIT refused', 60, sub { slurp_file($log, $offset) =~ /ERROR:  boom at commit/ }),
	'8. the target refused a COMMIT once');
my $st8 = stream_row($src, 't8');
if (($st8->{state} // '') eq 'error')
{
	# a refusal (the old path's answer, see 8b): resumed as a user would;
	# the stream is synced again
	note '8. t8 in state error: ' . ($st8->{last_error} // '');
	sq(q{SELECT egress_resume_stream('t8')});
	ok(poll_until('t8 equals the source', 90, sub { same_rows('t8') }), '8. resumed: rawc.t8 equals the source');
	is(tq('SELECT count(*) - count(DISTINCT id) FROM rawc.t8'), '0', '8. resumed: one row per key');
}
else
{
	# sent again by itself: nothing lost, nothing twice
	check_table('8. a COMMIT refused once, sent again', 't8', $pos);
}
my $slog8 = slurp_file($src->logfile, $soffset8);
note "source log, t8: $1" while $slog8 =~ /(.*(?:did not acknowledge|refused batch).*)/g;
# commit_collect(a, false) keeps what it read of the COMMIT's answer in the
# sink across calls: an ErrorResponse read before its ReadyForQuery (the
# backend flushes an error at once) is not lost ("no answer").
{
	my ($msg) = $slog8 =~ /(did not acknowledge batch.*|refused batch.*)/;
	like($msg // '', qr/boom at commit/, "8. the refused COMMIT's error names the target's error");
}

# ---------------------------------------------------------------------------
# 8b. a COMMIT refused for good (the trigger raises every time).  The old
#     path (a batch committed and acknowledged at once: a transaction of one
#     batch, committed at the end of a decode round) reports the refusal:
#     the stream goes to state error with the target's error.  A batch
#     whose COMMIT is acknowledged later (the first batch of a big
#     transaction) must end the same way.
#     (Found by this test: the asynchronous path took the refusal for a lost
#     connection and sent the batch again for ever.)
# ---------------------------------------------------------------------------
tq(q{
CREATE OR REPLACE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	IF NEW.v = 'boom' AND nextval('public.boom_seq') = 1 OR NEW.v = 'boom forever' THEN
		RAISE EXCEPTION 'boom at commit';
	END IF;
	RETURN NULL;
END
$$;
});

# resumes t8 once the trigger lets its rows in; it is synced again
sub resume_t8
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	tq(q{UPDATE rawc.t8 SET v = v WHERE false});
	sq(q{SELECT egress_resume_stream('t8')}) if (stream_row($src, 't8')->{state} // '') eq 'error';
	ok(poll_until("$what: t8 equals the source", 90, sub { same_rows('t8') }),
		"$what: rawc.t8 equals the source once the target takes it");
	is(tq('SELECT count(*) - count(DISTINCT id) FROM rawc.t8'), '0', "$what: one row per key");
}

for my $c (['8b. one batch (old path)', 6001, 6001], ['8b. first of several batches (acknowledged later)', 7001, 13000])
{
	my ($what, $from, $to) = @$c;
	sq(qq{
BEGIN;
INSERT INTO t8 VALUES ($from, 'boom forever', 1);
INSERT INTO t8 SELECT i, $wide || i, i FROM generate_series($from + 1, $to) i;
COMMIT;
});
	my $ok = poll_until("$what: t8 in state error", 30, sub {
		my $r = stream_row($src, 't8');
		return $r && ($r->{state} // '') eq 'error' && ($r->{last_error} // '') =~ /boom at commit/; });
	my $r = stream_row($src, 't8') // {};
	ok($ok, "$what: a COMMIT refused for good puts the stream in state error")
		or diag "t8: state " . ($r->{state} // '?') . ', last_error ' . ($r->{last_error} // '');
	# let it in: the row is changed on the target's side only by the trigger
	tq(q{CREATE OR REPLACE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$});
	resume_t8($what);
	tq(q{
CREATE OR REPLACE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
	IF NEW.v = 'boom forever' THEN
		RAISE EXCEPTION 'boom at commit';
	END IF;
	RETURN NULL;
END
$$;
});
	# the row that was refused is no longer 'boom forever' at the source
	sq(qq{UPDATE t8 SET v = 'defused' WHERE id = $from});
	ok(poll_until("$what: t8 defused", 60, sub { same_rows('t8') }), "$what: t8 goes on after it");
}

# everything still equal at the end (nothing applied twice later)
$pos = position_of('t1');
sq(q{INSERT INTO t1 VALUES (999999, 'last', 1)});
check_table('end', 't1', $pos);
for my $t (sort keys %dest_of)
{
	ok(same_rows($t), "end: $t equals the source");
}

done_testing();
