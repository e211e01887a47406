
# Attacks on the postgres:// apply engine (src/sink/pg_apply.c,
# src/sink/pg_typemap.c), review H9.
#
# 1. Names: the Singer stream id is "<schema>-<table>"; the engine splits it
#    at the first '-'.  Source tables "a-b"."c" and "a"."b-c" have the same
#    stream id "a-b-c": they must not load into one target table nor share a
#    state row (both are refused: the id is ambiguous).
# 2. Names and values that would break SQL or COPY text if not quoted or
#    escaped: quotes, backslashes, dots in schema/table/column names, a column
#    whose name carries a forged "position" member, columns named position /
#    type / stream; values with tabs, newlines, CR, backslashes, "\." lines,
#    "\N", non-ASCII; arrays and jsonb.  Later changes must still be applied
#    (the forged position must not be stored).
# 3. A key column widened in the source (int -> bigint, the usual fix for a
#    running-out id): the target column is "renamed aside" with its PRIMARY
#    KEY and NOT NULL; the new rows must still arrive.  A key column the
#    target cannot convert (text -> int) is refused with PE001, not moved.
# 4. A non-key column whose type changes twice within one minute: the second
#    rename aside must not collide with the first.
# 5. A statement error in the middle of a batch (a CHECK constraint added to
#    the target by hand): PE001, the stream stops, nothing of the batch stays.
# 6. egress_remove_stream + egress_add_stream of the same table with the
#    state row left behind: the new stream's rows all arrive.
# 7. A keyless table with hard_delete: insert, delete, insert of one row in
#    one transaction must leave the row (appends and deletes keep their order);
#    deleting one of two equal rows leaves the other.
# 8. batch_size_rows 1: one transaction cut into many batches (positions of
#    one commit LSN across batches).
# 9. A target column dropped by hand: added again.
# 10. A 1,000,000-row transaction: every row arrives; the CDC worker's
#    VmRSS stays well under the 1 GB segment limit.
# 11. A source table named _pg_egress_state maps onto the target's state
#    table: its rows become other streams' state (a forged position makes
#    their changes be skipped silently).  A table named like a shadow table
#    ("<t>__v<digits>") is refused too.
# 12. (TODO) A stale position from another WAL history (promoted standby,
#    restored source) skips a newly synced stream's changes.
# 13. Two 63-byte column names sharing 50 bytes renamed aside in one batch.
# 14. parallelism changed while the destination streams.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;

my $T = 120;
my $src = create_node('src', cdc => 1);
my ($tgt, $url) = create_target_node('tgt');

sub tq
{
	my ($sql) = @_;
	my ($ret, $out, $err) = target_psql($tgt, $sql);
	return $ret == 0 ? $out : undef;
}

sub sq { return $src->safe_psql('postgres', $_[0]); }

sub stream_of { return stream_row($src, $_[0]); }

add_pg_destination($src, 'wh', $url, { hard_delete => JSON::PP::true });

# ---------------------------------------------------------------------------
# 1. "a-b"."c" and "a"."b-c": one stream id, two tables
# ---------------------------------------------------------------------------
sq(q{
CREATE SCHEMA a;
CREATE SCHEMA "a-b";
CREATE TABLE a."b-c" (id int PRIMARY KEY, v text);
CREATE TABLE "a-b".c (id int PRIMARY KEY, v text);
INSERT INTO a."b-c" SELECT i, 'from a.b-c ' || i FROM generate_series(1, 3) i;
INSERT INTO "a-b".c SELECT i, 'from a-b.c ' || i FROM generate_series(1, 5) i;
});
# Neither can be told apart from the stream id alone (SCHEMA messages do not
# carry the schema and table names): both are refused, nothing is mixed.
sq(q{SELECT egress_add_stream('dash1', 'a."b-c"', 'FULL_TABLE', 'wh')});
wait_stream_state($src, 'dash1', 'error', $T);
like(stream_of('dash1')->{last_error} // '', qr/a-b-c.*ambiguous/,
	'dash collision: a."b-c" is refused, last_error names the stream id');
