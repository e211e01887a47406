
# Attacks on the code that runs with raised privileges: the egress_*
# functions and the follow_new_tables event trigger read and write the
# egress catalog as the bootstrap superuser, and INCREMENTAL runs query
# user tables as the stream owner.  None of them may resolve a name through
# objects a caller controls: types in the caller's pg_temp (searched first
# for types unless the search path names pg_temp), operators in schemas of
# a hostile search path, operators in public on the owner's search path.
#
# Every attacker here records what ran into public.pwned (tag, role, whether
# that role was a superuser) and, when it runs as a superuser, makes its
# session role a superuser.  After every attack: no attacker is a superuser
# and nothing ran as a superuser.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('attacks_privesc');
my $out = new_outdir($node, 'su');
my $etl_out = new_outdir($node, 'etl');
my $inc_out = new_outdir($node, 'inc');
sub sql { return $node->safe_psql('postgres', $_[0]); }

sub rolsuper
{
	my ($role) = @_;
	return sql('SELECT rolsuper FROM pg_roles WHERE rolname = ' . sql_quote($role));
}

# what ran as a superuser (rows of public.pwned), as text for diagnostics
sub pwned_as_super
{
	return sql(q{SELECT coalesce(string_agg(tag || ' as ' || by_role, ', ' ORDER BY n), '') FROM public.pwned WHERE by_super});
}

sub pwned_tags
{
	my ($like) = @_;
	return sql('SELECT coalesce(string_agg(DISTINCT tag || \' as \' || by_role, \', \'), \'\') FROM public.pwned WHERE tag LIKE '
		  . sql_quote($like));
}

# The attackers' payload: logs, and escalates when run as a superuser.
sql(q{
CREATE TABLE public.pwned (n bigserial, tag text, by_role text, by_super bool);
GRANT INSERT ON public.pwned TO PUBLIC;
GRANT USAGE ON SEQUENCE public.pwned_n_seq TO PUBLIC;
CREATE SCHEMA evil;
CREATE FUNCTION evil.esc(tag text) RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
	su pg_catalog.bool;
BEGIN
	SELECT r.rolsuper INTO su FROM pg_catalog.pg_roles r
	 WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER;
	INSERT INTO public.pwned (tag, by_role, by_super) VALUES (tag, CURRENT_USER, su);
	IF su THEN
		EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', SESSION_USER);
	END IF;
	RETURN true;
END
$$;
GRANT USAGE ON SCHEMA evil TO PUBLIC;
});

# ---- 1. the issue's reproduction: CREATE TABLE with a follow rule --------------
sql(q{CREATE SCHEMA sales});
sql(q{CREATE TABLE sales.orders (id int PRIMARY KEY)});
sql('SELECT egress_add_destination(' . sql_quote('files') . ', ' . sql_quote(file_url($out)) . ')');
sql(q{SELECT egress_add_streams('sales.*', method => 'FULL_TABLE', destination => 'files',
	options => '{"follow_new_tables": true}')});
sql(q{CREATE ROLE me LOGIN; GRANT CREATE ON SCHEMA public TO me});

my ($ret, $stdout, $stderr) = query_as($node, 'me', q{
CREATE FUNCTION pg_temp.f(pg_catalog.oid) RETURNS bool LANGUAGE sql AS 'ALTER ROLE me SUPERUSER; SELECT true';
CREATE DOMAIN pg_temp.oid AS pg_catalog.oid CHECK (pg_temp.f(VALUE));
CREATE TABLE public.t(id int primary key);
});
is($ret, 0, 'an unprivileged role creates a table while a follow rule exists') or diag $stderr;
is(rolsuper('me'), 'f', 'the issue\'s reproduction: a pg_temp.oid domain does not make its owner superuser');

# ---- pg_temp types and a hostile search path around every egress_* call --------
# Types an attacker may shadow in pg_temp: every name catalog SQL casts to or
# compares (int4/integer, the reg* types, ...).
my @types = qw(oid text int4 integer int8 int2 bool jsonb json regclass regrole name varchar timestamptz pg_lsn numeric);
my $pg_temp_types = join('',
	map { "CREATE DOMAIN pg_temp.\"$_\" AS pg_catalog.\"" . ($_ eq 'integer' ? 'int4' : $_) . "\" CHECK (evil.esc('pg_temp.$_'));\n" }
	  @types);

