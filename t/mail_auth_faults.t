#!/usr/bin/perl

# Tests for ngx-mail-auth under faults. Throughout: never OK for a wrong
# password, a temporary failure (or the right answer) while a store is unusable, an error-log
# line that says why, recovery without a reload, and no worker crash.
#   1. passwd file deleted, truncated to half a line, replaced by a directory, chmod 000
#   2. SQLite database deleted, overwritten with garbage, a page corrupted, locked by a writer
#      holding BEGIN EXCLUSIVE for 3 s
#   3. thread pool saturated: threads=1 max_queue=1, 20 concurrent bcrypt(12) checks
#   4. cache and limiter zones at their smallest size (32k), 1500 distinct users/addresses
#   5. nginx -s reload (HUP) and a binary upgrade (USR2, WINCH, QUIT of the old master) while
#      50 concurrent IMAP logins run through the mail proxy (t/lib/imap_storm.py)
#
# nginx is not started with "daemon off" here: nginx ignores USR2 while its parent is still
# the process that started it (src/os/unix/ngx_process.c: "ngx_getppid() == ngx_parent"), so
# the binary upgrade needs a daemonized master, as in nginx-tests' binary_upgrade.t. The
# harness's stop() then signals the master named by nginx.pid but cannot wait for it (it is
# not the test's child): the test waits for the masters it started itself.
# The listeners have no "reuseport": with it each worker has its own listening socket, and
# connections still queued on the socket of a worker that leaves are reset (a Linux property,
# not this module's), which would blur what the storm measures.

###############################################################################

use warnings;
use strict;

use Test::More;
use File::Copy qw/ copy /;
use IO::Socket::INET;
use POSIX qw//;
use Time::HiRes qw/ sleep time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx qw/ :DEFAULT http_start http_end /;
use MailAuthBackend;
use MailAuthTest;
use MailAuthAttack qw/ uid_of /;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http mail imap/);
workers_can_read($t);
plan(skip_all => 'nginx without threads')
	unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'htpasswd (apache2-utils) not installed') unless have_tool('htpasswd');
plan(skip_all => 'sqlite3 not installed') unless have_tool('sqlite3');
plan(skip_all => 'python3 with its sqlite3 module not installed')
	unless system('python3 -c "import sqlite3, imaplib" 2>/dev/null') == 0;
plan(skip_all => 'needs Linux /proc (worker uids, process states)') unless -e '/proc/self/stat';
plan(skip_all => 'load and timing test: not under valgrind')
	if $ENV{TEST_NGINX_VALGRIND};

my $d = $t->testdir();

sub hash_of {
	my ($cost, $pw) = @_;
	my $h = `htpasswd -nbB -C $cost u '$pw'`;
	$h =~ s/^u://;
	$h =~ s/\s+\z//;
	die "htpasswd failed\n" unless $h =~ /^\$2y\$/;
	return $h;
}

my $alice = hash_of(5, 'alice-pw');
$t->write_file('users.good', "alice:$alice\n");
copy("$d/users.good", "$d/users") or die;
$t->write_file('slow', 'alice:' . hash_of(12, 'alice-pw') . "\n");
$t->write_file('zoned', 'carol:' . hash_of(4, 'carol-pw') . "\n");

mkdir "$d/db" or die;
chmod 0755, "$d/db";
open my $sql, '<', "$FindBin::Bin/../scripts/schema.sql" or die "schema.sql: $!\n";
my $schema = do { local $/; <$sql> };
close $sql;
$schema .= "INSERT INTO users (name, password) VALUES ('alice', '$alice');\n";
open my $sq, '|-', 'sqlite3', "$d/db/users.good" or die "sqlite3: $!\n";
print $sq $schema;
close $sq or die "sqlite3 failed\n";
copy("$d/db/users.good", "$d/db/users.db") or die;
chmod 0644, "$d/db/users.db";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

