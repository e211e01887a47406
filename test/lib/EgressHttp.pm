# TAP helpers for HTTP destinations: the test receiver (test/http/receiver.js)
# and what it received.
#
#   my $r = EgressHttp->start($node);          # a receiver on a free port
#   $r->url                                    # http://127.0.0.1:PORT/ingest
#   $r->fault(fail => 3, status => 503, retry_after => 1);
#   $r->requests                               # every logged request
#   $r->batches                                # acknowledged, de-duplicated
#   $r->to_dir($dir)                           # as batch files, for mirror()
#   $r->validate                               # ajv: shapes + RECORD vs SCHEMA
#   $r->stop; $r->restart;                     # same port
#
# Waits poll with deadlines (EgressTest::poll_until).

package EgressHttp;

use strict;
use warnings;

use File::Basename qw(dirname);
use File::Spec;
use HTTP::Tiny;
use IPC::Run ();
use JSON::PP;
use PostgreSQL::Test::Utils;
use Test::More;
use EgressTest;
use EgressNode;

# A test file that uses this module needs Node: skipped without it (EgressNode).
sub import { EgressNode::need('the test HTTP receiver (test/http)'); return; }

my $ROOT = File::Spec->rel2abs(dirname(__FILE__) . '/../..');
my $HTTPDIR = "$ROOT/test/http";
my $NODE = EgressNode::program();
my $JSON = JSON::PP->new->utf8->allow_bignum->allow_nonref;

# The npm packages of test/http (ajv) are installed by the project's scripts
# (scripts/common.sh: npm ci --ignore-scripts); say so when they are not.
sub node_ready
{
	return -d "$HTTPDIR/node_modules/ajv" && -d "$HTTPDIR/node_modules/ajv-formats";
}

sub start
{
	my ($class, $node, %opts) = @_;
	my $self = bless {
		dir => EgressTest::new_outdir($node, $opts{name} // 'receiver'),
		port => $opts{port} // 0,
		discard => $opts{discard},
	}, $class;
	$self->_spawn;
	return $self;
}

sub _spawn
{
	my ($self) = @_;
	unlink "$self->{dir}/port";
	my @cmd = ($NODE, "$HTTPDIR/receiver.js", '--dir', $self->{dir}, '--port', $self->{port});
	push @cmd, '--discard' if $self->{discard};
	$self->{stderr} = '';
	$self->{h} = IPC::Run::start(\@cmd, '<', \undef, '>', \$self->{stdout}, '2>', \$self->{stderr});
	EgressTest::poll_until('the receiver to listen', 30, sub { -s "$self->{dir}/port" })
	  or die "receiver did not start: $self->{stderr}";
	$self->{port} = PostgreSQL::Test::Utils::slurp_file("$self->{dir}/port") + 0;
	return;
}

sub port { return $_[0]{port}; }
sub dir { return $_[0]{dir}; }
sub url { my ($self, $path) = @_; return "http://127.0.0.1:$self->{port}" . ($path // '/ingest'); }

sub stop
{
	my ($self) = @_;
	return unless $self->{h};
	$self->{h}->signal('TERM');
	$self->{h}->finish;
	delete $self->{h};
	return;
}

# Start again on the same port (after stop).
sub restart
{
	my ($self) = @_;
	$self->_spawn;
	return;
}

sub DESTROY { my ($self) = @_; eval { $self->{h}->kill_kill if $self->{h} }; }

# fault(fail => N, status => 503, retry_after => S, body => '...'),
# fault(hang => N), fault(delay => N, ms => M), fault(reset => N), fault('clear')
sub fault
{
	my ($self, $action, $count, %extra) = @_;
	my %c = (action => $action, %extra);
	$c{count} = $count if defined $count;
	my $res = HTTP::Tiny->new(timeout => 10)->post(
		$self->url('/_control'),
		{ content => $JSON->encode(\%c), headers => { 'Content-Type' => 'application/json' } });
	die "receiver control failed: $res->{status} $res->{content}" unless $res->{success};
	return;
}

# Every logged request, in arrival order: hashes as receiver.js writes them.
# Parsed once: new lines are read from where the last call stopped
# (JSON::PP is slow on large bodies).
sub requests
{
	my ($self) = @_;
	my $path = "$self->{dir}/requests.jsonl";
	return () unless -e $path;
	$self->{parsed} //= [];
	$self->{offset} //= 0;
	open(my $fh, '<:raw', $path) or die "could not open $path: $!";
	seek($fh, $self->{offset}, 0);
	while (my $line = <$fh>)
	{
		last unless $line =~ /\n\z/;    # a line being written
		$self->{offset} += length $line;
		push @{ $self->{parsed} }, $JSON->decode($line);
	}
	close $fh;
	return @{ $self->{parsed} };
}

# Acknowledged (2xx) requests, the first of each batch id only, in order.
sub batches
{
	my ($self) = @_;
	my %seen;
	return grep {
		!$seen{ $_->{headers}{'x-egress-batch-id'} // '' }++
	} grep { $_->{status} =~ /^2\d\d$/ } $self->requests;
}

# RECORD messages of the acknowledged batches, de-duplicated by batch id.
sub records
{
	my ($self, $stream) = @_;
	my @out;
	foreach my $b ($self->batches)
	{
		$b->{messages} //= [ map { $JSON->decode($_) } split /\n/, $b->{body} // '' ];
		push @out, grep { $_->{type} eq 'RECORD' && (!defined $stream || $_->{stream} eq $stream) }
		  @{ $b->{messages} };
	}
	return @out;
}

# Write every acknowledged, de-duplicated batch as <batch id>.jsonl into a
# directory, so that EgressTest's readers (mirror, cdc_batches) apply.
sub to_dir
{
	my ($self, $dir) = @_;
	mkdir $dir unless -d $dir;
	foreach my $b ($self->batches)
	{
		my $id = $b->{headers}{'x-egress-batch-id'};
		next if $self->{written}{$dir}{$id}++;
		die "unsafe batch id $id" unless $id =~ /^[A-Za-z0-9_~.-]+$/;
		open(my $fh, '>:raw', "$dir/$id.jsonl") or die "could not write $dir/$id.jsonl: $!";
		print $fh $b->{body};
		close $fh;
	}
	return $dir;
}

# Runs test/http/validate.js on the log: one test.  Returns the summary.
sub validate
{
	my ($self, $label) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my ($out, $err) = ('', '');
	IPC::Run::run([ $NODE, "$HTTPDIR/validate.js", "$self->{dir}/requests.jsonl" ], '>', \$out, '2>', \$err);
	my $summary = eval { $JSON->decode($out) } // { error_count => -1, errors => [ $out, $err ] };
	ok($summary->{error_count} == 0,
		"$label: every message valid (ajv), every RECORD matches its SCHEMA ($summary->{records} records in $summary->{batches} batches)")
	  or diag join("\n", @{ $summary->{errors} // [] });
	my $dev = $summary->{deviations} // {};
	note "$label: documented contract deviations: " . join(', ', map { "$_ x $dev->{$_}" } sort keys %$dev)
	  if %$dev;
	return $summary;
}

1;
