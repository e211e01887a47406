
# Node.js for the TAP suites' test servers (test/http, test/s3,
# test/kinesis).  Node is optional for a developer: a suite that needs it is
# skipped, with the reason, when no node is on PATH.  make test installs
# Node (scripts/install-deps.sh) and sets EGRESS_REQUIRE_NODE=1, so there a
# missing node is a failure, never a skip.  Node without the npm packages of
# a server directory is a failure too: that is a setup error, not an
# optional server.
#
#   use EgressNode;                  # nothing happens
#   EgressNode::need('the test HTTP receiver (test/http)');
#
# EgressHttp, S3Server and KinesisServer call need() when a test file uses
# them, so the files themselves say nothing about Node.

package EgressNode;

use strict;
use warnings;
use File::Spec;
use Test::More ();

# The node program the servers are started with.
sub program { return $ENV{NODE} // 'node'; }

# Whether node runs here (a path, or a name found on PATH).
sub present
{
	my $node = program();
	return -x $node ? 1 : 0 if File::Spec->file_name_is_absolute($node);
	for my $dir (File::Spec->path)
	{
		return 1 if -x File::Spec->catfile($dir, $node);
	}
	return 0;
}

# Skip the whole test file when node is absent (fail under make test).
sub need
{
	my ($what) = @_;
	return if present();
	my $node = program();
	my $where = File::Spec->file_name_is_absolute($node) ? "no program $node" : "no \"$node\" on PATH";
	my $why = "Node.js is not installed ($where): $what needs it; scripts/install-deps.sh installs it";
	if ($ENV{EGRESS_REQUIRE_NODE})
	{
		Test::More::BAIL_OUT("$why; make test never skips these suites");
	}
	Test::More::plan(skip_all => $why);
	return;
}

1;
