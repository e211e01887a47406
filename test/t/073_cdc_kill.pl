
# kill -9 of the CDC workers, then of the postmaster, under a steady insert
# load on two LOG_BASED streams of one table: one to a destination decoded
# with pgoutput (the default), one to a destination decoded with wal2json.
#
# Afterwards, for each destination:
#  - every row of the table was delivered: each id appears at least once
#    in the initial sync or the change files (complete files only: no
#    temporary file is left), and nothing that is not in the table;
#  - re-sent rows are only of batches that were not acknowledged: for each
#    kill, the confirmed position recorded in the catalog
#    (egress.stream_state.confirmed_lsn, written only after the sink
#    acknowledged a batch) is read just before the kill; every change file
#    written after the kill holds only transactions that committed after
#    that position (a transaction cut over several batches counts as
#    acknowledged once its last batch is), and there are no more re-sent
#    records than records of the files present at the kills that committed
#    at or after that position;
#  - bookmarks never go back: the catalog's confirmed position, sampled all
#    along, never decreases; the STATE bookmarks of the files, in the order
#    they were written, never decrease between two kills, and no file
#    written after a kill has a bookmark behind the confirmed position read
#    before it.

use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run ();
use Time::HiRes qw(time);
use EgressTest;

my $node = create_node('cdc_kill', cdc => 1);
my $BATCH = 200;
# destination -> its stream, decoder, directory
my %D = (
	cdc => { stream => 's', decoder => 'pgoutput' },
	cw => { stream => 'sw', decoder => 'wal2json' });
my @dests = sort keys %D;
my $out = $D{cdc}{dir} = new_outdir($node, 'cdc');
$D{cw}{dir} = new_outdir($node, 'cw');

