package MailAuthAttack;

# Helpers for the attack tests (t/mail_auth_attacks_*.t; written for this project): timed and
# concurrent auth_http requests on a port of the test's own choosing, latency statistics and
# their comparison, nginx worker processes and their memory from /proc.
#
#   my ($answer, $secs) = timed_auth($port, '/auth', 'Auth-User' => 'alice', ...);
#   my @r = parallel_auth($port, '/auth', $timeout, \%h1, \%h2, ...);
#         # each [answer, seconds]; all sent at once, each on its own connection
#   my ($median, $q1, $q3) = quartiles(@secs);
#   same_timing('name', \@a, \@b, floor => 0.003);   # one Test::More ok() with the numbers
#   my @pids = worker_pids($master_pid);              # live (not shutting down) workers
#   my $kb = proc_kb($pid, 'VmHWM');                  # a /proc/PID/status field in kB
#   my $uid = uid_of($pid);                           # its real uid (undef: gone)
#   reload_and_wait($t) or ...;                       # HUP, then only new workers

use warnings;
use strict;

use base qw/ Exporter /;
our @EXPORT = qw/ auth_request timed_auth parallel_auth quartiles same_timing ms
	worker_pids proc_kb master_pid uid_of reload_and_wait /;

use IO::Socket::INET;
use IO::Select;
use List::Util qw/ max /;
use Test::More qw//;
use Time::HiRes qw/ time /;

# An auth_http request as nginx mail sends it. Values are taken as they are (nginx escapes only
# space, % and control characters in Auth-User/Auth-Pass: callers pass them escaped).
sub auth_request {
	my ($uri, %h) = @_;
	my %d = ('Auth-Method' => 'plain', 'Auth-Protocol' => 'imap',
		'Auth-Login-Attempt' => 1, 'Client-IP' => '127.0.0.1');
	%h = (%d, %h);
	my $req = "GET $uri HTTP/1.0\r\nHost: localhost\r\n";
	$req .= "$_: $h{$_}\r\n" for sort grep { defined $h{$_} } keys %h;
	return $req . "\r\n";
}

# One request on a new connection; (answer, seconds from connect to the end of the answer).
# The answer is '' on a connection failure or after $timeout (default 30 s) seconds.
sub timed_auth {
	my ($port, $uri, %h) = @_;
	my $timeout = delete $h{timeout} // 30;
	my $req = auth_request($uri, %h);
	my $t0 = time();
	my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp')
		or return ('', time() - $t0);
	$s->syswrite($req);
	my $answer = '';
	my $sel = IO::Select->new($s);
	while (1) {
		my $left = $t0 + $timeout - time();
		last if $left <= 0 or !$sel->can_read($left);
		my $n = $s->sysread($answer, 65536, length $answer);
		last unless $n;
	}
	my $dt = time() - $t0;
	close $s;
	return ($answer, $dt);
}

# All requests sent at once (one connection each), then read as they come. Returns one
# [answer, seconds] per request, in order. $on_tick->() is called about every 50 ms while
# waiting (memory sampling).
sub parallel_auth {
	my ($port, $uri, $timeout, @hs) = @_;
	my $on_tick = ref $hs[-1] eq 'CODE' ? pop @hs : undef;
	my (@socks, @res, %idx);
	my $sel = IO::Select->new();
	for my $i (0 .. $#hs) {
		my $req = auth_request($uri, %{$hs[$i]});
		my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Proto => 'tcp');
		$res[$i] = ['', 0, time()];
		next unless $s;
		$s->syswrite($req);
		$sel->add($s);
		$idx{fileno $s} = $i;
		push @socks, $s;
	}
	my $end = time() + $timeout;
	while ($sel->count() and time() < $end) {
		for my $s ($sel->can_read(0.05)) {
			my $r = $res[$idx{fileno $s}];
			my $n = $s->sysread($r->[0], 65536, length $r->[0]);
			next if $n;
			$r->[1] = time() - $r->[2];
			$sel->remove($s);
			close $s;
		}
		$on_tick->() if $on_tick;
	}
	for my $s ($sel->handles()) {
		my $r = $res[$idx{fileno $s}];
		$r->[1] = time() - $r->[2];
		close $s;
	}
	return map { [$_->[0], $_->[1]] } @res;
}