worker_processes 2;
thread_pool tiny threads=1 max_queue=1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:8144;
    mail_auth_fail_wait 0;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
        }

        location = /sqlite {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/db/users.db;
            # SQLite itself answers every lookup here (kept rows would answer a locked
            # database from its last committed state)
            mail_auth_sqlite_cache_rows 0;
        }

        location = /slow {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/slow;
            mail_auth_thread_pool tiny;
            # more at once than the pool holds (the module's default would queue them itself)
            mail_auth_verify_concurrency 8;
        }
    }

    server {
        listen       127.0.0.1:8081;
        server_name  localhost;

        mail_auth_cache zone=tinycache:32k ttl=60s negative_ttl=60s;
        mail_auth_limit zone=tinylimit:32k ip=3/m user=100000/m;

        location = /zones {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/zoned;
        }

        location = /metrics {
            mail_auth_status;
        }
    }
}

mail {
    auth_http  127.0.0.1:8080/auth;

    server {
        listen     127.0.0.1:8143;
        protocol   imap;
    }
}

EOF

$t->run_daemon(\&MailAuthBackend::imap, port(8144), "$d/backend.log", alice => 'alice-pw');
$t->run()->plan(64);
$t->waitforsocket('127.0.0.1:' . port(8144)) or die "no backend\n";

###############################################################################

my $TEMP = '[UNAVAILABLE] Temporary server problem, try again later';
my $INVALID = '[AUTHENTICATIONFAILED] Invalid login or password';