# Operators of a schema first in the search path, over the types catalog SQL
# compares: each logs and escalates, then answers as pg_catalog's would.
my $n = 0;
my $evil_ops = '';
foreach my $op ('=', '<>', '<', '>', '<=', '>=')
{
	foreach my $t (qw(text int4 int8 oid name bool jsonb))
	{
		$n++;
		$evil_ops .= "CREATE FUNCTION evil.op$n(a pg_catalog.$t, b pg_catalog.$t) RETURNS pg_catalog.bool LANGUAGE plpgsql AS "
		  . "\$\$BEGIN PERFORM evil.esc('operator $op ($t)'); RETURN a OPERATOR(pg_catalog.$op) b; END\$\$;\n"
		  . "CREATE OPERATOR evil.$op (LEFTARG = pg_catalog.$t, RIGHTARG = pg_catalog.$t, FUNCTION = evil.op$n);\n";
	}
}
# text against name and jsonb ->> text, as catalog SQL writes them
$evil_ops .= "CREATE FUNCTION evil.opnt(a pg_catalog.name, b pg_catalog.text) RETURNS pg_catalog.bool LANGUAGE plpgsql AS "
  . "\$\$BEGIN PERFORM evil.esc('operator = (name, text)'); RETURN a OPERATOR(pg_catalog.=) b; END\$\$;\n"
  . "CREATE OPERATOR evil.= (LEFTARG = pg_catalog.name, RIGHTARG = pg_catalog.text, FUNCTION = evil.opnt);\n";
$evil_ops .= "CREATE FUNCTION evil.opjt(a pg_catalog.jsonb, b pg_catalog.text) RETURNS pg_catalog.text LANGUAGE plpgsql AS "
  . "\$\$BEGIN PERFORM evil.esc('operator ->> (jsonb, text)'); RETURN a OPERATOR(pg_catalog.->>) b; END\$\$;\n"
  . "CREATE OPERATOR evil.->> (LEFTARG = pg_catalog.jsonb, RIGHTARG = pg_catalog.text, FUNCTION = evil.opjt);\n";
sql($evil_ops);

sql(q{
CREATE ROLE etl LOGIN;
GRANT EXECUTE ON FUNCTION
	egress_add_destination(text, text, jsonb),
	egress_remove_destination(text, boolean),
	egress_add_stream(text, regclass, text, text, text, jsonb),
	egress_add_streams(text, text, text, text, jsonb),
	egress_remove_stream_pattern(integer),
	egress_remove_stream(text),
	egress_pause_stream(text),
	egress_resume_stream(text),
	egress_resync_stream(text),
	egress_sync_now(text)
TO etl;
GRANT SELECT ON egress_streams, egress_stream_patterns TO etl;
GRANT pg_write_server_files TO etl;
CREATE TABLE public.tab (id int PRIMARY KEY, k int NOT NULL, v text);
INSERT INTO public.tab SELECT i, i, 'v' || i FROM generate_series(1, 10) i;
GRANT SELECT ON public.tab TO etl;
CREATE SCHEMA etlsch AUTHORIZATION etl;
});

# Every egress_* call that runs catalog SQL, once with pg_temp types only and
# once with the hostile search path too; in two sessions per round, the
# streams left to finish their syncs in between (a removal racing a run is
# another matter).
foreach my $round ('pg_temp types', 'pg_temp types and a hostile search_path')
{
	my $path = $round =~ /search_path/ ? "SET search_path = evil, pg_catalog, public;\n" : '';
	my $dir = new_outdir($node, 'etl');
	my $calls = $pg_temp_types . $path . q{
SELECT egress_add_destination('etl_d', } . sql_quote(file_url($dir)) . q{);
SELECT egress_add_stream('etl_s', 'public.tab', 'FULL_TABLE', 'etl_d');
SELECT egress_add_stream('etl_i', 'public.tab', 'INCREMENTAL', 'etl_d', 'k',
	'{"interval": "1 hour", "state": {"replication_key": "k", "replication_key_value": 5, "version": 1700000000000}}');
SELECT egress_pause_stream('etl_s');
SELECT egress_resume_stream('etl_s');
SELECT egress_resync_stream('etl_s');
SELECT egress_sync_now('etl_i');
SELECT egress_add_streams('etlsch.*', NULL, 'FULL_TABLE', 'etl_d', '{"follow_new_tables": true}');
CREATE TABLE etlsch.followed (id int PRIMARY KEY);
SELECT egress_discover();
SELECT egress_preview_schema('public.tab');
SELECT egress_remove_stream_pattern(id) FROM egress_stream_patterns WHERE include OPERATOR(pg_catalog.=) 'etlsch.*';
};
	($ret, $stdout, $stderr) = query_as($node, 'etl', $calls);
	is($ret, 0, "$round: every egress_* call succeeds") or diag $stderr;
	wait_stream_where($node, $_, "state = 'synced' AND sync_finished_at IS NOT NULL", undef, "$round: stream $_ synced")
	  foreach ('etl_s', 'etl_i', 'etlsch_followed');
	$calls = $pg_temp_types . $path . q{
SELECT egress_remove_stream('etl_s');
SELECT egress_remove_stream('etl_i');
SELECT egress_remove_destination('etl_d', true);
DROP TABLE etlsch.followed;
};
	($ret, $stdout, $stderr) = query_as($node, 'etl', $calls);
	is($ret, 0, "$round: removals succeed") or diag $stderr;
	is(rolsuper('etl'), 'f', "$round: the caller did not become superuser");
	is(pwned_as_super(), '', "$round: nothing of the caller's ran as a superuser");
}
is(pwned_tags('%'), '', 'no attacker object was resolved at all (not even as the caller)');

