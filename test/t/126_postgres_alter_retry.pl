# postgres:// destinations (issue 15): a FULL_TABLE sync and an INCREMENTAL
# run that retry a batch see a destination changed meanwhile.
#
# The destination starts with a wrong password: both streams retry their
# first batch (state retrying).  egress_alter_destination gives the right
# password: without a pause/resume, the runs notice the change
# (egress_sink_watch_destination), start again with the destination as it
# is now, and the rows arrive; neither stream goes to state error.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;

my $PW = 'Alt3r-pw-6a1f';
my $WRONG = 'Wr0ng-pw-77c3';

# ---- the target: scram on 127.0.0.1 ----
my $tgt = PostgreSQL::Test::Cluster->new('alt_tgt');
$tgt->init(extra => [ '--encoding=UTF8', '--locale=C' ]);
$tgt->append_conf('postgresql.conf', qq{
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
log_statement = none
});
open my $hba, '>', $tgt->data_dir . '/pg_hba.conf' or die $!;
print $hba "local all all trust\n";
print $hba "host all all 127.0.0.1/32 scram-sha-256\n";
close $hba;
$tgt->start;
my $tport = $tgt->port;
$tgt->safe_psql('postgres', qq{
SET log_statement = none;
CREATE ROLE loader LOGIN PASSWORD '$PW';
CREATE DATABASE wh OWNER loader;
});

# ---- the source ----
my $src = create_node('alt_src', conf => "log_statement = none\n");
$src->safe_psql('postgres', q{
CREATE TABLE tf (id int PRIMARY KEY, v text);
INSERT INTO tf SELECT g, 'f' || g FROM generate_series(1, 7) g;
CREATE TABLE ti (id int PRIMARY KEY, v text);
INSERT INTO ti SELECT g, 'i' || g FROM generate_series(1, 4) g;
});

my ($ret, $out, $err) = $src->psql('postgres',
	"SELECT egress_add_destination('wh', 'postgres://loader\@127.0.0.1:$tport/wh', "
	  . sql_quote(qq{{"password": "$WRONG", "connect_timeout": "3s"}}) . ')');
is($ret, 0, 'a destination with a wrong password') or diag $err;
($ret, $out, $err) = $src->psql('postgres', q{SELECT egress_add_stream('sf', 'tf', 'FULL_TABLE', 'wh')});
is($ret, 0, 'a FULL_TABLE stream to it') or diag $err;
($ret, $out, $err) = $src->psql('postgres',
	q{SELECT egress_add_stream('si', 'ti', 'INCREMENTAL', 'wh', 'id', '{"interval": "1 hour"}')});
is($ret, 0, 'an INCREMENTAL stream to it') or diag $err;

wait_stream_state($src, $_, 'retrying', 60) for qw(sf si);
ok(poll_until('the failures in the log', 30, sub {
	my $log = slurp_file($src->logfile);
	return $log =~ /could not deliver batch sf\S* to PostgreSQL destination .*password authentication failed/
	  && $log =~ /could not deliver batch si\S* to PostgreSQL destination .*password authentication failed/;
}), 'both retry their first batch: the password is refused');
is($tgt->safe_psql('wh', q{SELECT count(*) FROM pg_class WHERE relname IN ('tf', 'ti')}), '0',
	'nothing reached the target');

# an unrelated change: the runs go on retrying (nothing starts again)
$src->safe_psql('postgres', q{SELECT egress_add_destination('other', }
	  . sql_quote(file_url(PostgreSQL::Test::Utils::tempdir())) . ')');
my $offset = -s $src->logfile;

# ---- the right password: no pause, no resume ----
$src->safe_psql('postgres', qq{SET log_statement = none; SELECT egress_alter_destination('wh', options => '{"password": "$PW"}')});
ok(poll_until('the FULL_TABLE rows in the target', 90, sub {
	my ($r, $o) = $tgt->psql('wh', 'SELECT count(*) FROM public.tf');
	return $r == 0 && $o eq '7';
}), 'the FULL_TABLE sync delivers with the new password') or diag explain stream_row($src, 'sf');
ok(poll_until('the INCREMENTAL rows in the target', 90, sub {
	my ($r, $o) = $tgt->psql('wh', 'SELECT count(*) FROM public.ti');
	return $r == 0 && $o eq '4';
}), 'the INCREMENTAL run delivers with the new password') or diag explain stream_row($src, 'si');
wait_stream_state($src, $_, 'synced', 60) for qw(sf si);
my $log = substr(slurp_file($src->logfile), $offset);
like($log, qr/stream \d+: its destination was changed while a batch was being retried/,
	'the log says why the run starts again');
unlike($log, qr/ERROR:.*destination was changed/, '... not as an error');
my @restarts = slurp_file($src->logfile) =~ /its destination was changed while a batch was being retried/g;
is(scalar(@restarts), 2, 'each run started again once: an unrelated change (another destination) did not count');
is($src->safe_psql('postgres',
	q{SELECT count(*) FROM egress_streams WHERE name IN ('sf', 'si') AND last_error IS NOT NULL}),
	'0', 'neither stream went to state error');
unlike(slurp_file($src->logfile), qr/\Q$PW\E|\Q$WRONG\E/, 'no password in the server log');
is($tgt->safe_psql('wh', q{SELECT string_agg(v, ',' ORDER BY id) FROM public.tf}),
	join(',', map { "f$_" } 1 .. 7), 'the FULL_TABLE rows, each once');

$src->stop;
$tgt->stop;
done_testing();
