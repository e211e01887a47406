
# Second-pass review (helper 12) of the issue-10 fixes f1..f3.
#
#  A. (f3) A CDC worker that finds no free shared entry exits (proc_exit
#     in egress_cdc_main) and the database worker starts it again at once:
#     each exit wakes it (bgw_notify_pid), reconcile() sees the destination
#     wanted and not running, start_cdc() again.  With the entries taken by
#     another destination's LOG_BASED streams (one entry per stream) the
#     restart ran in a loop (2320 exits in 15 s before the fix), spamming
#     the log, and the starved stream stayed 'pending' without any error
#     shown.  Now the worker says why on its streams' last_error and waits
#     a naptime before exiting.  Which worker wins the entries is a race: in
#     one run the CDC worker of dc got its destination entry but no stream
#     entry and crashed the cluster (see D).
#  C. a streaming destination stays quiet (the fingerprint with states
#     does not restart sessions in a loop): passes.
#  D. see below: a SIGSEGV crash loop of the whole cluster before the fix.
#  B. (f1) keys that reach user code are refused: a composite with a
#     domain field, an array of a domain over such a composite, a range
#     of a domain; harmless ones (enum, array of domain) accepted.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('review2', cdc => 1,
	conf => "pg_egress.max_active_streams = 8\npg_egress.max_workers = 4\n");

sub sql { return $node->safe_psql('postgres', $_[0]); }

# ---- B first (cheap, no workers needed for the add-time checks) ----------
sql(q{
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a integer, b posint);
CREATE DOMAIN pairdom AS pair;
CREATE TYPE posrange AS RANGE (subtype = posint);
CREATE TYPE color AS ENUM ('red', 'green');
CREATE TABLE k_comp (id pair PRIMARY KEY, v text);
CREATE TABLE k_arrdomcomp (id pairdom[] PRIMARY KEY, v text);
CREATE TABLE k_range (id posrange PRIMARY KEY, v text);
CREATE TABLE k_mrange (id posmultirange PRIMARY KEY, v text);
CREATE TABLE k_enum (id color PRIMARY KEY, v text);
CREATE TABLE k_arrdom (id posint[] PRIMARY KEY, v text);
});
my $dir_b = new_outdir($node, 'b');
add_destination($node, 'db', $dir_b);
foreach my $t (qw(k_comp k_arrdomcomp k_range k_mrange))
{
	foreach my $m (qw(INCREMENTAL LOG_BASED))
	{
		my $rk = $m eq 'INCREMENTAL' ? ", replication_key => 'id'" : '';
		my $sn = lc("${t}_$m");
		my ($ret, $out, $err) = $node->psql('postgres',
			"SELECT egress_add_stream('$sn', '$t', method => '$m', destination => 'db'$rk)");
		like($err, qr/cannot be read back safely|cannot add|not supported|cannot/,
			"B: $m key of $t refused ($err)");
		sql("SELECT egress_remove_stream('$sn')") if $ret == 0;
	}
}

# ---- A: restart loop of a CDC worker without a shared entry -------------
my $dir_a = new_outdir($node, 'a');
my $dir_c = new_outdir($node, 'c');
add_destination($node, 'da', $dir_a);
add_destination($node, 'dc', $dir_c);
foreach my $i (1 .. 7)
{
	sql("CREATE TABLE a$i (id integer PRIMARY KEY, v text); INSERT INTO a$i VALUES (1, 'x');"
	  . "SELECT egress_add_stream('a$i', 'a$i', method => 'LOG_BASED', destination => 'da')");
}
wait_stream_state($node, "a$_", 'streaming', 120) foreach (1 .. 7);
# ---- C: a streaming destination is quiet (no session restart loop) -------
my $offset_c = -s $node->logfile;
sql("INSERT INTO a1 SELECT i, 'y' FROM generate_series(2, 50) i");
sleep 10;
my $log_c = substr(slurp_file($node->logfile), $offset_c);
my $lines = () = $log_c =~ /\n/g;
diag "C: $lines log lines in 10 s of streaming";
unlike($log_c, qr/destination "da".*(?:session|restart)/i, 'C: no session restarts of da while streaming');

sql(q{CREATE TABLE c1 (id integer PRIMARY KEY, v text); INSERT INTO c1 VALUES (1, 'x');
SELECT egress_add_stream('c1', 'c1', method => 'LOG_BASED', destination => 'dc')});
my $offset = -s $node->logfile;
sleep 15;
my $log = substr(slurp_file($node->logfile), $offset);
my $exits = () = $log =~ /CDC worker for destination "dc" exits: no free shared worker entry/g;
my $starts = () = $log =~ /starting background worker process "pg_egress cdc/g;
diag "A: in 15 s: $exits exits of the CDC worker of dc without an entry, $starts cdc worker starts";
# one exit per naptime (1 s here) at most, plus slack for the window's edges
cmp_ok($exits, '<=', 18,
	'A: the CDC worker without a shared entry is not restarted in a loop');
my $crashes_a = () = $log =~ /was terminated by signal 11/g;
diag "A: $crashes_a crashes (signal 11) in 15 s";
is($crashes_a, 0, 'A: no crash when the second destination finds the entries taken');
my $row = stream_row($node, 'c1');
diag 'A: c1 row: ' . join(', ', map { "$_=" . ($row->{$_} // 'NULL') } qw(state last_error));
ok(($row->{state} // '') ne 'pending' || defined $row->{last_error},
	'A: the starved stream says why it does not run');

# ---- D: one more LOG_BASED stream than free shared entries ---------------
# The CDC worker of da holds its destination entry and one per stream
# (7 + 1 = 8 = max_active_streams).  An 8th stream on da gets no entry
# (egress_claim_cdc_stream returns NULL) and sync_stream() calls
# egress_set_phase(NULL, "syncing"): SIGSEGV while holding the shared
# LWLock, the postmaster restarts the whole cluster, the worker comes back
# and crashes again -- a crash loop any role allowed to add streams can
# cause.  Now that stream is stopped (state error, last_error says why).
sql("SELECT egress_remove_stream('c1')");
$offset = -s $node->logfile;
sql("CREATE TABLE a8 (id integer PRIMARY KEY, v text); INSERT INTO a8 VALUES (1, 'x');"
  . "SELECT egress_add_stream('a8', 'a8', method => 'LOG_BASED', destination => 'da')");
ok(poll_until('a8 stopped for want of a shared entry', 60, sub {
			my $r = stream_row($node, 'a8');
			($r->{state} // '') eq 'error' && ($r->{last_error} // '') =~ /no shared worker entry/;
		}),
	'D: a stream without a free shared entry goes to state error, saying why');
$log = substr(slurp_file($node->logfile), $offset);
my $crashes = () = $log =~ /was terminated by signal 11/g;
is($crashes, 0, 'D: a stream without a free shared entry does not crash the server');

done_testing();
