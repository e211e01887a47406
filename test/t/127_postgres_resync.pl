
# postgres:// destinations: a resync of a LOG_BASED stream whose target
# table already holds the rows.  The chunked backfill sends the stream's
# changes under the new version between its chunks; the version may only be
# activated (rows missing from it deleted, with hard_delete) by the closing
# ACTIVATE_VERSION.  A target-side trigger logs every key deleted from the
# target table: each must be a key the source deleted, and the target ends
# equal to the source.  A second destination (soft deletes, schema "soft")
# loads the same table: no key the source kept ever gets _sdc_deleted_at.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use EgressTest;

my $src = create_node('src', cdc => 1);
my ($tgt, $url) = create_target_node('tgt');

sub tq
{
	my ($sql) = @_;
	return $tgt->safe_psql($EgressTest::TARGET_DB, $sql);
}

sub stream_of { return stream_row($src, $_[0]); }

$src->safe_psql('postgres', q{
CREATE TABLE rs (id int PRIMARY KEY, v text);
INSERT INTO rs SELECT i, 'v' || i FROM generate_series(1, 5000) i;
CREATE SEQUENCE rs_new START 1000001;
-- the keys the source deleted
CREATE TABLE gone (id int);
CREATE FUNCTION log_gone() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN INSERT INTO gone VALUES (OLD.id); RETURN NULL; END$$;
CREATE TRIGGER log_gone AFTER DELETE ON rs FOR EACH ROW EXECUTE FUNCTION log_gone();
});
add_pg_destination($src, 'wh', $url, { hard_delete => JSON::PP::true });
add_pg_destination($src, 'whs', $url, { default_target_schema => 'soft' });
$src->safe_psql('postgres',
	q{SELECT egress_add_stream('rs', 'rs', 'LOG_BASED', 'wh', NULL, '{"chunk_rows": 100}')});
$src->safe_psql('postgres',
	q{SELECT egress_add_stream('rss', 'rs', 'LOG_BASED', 'whs', NULL, '{"chunk_rows": 100}')});
wait_stream_state($src, 'rs', 'streaming');
wait_stream_state($src, 'rss', 'streaming');
ok(poll_until('initial sync of rs', 120, sub { tq('SELECT count(*) FROM public.rs') eq '5000' }),
	'initial sync: every row in the target');
ok(poll_until('initial sync of rss', 120, sub { tq('SELECT count(*) FROM soft.rs') eq '5000' }),
	'initial sync (soft): every row in the target');
is(stream_of('rs')->{last_error}, undef, 'initial sync: no error');

# the keys deleted from the target table, by whatever statement
tq(q{
CREATE TABLE public.deleted_in_target (id int);
GRANT ALL ON public.deleted_in_target TO PUBLIC;
CREATE FUNCTION public.log_deleted() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN INSERT INTO public.deleted_in_target VALUES (OLD.id); RETURN NULL; END$$;
CREATE TRIGGER log_deleted AFTER DELETE ON public.rs FOR EACH ROW EXECUTE FUNCTION public.log_deleted();
CREATE TABLE public.soft_deleted_in_target (id int);
GRANT ALL ON public.soft_deleted_in_target TO PUBLIC;
CREATE FUNCTION public.log_soft_deleted() RETURNS trigger LANGUAGE plpgsql
    AS $$BEGIN INSERT INTO public.soft_deleted_in_target VALUES (OLD.id); RETURN NULL; END$$;
CREATE TRIGGER log_soft_deleted AFTER UPDATE ON soft.rs FOR EACH ROW
    WHEN (OLD._sdc_deleted_at IS NULL AND NEW._sdc_deleted_at IS NOT NULL)
    EXECUTE FUNCTION public.log_soft_deleted();
CREATE TRIGGER log_soft_deleted_hard AFTER DELETE ON soft.rs FOR EACH ROW
    EXECUTE FUNCTION public.log_soft_deleted();
});

