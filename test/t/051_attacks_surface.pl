# Attacks on the SQL surface (issue 10), with roles and running workers.
#
# Row-level security: a role whose policy shows it only its own tenant's
# rows cannot add a LOG_BASED stream of the table (changes are decoded from
# the WAL, where no policy filters them; pg_egress 0.1 accepted it and sent
# every tenant's inserts); its FULL_TABLE stream sends only its own rows;
# the table's owner (no FORCE) and a BYPASSRLS role may stream changes.
# Secrets: a role with pg_read_all_data reads no destination secret from
# any egress.* table or view.  Locks: a role that cannot read a relation
# gets "permission denied" at once from egress_preview_schema and
# egress_add_stream instead of queueing behind a lock on it.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use EgressTest;

my $node = create_node('attacks_surface', cdc => 1);

$node->safe_psql(
	'postgres', q{
CREATE TABLE tenant_rows (id integer PRIMARY KEY, tenant name NOT NULL, v text);
ALTER TABLE tenant_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON tenant_rows USING (tenant = current_user);
INSERT INTO tenant_rows VALUES (1, 'tenant_a', 'a1'), (2, 'tenant_b', 'b1'), (3, 'tenant_a', 'a2');

CREATE ROLE tenant_a LOGIN;
CREATE ROLE tenant_b LOGIN;
CREATE ROLE table_owner LOGIN;
CREATE ROLE bypasser LOGIN BYPASSRLS;
CREATE ROLE prober LOGIN;
CREATE ROLE reader LOGIN;
GRANT pg_read_all_data TO reader;
GRANT EXECUTE ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_remove_stream(text),
	egress_add_streams(text, text, text, text, jsonb),
	egress_stream_activity()
TO tenant_a, table_owner, bypasser, prober;
GRANT SELECT ON egress_streams TO tenant_a, table_owner, bypasser, prober;
GRANT pg_write_server_files TO tenant_a, table_owner, bypasser, prober;
GRANT SELECT ON tenant_rows TO tenant_a, tenant_b, bypasser;

-- a table with row security whose only policy shows nobody anything; its
-- owner is not subject to it (no FORCE)
CREATE TABLE owned_rls (id integer PRIMARY KEY, v text);
ALTER TABLE owned_rls OWNER TO table_owner;
ALTER TABLE owned_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY nothing ON owned_rls USING (false);
INSERT INTO owned_rls VALUES (1, 'x');

CREATE TABLE locked_t (id integer PRIMARY KEY, v text);
});

my %dir;
for my $who (qw(tenant_a table_owner bypasser prober))
{
	$dir{$who} = new_outdir($node, $who);
	my ($ret, $out, $err) = query_as($node, $who,
		'SELECT egress_add_destination(' . sql_quote("d_$who") . ', ' . sql_quote(file_url($dir{$who})) . ')');
	is($ret, 0, "$who adds its file destination") or diag $err;
}

sub sqlstate_as
{
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = query_as($node, $role, $sql);
	return ('', $err) if $ret == 0;
	return ($err =~ /ERROR:\s+([0-9A-Z]{5}):/ ? $1 : 'unknown', $err);
}

sub ids_in
{
	my ($dir) = @_;
	return [ sort { $a <=> $b } map { $_->{record}{id} } records_of(read_batches($dir)) ];
}

sub count_streams
{
	return $node->safe_psql('postgres', "SELECT count(*) FROM egress.stream WHERE name = '$_[0]'");
}

# ---- row-level security and LOG_BASED ---------------------------------------

my ($state, $err) = sqlstate_as('tenant_a',
	q{SELECT egress_add_stream('a_cdc', 'tenant_rows', 'LOG_BASED', 'd_tenant_a')});
is($state, '0A000', 'a tenant under a policy cannot add a LOG_BASED stream of the table') or diag $err;
like($err, qr/row-level security/, '... the message says row-level security');
like($err, qr/HINT:.*BYPASSRLS/, '... the hint names BYPASSRLS and the other ways');
is(count_streams('a_cdc'), '0', '... and no stream was added');

# the same through a pattern (all or nothing)
($state, $err) = sqlstate_as('tenant_a',
	q{SELECT egress_add_streams('public.tenant_*', method => 'LOG_BASED', destination => 'd_tenant_a')});
is($state, '0A000', 'the tenant cannot add it through egress_add_streams either') or diag $err;
is($node->safe_psql('postgres', 'SELECT count(*) FROM egress.stream'), '0', '... and no stream was added');

# the same tenant's FULL_TABLE stream reads through the policy
($state, $err) = sqlstate_as('tenant_a',
	q{SELECT egress_add_stream('a_full', 'tenant_rows', 'FULL_TABLE', 'd_tenant_a')});
is($state, '', 'the tenant adds a FULL_TABLE stream of the table') or diag $err;
wait_stream_state($node, 'a_full', 'synced');
is_deeply(ids_in($dir{tenant_a}), [ 1, 3 ],
	"the FULL_TABLE stream sent the tenant's rows (1, 3) and not the other tenant's (2)");

# the owner (no FORCE ROW LEVEL SECURITY) is not subject to the policies
($state, $err) = sqlstate_as('table_owner',
	q{SELECT egress_add_stream('o_cdc', 'owned_rls', 'LOG_BASED', 'd_table_owner')});