# one auth_http request as nginx mail makes it; returns its Auth-Status ('none' if no answer)
sub status {
	my ($uri, $user, $pass, %o) = @_;
	my $req = "GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
		. "Auth-User: $user\r\nAuth-Pass: $pass\r\nAuth-Protocol: imap\r\n"
		. "Auth-Login-Attempt: 1\r\nClient-IP: " . ($o{ip} // '192.0.2.1') . "\r\n\r\n";
	my $r;
	if ($o{port}) {
		my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port($o{port})) or return 'none';
		$r = http($req, socket => $s);
	} else {
		$r = http($req);
	}
	return 'none' unless defined $r;
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

# $n right-password and $n wrong-password requests; returns (right answers, wrong answers)
sub probe {
	my ($uri, $n) = @_;
	my (@right, @wrong);
	for (1 .. $n) {
		push @right, status($uri, 'alice', 'alice-pw');
		push @wrong, status($uri, 'alice', 'not-alice-pw');
	}
	return (\@right, \@wrong);
}

sub all_are { my ($want, $list) = @_; return !grep { $_ ne $want } @$list; }
sub none_ok { my ($list) = @_; return !grep { $_ eq 'OK' } @$list; }
sub show { my ($r, $w) = @_; return 'right: ' . join(', ', @$r) . '; wrong: ' . join(', ', @$w); }

# the error log since offset $from
sub log_since {
	my ($t, $from) = @_;
	return substr($t->read_file('error.log'), $from);
}

# A store fault: apply it, let every worker notice (each stats the file at most once a
# second; $settle: longer), check the answers and the log, restore, check recovery.
sub store_fault {
	my ($t, $uri, $name, $break, $restore, $right_want, $log_re, $settle) = @_;
	my $from = length $t->read_file('error.log');
	$break->();
	my (undef, $early_wrong) = probe($uri, 3);   # while the workers may not have noticed yet
	sleep($settle // 1.1);
	my ($right, $wrong) = probe($uri, 4);
	ok(all_are($right_want, $right) && none_ok([@$wrong, @$early_wrong]),
		"$name: right password \"$right_want\", wrong password never OK")
		or diag(show($right, [@$early_wrong, @$wrong]));
	like(log_since($t, $from), $log_re, "$name: the error log says why")
		or diag(log_since($t, $from));
	$restore->();
	sleep 1.1;                                   # again: every worker looks at most once a second
	my $ok = wait_for(3, sub { status($uri, 'alice', 'alice-pw') eq 'OK' });
	($right, $wrong) = probe($uri, 2);
	ok($ok && all_are('OK', $right) && all_are($INVALID, $wrong),
		"$name: restored, right answers again without a reload") or diag(show($right, $wrong));
}

sub workers_of {
	my ($master) = @_;
	my @w;
	for my $stat (glob '/proc/[0-9]*/stat') {
		open my $fh, '<', $stat or next;
		my $line = <$fh> // '';
		push @w, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $master;
	}
	return @w;
}

# alive and not a zombie
sub alive {
	my ($pid) = @_;
	return 0 unless $pid && kill 0, $pid;
	open my $fh, '<', "/proc/$pid/stat" or return 0;
	my $line = <$fh> // '';
	return $line !~ /^\d+ \(.*\) Z /;
}

# the pid in nginx.pid, '' while there is none (during USR2 the old master renames it to
# nginx.pid.oldbin before the new one writes its own; the official harness's read_file dies
# on a missing file, so read it here)
sub master_pid {
	my ($t) = @_;
	open my $fh, '<', $t->testdir() . '/nginx.pid' or return '';
	my $pid = <$fh> // '';
	$pid =~ s/\s+//g;
	return $pid;
}

# Every nginx master this test has seen. If the test dies half-way through the upgrade, the
# harness stops the master in nginx.pid; END stops the others (an old master left behind).
# END must not use $t (a closure would keep it alive past Test::More's own END).
our (@MASTERS, $PIDFILE);

sub stop_master {
	my ($pid) = @_;
	return 1 unless alive($pid);
	kill 'QUIT', $pid;
	for (1 .. 200) {
		waitpid($pid, POSIX::WNOHANG());
		return 1 unless alive($pid);
		sleep 0.1;
	}
	kill 'KILL', $pid;
	sleep 0.2;
	return !alive($pid);
}

END {
	my $current = '';
	if ($PIDFILE && open my $fh, '<', $PIDFILE) {
		$current = <$fh> // '';
		$current =~ s/\s+//g;
	}
	local $?;
	stop_master($_) for grep { $_ ne $current } @MASTERS;
}

###############################################################################

# 1. the passwd file

is(status('/auth', 'alice', 'alice-pw'), 'OK', 'passwd file: right password OK');
is(status('/auth', 'alice', 'not-alice-pw'), $INVALID, 'passwd file: wrong password refused');

store_fault($t, '/auth', 'passwd file deleted',
	sub { unlink "$d/users" or die },
	sub { copy("$d/users.good", "$d/users") or die },
	$TEMP, qr/\[error\].*mail_auth: \Q$d\E\/users: cannot stat: No such file.*\n(?s:.*)result=store-error/);

store_fault($t, '/auth', 'passwd file truncated to half a line',
	sub { $t->write_file('users', substr("alice:$alice\n", 0, int(length("alice:$alice\n") / 2))) },
	sub { copy("$d/users.good", "$d/users") or die },
	$INVALID, qr/mail_auth: .*\Q$d\E\/users.*(?s:.*)user="alice" .*result=scheme-error/,
	# a fresh file ending in a cut line may be a rewrite caught half-way: it is read again,
	# and loaded as it is only once it has not changed for 2 s
	3.5);

store_fault($t, '/auth', 'passwd file replaced by a directory',
	sub { unlink "$d/users" or die; mkdir "$d/users" or die },
	sub { rmdir "$d/users" or die; copy("$d/users.good", "$d/users") or die },
	$TEMP, qr/\[error\].*mail_auth: \Q$d\E\/users: not a regular file/);

my @workers = workers_of(master_pid($t));
my @root = grep { (uid_of($_) // 0) == 0 } @workers;
SKIP: {
	skip 'nginx workers run as root: file permissions do not stop them', 3 if @root || !@workers;

	store_fault($t, '/auth', 'passwd file chmod 000 (workers uid ' . uid_of($workers[0]) . ')',
		sub { chmod 0000, "$d/users" or die },
		sub { chmod 0644, "$d/users" or die },
		$TEMP, qr/\[error\].*mail_auth: \Q$d\E\/users: cannot open: Permission denied/);
}

###############################################################################

# 2. SQLite. First in a directory the workers can't write to: lookups work and the module
# writes nothing next to the database (no journal, no WAL files): it never writes, so a full
# disk is nothing to it.

chmod 0555, "$d/db";
is(status('/sqlite', 'alice', 'alice-pw'), 'OK', 'sqlite: right password OK');
is(status('/sqlite', 'alice', 'not-alice-pw'), $INVALID, 'sqlite: wrong password refused');
opendir my $dbdir, "$d/db" or die;
is(join(',', sort grep { !/^\./ } readdir $dbdir), 'users.db,users.good',
	'sqlite: nothing written next to the database (read-only directory)');
closedir $dbdir;
chmod 0755, "$d/db";

my $db = "$d/db/users.db";
my $restore_db = sub {
	copy("$d/db/users.good", "$db.new") or die;
	chmod 0644, "$db.new";
	rename "$db.new", $db or die;
};

store_fault($t, '/sqlite', 'sqlite database deleted',
	sub { unlink $db or die }, $restore_db,
	$TEMP, qr/\[error\].*mail_auth: \Q$db\E: cannot stat: No such file.*\n(?s:.*)result=store-error/);

store_fault($t, '/sqlite', 'sqlite database overwritten with garbage',
	sub {
		my $size = -s $db;
		open my $fh, '+<', $db or die;
		binmode $fh;
		print $fh join '', map { chr(int(rand(256))) } 1 .. $size;
		close $fh;
	}, $restore_db,
	$TEMP, qr/\[error\].*mail_auth: \Q$db\E: .*(not a database|malformed)/);

store_fault($t, '/sqlite', 'sqlite database with its table page corrupted',
	sub {
		my $size = -s $db;
		open my $fh, '+<', $db or die;
		binmode $fh;
		seek $fh, 4096, 0;   # page 2 on: the users table (sqlite3's default page size 4096)
		print $fh "\xff" x ($size - 4096);
		close $fh;
	}, $restore_db,
	$TEMP, qr/\[error\].*mail_auth: \Q$db\E: .*(malformed|not a database)/);

# a writer holds the database locked (BEGIN EXCLUSIVE) for 3 s: the module waits 100 ms at
# most per lookup, answers a temporary failure meanwhile, and the right answer afterwards
{
	my $from = length $t->read_file('error.log');
	my $lock_pid = open my $locker, '-|', 'python3', '-c', <<'PY', $db;
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(3)
c.execute("ROLLBACK")
print("released", flush=True)
PY
	die "python3: $!\n" unless $lock_pid;
	my $started = <$locker> // '';
	my $t0 = time();
	my ($right, $wrong) = probe('/sqlite', 4);
	my $during = time() - $t0;
	my $released = <$locker> // '';
	close $locker;
	is($started . $released, "locked\nreleased\n", 'sqlite lock: the writer held and released the lock');
	ok($during < 2.5 && all_are($TEMP, $right) && none_ok($wrong) && all_are($TEMP, $wrong),
		sprintf('sqlite locked: temporary failures (%.2f s for 8 lookups), never OK', $during))
		or diag(show($right, $wrong));
	like(log_since($t, $from), qr/\[error\].*mail_auth: \Q$db\E: .*database is locked/,
		'sqlite locked: the error log says why');
	($right, $wrong) = probe('/sqlite', 2);
	ok(all_are('OK', $right) && all_are($INVALID, $wrong), 'sqlite lock released: right answers')
		or diag(show($right, $wrong));
}

###############################################################################

# 3. the thread pool saturated: 2 workers x (1 thread + a queue of 1), 20 concurrent bcrypt(12)
# verifications; the 1st, 5th, 9th ... with the right password

{
	my $from = length $t->read_file('error.log');
	my @socks = map {
		http_start("GET /slow HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
			. "Auth-User: alice\r\nAuth-Pass: " . ($_ % 4 == 1 ? 'alice-pw' : "wrong-$_")
			. "\r\nAuth-Protocol: imap\r\nClient-IP: 192.0.2.$_\r\n\r\n", start => 1)
	} 1 .. 20;
	my %answer;
	for my $n (1 .. 20) {
		my $r = $socks[$n - 1] ? http_end($socks[$n - 1]) // '' : '';
		$answer{$n} = $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
	}
	my @right = map { $answer{$_} } grep { $_ % 4 == 1 } 1 .. 20;
	my @wrong = map { $answer{$_} } grep { $_ % 4 != 1 } 1 .. 20;
	my %seen;
	$seen{$_}++ for values %answer;
	note('saturated pool: ' . join(', ', map { "$_: $seen{$_}" } sort keys %seen));

	is(scalar(grep { $_ ne 'none' } values %answer), 20, 'saturated pool: all 20 answered');
	ok(none_ok(\@wrong), 'saturated pool: no OK for a wrong password');
	ok(!grep({ $_ ne 'OK' && $_ ne $TEMP } @right), 'saturated pool: a right password is OK or a temporary failure');
	cmp_ok($seen{$TEMP} // 0, '>=', 1, 'saturated pool: the overflow gets a temporary failure');
	cmp_ok(($seen{OK} // 0) + ($seen{$INVALID} // 0), '>=', 1, 'saturated pool: the queued ones were verified');

	my $log = log_since($t, $from);
	like($log, qr/\[error\].*thread pool "tiny" queue overflow/, 'saturated pool: nginx logged the overflow');
	my @lines = grep { /mail_auth: user="alice" client=192\.0\.2\.\d+ / } split /\n/, $log;
	my %per_ip;
	$per_ip{$_}++ for map { /client=(192\.0\.2\.\d+) / } @lines;
	ok(20 == keys %per_ip && !grep({ $_ != 1 } values %per_ip), 'saturated pool: one decision line per request')
		or diag(explain \%per_ip);
	my @why = grep { /\[error\].*result=internal-error reason="verification did not run \(thread pool queue full/ } @lines;
	is(scalar @why, $seen{$TEMP} // 0, 'saturated pool: each temporary failure logged with its reason')
		or diag(join "\n", @lines);
}

###############################################################################

# 4. cache and limiter zones at 32k: 1500 failed logins, each from its own address, half of them
# for 750 distinct unknown users, half for carol with 750 distinct wrong passwords (each a cache
# entry); every 10th a right login from a fresh address

{
	my ($wrong_ok, $right_refused, $none) = (0, 0, 0);
	for my $n (1 .. 1500) {
		# odd: an unknown user (the limiter's per-user table), even: carol (the cache)
		my $s = status('/zones', $n % 2 ? "user$n" : 'carol', "guess-$n", port => 8081,
			ip => '10.1.' . ($n >> 8) . '.' . ($n & 255));
		$wrong_ok++ if $s eq 'OK';
		$none++ if $s eq 'none';
		next if $n % 10;
		$s = status('/zones', 'carol', 'carol-pw', port => 8081, ip => '10.2.' . ($n >> 8) . '.' . ($n & 255));
		$right_refused++ if $s ne 'OK';
		$none++ if $s eq 'none';
	}
	is($wrong_ok, 0, 'full zones: no OK for any of 1500 wrong logins');
	is($right_refused, 0, 'full zones: all 150 right logins OK');
	is($none, 0, 'full zones: every request answered');

	my $m = http_get('/metrics', socket => IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8081))) // '';
	my ($ce) = $m =~ /^mail_auth_cache_evictions_total (\d+)/m;
	my ($le) = $m =~ /^mail_auth_limiter_evictions_total (\d+)/m;
	cmp_ok($ce // 0, '>', 0, 'full zones: the cache zone was full (evictions counted)') or diag($m);
	cmp_ok($le // 0, '>', 0, 'full zones: the limiter zone was full (evictions counted)') or diag($m);

	# still working after all that: the limiter counts a new address, the cache answers
	status('/zones', 'carol', "again-$_", port => 8081, ip => '198.51.100.7') for 1 .. 3;
	my $from = length $t->read_file('error.log');
	is(status('/zones', 'carol', 'carol-pw', port => 8081, ip => '198.51.100.7'), $INVALID,
		'full zones: the limiter still refuses an address over its limit');
	like(log_since($t, $from), qr/client=198\.51\.100\.7 .*result=rate-limited/, 'full zones: logged as rate-limited');
	is(status('/zones', 'carol', 'carol-pw', port => 8081, ip => '198.51.100.8'), 'OK', 'full zones: right login');
	$from = length $t->read_file('error.log');
	is(status('/zones', 'carol', 'carol-pw', port => 8081, ip => '198.51.100.9'), 'OK', 'full zones: right login again');
	like(log_since($t, $from), qr/user="carol" client=198\.51\.100\.9 .*result=ok .*cached verdict/,
		'full zones: the cache still answers');
}

###############################################################################

# 5. reload and binary upgrade while 50 concurrent IMAP logins run through the mail proxy:
#    t=2 s HUP; t=5 s USR2 (new master); t=7 s WINCH (old workers leave); t=9 s QUIT (old
#    master leaves); the logins run 14 s

my $old = master_pid($t);
$PIDFILE = "$d/nginx.pid";
push @MASTERS, $old;
my $from = length $t->read_file('error.log');
my $storm_pid = open my $storm, '-|', 'python3', "$FindBin::Bin/lib/imap_storm.py",
	'127.0.0.1', port(8143), 14, 50, 'alice', 'alice-pw', 'not-alice-pw';
die "imap_storm.py: $!\n" unless $storm_pid;
my $go = <$storm> // '';
my $t0 = time();
sub at { my ($sec) = @_; my $w = $t0 + $sec - time(); sleep $w if $w > 0; }

at(2);
my @before = sort(workers_of($old));
$t->reload();
ok(wait_for(10, sub {
	my @now = workers_of($old);
	@now && !grep { my $w = $_; grep { $_ == $w } @before } @now;
}), 'reload under load: new workers replaced the old ones');

at(5);
kill 'USR2', $old;
my $new;
ok(wait_for(10, sub {
	$new = master_pid($t);
	push @MASTERS, $new if $new && $new != $old && !grep { $_ == $new } @MASTERS;
	-e "$d/nginx.pid.oldbin" && $new && $new != $old && workers_of($new) >= 2;
}), 'binary upgrade: USR2 started a new master with its workers')
	or diag(join "\n", grep { /signal|binary|emerg|alert|exited/ } split /\n/, log_since($t, $from));
$new = undef if !$new || $new == $old || !alive($new);

SKIP: {
	skip 'no new master: the old one keeps running', 2 unless $new;

	at(7);
	kill 'WINCH', $old;
	# (the new master is a child of the old one too)
	ok(wait_for(10, sub { !grep { $_ != $new } workers_of($old) }),
		'binary upgrade: WINCH, the old workers left');

	at(9);
	kill 'QUIT', $old;
	ok(wait_for(10, sub { !alive($old) && !-e "$d/nginx.pid.oldbin" }),
		'binary upgrade: QUIT, the old master left');
}

my $result = join '', <$storm>;
close $storm;
my %r = $result =~ /"(\w+)": (\d+)/g;
note("imap storm: $result");
is($go, "started\n", 'the logins ran') or diag($result);
cmp_ok($r{good_ok} // 0, '>=', 100, "logins went through all along ($r{good_ok} good OK, $r{bad_refused} bad refused)");
is($r{bad_ok}, 0, 'no OK for a wrong password during reload and upgrade');
is($r{good_refused}, 0, 'no right password refused during reload and upgrade');
is(($r{temporary} // -1) + ($r{other_no} // -1), 0, 'no temporary or other failure during reload and upgrade')
	or diag($result);
is($r{conn_errors}, 0, 'no connection refused or reset during reload and upgrade (graceful)')
	or diag($result);

# one decision line per login the clients saw answered
my $log = log_since($t, $from);
my $oks = () = $log =~ /mail_auth: user="alice" client=127\.0\.0\.1 protocol=imap .* result=ok /g;
my $invalid = () = $log =~ /mail_auth: user="alice" client=127\.0\.0\.1 protocol=imap .* result=invalid /g;
is("$oks/$invalid", ($r{good_ok} // 0) . '/' . ($r{bad_refused} // 0),
	'one decision line per login (ok/invalid)');
like($log, qr/signal 12 \(SIGUSR2\) received.*changing binary/, 'the log shows the binary change');

is(status('/auth', 'alice', 'alice-pw'), 'OK', 'the new master answers');
my ($rc, $out) = real_client('imap', '127.0.0.1', port(8143), 'alice', 'alice-pw');
is($rc, 0, 'a good IMAP login after the upgrade') or diag($out);

$log = $t->read_file('error.log');
unlike($log, qr/exited on signal|panic/, 'no worker crashed, no panic');

# stop the master that now runs (the new one after the upgrade): the harness signals the pid in
# nginx.pid; it is not our child, so wait for it here
my $last = master_pid($t);
push @MASTERS, $last if $last && !grep { $_ == $last } @MASTERS;
$t->stop();
wait_for(20, sub { !alive($last) });
my @left = grep { alive($_) } @MASTERS;
ok(!@left, 'every nginx master this test started has exited (' . join(', ', @MASTERS) . ')')
	or diag("still running: @left (stopping them now)");
stop_master($_) for @left;

###############################################################################
