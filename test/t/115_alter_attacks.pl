# Review r1: moving a destination under another role's stream.
#
# A destination of a team role; a member with SELECT on a table the other
# members may not read adds a stream of it.  Another member must not move
# the destination (its URL) to a place of its choice: that hands it rows
# it may not read.  egress_alter_destination() refuses it, also when the
# intruder took a REPEATABLE READ snapshot before the stream was added
# (the streams are read with the latest snapshot, not the transaction's).
# The stream's owner may move it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $node = create_node('alter_attacks');
my $dir_team = new_outdir($node, 'team');
my $dir_mallory = new_outdir($node, 'mallory');

sub sql { return $node->safe_psql('postgres', $_[0]); }

sql(q{
CREATE ROLE team IN ROLE egress_user, pg_write_server_files;
CREATE ROLE sec LOGIN IN ROLE team;
CREATE ROLE mallory LOGIN IN ROLE team;
CREATE TABLE secret_t (id integer PRIMARY KEY, ssn text NOT NULL);
INSERT INTO secret_t VALUES (1, '078-05-1120');
GRANT SELECT ON secret_t TO sec;
});
sql("SET ROLE team; SELECT egress_add_destination('team_dir', "
	  . sql_quote(file_url($dir_team)) . ")");
is(sql("SET ROLE mallory; SELECT has_table_privilege('secret_t', 'SELECT')"),
	'f', 'mallory may not read secret_t');

# mallory's snapshot first, then sec's stream, then mallory's alter
my $mallory = $node->background_psql('postgres', on_error_stop => 0);
$mallory->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$mallory->query_safe('SET ROLE mallory');
is($mallory->query_safe('SELECT count(*) FROM egress_destinations'),
	'1', 'mallory sees the team destination (snapshot taken)');
sql(q{SET ROLE sec;
SELECT egress_add_stream('sec_s', 'public.secret_t', 'FULL_TABLE', 'team_dir',
	options => '{"batch_max_rows": 1}')});
my $alter = "SELECT egress_alter_destination('team_dir', url => "
  . sql_quote(file_url($dir_mallory)) . ")";
my ($out, $ret) = $mallory->query($alter);
like($mallory->{stderr}, qr/permission denied to move destination "team_dir"/,
	'REPEATABLE READ: the member cannot move the destination under a stream added after its snapshot');
unlike($mallory->{stderr}, qr/sec_s/, 'the other role\'s stream is not named');
$mallory->query('ROLLBACK');
$mallory->quit;
like(sql("SELECT location FROM egress.destination WHERE name = 'team_dir'"),
	qr{^\Q$dir_team\E/?$}, 'the destination did not move');

# READ COMMITTED, the plain case
my ($r, $o, $e) = query_as($node, 'mallory', $alter);
isnt($r, 0, 'READ COMMITTED: refused too');
like($e, qr/permission denied to move destination/, 'with the message');

# the stream's owner may move it
($r, $o, $e) = query_as($node, 'sec',
	"SELECT egress_alter_destination('team_dir', url => " . sql_quote(file_url($dir_team . '/moved')) . ")");
is($r, 0, 'the stream owner may move the destination') or diag $e;

$node->stop;
done_testing();