is($state, '', "the table's owner adds a LOG_BASED stream of its table with row security") or diag $err;
wait_stream_state($node, 'o_cdc', 'streaming');
$node->safe_psql('postgres', q{INSERT INTO owned_rls VALUES (2, 'y')});
ok( poll_until('the owner receives the change', undef,
		sub { join(',', @{ ids_in($dir{table_owner}) }) eq '1,2' }),
	"the owner's stream sent the synced row and the change, as its SELECT sees them")
  or diag explain ids_in($dir{table_owner});

# ... but FORCE ROW LEVEL SECURITY makes the policies apply to the owner too
$node->safe_psql('postgres', 'ALTER TABLE owned_rls FORCE ROW LEVEL SECURITY');
($state, $err) = sqlstate_as('table_owner',
	q{SELECT egress_add_stream('o_cdc2', 'owned_rls', 'LOG_BASED', 'd_table_owner')});
is($state, '0A000', 'with FORCE ROW LEVEL SECURITY the owner is refused too') or diag $err;
$node->safe_psql('postgres', 'ALTER TABLE owned_rls NO FORCE ROW LEVEL SECURITY');

# BYPASSRLS sees every row anyway
($state, $err) = sqlstate_as('bypasser',
	q{SELECT egress_add_stream('b_cdc', 'tenant_rows', 'LOG_BASED', 'd_bypasser')});
is($state, '', 'a BYPASSRLS role adds a LOG_BASED stream of the table') or diag $err;
wait_stream_state($node, 'b_cdc', 'streaming');
$node->safe_psql('postgres', q{INSERT INTO tenant_rows VALUES (4, 'tenant_b', 'b2')});
ok( poll_until('the BYPASSRLS stream receives the change', undef,
		sub { join(',', @{ ids_in($dir{bypasser}) }) eq '1,2,3,4' }),
	'the BYPASSRLS stream sent every row')
  or diag explain ids_in($dir{bypasser});

# ---- secrets and pg_read_all_data ---------------------------------------------

$node->safe_psql('postgres',
	q{SELECT egress_add_destination('vault', 'https://loader:pa55-W0RD@127.0.0.1:9/ingest',
		'{"headers": {"Authorization": "Bearer tok-S3CRET-42"}}')});
my $tables = $node->safe_psql('postgres',
	q{SELECT string_agg(quote_ident(relname), ' ' ORDER BY relname) FROM pg_class
	   WHERE relnamespace = 'egress'::regnamespace AND relkind IN ('r', 'v')});
my $seen = '';
foreach my $t (split / /, $tables)
{
	my ($ret, $out, $err2) = query_as($node, 'reader', "SELECT row_to_json(t) FROM egress.$t t");
	is($ret, 0, "a pg_read_all_data role reads egress.$t") or diag $err2;
	$seen .= "$out\n$err2\n";
}
foreach my $v (qw(egress_streams egress_stream_patterns))
{
	my ($ret, $out, $err2) = query_as($node, 'reader', "SELECT row_to_json(t) FROM $v t");
	$seen .= "$out\n$err2\n";
}
unlike($seen, qr/S3CRET|pa55-W0RD|loader/, 'a pg_read_all_data role sees no header secret or URL credential');
is((query_as($node, 'reader', 'SELECT count(*) FROM egress.destination'))[1], '0',
	'a pg_read_all_data role sees no destination at all');
my ($ret, $out, $err3) = query_as($node, 'reader', 'SELECT * FROM egress_stream_activity()');
like($err3, qr/permission denied for function egress_stream_activity/,
	'egress_stream_activity() is not executable by PUBLIC');
like((query_as($node, 'tenant_a', 'SELECT string_agg(name, \',\' ORDER BY name) FROM egress_streams'))[1],
	qr/^a_full$/, 'a granted role still reads its streams through egress_streams');

# ---- no lock on a relation the caller cannot read ------------------------------

my $locker = $node->background_psql('postgres');
$locker->query_safe('BEGIN');
$locker->query_safe('LOCK TABLE locked_t IN ACCESS EXCLUSIVE MODE');
foreach my $case (
	[ 'egress_preview_schema', q{SELECT egress_preview_schema('locked_t')} ],
	[ 'egress_add_stream LOG_BASED', q{SELECT egress_add_stream('p1', 'locked_t', 'LOG_BASED', 'd_prober')} ],
	[ 'egress_add_stream INCREMENTAL',
		q{SELECT egress_add_stream('p2', 'locked_t', 'INCREMENTAL', 'd_prober', replication_key => 'id')} ],
	[ 'egress_add_stream FULL_TABLE', q{SELECT egress_add_stream('p3', 'locked_t', 'FULL_TABLE', 'd_prober')} ])
{
	my ($what, $sql) = @$case;
	my $t0 = time;
	my ($st, $e) = sqlstate_as('prober', "SET lock_timeout = '20s';\n$sql");
	my $took = time - $t0;
	is($st, '42501', "$what of a table the caller cannot read: permission denied") or diag $e;
	cmp_ok($took, '<', 15, "$what: answered without waiting for the table's lock");
}
my $waiting = $node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_locks WHERE relation = 'locked_t'::regclass AND NOT granted});
is($waiting, '0', 'no lock on the table is queued');
$locker->query_safe('ROLLBACK');
$locker->quit;

# the same calls, once the caller may read the table
$node->safe_psql('postgres', 'GRANT SELECT ON locked_t TO prober');
($state, $err) = sqlstate_as('prober', q{SELECT egress_preview_schema('locked_t')});
is($state, '', 'with SELECT the preview works') or diag $err;

$node->stop;
done_testing();