my $v1 = stream_of('rs')->{version};
my $pb = start_pgbench($src, 'rs', q{
\set r random(1, 5000)
UPDATE rs SET v = 'u' || :r WHERE id = :r;
\if :r % 25 = 0
DELETE FROM rs WHERE id = :r + 1;
\endif
INSERT INTO rs VALUES (nextval('rs_new'), 'during');
}, '-c', '1', '-T', '8', '-R', '100');
# changes flow before, during and after the backfill's first chunks
ok(poll_until('changes flowing', 30,
		sub { $src->safe_psql('postgres', 'SELECT count(*) FROM rs WHERE id > 1000000') > 20 }),
	'changes flow');
my $v1s = stream_of('rss')->{version};
$src->safe_psql('postgres', q{SELECT egress_resync_stream('rs'); SELECT egress_resync_stream('rss')});
ok(poll_until('rs in a new version', 60, sub { (stream_of('rs')->{version} // 0) > $v1 }),
	'rs is synced again in a new version');
ok(poll_until('rss in a new version', 60, sub { (stream_of('rss')->{version} // 0) > $v1s }),
	'rss is synced again in a new version');
ok(poll_until('the target has a shadow table', 60,
		sub { tq(q{SELECT count(*) FROM pg_class WHERE relname LIKE 'rs\_\_v%'}) ne '0' }),
	'the new version loads into a shadow table (the target had rows)');
ok(finish_pgbench($pb), 'changes ran during the resync');
wait_stream_state($src, 'rs', 'streaming');
wait_stream_state($src, 'rss', 'streaming');
is(stream_of('rs')->{last_error}, undef, 'resync: no error');
is(stream_of('rss')->{last_error}, undef, 'resync (soft): no error');
cmp_ok(stream_of('rs')->{backfill_chunks}, '>', 10, 'the resync was chunked');

my $want = $src->safe_psql('postgres', q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM rs});
ok(poll_until('target equal to the source', 120,
		sub { tq(q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM public.rs}) eq $want }),
	'the target ends equal to the source');
ok(poll_until('soft target: the live rows equal the source', 120,
		sub { tq(q{SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM soft.rs WHERE _sdc_deleted_at IS NULL}) eq $want }),
	'soft: the rows not deleted equal the source');
is(tq(q{SELECT count(*) FROM pg_class WHERE relname LIKE 'rs\_\_v%'}), '0', 'the shadow tables are gone');
my $state = tq(q{SELECT coalesce(loading_version::text, 'none') || ' ' || active_version FROM public._pg_egress_state WHERE stream = 'public-rs'});
is($state, 'none ' . stream_of('rs')->{version}, 'state: the new version active, none loading');

# every key deleted in the target was deleted in the source
my $source_gone = $src->safe_psql('postgres', q{SELECT string_agg(DISTINCT id::text, ',') FROM gone});
my %gone = map { $_ => 1 } split /,/, $source_gone;
my @wrong = grep { !$gone{$_} } split /\n/,
  tq(q{SELECT DISTINCT id FROM public.deleted_in_target ORDER BY id});
cmp_ok(scalar(keys %gone), '>', 0, 'the source deleted rows during the test');
is(scalar(@wrong), 0,
	'no row the source kept was ever deleted in the target during the resync'
	  . (@wrong ? ' (deleted: ' . join(',', @wrong[0 .. ($#wrong < 9 ? $#wrong : 9)]) . ', ...)' : ''));
my @wrong_soft = grep { !$gone{$_} } split /\n/,
  tq(q{SELECT DISTINCT id FROM public.soft_deleted_in_target ORDER BY id});
is(scalar(@wrong_soft), 0,
	'soft: no row the source kept ever got _sdc_deleted_at during the resync'
	  . (@wrong_soft ? ' (' . join(',', @wrong_soft[0 .. ($#wrong_soft < 9 ? $#wrong_soft : 9)]) . ', ...)' : ''));
is(tq(q{SELECT count(*) FROM soft.rs WHERE _sdc_deleted_at IS NOT NULL}), scalar(keys %gone),
	'soft: every key the source deleted has _sdc_deleted_at');

done_testing();
