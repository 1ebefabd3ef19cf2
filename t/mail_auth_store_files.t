#!/usr/bin/perl

# Tests for ngx-mail-auth: a store's file replaced by something that is not a regular file
# while nginx runs. A FIFO (named pipe) at the path of a passwd-file or a SQLite database, by
# rename or through a symlink: opening it for reading blocks until some writer opens it, which
# never happens. Neither the watcher thread, nor a new worker's first lookup (on nginx's event
# loop), nor a SQLite lookup on the thread pool may wait for it: the store is unusable (a
# temporary failure and an error-log line, never the old content), and it recovers when a
# regular file is back.

###############################################################################

use warnings;
use strict;

use Test::More;
use File::Copy qw/ copy /;
use IO::Select;
use IO::Socket::INET;
use POSIX qw/ mkfifo /;
use Fcntl qw/ O_RDWR O_NONBLOCK /;
use Time::HiRes qw/ sleep time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http/);
plan(skip_all => 'nginx without threads') unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'sqlite3 not installed') unless have_tool('sqlite3');
plan(skip_all => 'needs Linux /proc (worker pids)') unless -e '/proc/self/stat';
workers_can_read($t);

my $d = $t->testdir();

$t->write_file('users.good', "alice:{PLAIN}alice-pw\n");
$t->write_file('api.htpasswd', "dovecot:{PLAIN}api-pw\n");
copy("$d/users.good", "$d/users") or die;

mkdir "$d/db" or die;
chmod 0755, "$d/db";
open my $sql, '<', "$FindBin::Bin/../scripts/schema.sql" or die "schema.sql: $!\n";
my $schema = do { local $/; <$sql> };
close $sql;
$schema .= "INSERT INTO users (name, password) VALUES ('alice', '{PLAIN}alice-pw');\n";
open my $sq, '|-', 'sqlite3', "$d/db/users.good" or die "sqlite3: $!\n";
print $sq $schema;
close $sq or die "sqlite3 failed\n";
copy("$d/db/users.good", "$d/db/users.db") or die;
chmod 0644, "$d/db/users.db";

# accounts that expire, by the query's own condition: alice's in a few seconds
copy("$d/db/users.good", "$d/db/expiry.db") or die;
my $expires = time() + 3;
open $sq, '|-', 'sqlite3', "$d/db/expiry.db" or die "sqlite3: $!\n";
print $sq "ALTER TABLE users ADD COLUMN expires INTEGER;\n"
	. "UPDATE users SET expires = " . int($expires) . " WHERE name = 'alice';\n";
close $sq or die "sqlite3 failed\n";
chmod 0644, "$d/db/expiry.db";

# 300,000 users and a query no index serves (case-insensitive names): ~0.1 s a lookup
copy("$d/db/users.good", "$d/db/big.db") or die;
open $sq, '|-', 'sqlite3', "$d/db/big.db" or die "sqlite3: $!\n";
print $sq "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)\n"
	. "INSERT INTO users (name, password) SELECT 'user' || i || '\@example.org', '{PLAIN}x' FROM n;\n";
close $sq or die "sqlite3 failed\n";
chmod 0644, "$d/db/big.db";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    mail_auth_backend imap 127.0.0.1:8144;
    mail_auth_fail_wait 0;

    server {
        listen       127.0.0.1:8080;
        server_name  localhost;

        location = /passwd {
            mail_auth;
            mail_auth_passwd_file %%TESTDIR%%/users;
        }

        location = /sqlite {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/db/users.db;
        }

        # rows kept by each worker: also for unknown users, under the names clients send
        location = /sqlite-rows {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/db/users.db;
            mail_auth_sqlite_cache_rows 8192;
        }

        location = /sqlite-expiry {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/db/expiry.db;
            mail_auth_sqlite_query "SELECT name, password FROM users
                                    WHERE name = :user AND (expires IS NULL OR expires > unixepoch())";
        }

        location = /sqlite-big {
            mail_auth;
            mail_auth_sqlite %%TESTDIR%%/db/big.db;
            mail_auth_sqlite_query "SELECT name, password FROM users WHERE lower(name) = lower(:user)";
        }

        # Dovecot's list of accounts by the operator's query, on a connection of its own
        location = /json-list {
            auth_basic "mail_auth_json";
            auth_basic_user_file %%TESTDIR%%/api.htpasswd;
            mail_auth_json;
            mail_auth_sqlite %%TESTDIR%%/db/users.db;
            mail_auth_sqlite_accounts_query "SELECT name FROM users WHERE enabled = 1";
        }

        location = /ping {
            return 200 "pong\n";
        }
    }
}