sq(q{SELECT egress_add_stream('dash2', '"a-b".c', 'FULL_TABLE', 'wh')});
wait_stream_state($src, 'dash2', 'error', $T);
like(stream_of('dash2')->{last_error} // '', qr/a-b-c.*ambiguous/,
	'dash collision: "a-b".c is refused, last_error names the stream id');
is(tq(q{SELECT count(*) FROM pg_catalog.pg_class WHERE relname IN ('b-c', 'c')
     AND relnamespace::regnamespace::text IN ('a', '"a-b"')}), '0',
	'dash collision: no rows mixed (no target table made)');
# (the state table may not exist yet: these are the destination's first streams)
is((tq(q{SELECT to_regclass('public._pg_egress_state') IS NULL}) // '') eq 't' ? '0'
	  : tq(q{SELECT count(*) FROM public._pg_egress_state WHERE stream = 'a-b-c'}), '0',
	'dash collision: no state row');

# ---------------------------------------------------------------------------
# 2. Hostile names and values, LOG_BASED
# ---------------------------------------------------------------------------
my $forged = 'x","position":"FFFFFFFFFFFFFFFF-9999999999';
(my $forged_sql = $forged) =~ s/"/""/g;
sq(qq{
CREATE SCHEMA "q""s\\.x";
CREATE TABLE "q""s\\.x"."T'a""b\\c.d" (
    id int PRIMARY KEY,
    "c""ol\\" text,
    "position" text,
    "type" text,
    "stream" text,
    "$forged_sql" text,
    arr text[],
    j jsonb);
ALTER TABLE "q""s\\.x"."T'a""b\\c.d" REPLICA IDENTITY FULL;
});
my $qt = q{"q""s\.x"."T'a""b\c.d"};
my $ins = qq{INSERT INTO $qt VALUES
 (1, E'tab\\there', 'pos', 'RECORD', 'other-stream', 'FFFFFFFFFFFFFFFF-9999999999', ARRAY['a,b', 'c"d', NULL], '{"k": "v\\\\\\"x"}'),
 (2, E'line1\\nline2\\r\\n\\\\.\\nend', E'\\\\N', E'back\\\\slash', 'x', 'y', '{}', '[1, "two", null]'),
 (3, E'\\\\.', NULL, '', E'\\\\', E'\\u00e9\\u4e2d\\U0001F600', NULL, 'null')};
sq($ins);
sq('SELECT egress_add_stream(' . sql_quote('weird') . ', ' . sql_quote($qt) . q{, 'LOG_BASED', 'wh')});
wait_stream_state($src, 'weird', 'streaming', $T);

