
# Worker reads run as the stream's owner with "role" set to it, not only the
# user id: the owner's code (here a row security policy's function) sees
# current_user, current_setting('role') and is_superuser of the owner, never
# 'none' / 'on' of the bootstrap superuser the workers log in as.  FULL_TABLE,
# FULL_TABLE with fast_sync, INCREMENTAL; a failure in the owner's code
# leaves the worker as it was (the next run of the stream works).

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('owner_role');
my $out = new_outdir($node, 'd');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE ROLE reader LOGIN;
GRANT pg_write_server_files TO reader;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb) TO reader;
CREATE SCHEMA r AUTHORIZATION reader;
});

sub as_reader
{
	my ($q) = @_;
	my ($ret, $o, $err) = query_as($node, 'reader', $q);
	is($ret, 0, "as reader: $q") or diag $err;
	return $o;
}

as_reader(q{
CREATE FUNCTION r.spy(tag text) RETURNS bool LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	RAISE WARNING 'h12 spy %: user=% role=% su=%', tag, current_user,
		pg_catalog.current_setting('role'), pg_catalog.current_setting('is_superuser');
	RETURN true;
END $$;
CREATE TABLE r.t (id int PRIMARY KEY, v int);
INSERT INTO r.t SELECT g, g FROM pg_catalog.generate_series(1, 20) g;
ALTER TABLE r.t ENABLE ROW LEVEL SECURITY;
ALTER TABLE r.t FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON r.t USING (r.spy('t'));
CREATE TABLE r.f (id int PRIMARY KEY, v int);
INSERT INTO r.f SELECT g, g FROM pg_catalog.generate_series(1, 20) g;
ALTER TABLE r.f ENABLE ROW LEVEL SECURITY;
ALTER TABLE r.f FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON r.f USING (r.spy('f'));
CREATE TABLE r.i (id int PRIMARY KEY, v int);
INSERT INTO r.i SELECT g, g FROM pg_catalog.generate_series(1, 20) g;
ALTER TABLE r.i ENABLE ROW LEVEL SECURITY;
ALTER TABLE r.i FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON r.i USING (r.spy('i'));
});
as_reader(q{SELECT egress_add_destination('d', } . sql_quote(file_url($out)) . ')');

my $logpos = -s $node->logfile;
as_reader(q{SELECT egress_add_stream('t', 'r.t', 'FULL_TABLE', 'd', NULL, '{"batch_max_rows": 5}')});
as_reader(q{SELECT egress_add_stream('f', 'r.f', 'FULL_TABLE', 'd', NULL, '{"fast_sync": true}')});
as_reader(q{SELECT egress_add_stream('i', 'r.i', 'INCREMENTAL', 'd', 'id', '{}')});
wait_stream_state($node, $_, 'synced', 120) foreach qw(t f i);

my $log = slurp_file($node->logfile, $logpos);
foreach my $tag (qw(t f i))
{
	my @seen = $log =~ /h12 spy \Q$tag\E: (user=\S+ role=\S+ su=\S+)/g;
	cmp_ok(scalar(@seen), '>', 0, "stream $tag: the policy ran in the worker");
	my @bad = grep { $_ ne 'user=reader role=reader su=off' } @seen;
	is_deeply(\@bad, [], "stream $tag: the owner's code sees user, role and is_superuser of the owner");
}

# The owner's code fails: the worker records the error as the bootstrap
# superuser (egress_streams shows it), and a later run works again.
as_reader(q{
CREATE FUNCTION r.boom() RETURNS bool LANGUAGE plpgsql VOLATILE AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM r.okflag) THEN
		RAISE EXCEPTION 'h12 boom role=% su=%', pg_catalog.current_setting('role'),
			pg_catalog.current_setting('is_superuser');
	END IF;
	RETURN true;
END $$;
CREATE TABLE r.okflag (x int);
CREATE TABLE r.e (id int PRIMARY KEY, v int);
INSERT INTO r.e SELECT g, g FROM pg_catalog.generate_series(1, 20) g;
ALTER TABLE r.e ENABLE ROW LEVEL SECURITY;
ALTER TABLE r.e FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON r.e USING (r.boom());
});
as_reader(q{SELECT egress_add_stream('e', 'r.e', 'FULL_TABLE', 'd', NULL, '{}')});
ok(poll_until('the failure of the owner\'s code is recorded', 60,
		sub { sql(q{SELECT last_error FROM egress_streams WHERE name = 'e'}) =~ /h12 boom role=reader su=off/ }),
	'the error raised in the owner\'s code is recorded, seen as the owner');
as_reader(q{INSERT INTO r.okflag VALUES (1)});
sql(q{SELECT egress_resync_stream('e')});
wait_stream_state($node, 'e', 'synced', 120);
pass('after the error, the next run of the stream works');

done_testing();