# The follow rule of a superuser sees a table that a role with CREATE in a
# followed schema makes, with its pg_temp types and search path: nothing of
# that role runs, and the table is not followed (the rule follows only
# tables of roles its owner is a member of, superuser rights not counted:
# streaming another role's table would run its code as the rule's owner).
sql(q{CREATE ROLE creator LOGIN; GRANT CREATE, USAGE ON SCHEMA sales TO creator});
($ret, $stdout, $stderr) = query_as($node, 'creator',
	$pg_temp_types . "SET search_path = evil, pg_catalog, public;\nCREATE TABLE sales.lines (id int PRIMARY KEY);\n");
is($ret, 0, 'a table created in a followed schema with hostile pg_temp types and search path') or diag $stderr;
unlike($stderr, qr/added stream "sales_lines"/, 'the superuser\'s rule did not follow another role\'s table');
is($node->safe_psql('postgres', q{SELECT count(*) FROM egress_streams WHERE name = 'sales_lines'}), '0',
	'no stream for another role\'s table');
like(slurp_file($node->logfile), qr/did not add a stream for new table sales\.lines/,
	'the server log says why the table was not followed');
is(rolsuper('creator'), 'f', 'the table\'s creator did not become superuser');
is(pwned_tags('%'), '', 'nothing of the creator ran');

# ---- 2. INCREMENTAL runs: operators in public on the owner's search path -------
# eve may create in public; the stream owner's search path ("$user", public)
# would find her operators for varchar (pg_catalog has only text's).
sql(q{
CREATE ROLE eve LOGIN;
GRANT CREATE ON SCHEMA public TO eve;
CREATE ROLE owner_i LOGIN;
GRANT EXECUTE ON FUNCTION egress_add_destination(text, text, jsonb),
	egress_add_stream(text, regclass, text, text, text, jsonb), egress_sync_now(text) TO owner_i;
GRANT pg_write_server_files TO owner_i;
CREATE TABLE public.vk (id int PRIMARY KEY, k varchar(20));
INSERT INTO public.vk SELECT i, 'a' || lpad(i::text, 2, '0') FROM generate_series(1, 10) i;
GRANT SELECT ON public.vk TO owner_i;
-- a probe in a row security policy: who reads, and in a restricted operation?
CREATE TABLE public.probe_log (by_role text, restricted bool);
GRANT INSERT ON public.probe_log TO PUBLIC;
CREATE FUNCTION public.probe() RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
	r bool := false;
BEGIN
	BEGIN
		CREATE TEMP TABLE probe_tmp (x int);
		DROP TABLE probe_tmp;
	EXCEPTION WHEN insufficient_privilege THEN
		r := true;
	END;
	INSERT INTO public.probe_log VALUES (CURRENT_USER, r);
	RETURN true;
END
$$;
ALTER TABLE public.vk ENABLE ROW LEVEL SECURITY;
CREATE POLICY everyone ON public.vk FOR SELECT USING (public.probe());
});
($ret, $stdout, $stderr) = query_as($node, 'eve', q{
CREATE FUNCTION public.vc_cmp(a varchar, b varchar) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.esc('operator on varchar in public'); RETURN a::pg_catalog.text OPERATOR(pg_catalog.>=) b::pg_catalog.text; END $$;
CREATE FUNCTION public.vc_gt(a varchar, b varchar) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.esc('operator on varchar in public'); RETURN a::pg_catalog.text OPERATOR(pg_catalog.>) b::pg_catalog.text; END $$;
CREATE OPERATOR public.>= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.vc_cmp);
CREATE OPERATOR public.> (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.vc_gt);
});
is($ret, 0, 'eve defines operators on varchar in public') or diag $stderr;

