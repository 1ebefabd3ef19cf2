#!/usr/bin/perl

# Tests for ngx-mail-auth's scripts/demo: run as root (the README's two commands), it kills the
# pids and loads the configuration it finds in its directory, so it refuses a directory another
# user could have prepared: another user's, one others may write to, a symbolic link. It used a
# fixed /tmp/ngx-mail-auth-demo: a local user who made that directory first had the demo kill
# any process (a pid planted in logs/nginx.pid), write through planted links as root, and load
# their own module into nginx's root master. Only `scripts/demo stop` is run here (nothing is
# built or started): a canary process stands for the victim.

###############################################################################

use warnings;
use strict;

use Test::More;
use File::Temp qw/ tempdir /;

BEGIN { use FindBin; chdir($FindBin::Bin); }

###############################################################################

plan(skip_all => 'not root (the demo is run as root)') unless $> == 0;
my $nobody = getpwnam('nobody');
plan(skip_all => 'no "nobody" user') unless defined $nobody;
plan(tests => 8);

my $demo = "$FindBin::Bin/../scripts/demo";
my $top = tempdir('ngx-mail-auth-demo-t.XXXXXX', TMPDIR => 1, CLEANUP => 1);
chmod 0755, $top;

# a process the demo must not kill, its pid planted where the demo reads nginx's
sub canary {
	my $pid = fork() // die "fork: $!";
	if ($pid == 0) { exec('sleep', '30') or exit 1; }
	return $pid;
}
sub alive { my ($pid) = @_; waitpid($pid, 1) == 0 }    # 1: WNOHANG
sub prepared {
	my ($dir, $pid) = @_;
	mkdir $dir unless -d $dir;
	mkdir "$dir/logs";
	open my $f, '>', "$dir/logs/nginx.pid" or die "$dir: $!";
	print $f "$pid\n";
	close $f;
}
sub stop {
	my ($dir) = @_;
	my $out = `DEMO_DIR='$dir' '$demo' stop 2>&1`;
	return ($? >> 8, $out);
}

my @canaries;

# another user's directory
my $pid = canary();
push @canaries, $pid;
prepared("$top/theirs", $pid);
chown $nobody, -1, "$top/theirs", "$top/theirs/logs", "$top/theirs/logs/nginx.pid";
my ($rc, $out) = stop("$top/theirs");
ok($rc != 0 && $out =~ /owned by uid $nobody.*refusing/, "another user's directory: refused") or diag($out);
ok(alive($pid), "another user's directory: the pid planted there not killed");

# a directory others may write to
$pid = canary();
push @canaries, $pid;
prepared("$top/open", $pid);
chmod 0777, "$top/open";
($rc, $out) = stop("$top/open");
ok($rc != 0 && $out =~ /writable by other users/, 'a world-writable directory: refused') or diag($out);
ok(alive($pid), 'a world-writable directory: the pid planted there not killed');

# a symbolic link (to a directory of the caller's own)
$pid = canary();
push @canaries, $pid;
prepared("$top/mine", $pid);
symlink("$top/mine", "$top/link") or die "symlink: $!";
($rc, $out) = stop("$top/link");
ok($rc != 0 && $out =~ /symbolic link/, 'a symbolic link: refused') or diag($out);
ok(alive($pid), 'a symbolic link: the pid not killed');

# the caller's own directory: stop does its job
($rc, $out) = stop("$top/mine");
is($rc, 0, 'the caller\'s own directory: stop runs') or diag($out);
my $gone = 0;
for (1 .. 50) { if (!alive($pid)) { $gone = 1; last } select undef, undef, undef, 0.1; }
ok($gone, 'the caller\'s own directory: its nginx pid stopped');

kill 'TERM', @canaries;
waitpid($_, 0) for @canaries;

###############################################################################