$node->safe_psql(
	'postgres', q{
CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, payload text NOT NULL);
INSERT INTO t (payload) SELECT md5(i::text) FROM generate_series(1, 1000) i;
});
add_destination($node, 'cdc', $D{cdc}{dir});
add_destination($node, 'cw', $D{cw}{dir}, '{"decoder": "wal2json"}');
foreach my $d (@dests)
{
	$node->safe_psql('postgres',
		qq{SELECT egress_add_stream('$D{$d}{stream}', 't', method => 'LOG_BASED', destination => '$d', options => '{"debug_lsn": true, "batch_max_rows": $BATCH}')}
	);
}
foreach my $d (@dests)
{
	my $st = $D{$d}{stream};
	wait_stream_state($node, $st, 'streaming');
	my $slot = stream_row_wait($node, $st)->{slot_name} // "pg_egress_$d";
	is((slot_row($node, $slot) // {})->{plugin}, $D{$d}{decoder}, "$d: the stream decodes with $D{$d}{decoder}");
}

# ---------------------------------------------------------------------------
# the confirmed position recorded in the catalog, sampled all along
# ---------------------------------------------------------------------------
my (%samples, %view_samples);

sub persisted_lsn
{
	my ($stream) = @_;
	my ($ret, $o) = $node->psql('postgres',
		q{SELECT ss.confirmed_lsn FROM egress.stream_state ss JOIN egress.stream s ON s.id = ss.stream_id WHERE s.name = }
		  . sql_quote($stream));
	return undef if $ret != 0 || $o eq '';
	return lsn_int($o);
}

# samples both streams; returns { stream => persisted confirmed LSN }
sub sample
{
	my %c;
	foreach my $d (@dests)
	{
		my $st = $D{$d}{stream};
		my $l = persisted_lsn($st);
		$c{$st} = $l;
		push @{ $samples{$st} }, $l if defined $l;
		my $r = stream_row($node, $st);
		push @{ $view_samples{$st} }, lsn_int($r->{confirmed_lsn}) if $r && defined $r->{confirmed_lsn};
	}
	return \%c;
}

# ---------------------------------------------------------------------------
# the writer: short pgbench runs in a loop (they end at a crash), inserts
# of one row and of a few rows per transaction, and now and then of 700
# rows (more than batch_max_rows: batches cut inside a transaction), until
# told to stop
# ---------------------------------------------------------------------------
my $script_file = write_file($node->basedir . '/writer.pgbench', <<'PGB');
\set n random(2, 12)
\set big random(1, 40)
INSERT INTO t (payload) VALUES (md5(random()::text));
INSERT INTO t (payload) SELECT md5(random()::text) FROM generate_series(1, :n);
INSERT INTO t (payload) SELECT md5(random()::text) FROM generate_series(1, CASE WHEN :big = 1 THEN 700 ELSE 0 END);
PGB
my $stop = $node->basedir . '/stop_writer';
my $wlog = $node->basedir . '/writer.log';
my $pgbench = $node->installed_command('pgbench');
my $loop = qq{
runs=0; ok=0
for i in \$(seq 1 300); do
	[ -e '$stop' ] && break
	runs=\$((runs + 1))
	if '$pgbench' -n -f '$script_file' -c 2 -t 100 -R 200 "\$1" >>'$wlog' 2>&1; then ok=\$((ok + 1)); else sleep 0.3; fi
done
echo "runs=\$runs ok=\$ok" >>'$wlog'
};
my $writer = IPC::Run::start([ 'bash', '-c', $loop, 'writer', $node->connstr('postgres') ],
	'<', '/dev/null', '>', '/dev/null', '2>', '/dev/null');

sub ncdc { return scalar(grep { is_cdc_name($_) } list_dir($out)); }

sub wait_files
{
	my ($n, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $base = ncdc();
	ok(poll_until("$n new change files ($what)", 120, sub { sample(); ncdc() >= $base + $n }),
		"$what: $n more change files written under the load");
}

# name -> "mtime size" of every complete change file of a directory
sub listing1
{
	my ($dir) = @_;
	my %h;
	foreach my $name (grep { is_cdc_name($_) } list_dir($dir))
	{
		my @st = Time::HiRes::stat("$dir/$name") or next;
		$h{$name} = "$st[9] $st[7]";
	}
	return \%h;
}

# destination -> listing
sub listing { return { map { ($_ => listing1($D{$_}{dir})) } @dests }; }

sub alive
{
	my ($pid) = @_;
	return 0 unless kill(0, $pid);
	open(my $fh, '<', "/proc/$pid/stat") or return 0;
	my $st = <$fh>;
	close $fh;
	return !($st =~ /^\d+ \(.*\) Z /);
}

# pids whose parent is $ppid
sub children
{
	my ($ppid) = @_;
	my @c;
	opendir(my $dh, '/proc') or die "/proc: $!";
	foreach my $p (grep { /^\d+$/ } readdir $dh)
	{
		open(my $fh, '<', "/proc/$p/stat") or next;
		my $st = <$fh>;
		close $fh;
		push @c, $p if defined $st && $st =~ /^\d+ \(.*\) \S (\d+) / && $1 == $ppid;
	}
	closedir $dh;
	return @c;
}

# Wait until a batch is being written, read the confirmed position, kill.
my @kills;    # { what, confirmed, before => listing }

sub batch_open
{
	my ($what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok(poll_until("an open batch ($what)", 30, sub { scalar(tmp_files($out)) > 0 }),
		"$what: a batch is open (temporary file present)");
}

wait_files(5, 'before the kills');

# --- kill -9 of the CDC workers
my @pids = cdc_worker_pids($node);
is(scalar(@pids), 2, 'two CDC workers') or diag "pids: @pids";
my $log_offset = -s $node->logfile;
batch_open('kill -9 of the CDC workers');
my $confirmed = sample();
foreach my $pid (@pids)
{
	# the first kill makes the postmaster end every other backend: the
	# second worker may be gone before its own signal
	ok(kill('KILL', $pid) || !alive($pid), "sent SIGKILL to the CDC worker $pid (or it ended with the first)");
}
ok(poll_until('the CDC workers gone', 30, sub { !grep { alive($_) } @pids }), 'the CDC workers are gone');
push @kills, { what => 'CDC workers', confirmed => $confirmed, before => listing() };
ok( poll_until(
		'new CDC workers', 120,
		sub {
			sample();
			my @p = cdc_worker_pids($node);
			my %old = map { ($_ => 1) } @pids;
			return @p == 2 && !grep { $old{$_} } @p;
		}),
	'new CDC workers run after kill -9');
# (the postmaster logs the first death only: then it resets everything)
ok((grep { $node->log_contains(qr/\(PID $_\) was terminated by signal 9/, $log_offset) } @pids),
	'the postmaster saw a CDC worker die of signal 9');
wait_files(5, 'after kill -9 of the CDC workers');

# --- kill -9 of the postmaster
batch_open('kill -9 of the postmaster');
my $pm = $node->{_pid};
my @kids = children($pm);
ok(scalar(@kids) >= 3, 'the postmaster ' . $pm . ' has children (' . scalar(@kids) . ')');
$confirmed = sample();
$node->kill9;
ok(poll_until('every child of the killed postmaster gone', 60, sub { !grep { alive($_) } ($pm, @kids) }),
	'the postmaster and all its children are gone')
  or diag 'still alive: ' . join(' ', grep { alive($_) } ($pm, @kids));
push @kills, { what => 'postmaster', confirmed => $confirmed, before => listing() };
# The killed postmaster is an orphan: until init reaps it, it is a zombie
# that still answers kill 0, and a new postmaster refuses the lock file.
if (!poll_until('the killed postmaster reaped', 10, sub { !kill(0, $pm) }))
{
	note "postmaster $pm is dead but not reaped (zombie): removing its postmaster.pid";
	unlink($node->data_dir . '/postmaster.pid') or die "unlink postmaster.pid: $!";
}
$node->start;
server_up($node);
wait_files(8, 'after kill -9 of the postmaster');

# ---------------------------------------------------------------------------
# stop the writer, catch up
# ---------------------------------------------------------------------------
write_file($stop, '');
eval { $writer->finish; };
diag 'writer: ' . (slurp_file($wlog) =~ /(runs=\d+ ok=\d+)/ ? $1 : '?');
wait_caught_up($node, $D{$_}{stream}, 120) foreach @dests;
sample();
my %table_ids = map { ($_ => 1) } split /\n/, $node->safe_psql('postgres', 'SELECT id FROM t');
my $now_all = listing();
check_destination($_) foreach @dests;

sub check_destination
{
	my ($d) = @_;
	my ($dir, $stream) = ($D{$d}{dir}, $D{$d}{stream});
	my $L = "$d ($D{$d}{decoder})";
	my @samples = @{ $samples{$stream} // [] };
	my @view_samples = @{ $view_samples{$stream} // [] };
	my @kills = map { { what => $_->{what}, confirmed => $_->{confirmed}{$stream}, before => $_->{before}{$d} } } @kills;

	is(stream_row_wait($node, $stream)->{state}, 'streaming', "$L: the stream is streaming");
	ok(poll_until('no temporary files', 30, sub { !tmp_files($dir) }), "$L: no temporary files remain")
	  or diag 'temporary files: ' . join(' ', tmp_files($dir));

	# ---------------------------------------------------------------------------
	# every row delivered
	# ---------------------------------------------------------------------------
	my @cdc = cdc_batches($dir);
	my @problems = map { check_cdc_batch($_) } @cdc;
	is_deeply([ @problems[ 0 .. ($#problems < 19 ? $#problems : 19) ] ], [],
		"$L: every change file is complete and well formed (" . scalar(@cdc) . ' files)');

	my (%seen, %in_sync);
	foreach my $r (records_of(sync_batches($dir, $stream)))
	{
		$seen{ $r->{record}{id} }++;
		$in_sync{ $r->{record}{id} } = 1;
	}
	my (%copies, @no_lsn);
	foreach my $b (@cdc)
	{
		foreach my $r (records_of($b))
		{
			next unless $r->{stream} eq 'public-t';
			my $lsn = $r->{record}{_sdc_lsn};
			push @no_lsn, $b->{name} unless defined $lsn && !ref $lsn && $lsn =~ /^\d+$/;
			$seen{ $r->{record}{id} }++;
			push @{ $copies{ $r->{record}{id} } }, [ $b->{name}, $lsn ];
		}
	}
	is(scalar(@no_lsn), 0, "$L: every change RECORD carries its commit LSN (_sdc_lsn)");
	my @missing = grep { !$seen{$_} } sort { $a <=> $b } keys %table_ids;
	my @extra = grep { !$table_ids{$_} } sort { $a <=> $b } keys %seen;
	is(scalar(@missing), 0, "$L: every row of the table was delivered (" . scalar(keys %table_ids) . ' rows)')
	  or diag 'missing ids: ' . join(' ', @missing[ 0 .. ($#missing < 19 ? $#missing : 19) ]);
	is(scalar(@extra), 0, "$L: nothing delivered that is not in the table")
	  or diag 'extra ids: ' . join(' ', @extra[ 0 .. ($#extra < 19 ? $#extra : 19) ]);
	my @twice_sync = grep { $in_sync{$_} && $copies{$_} } keys %in_sync;
	is(scalar(@twice_sync), 0, "$L: no row of the initial sync came again as a change");

	# ---------------------------------------------------------------------------
	# re-sent rows only of unacknowledged batches
	# ---------------------------------------------------------------------------
	my $dups = grep { @{ $copies{$_} } > 1 } keys %copies;
	my $dup_records = 0;
	$dup_records += @{ $copies{$_} } - 1 foreach grep { @{ $copies{$_} } > 1 } keys %copies;
	# files in the order they were written
	my $now = $now_all->{$d};
	my %by_name = map { ($_->{name} => $_) } @cdc;

	# At most what was not acknowledged at a kill can come twice: the records
	# of the files present then that committed after the confirmed position.
	my $unacked = 0;
	foreach my $kill (@kills)
	{
		next unless defined $kill->{confirmed};
		foreach my $name (keys %{ $kill->{before} })
		{
			my $b = $by_name{$name} or next;
			$unacked += grep { ($_->{record}{_sdc_lsn} // 0) >= $kill->{confirmed} } records_of($b);
		}
	}
	diag "$L: ids delivered more than once: $dups ($dup_records extra records); records not acknowledged at the kills: $unacked";
	cmp_ok($dup_records, '<=', $unacked, "$L: re-sent records are no more than those not acknowledged at the kills");
	my @written = sort { (split / /, $now->{$a})[0] <=> (split / /, $now->{$b})[0] || $a cmp $b } keys %$now;


	my (@resent_acked, @bm_behind, @bm_back);
	for my $k (0 .. $#kills)
	{
		my $kill = $kills[$k];
		my $c = $kill->{confirmed};
		ok(defined $c, "$L: kill $k ($kill->{what}): the confirmed position before it was read") or next;
		foreach my $name (@written)
		{
			# written after this kill: not in the listing taken once the killed
			# processes were gone (or there with another mtime/size: replaced)
			next if defined $kill->{before}{$name} && $kill->{before}{$name} eq $now->{$name};
			my $b = $by_name{$name} or next;
			foreach my $r (records_of($b))
			{
				my $lsn = $r->{record}{_sdc_lsn};
				# an acknowledged transaction ended at or before $c, so its
				# commit record starts before $c; an unacknowledged one's at or
				# after it
				push @resent_acked, "$name: id $r->{record}{id} committed at $lsn < confirmed $c before the kill of the $kill->{what}"
				  if defined $lsn && $lsn =~ /^\d+$/ && $lsn < $c;
			}
			my $bm = bookmark_of($b);
			push @bm_behind, "$name: bookmark $bm < confirmed $c before the kill of the $kill->{what}"
			  if defined $bm && $bm < $c;
		}
	}
	is_deeply([ @resent_acked[ 0 .. ($#resent_acked < 9 ? $#resent_acked : 9) ] ], [],
		"$L: no change file written after a kill re-sends a transaction acknowledged before it (" . scalar(@resent_acked) . ' such records)');
	is_deeply([ @bm_behind[ 0 .. ($#bm_behind < 9 ? $#bm_behind : 9) ] ], [],
		"$L: no change file written after a kill has a STATE bookmark behind the confirmed position before it");

	# between two kills, in the order written, the bookmarks never go back
	my @epochs;
	foreach my $name (@written)
	{
		my $e = 0;
		for my $k (0 .. $#kills)
		{
			$e = $k + 1 unless defined $kills[$k]{before}{$name} && $kills[$k]{before}{$name} eq $now->{$name};
		}
		push @{ $epochs[$e] }, $name;
	}
	for my $e (0 .. $#epochs)
	{
		my $last;
		foreach my $name (@{ $epochs[$e] // [] })
		{
			my $bm = bookmark_of($by_name{$name} // next);
			push @bm_back, "epoch $e: $name: bookmark $bm < $last" if defined $bm && defined $last && $bm < $last;
			$last = $bm if defined $bm;
		}
	}
	is_deeply(\@bm_back, [], "$L: STATE bookmarks never go back in the order the files were written (between kills: "
		  . join('/', map { scalar(@{ $_ // [] }) } @epochs) . ' files)');

	my @back;
	for my $i (1 .. $#samples)
	{
		push @back, "$samples[$i - 1] -> $samples[$i]" if $samples[$i] < $samples[ $i - 1 ];
	}
	is_deeply(\@back, [], "$L: the confirmed position recorded in the catalog never went back (" . scalar(@samples) . ' samples)');
	my $vback = 0;
	for my $i (1 .. $#view_samples) { $vback++ if $view_samples[$i] < $view_samples[ $i - 1 ]; }
	diag "$L: egress_streams.confirmed_lsn went back $vback times over " . scalar(@view_samples) . ' samples (acknowledged but not yet recorded positions are lost with a crash)';

	my $final = persisted_lsn($stream);
	my $max_lsn = 0;
	foreach my $c (values %copies) { foreach (@$c) { $max_lsn = $_->[1] if $_->[1] > $max_lsn; } }
	cmp_ok($final // 0, '>=', $max_lsn, "$L: the final confirmed position covers the last delivered change");

}

sub bookmark_of
{
	my ($b) = @_;
	my $st = $b->{messages}[-1];
	return undef unless ref $st eq 'HASH' && ($st->{type} // '') eq 'STATE';
	my $bm = $st->{value}{bookmarks}{'public-t'};
	return $bm && is_lsn_number($bm->{lsn}) ? $bm->{lsn} : undef;
}

$node->stop;
done_testing();