($ret, $stdout, $stderr) = query_as($node, 'owner_i',
	'SELECT egress_add_destination(' . sql_quote('inc_d') . ', ' . sql_quote(file_url($inc_out)) . ');'
	  . q{SELECT egress_add_stream('vk', 'public.vk', 'INCREMENTAL', 'inc_d', 'k',
	'{"interval": "1 hour", "state": {"replication_key": "k", "replication_key_value": "a04"}}');});
is($ret, 0, 'owner_i adds an INCREMENTAL stream taking over from a key value') or diag $stderr;

sub vk_ids
{
	return [ map { $_->{record}{id} } records_of(read_batches($inc_out, qr/^vk-/)) ];
}
wait_stream_where($node, 'vk', "state = 'synced' AND rows_sent = 7", 120,
	'the first run (key >= value) sends the 7 rows from a04 on');
is_deeply(vk_ids(), [ 4 .. 10 ], 'first run: rows in key order');
sql(q{INSERT INTO public.vk VALUES (11, 'a11'), (12, 'a12'), (13, NULL)});
query_as($node, 'owner_i', q{SELECT egress_sync_now('vk')});
wait_stream_where($node, 'vk', "state = 'synced' AND rows_sent = 9", 120,
	'the next run (after the exact position) sends the 2 new rows');
is_deeply(vk_ids(), [ 4 .. 12 ], 'next run: the new rows, none twice');
is(pwned_tags('%varchar%'), '', 'the runs did not call the operators eve put in public');
is(rolsuper('eve'), 'f', 'eve is not a superuser');
is(sql(q{SELECT string_agg(DISTINCT by_role || '/' || restricted, ',') FROM public.probe_log}),
	'owner_i/true', 'the run\'s query ran as the stream owner in a security-restricted operation');

# A database owner (here: the superuser, on eve's request) put public before
# pg_catalog in the database's search path, which workers take: eve's
# operators on integer now come first even for an integer key.
($ret, $stdout, $stderr) = query_as($node, 'eve', q{
CREATE FUNCTION public.i_ge(a int, b int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.esc('operator on integer in public'); RETURN a OPERATOR(pg_catalog.>=) b; END $$;
CREATE FUNCTION public.i_gt(a int, b int) RETURNS bool LANGUAGE plpgsql AS $$
BEGIN PERFORM evil.esc('operator on integer in public'); RETURN a OPERATOR(pg_catalog.>) b; END $$;
CREATE OPERATOR public.>= (LEFTARG = int, RIGHTARG = int, FUNCTION = public.i_ge);
CREATE OPERATOR public.> (LEFTARG = int, RIGHTARG = int, FUNCTION = public.i_gt);
});
is($ret, 0, 'eve defines operators on integer in public') or diag $stderr;
sql(q{
CREATE TABLE public.ik (id int PRIMARY KEY, k int);
INSERT INTO public.ik SELECT i, i FROM generate_series(1, 10) i;
GRANT SELECT ON public.ik TO owner_i;
ALTER DATABASE postgres SET search_path = public, pg_catalog;
});
($ret, $stdout, $stderr) = query_as($node, 'owner_i',
	q{SELECT egress_add_stream('ik', 'public.ik', 'INCREMENTAL', 'inc_d', 'k',
	'{"interval": "1 hour", "state": {"replication_key": "k", "replication_key_value": 4}}');});
is($ret, 0, 'owner_i adds an INCREMENTAL stream with an integer key') or diag $stderr;
wait_stream_where($node, 'ik', "state = 'synced' AND rows_sent = 7", 120, 'integer key: the first run sends 7 rows');
sql(q{INSERT INTO public.ik VALUES (11, 11)});
query_as($node, 'owner_i', q{SELECT egress_sync_now('ik')});
wait_stream_where($node, 'ik', "state = 'synced' AND rows_sent = 8", 120, 'integer key: the next run sends the new row');
is_deeply([ map { $_->{record}{id} } records_of(read_batches($inc_out, qr/^ik-/)) ], [ 4 .. 11 ],
	'integer key: rows in order, none twice');
sql(q{ALTER DATABASE postgres RESET search_path});
is(pwned_tags('%integer%'), '', 'the runs did not call the operators on integer in public');

is(pwned_as_super(), '', 'nothing ran as a superuser in any attack');
done_testing();