# (median, first quartile, third quartile), linear interpolation
sub quartiles {
	my @s = sort { $a <=> $b } @_;
	return (0, 0, 0) unless @s;
	my $q = sub {
		my ($p) = @_;
		my $x = $p * $#s;
		my $i = int $x;
		return $i >= $#s ? $s[-1] : $s[$i] + ($x - $i) * ($s[$i + 1] - $s[$i]);
	};
	return ($q->(0.5), $q->(0.25), $q->(0.75));
}

sub ms { return sprintf('%.2f ms', 1000 * $_[0]); }

sub describe {
	my ($label, $v) = @_;
	my ($m, $q1, $q3) = quartiles(@$v);
	return sprintf('%s: n=%d median %s IQR [%s, %s] min %s max %s', $label, scalar @$v,
		ms($m), ms($q1), ms($q3), ms((sort { $a <=> $b } @$v)[0] // 0), ms(max(@$v) // 0));
}

# Two latency samples an attacker must not tell apart:
#   |median(a) - median(b)| <= max(25% of the larger median, floor), and
#   the interquartile ranges overlap (each widened by floor/2: gaps below the floor, the
#   resolution a loaded 2-core machine gives, are not counted).
sub same_timing {
	my ($name, $x, $y, %o) = @_;
	my $floor = $o{floor} // 0.003;
	my ($ma, $a1, $a3) = quartiles(@$x);
	my ($mb, $b1, $b3) = quartiles(@$y);
	my $tol = max(0.25 * max($ma, $mb), $floor);
	my $w = $floor / 2;
	my $ok = abs($ma - $mb) <= $tol && $a1 - $w <= $b3 + $w && $b1 - $w <= $a3 + $w;
	my $la = $o{a} // 'a';
	my $lb = $o{b} // 'b';
	my $msg = describe($la, $x) . "; " . describe($lb, $y)
		. sprintf('; |median difference| %s, allowed %s', ms(abs($ma - $mb)), ms($tol));
	my $tb = Test::More->builder;
	$tb->ok($ok, $name) or $tb->diag($msg);
	$tb->note($msg) if $ok;
	return $ok;
}

sub master_pid {
	my ($t) = @_;
	my $pid = $t->read_file('nginx.pid');
	$pid =~ s/\s+//g;
	return $pid;
}

# The worker processes of $master (by /proc: parent pid and "worker process" in the title),
# without the ones shutting down after a reload.
sub worker_pids {
	my ($master) = @_;
	my @pids;
	for my $dir (glob '/proc/[0-9]*') {
		open my $fh, '<', "$dir/stat" or next;
		my $stat = <$fh> // '';
		close $fh;
		next unless $stat =~ /^(\d+) \(.*\) \S+ (\d+) /s and $2 == $master;
		my $pid = $1;
		open $fh, '<', "$dir/cmdline" or next;
		my $cmd = do { local $/; <$fh> } // '';
		close $fh;
		push @pids, $pid if $cmd =~ /worker process/ and $cmd !~ /shutting down/;
	}
	@pids = sort { $a <=> $b } @pids;
	return @pids;    # in scalar context: how many
}

# HUP nginx ($t, a Test::Nginx), then wait up to 10 s until every worker is a new one: true
# when so.
sub reload_and_wait {
	my ($t) = @_;
	my $master = master_pid($t);
	my %old = map { $_ => 1 } worker_pids($master);
	$t->reload();
	require MailAuthTest;
	return MailAuthTest::wait_for(10, sub { my @now = worker_pids($master); @now && !grep { $old{$_} } @now });
}

# The real uid of process $pid (/proc/PID/status), undef when it is gone.
sub uid_of {
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/status" or return undef;
	while (my $l = <$fh>) { return $1 if $l =~ /^Uid:\s+(\d+)/; }
	return undef;
}

# A field of /proc/PID/status in kB (VmRSS, VmHWM, ...); 0 when the process is gone.
sub proc_kb {
	my ($pid, $field) = @_;
	open my $fh, '<', "/proc/$pid/status" or return 0;
	while (my $l = <$fh>) {
		return $1 if $l =~ /^\Q$field\E:\s+(\d+) kB/;
	}
	return 0;
}

1;
