
# A local Kinesis server for TAP tests: kinesalite behind the front of
# test/kinesis/front.js, which verifies SigV4 (service kinesis) and injects
# faults; both on 127.0.0.1 and free ports.
#
#   my $k = KinesisServer->start($dir, 'stream1:2', 'stream2');  # name:shards
#                      (front.js flags too: '--latency-ms', 20, '--ack-only')
#   $k->endpoint                  http://127.0.0.1:PORT
#   $k->access_key, $k->secret    the key pair the front accepts
#   $k->records('stream1')        [{shard, seq, key, data}] by shard, in order
#   $k->state                     counters (calls, entries, faults, signature failures)
#   $k->fail(500, 2)              the next 2 PutRecords answered with HTTP 500
#   $k->throttle(3)               the next 3 PutRecords: ProvisionedThroughputExceededException
#   $k->partial(rate => 0.3, ms => 60000)    entries fail at random for a while
#   $k->partial(entries => '0,3', count => 1) chosen entries of the next call fail
#   $k->mode(latency_ms => 20, ack_only => 0)  switches the front's modes
#   $k->create('s', 2); $k->reset; $k->stop

package KinesisServer;

use strict;
use warnings;
use File::Basename;
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(usleep);
use EgressNode;

# A test file that uses this module needs Node: skipped without it (EgressNode).
sub import { EgressNode::need('the test Kinesis server (test/kinesis)'); return; }

my $script = File::Spec->rel2abs(dirname(__FILE__) . '/../kinesis/front.js');
my $JSON = JSON::PP->new->utf8;

sub start
{
	my ($class, $dir, @streams) = @_;
	my $ready = "$dir/ready.json";
	my $log = "$dir/front.log";

	die "test/kinesis/node_modules is missing: run scripts/install-deps.sh (npm ci --ignore-scripts in test/kinesis)\n"
	  unless -d dirname($script) . '/node_modules/kinesalite';
	mkdir $dir;
	unlink $ready;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', $log) or POSIX::_exit(1);
		open(STDERR, '>>', $log) or POSIX::_exit(1);
		exec(EgressNode::program(), $script, $ready, @streams) or POSIX::_exit(1);
	}
	my $deadline = time + 60;
	until (-s $ready)
	{
		if (time > $deadline || waitpid($pid, POSIX::WNOHANG()) == $pid)
		{
			my $l = -f $log ? `cat $log` : '';
			die "Kinesis server did not start: $l";
		}
		usleep(50_000);
	}
	open(my $fh, '<', $ready) or die "$ready: $!";
	my $info = decode_json(do { local $/; <$fh> });
	close $fh;
	return bless { pid => $pid, dir => $dir, port => $info->{port},
		kinesalite_port => $info->{kinesalite_port} }, $class;
}

sub port       { return $_[0]->{port}; }
sub endpoint   { return 'http://127.0.0.1:' . $_[0]->{port}; }
sub access_key { return 'AKIDKINESIS'; }
sub secret     { return 'kinesis-secret'; }

sub _ctl
{
	my ($self, $method, $path) = @_;
	my $r = HTTP::Tiny->new(timeout => 60)->request($method, $self->endpoint . $path);
	die "Kinesis front control $path: $r->{status} $r->{content}" unless $r->{success};
	return $JSON->decode($r->{content});
}

sub state   { return $_[0]->_ctl('GET', '/__ctl/state'); }
sub records { return $_[0]->_ctl('GET', "/__ctl/records?stream=$_[1]"); }
sub reset   { $_[0]->_ctl('POST', '/__ctl/reset'); return; }

sub create
{
	my ($self, $stream, $shards) = @_;
	$self->_ctl('POST', "/__ctl/create?stream=$stream&shards=" . ($shards // 1));
	return;
}

sub fail
{
	my ($self, $status, $count) = @_;
	$self->_ctl('POST', "/__ctl/fail?status=$status&count=" . ($count // 1));
	return;
}

sub throttle
{
	my ($self, $count) = @_;
	$self->_ctl('POST', "/__ctl/throttle?count=" . ($count // 1));
	return;
}

sub partial
{
	my ($self, %o) = @_;
	my $q = join('&', map { "$_=$o{$_}" } sort keys %o);
	$self->_ctl('POST', "/__ctl/partial?$q");
	return;
}

sub mode
{
	my ($self, %o) = @_;
	my $q = join('&', map { "$_=$o{$_}" } sort keys %o);
	return $self->_ctl('POST', "/__ctl/mode?$q");
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'TERM', $self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = undef;
	return;
}

sub DESTROY { $_[0]->stop; }

1;
