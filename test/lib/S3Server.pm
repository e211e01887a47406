
# A local S3 server for TAP tests: @20minutes/s3rver (verifies SigV4, key
# pair S3RVER/S3RVER) behind the fault-injecting proxy of
# test/s3/s3server.js, both on 127.0.0.1 and free ports.
#
#   my $s3 = S3Server->start($dir, 'bucket1', 'bucket2');
#   $s3->endpoint                  http://127.0.0.1:PORT
#   $s3->object($bucket, $key)     the stored bytes, or undef
#   $s3->keys($bucket)             sorted keys of the stored objects
#   $s3->state                     proxy bookkeeping (open uploads, ops)
#   $s3->fail('UploadPart', 2, 503)   the 2nd UploadPart from now fails once
#   $s3->delay('UploadPart', 2000)    every UploadPart waits 2 s (0: off)
#   $s3->stop

package S3Server;

use strict;
use warnings;
use File::Basename;
use File::Find;
use File::Spec;
use HTTP::Tiny;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(usleep);
use EgressNode;

# A test file that uses this module needs Node: skipped without it (EgressNode).
sub import { EgressNode::need('the test S3 server (test/s3)'); return; }

my $script = File::Spec->rel2abs(dirname(__FILE__) . '/../s3/s3server.js');

sub start
{
	my ($class, $dir, @buckets) = @_;
	my $data = "$dir/data";
	my $ready = "$dir/ready.json";
	my $log = "$dir/s3server.log";

	die "test/s3/node_modules is missing: run scripts/install-deps.sh (npm ci --ignore-scripts in test/s3)\n"
	  unless -d dirname($script) . '/node_modules/@20minutes/s3rver';
	mkdir $dir;
	mkdir $data;
	unlink $ready;
	my $pid = fork();
	die "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDOUT, '>>', $log) or POSIX::_exit(1);
		open(STDERR, '>>', $log) or POSIX::_exit(1);
		exec(EgressNode::program(), $script, $data, $ready, @buckets) or POSIX::_exit(1);
	}
	my $deadline = time + 60;
	until (-s $ready)
	{
		if (time > $deadline || waitpid($pid, POSIX::WNOHANG()) == $pid)
		{
			my $l = -f $log ? `cat $log` : '';
			die "S3 server did not start: $l";
		}
		usleep(50_000);
	}
	open(my $fh, '<', $ready) or die "$ready: $!";
	my $info = decode_json(do { local $/; <$fh> });
	close $fh;
	return bless { pid => $pid, dir => $dir, data => $data, port => $info->{port} },
	  $class;
}

sub port     { return $_[0]->{port}; }
sub endpoint { return 'http://127.0.0.1:' . $_[0]->{port}; }
sub data_dir { return $_[0]->{data}; }

sub _ctl
{
	my ($self, $method, $path) = @_;
	my $r = HTTP::Tiny->new(timeout => 30)
	  ->request($method, $self->endpoint . $path);
	die "S3 proxy control $path: $r->{status} $r->{content}" unless $r->{success};
	return decode_json($r->{content});
}

sub state { return $_[0]->_ctl('GET', '/__ctl/state'); }

sub fail
{
	my ($self, $op, $nth, $status) = @_;
	$self->_ctl('POST', "/__ctl/fail?op=$op&nth=$nth&status=$status");
	return;
}

sub delay
{
	my ($self, $op, $ms) = @_;
	$self->_ctl('POST', "/__ctl/delay?op=$op&ms=$ms");
	return;
}

# object bytes as stored by s3rver's filesystem store (simple keys only)
sub object
{
	my ($self, $bucket, $key) = @_;
	my $f = "$self->{data}/$bucket/$key._S3rver_object";
	return undef unless -f $f;
	open(my $fh, '<:raw', $f) or die "$f: $!";
	my $c = do { local $/; <$fh> };
	close $fh;
	return $c;
}

sub keys
{
	my ($self, $bucket) = @_;
	my $root = "$self->{data}/$bucket";
	my @k;
	return () unless -d $root;
	find(
		{
			no_chdir => 1,
			wanted => sub {
				return unless /\._S3rver_object$/;
				my $rel = File::Spec->abs2rel($_, $root);
				$rel =~ s/\._S3rver_object$//;
				push @k, $rel;
			}
		},
		$root);
	return sort @k;
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