EOF

$t->run()->plan(28);

###############################################################################

my $TEMP = '[UNAVAILABLE] Temporary server problem, try again later';

# one auth_http request; its Auth-Status, 'none' if nothing came within $wait seconds
sub status {
	my ($uri, $pass, $wait) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or return 'none';
	$s->print("GET $uri HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
		. "Auth-User: alice\r\nAuth-Pass: $pass\r\nAuth-Protocol: imap\r\n"
		. "Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.1\r\n\r\n");
	my ($r, $end) = ('', time() + ($wait // 3));
	my $sel = IO::Select->new($s);
	while (time() < $end) {
		last unless $sel->can_read($end - time());
		my $n = $s->sysread($r, 4096, length $r);
		last unless $n;
	}
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}

sub ping {
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or return '';
	$s->print("GET /ping HTTP/1.0\r\nHost: localhost\r\n\r\n");
	my $r = '';
	my $sel = IO::Select->new($s);
	while ($sel->can_read(3)) {
		last unless $s->sysread($r, 4096, length $r);
	}
	return $r =~ /pong/ ? 'pong' : '';
}

sub workers {
	my $master = $t->read_file('nginx.pid');
	$master =~ s/\s+//g;
	my @w;
	for my $stat (glob '/proc/[0-9]*/stat') {
		open my $fh, '<', $stat or next;
		my $line = <$fh> // '';
		push @w, $1 if $line =~ /^(\d+) \(.*\) \S+ (\d+) / && $2 == $master;
	}
	return @w;
}

sub log_since {
	my ($from) = @_;
	return substr($t->read_file('error.log'), $from);
}

# Whatever is blocked opening a FIFO for reading is let go (a process that opens it for
# writing); done before every restore, and at the end, so that nothing is left waiting.
my @fifos;
sub release_fifos {
	for my $f (@fifos) {
		sysopen(my $fh, $f, O_RDWR | O_NONBLOCK) or next;
		sleep 0.2;
		close $fh;
	}
}
END { release_fifos() }

###############################################################################

is(status('/passwd', 'alice-pw'), 'OK', 'passwd-file: OK before');
is(status('/sqlite', 'alice-pw'), 'OK', 'sqlite: OK before');

# 0. an account that expires by the query's condition: no writer touches the file when the time
# comes, so no kept row may answer for it
my @before = map { status('/sqlite-expiry', 'alice-pw') } 1 .. 3;
is("@before", 'OK OK OK', 'sqlite, an account not expired yet: OK');
sleep 0.2 while time() < $expires + 1.2;
is(status('/sqlite-expiry', 'alice-pw'), '[AUTHENTICATIONFAILED] Invalid login or password',
	'sqlite, the account expired (expires > unixepoch()): refused, not answered from a kept row');

# 1. the passwd-file renamed over by a FIFO: the watcher must not wait for a writer, and the
# old content must not keep answering
my $from = length $t->read_file('error.log');
mkfifo("$d/users.fifo", 0644) or die "mkfifo: $!\n";
push @fifos, "$d/users";
rename("$d/users.fifo", "$d/users") or die "rename: $!\n";
sleep 1.5;
my @answers = map { status('/passwd', 'alice-pw') } 1 .. 3;
is("@answers", join(' ', ($TEMP) x 3), 'passwd-file replaced by a FIFO: temporary failure, not the old content');
like(log_since($from), qr/\[error\].*users: .*not a regular file/, 'passwd-file replaced by a FIFO: logged');

# 2. a new worker (the first was killed): its first lookup looks at the file on the event loop
my ($w) = workers();
kill 'KILL', $w;
ok(wait_for(5, sub { my @n = workers(); @n && $n[0] != $w }), 'worker respawned');
is(status('/passwd', 'alice-pw'), $TEMP, 'a new worker, the FIFO in place: temporary failure');
is(ping(), 'pong', 'the new worker answers other requests');

release_fifos();
unlink "$d/users";
copy("$d/users.good", "$d/users") or die;
ok(wait_for(5, sub { status('/passwd', 'alice-pw') eq 'OK' }), 'passwd-file back: recovered');

# a device at the path (/dev/zero: read, it never ends): never read, a temporary failure
$from = length $t->read_file('error.log');
symlink('/dev/zero', "$d/users.link") or die "symlink: $!
";
rename("$d/users.link", "$d/users") or die "rename: $!
";
sleep 1.5;
@answers = map { status('/passwd', 'alice-pw') } 1 .. 3;
is("@answers", join(' ', ($TEMP) x 3), 'passwd-file replaced by a device: temporary failure, not the old content');
like(log_since($from), qr/\[error\].*users: .*not a regular file/, 'passwd-file replaced by a device: logged');
unlink "$d/users";
copy("$d/users.good", "$d/users") or die;
ok(wait_for(5, sub { status('/passwd', 'alice-pw') eq 'OK' }), 'passwd-file back again: recovered');

# 3. the SQLite database replaced by a symlink to a FIFO: a lookup must not wait for it
$from = length $t->read_file('error.log');
mkfifo("$d/db/fifo", 0644) or die "mkfifo: $!\n";
push @fifos, "$d/db/fifo";
symlink("$d/db/fifo", "$d/db/users.link") or die "symlink: $!\n";
rename("$d/db/users.link", "$d/db/users.db") or die "rename: $!\n";
sleep 1.5;
@answers = map { status('/sqlite', 'alice-pw') } 1 .. 3;
is("@answers", join(' ', ($TEMP) x 3), 'sqlite replaced by a symlink to a FIFO: temporary failure');
like(log_since($from), qr/\[error\].*users\.db: .*not a regular file/, 'sqlite replaced by a FIFO: logged');

# the JSON API's list of accounts by mail_auth_sqlite_accounts_query opened the database without
# looking: a pool thread waited in open() for a writer for good (no answer; the listings are not
# bounded, so some 32 of them took the whole pool)
$from = length $t->read_file('error.log');
my $list = http("GET /json-list?mode=list-accounts HTTP/1.0\r\nHost: localhost\r\n"
	. "Authorization: Basic ZG92ZWNvdDphcGktcHc=\r\n\r\n", timeout => 3) // '';
like($list, qr{^HTTP/1\.[01] 503 }, 'list-accounts by the operator\'s query, the FIFO in place: 503 at once');
like(log_since($from), qr/\[error\].*listing the accounts: .*not a regular file/, 'list-accounts: logged');

release_fifos();
unlink "$d/db/users.db";
copy("$d/db/users.good", "$d/db/users.db") or die;
chmod 0644, "$d/db/users.db";
ok(wait_for(5, sub { status('/sqlite', 'alice-pw') eq 'OK' }), 'sqlite back: recovered');
is(ping(), 'pong', 'still answering');

# 4. made-up user names of 4 KiB (what an auth_http request may carry): the rows a worker
# keeps of them are bounded in bytes, not only in number (8192 rows of 4 KiB names: 32 MiB)
sub rss_kib {
	my ($pid) = workers();
	open my $fh, '<', "/proc/$pid/status" or return 0;
	while (my $l = <$fh>) { return $1 if $l =~ /^VmRSS:\s+(\d+)/; }
	return 0;
}
# $n requests pipelined on one connection, each with a user name of its own
sub long_names {
	my ($from, $n) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or die "connect: $!\n";
	my $req = '';
	for my $i ($from .. $from + $n - 1) {
		my $user = sprintf('%08d', $i) . ('x' x 4000);
		$req .= "GET /sqlite-rows HTTP/1.1\r\nHost: localhost\r\nAuth-Method: plain\r\n"
			. "Auth-User: $user\r\nAuth-Pass: x\r\nAuth-Protocol: imap\r\n"
			. "Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.1\r\n"
			. ($i == $from + $n - 1 ? "Connection: close\r\n" : '') . "\r\n";
	}
	$s->print($req);
	my $r = '';
	my $sel = IO::Select->new($s);
	while ($sel->can_read(10)) {
		last unless $s->sysread($r, 65536, length $r);
	}
	return scalar(() = $r =~ /^Auth-Status: /mg);
}
long_names(0, 100);
my $before = rss_kib();
my $answered = 0;
$answered += long_names(100 * $_, 100) for 1 .. 100;
my $grown = rss_kib() - $before;
is($answered, 10000, '10000 logins with made-up 4 KiB user names answered');
cmp_ok($grown, '<', 12 * 1024, "rows kept for them bounded in bytes (worker grew by $grown KiB)");

# 5. a lookup SQLite answers slowly (a full scan) does not hold nginx's event loop: 12
# unknown users at once (names of their own: no kept rows), and a /ping meanwhile
sub ask_big {
	my ($user) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . port(8080)) or die "connect: $!\n";
	$s->print("GET /sqlite-big HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
		. "Auth-User: $user\r\nAuth-Pass: x\r\nAuth-Protocol: imap\r\n"
		. "Auth-Login-Attempt: 1\r\nClient-IP: 192.0.2.1\r\n\r\n");
	return $s;
}
sub answer_of {
	my ($s) = @_;
	my $r = '';
	my $sel = IO::Select->new($s);
	while ($sel->can_read(20)) {
		last unless $s->sysread($r, 4096, length $r);
	}
	return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none';
}
is(answer_of(ask_big('warm-up')), '[AUTHENTICATIONFAILED] Invalid login or password', 'big store: opened');
my $t0 = time();
my @slow = map { ask_big("nobody$_") } 1 .. 12;
sleep 0.05;
my $p0 = time();
my $pong = ping();
my $took = time() - $p0;
my @got = map { answer_of($_) } @slow;
my $all = time() - $t0;
is($pong, 'pong', 'big store: /ping answered meanwhile');
cmp_ok($took, '<', 0.4, sprintf('big store: /ping not held by the lookups (%.3f s; all 12 lookups took %.3f s)', $took, $all));
is(scalar(grep { $_ eq '[AUTHENTICATIONFAILED] Invalid login or password' } @got), 12,
	'big store: the slow lookups answered (unknown users)');

# 6. nginx -t (and so a start or a reload) with a FIFO as a store: an error, at once
sub nginx_t_fifo {
	my ($re, $with) = @_;
	(my $c = $t->read_file('nginx.conf')) =~ s/$re/$with/ or die "no match for $re\n";
	$t->write_file('fifo.conf', $c);
	my $out = `timeout 10 $Test::Nginx::NGINX -t -p $d/ -c $d/fifo.conf -e $d/error-t.log 2>&1`;
	return ($? >> 8, $out);
}
my ($code, $out) = nginx_t_fifo(qr{mail_auth_passwd_file \S+/users;}, "mail_auth_passwd_file $d/db/fifo;");
ok($code != 0 && $code != 124 && $out =~ /not a regular file/, 'nginx -t: a passwd-file that is a FIFO refused')
	or diag("exit $code: $out");
($code, $out) = nginx_t_fifo(qr{mail_auth_sqlite \S+/users\.db;}, "mail_auth_sqlite $d/db/fifo;");
ok($code != 0 && $code != 124 && $out =~ /not a regular file/, 'nginx -t: a SQLite database that is a FIFO refused')
	or diag("exit $code: $out");

# 7. nginx -t while a writer holds the database locked (an import in its transaction): a
# warning, not an error (nginx would not start, a reload would fail)
{
	my $lock_pid = open my $locker, '-|', 'python3', '-c', <<'PY', "$d/db/users.db";
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=5)
c.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(3)
c.execute("ROLLBACK")
PY
	die "python3: $!\n" unless $lock_pid;
	my $started = <$locker> // '';
	my ($code, $out) = nginx_t_fifo(qr{mail_auth_sqlite_cache_rows 8192;}, 'mail_auth_sqlite_cache_rows 8192;');
	ok($started =~ /locked/ && $code == 0 && $out =~ /\[warn\].*database is locked by a writer/,
		'nginx -t, the database locked by a writer: a warning') or diag("exit $code: $out");
	kill 'TERM', $lock_pid;
	close $locker;
}

# the worker killed in 2 is an expected alert of the master ("exited on signal 9")
my $log = $t->read_file('error.log');
$log =~ s/^.*\[alert\] \d+#\d+: worker process $w exited on signal 9\n//mg;
$t->write_file('error.log', $log);

# the helpers above refer to $t: let the harness's final checks (no alerts) run now, before
# Test::More counts the tests at exit
undef $t;

###############################################################################