my $cols = qq{id, "c""ol\\", "position", "type", "stream", "$forged_sql"};
sub digest_of
{
	my ($q) = @_;
	return $q->(qq{SELECT string_agg(md5(row($cols)::text), ',' ORDER BY id) FROM $qt});
}
my $want = digest_of(\&sq);
ok(poll_until('weird names: initial sync', $T, sub { (digest_of(\&tq) // '') eq $want }),
	'weird names and values: initial sync equal to the source');

# changes after the snapshot: inserts, an update, a delete
sq(qq{INSERT INTO $qt (id, "c""ol\\") VALUES (4, E'\\\\.\\n'), (5, E'a\\tb\\\\c')});
sq(qq{UPDATE $qt SET "c""ol\\" = E'upd\\n\\\\.' WHERE id = 1});
sq(qq{DELETE FROM $qt WHERE id = 2});
$want = digest_of(\&sq);
ok(poll_until('weird names: changes', $T, sub { (digest_of(\&tq) // '') eq $want }),
	'weird names and values: changes applied (no forged position stored)');
is(tq(qq{SELECT arr::text || ' ' || j::text FROM $qt WHERE id = 1}),
	q{["a,b", "c\"d", null] {"k": "v\\\\\"x"}}, 'array and jsonb values');
like(tq(q{SELECT position FROM _pg_egress_state WHERE stream LIKE 'q"s%'}) // '',
	qr/^[0-9A-F]{16}-[0-9]{10}$/, 'the stored position is a real position');
is(stream_of('weird')->{last_error}, undef, 'weird names: no error');

# ---------------------------------------------------------------------------
# 3. A key column widened: int -> bigint
# ---------------------------------------------------------------------------
sq(q{CREATE TABLE widen (id int PRIMARY KEY, v text);
INSERT INTO widen SELECT i, 'v' || i FROM generate_series(1, 10) i;});
sq(q{SELECT egress_add_stream('widen', 'widen', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'widen', 'streaming', $T);
ok(poll_until('widen: initial sync', $T, sub { (tq('SELECT count(*) FROM public.widen') // '') eq '10' }),
	'widen: initial sync');
sq(q{ALTER TABLE widen ALTER COLUMN id TYPE bigint});
sq(q{INSERT INTO widen VALUES (3000000000, 'big'), (11, 'eleven')});
ok(poll_until('widen: rows after the key was widened', 60,
		sub { (tq(q{SELECT count(*) FROM public.widen WHERE v IN ('big', 'eleven')}) // '') eq '2'
			  || (stream_of('widen')->{state} // '') eq 'error' }),
	'widen: waited');
is(tq(q{SELECT count(*) FROM public.widen WHERE v IN ('big', 'eleven')}), '2',
	'key column widened int -> bigint: later rows still arrive');
is(stream_of('widen')->{last_error}, undef, 'key column widened: no error');
note 'widen last_error: ' . (stream_of('widen')->{last_error} // '(none)');

# a key column whose values the target cannot convert: refused with a hint,
# the key stays where it is
sq(q{CREATE TABLE keytxt (id text PRIMARY KEY, v text);
INSERT INTO keytxt VALUES ('x1', 'one');});
sq(q{SELECT egress_add_stream('keytxt', 'keytxt', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'keytxt', 'streaming', $T);
ok(poll_until('keytxt: initial sync', $T, sub { (tq('SELECT count(*) FROM public.keytxt') // '') eq '1' }),
	'keytxt: initial sync');
sq(q{ALTER TABLE keytxt ALTER COLUMN id TYPE int USING length(id); INSERT INTO keytxt VALUES (5, 'five')});
wait_stream_state($src, 'keytxt', 'error', $T);
like(stream_of('keytxt')->{last_error} // '', qr/cannot change key column/,
	'a key column the target cannot convert: PE001 "cannot change key column"');
is(tq(q{SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
     WHERE attrelid = 'public.keytxt'::regclass AND attnum > 0 AND NOT attisdropped}),
	'id,v,_sdc_deleted_at', 'the key column is not renamed aside');

# ---------------------------------------------------------------------------
# 4. Two type changes of one column within a minute
# ---------------------------------------------------------------------------
sq(q{CREATE TABLE twice (id int PRIMARY KEY, v int);
INSERT INTO twice VALUES (1, 1);});
sq(q{SELECT egress_add_stream('twice', 'twice', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'twice', 'streaming', $T);
ok(poll_until('twice: initial sync', $T, sub { (tq('SELECT count(*) FROM public.twice') // '') eq '1' }),
	'twice: initial sync');
# wait for the start of a minute: both changes fall into the same one
poll_until('start of a minute', 70, sub { (gmtime)[0] < 30 });
sq(q{ALTER TABLE twice ALTER COLUMN v TYPE bigint; INSERT INTO twice VALUES (2, 2);});
ok(poll_until('twice: first change', 30, sub { (tq('SELECT count(*) FROM public.twice') // '') eq '2' }),
	'twice: first type change applied');
sq(q{ALTER TABLE twice ALTER COLUMN v TYPE text; INSERT INTO twice VALUES (3, 'three');});
ok(poll_until('twice: second change', 30,
		sub { (tq('SELECT count(*) FROM public.twice') // '') eq '3'
			  || (stream_of('twice')->{state} // '') eq 'error' }),
	'twice: waited');
is(tq(q{SELECT v FROM public.twice WHERE id = 3}), 'three',
	'second type change within a minute: rows still arrive');
note 'twice last_error: ' . (stream_of('twice')->{last_error} // '(none)');

# ---------------------------------------------------------------------------
# 5. A CHECK constraint fails in the middle of a batch
# ---------------------------------------------------------------------------
sq(q{CREATE TABLE ck (id int PRIMARY KEY, v text);
INSERT INTO ck VALUES (0, 'zero');});
sq(q{SELECT egress_add_stream('ck', 'ck', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'ck', 'streaming', $T);
ok(poll_until('ck: initial sync', $T, sub { (tq('SELECT count(*) FROM public.ck') // '') eq '1' }),
	'ck: initial sync');
tq(q{ALTER TABLE public.ck ADD CONSTRAINT no_bad CHECK (v <> 'bad')});
sq(q{INSERT INTO ck SELECT i, CASE WHEN i = 50 THEN 'bad' ELSE 'ok' END FROM generate_series(1, 100) i});
wait_stream_state($src, 'ck', 'error', $T);
like(stream_of('ck')->{last_error} // '', qr/no_bad|check constraint/, 'ck: last_error names the constraint');
is(tq('SELECT count(*) FROM public.ck'), '1', 'ck: nothing of the refused batch stays in the target');

# ---------------------------------------------------------------------------
# 6. Remove and add a stream again, state row left behind
# ---------------------------------------------------------------------------
sq(q{CREATE TABLE again (id int PRIMARY KEY, v text);
INSERT INTO again SELECT i, 'first' FROM generate_series(1, 20) i;});
sq(q{SELECT egress_add_stream('again', 'again', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'again', 'streaming', $T);
ok(poll_until('again: initial sync', $T, sub { (tq('SELECT count(*) FROM public.again') // '') eq '20' }),
	'again: initial sync');
sq(q{INSERT INTO again VALUES (21, 'cdc')});
ok(poll_until('again: cdc', $T, sub { (tq('SELECT count(*) FROM public.again') // '') eq '21' }),
	'again: a change applied');
sq(q{SELECT egress_remove_stream('again')});
sq(q{UPDATE again SET v = 'second'; INSERT INTO again VALUES (22, 'second')});
sq(q{SELECT egress_add_stream('again', 'again', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'again', 'streaming', $T);
sq(q{INSERT INTO again VALUES (23, 'second')});
ok(poll_until('again: the new stream\'s rows', $T,
		sub { (tq(q{SELECT count(*) FROM public.again WHERE v = 'second'}) // '') eq '23' }),
	're-added stream: every row of the new stream arrives');

# ---------------------------------------------------------------------------
# 7. Keyless table, hard_delete: insert, delete, insert the same row in one
#    transaction (a queue).  The source keeps one row; so must the target.
# ---------------------------------------------------------------------------
sq(q{CREATE TABLE queue (job int, payload text);
ALTER TABLE queue REPLICA IDENTITY FULL;
INSERT INTO queue VALUES (0, 'seed');});
add_pg_destination($src, 'whnk', $url,
	{ hard_delete => JSON::PP::true, primary_key_required => JSON::PP::false,
	  default_target_schema => 'nk' });
sq(q{SELECT egress_add_stream('queue', 'queue', 'LOG_BASED', 'whnk')});
wait_stream_state($src, 'queue', 'streaming', $T);
ok(poll_until('queue: initial sync', $T, sub { (tq('SELECT count(*) FROM nk.queue') // '') eq '1' }),
	'queue: initial sync');
sq(q{BEGIN;
INSERT INTO queue VALUES (1, 'x');
DELETE FROM queue WHERE job = 1;
INSERT INTO queue VALUES (1, 'x');
INSERT INTO queue VALUES (2, 'marker');
COMMIT;});
ok(poll_until('queue: marker', $T, sub { (tq(q{SELECT count(*) FROM nk.queue WHERE job = 2}) // '') eq '1' }),
	'queue: the transaction is applied');
is(tq(q{SELECT count(*) FROM nk.queue WHERE job = 1}), '1',
	'keyless + hard_delete: insert, delete, insert of one row in a batch leaves the row (as in the source)');
# duplicates: one of two equal rows deleted in the source, one stays
sq(q{INSERT INTO queue VALUES (3, 'dup'), (3, 'dup')});
ok(poll_until('queue: duplicates', $T, sub { (tq(q{SELECT count(*) FROM nk.queue WHERE job = 3}) // '') eq '2' }),
	'queue: duplicates applied');
sq(q{DELETE FROM queue WHERE ctid = (SELECT min(ctid) FROM queue WHERE job = 3);
INSERT INTO queue VALUES (4, 'marker')});
ok(poll_until('queue: marker 4', $T, sub { (tq(q{SELECT count(*) FROM nk.queue WHERE job = 4}) // '') eq '1' }),
	'queue: the delete of one duplicate is applied');
is(tq(q{SELECT count(*) FROM nk.queue WHERE job = 3}), '1',
	'keyless + hard_delete: one delete record deletes one of two equal rows');

# ---------------------------------------------------------------------------
# 8. batch_size_rows 1: one transaction cut into many batches
# ---------------------------------------------------------------------------
add_pg_destination($src, 'wh1', $url,
	{ hard_delete => JSON::PP::true, batch_size_rows => 1, default_target_schema => 'b1' });
sq(q{CREATE TABLE tiny (id int PRIMARY KEY, v text);
INSERT INTO tiny SELECT i, 'snap' FROM generate_series(1, 30) i;});
sq(q{SELECT egress_add_stream('tiny', 'tiny', 'LOG_BASED', 'wh1')});
wait_stream_state($src, 'tiny', 'streaming', $T);
sq(q{BEGIN;
INSERT INTO tiny SELECT i, 'new' FROM generate_series(31, 130) i;
UPDATE tiny SET v = v || '+u' WHERE id % 2 = 0;
DELETE FROM tiny WHERE id % 5 = 0;
UPDATE tiny SET v = v || '+w' WHERE id % 3 = 0;
COMMIT;});
my $tiny = sq(q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM tiny});
ok(poll_until('tiny: equal', 180,
		sub { (tq(q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM b1.tiny}) // '') eq $tiny }),
	'batch_size_rows 1: the target ends equal to the source');
is(stream_of('tiny')->{last_error}, undef, 'batch_size_rows 1: no error');

# ---------------------------------------------------------------------------
# 9. A target column dropped by hand while the stream loads
# ---------------------------------------------------------------------------
tq(q{ALTER TABLE b1.tiny DROP COLUMN v});
sq(q{INSERT INTO tiny VALUES (1000, 'after drop')});
ok(poll_until('tiny: after the drop', $T,
		sub { (tq(q{SELECT v FROM b1.tiny WHERE id = 1000}) // '') eq 'after drop' }),
	'a column dropped by hand in the target is added again');


# ---------------------------------------------------------------------------
# 11. A source table named _pg_egress_state (a source that is itself a
#     pg_egress target, or a role that wants to skew another stream): its
#     stream maps onto the target's own state table.  Its rows must not
#     become the state of other streams (here: a forged position that would
#     make every later change of stream "victim" be skipped).
# ---------------------------------------------------------------------------
sq(q{CREATE TABLE victim (id int PRIMARY KEY, v text);
INSERT INTO victim VALUES (1, 'one');});
sq(q{SELECT egress_add_stream('victim', 'victim', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'victim', 'streaming', $T);
sq(q{INSERT INTO victim VALUES (2, 'two')});
ok(poll_until('victim: a change', $T, sub { (tq('SELECT count(*) FROM public.victim') // '') eq '2' }),
	'victim: initial sync and a change');
my $vstate = tq(q{SELECT source || '|' || destination FROM public._pg_egress_state WHERE stream = 'public-victim'});
my ($vsource, $vdest) = split /\|/, $vstate // '|';
sq(q{CREATE TABLE public._pg_egress_state (source text, destination text, stream text, position text,
    batch_id text, loading_version bigint, active_version bigint, bookmark jsonb,
    updated_at timestamptz, PRIMARY KEY (source, destination, stream))});
sq('INSERT INTO public._pg_egress_state VALUES (' . sql_quote($vsource) . ', ' . sql_quote($vdest)
	  . q{, 'public-victim', 'FFFFFFFFFFFFFFFF-9999999999', 'forged', NULL, NULL, NULL, now())});
sq(q{SELECT egress_add_stream('statetab', 'public._pg_egress_state', 'FULL_TABLE', 'wh')});
ok(poll_until('statetab: synced or refused', $T,
		sub { (stream_of('statetab')->{state} // '') =~ /^(synced|error)$/ }),
	'statetab: the sync ends');
note 'statetab: ' . (stream_of('statetab')->{state} // '') . ' ' . (stream_of('statetab')->{last_error} // '');
sq(q{INSERT INTO victim VALUES (3, 'three')});
ok(poll_until('victim: change after statetab', 30,
		sub { (tq('SELECT count(*) FROM public.victim') // '') eq '3' }),
	'a source table named _pg_egress_state does not make other streams skip their changes');
isnt(tq(q{SELECT position FROM public._pg_egress_state WHERE stream = 'public-victim'}),
	'FFFFFFFFFFFFFFFF-9999999999', 'the forged position is not the state of stream victim');


# a source table whose name looks like a shadow table: refused
sq(q{CREATE TABLE victim__v1 (id int PRIMARY KEY); INSERT INTO victim__v1 VALUES (1);});
sq(q{SELECT egress_add_stream('shadowlike', 'victim__v1', 'FULL_TABLE', 'wh')});
wait_stream_state($src, 'shadowlike', 'error', $T);
like(stream_of('shadowlike')->{last_error} // '', qr/looks like a shadow table/,
	'a target table named like a shadow table is refused');
is(tq(q{SELECT to_regclass('public.victim__v1') IS NULL}), 't', 'shadow-like: no table made');

# ---------------------------------------------------------------------------
# 12. A state row whose position is ahead of the source's WAL: what a
#     promoted standby (same system identifier, so the same "source", but
#     its WAL forked behind the old primary's) or a source restored from a
#     backup meets.  The stream is synced again from scratch; its changes
#     must not be skipped by the stale position.
# ---------------------------------------------------------------------------
tq(q{INSERT INTO public._pg_egress_state (source, destination, stream, position, batch_id, updated_at)
     SELECT source, 'public.forked', 'public-forked', 'FFFFFFFF00000000-0000000000', 'old', now()
     FROM public._pg_egress_state LIMIT 1});
sq(q{CREATE TABLE forked (id int PRIMARY KEY, v text);
INSERT INTO forked VALUES (1, 'snap');});
sq(q{SELECT egress_add_stream('forked', 'forked', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'forked', 'streaming', $T);
ok(poll_until('forked: snapshot', $T, sub { (tq('SELECT count(*) FROM public.forked') // '') eq '1' }),
	'forked: the snapshot arrives (rows without positions)');
sq(q{INSERT INTO forked VALUES (2, 'change')});
TODO:
{
	local $TODO = 'stored positions are not tied to the WAL history they came from (design question)';
	ok(poll_until('forked: change', 30, sub { (tq('SELECT count(*) FROM public.forked') // '') eq '2' }),
		'a stale position from another WAL history does not skip the changes of a newly synced stream');
}


# ---------------------------------------------------------------------------
# 13. Two long column names (63 bytes, equal first 50 bytes) change type in
#     one ALTER: their "renamed aside" names, cut to fit NAMEDATALEN, are the
#     same.
# ---------------------------------------------------------------------------
my $ca = ('c' x 50) . ('A' x 13);
my $cb = ('c' x 50) . ('B' x 13);
sq(qq{CREATE TABLE longcols (id int PRIMARY KEY, "$ca" int, "$cb" int);
INSERT INTO longcols VALUES (1, 1, 1);});
sq(q{SELECT egress_add_stream('longcols', 'longcols', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'longcols', 'streaming', $T);
ok(poll_until('longcols: initial sync', $T, sub { (tq('SELECT count(*) FROM public.longcols') // '') eq '1' }),
	'longcols: initial sync');
sq(qq{ALTER TABLE longcols ALTER COLUMN "$ca" TYPE text, ALTER COLUMN "$cb" TYPE text;
INSERT INTO longcols VALUES (2, 'a', 'b');});
ok(poll_until('longcols: after the type change', 30,
		sub { (tq('SELECT count(*) FROM public.longcols') // '') eq '2'
			  || (stream_of('longcols')->{state} // '') eq 'error' }),
	'longcols: waited');
is(tq(qq{SELECT "$ca" || "$cb" FROM public.longcols WHERE id = 2}), 'ab',
	'two long columns renamed aside at once: rows still arrive');
note 'longcols last_error: ' . (stream_of('longcols')->{last_error} // '(none)');

# ---------------------------------------------------------------------------
# 14. parallelism changed while the destination streams
# ---------------------------------------------------------------------------
sq(q{SELECT egress_alter_destination('wh1', NULL, '{"parallelism": 3, "batch_size_rows": 1000}')});
sq(q{INSERT INTO tiny SELECT i, 'par' FROM generate_series(2000, 2199) i});
ok(poll_until('tiny: after the parallelism change', $T,
		sub { (tq(q{SELECT count(*) FROM b1.tiny WHERE v = 'par'}) // '') eq '200' }),
	'parallelism changed while streaming: the rows arrive');
is(stream_of('tiny')->{last_error}, undef, 'parallelism changed: no error');

# ---------------------------------------------------------------------------
# 10. A huge transaction: 1,000,000 rows; the CDC worker's memory
# ---------------------------------------------------------------------------
sq(q{CREATE TABLE huge (id int PRIMARY KEY, v text)});
sq(q{SELECT egress_add_stream('huge', 'huge', 'LOG_BASED', 'wh')});
wait_stream_state($src, 'huge', 'streaming', $T);
sub rss_kb
{
	my $max = 0;
	foreach my $pid (cdc_worker_pids($src))
	{
		open(my $fh, '<', "/proc/$pid/status") or next;
		while (<$fh>) { $max = $1 if /^VmRSS:\s+(\d+)/ && $1 > $max; }
		close $fh;
	}
	return $max;
}
my $rss0 = rss_kb();
my $t0 = time;
sq(q{INSERT INTO huge SELECT i, repeat('x', 50) || i FROM generate_series(1, 1000000) i});
my $peak = 0;
ok(poll_until('huge: every row', 600, sub {
			my $r = rss_kb();
			$peak = $r if $r > $peak;
			(tq('SELECT count(*) FROM public.huge') // '') eq '1000000' }),
	'huge transaction: every row arrives');
note sprintf('huge transaction: %d s, CDC worker VmRSS before %d kB, peak %d kB', time - $t0, $rss0, $peak);
cmp_ok($peak, '<', 1024 * 1024, 'huge transaction: the CDC worker stays under 1 GB');
is(stream_of('huge')->{last_error}, undef, 'huge transaction: no error');

done_testing();
