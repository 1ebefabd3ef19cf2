#!/usr/bin/perl

# Tests for ngx-mail-auth under faults: a passwd file truncated, replaced by a directory or
# made unreadable; a SQLite store in a read-only directory (the module never writes); the
# thread pool saturated; the cache and limiter zones full; and `nginx -s reload` and a binary
# upgrade (USR2, WINCH, QUIT) while 50 concurrent IMAP logins run through the mail proxy.
# Throughout: no OK for a wrong password, no refusal of a right one, no crash.

###############################################################################

use warnings;
use strict;

use Test::More;
use Time::HiRes qw/ sleep time /;

BEGIN { use FindBin; chdir($FindBin::Bin); push @INC, 'lib'; }

use Test::Nginx qw/ :DEFAULT http_start http_end /;
use MailAuthBackend;
use MailAuthTest;

###############################################################################

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $t = Test::Nginx->new()->has(qw/http mail imap/);
workers_can_read($t);
plan(skip_all => 'nginx without threads')
	unless `$Test::Nginx::NGINX -V 2>&1` =~ /--with-threads/;
plan(skip_all => 'htpasswd or sqlite3 not installed')
	unless have_tool('htpasswd') && have_tool('sqlite3');

my $d = $t->testdir();
system("htpasswd -cbB -C 4 $d/users alice alice-pw 2>/dev/null") == 0 or die;
system("cp $d/users $d/users.good") == 0 or die;
system("htpasswd -cbB -C 12 $d/slow alice alice-pw 2>/dev/null") == 0 or die;
$t->write_file('cheap', "alice:" . make_hash('htpasswd-s', 'alice-pw') . "\n");
mkdir "$d/ro" or die;
system('sqlite3', "$d/ro/users.db", "CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT); "
	. "INSERT INTO users VALUES ('alice', '{PLAIN}alice-pw');") == 0 or die;
chmod 0444, "$d/ro/users.db";
chmod 0555, "$d/ro";

$t->write_file_expand('nginx.conf', <<'EOF');

%%TEST_GLOBALS%%

daemon off;
worker_processes 2;
thread_pool tiny threads=1 max_queue=1;

events {
}

http {
    %%TEST_GLOBALS_HTTP%%

    server {
        listen       127.0.0.1:8080 reuseport;
        server_name  localhost;

        mail_auth_backend imap 127.0.0.1:8144;
        mail_auth_fail_wait 0;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file users;
        }

        location = /auth-sqlite {
            mail_auth;
            mail_auth_sqlite ro/users.db;
            mail_auth_sqlite_query "SELECT password FROM users WHERE name = :user";
        }

        location = /auth-tiny-pool {
            mail_auth;
            mail_auth_passwd_file slow;
            mail_auth_thread_pool tiny;
        }

        location = /auth-tiny-zones {
            mail_auth;
            mail_auth_passwd_file cheap;
            mail_auth_cache zone=tinycache:32k;
            mail_auth_limit zone=tinylimit:32k ip=100/m user=1000/m;
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
$t->run()->plan(30);
$t->waitforsocket('127.0.0.1:' . port(8144));

###############################################################################

sub login {
	my ($uri, $user, $pass, $ip) = @_;
	return auth_http($uri, 'Auth-Method' => 'plain', 'Auth-User' => $user,
		'Auth-Pass' => $pass, 'Auth-Protocol' => 'imap',
		'Client-IP' => $ip // '192.0.2.1') // '';
}

# sleeps the whole time even if a signal (a child exiting) interrupts it
sub pause {
	my ($secs) = @_;
	my $until = time() + $secs;
	sleep($until - time()) while time() < $until;
}

sub status_of { my ($r) = @_; return $r =~ /^Auth-Status: (.*?)\r$/m ? $1 : 'none'; }

# the passwd file is looked at most once a second: poll
sub eventually {
	my ($uri, $user, $pass, $re) = @_;
	return wait_for(5, sub { status_of(login($uri, $user, $pass)) =~ $re });
}

# 1. passwd-file faults: truncated, a directory, unreadable; never OK, then recovery

$t->write_file('users', "alice:\$2y\$04\$trunc");
ok(eventually('/auth', 'alice', 'alice-pw', qr/^Invalid login/),
	'truncated file: the half line fails closed');
like($t->read_file('error.log'), qr/mail_auth: user="alice" .* result=scheme-error/,
	'truncated file: logged as an unusable stored password');
is(status_of(login('/auth', 'alice', 'wrong')), 'Invalid login or password',
	'truncated file: wrong password still refused');

unlink "$d/users";
mkdir "$d/users" or die;
pause(1.2);    # every worker looks again: every answer is a temporary failure now
is(join(',', map { status_of(login('/auth', 'alice', 'alice-pw')) } 1 .. 4),
	join(',', ('Temporary server problem, try again later') x 4),
	'file replaced by a directory: temporary failure');
like($t->read_file('error.log'), qr/\[error\].*mail_auth: .*users.*(directory|not a regular)/i,
	'directory: error logged with the cause');
rmdir "$d/users" or die;

system("cp $d/users.good $d/users") == 0 or die;
pause(1.2);
is(join(',', map { status_of(login('/auth', 'alice', 'alice-pw')) } 1 .. 4), 'OK,OK,OK,OK',
	'file restored: OK again');

my ($worker) = `ps -o user= --ppid \$(cat $d/nginx.pid)` =~ /(\S+)/;
SKIP: {
skip "workers run as $worker: permissions do not stop them", 2 if ($worker // 'root') eq 'root';
chmod 0000, "$d/users";
pause(1.2);
is(join(',', map { status_of(login('/auth', 'alice', 'alice-pw')) } 1 .. 4),
	join(',', ('Temporary server problem, try again later') x 4),
	"unreadable file (workers run as $worker): temporary failure, never the old content");
like($t->read_file('error.log'), qr/\[error\].*mail_auth: .*users.*(Permission denied|cannot)/,
	'unreadable: error logged');
chmod 0644, "$d/users";
}
ok(eventually('/auth', 'alice', 'alice-pw', qr/^OK/), 'permissions restored: OK again');

# 2. SQLite in a read-only directory: lookups work and nothing is written (no journal, no WAL)

is(status_of(login('/auth-sqlite', 'alice', 'alice-pw')), 'OK', 'read-only SQLite: OK');
is(status_of(login('/auth-sqlite', 'alice', 'wrong')), 'Invalid login or password',
	'read-only SQLite: wrong password refused');
opendir my $dh, "$d/ro" or die;
is(join(',', sort grep { !/^\./ } readdir $dh), 'users.db', 'nothing written next to the database');

# 3. the thread pool saturated: 1 thread, queue of 1, 12 concurrent bcrypt(12) checks

my @s = map { http_start("GET /auth-tiny-pool HTTP/1.0\r\nHost: localhost\r\n"
	. "Auth-Method: plain\r\nAuth-Protocol: imap\r\nClient-IP: 192.0.2.9\r\n"
	. "Auth-User: alice\r\nAuth-Pass: " . ($_ % 3 ? 'wrong' : 'alice-pw') . "\r\n\r\n",
	start => 1) } 1 .. 12;
my @answers = map { status_of(http_end($_) // '') } @s;
my %seen;
$seen{$_}++ for @answers;
is(scalar(grep { $_ ne 'none' } @answers), 12, 'saturated pool: every request answered');
ok(!grep({ $answers[$_ - 1] eq 'OK' && $_ % 3 } 1 .. 12), 'saturated pool: no OK for a wrong password');
cmp_ok($seen{'Temporary server problem, try again later'} // 0, '>=', 1,
	'saturated pool: the overflow gets a temporary failure') or diag(explain \%seen);
like($t->read_file('error.log'), qr/result=internal-error reason="verification did not run \(thread pool queue full/,
	'saturated pool: the log says why');

# 4. cache and limiter zones full (32k each): 1500 distinct users and addresses

my ($wrong_ok, $right_refused) = (0, 0);
for my $n (1 .. 1500) {
	my $ip = '10.' . int($n / 250) . '.' . ($n % 250) . '.1';
	$wrong_ok++ if status_of(login('/auth-tiny-zones', "user$n", 'x', $ip)) eq 'OK';
	$right_refused++ if $n % 10 == 0
		&& status_of(login('/auth-tiny-zones', 'alice', 'alice-pw', $ip)) ne 'OK';
}
is($wrong_ok, 0, 'full zones: no wrong login accepted');
is($right_refused, 0, 'full zones: every right login accepted');
like(login('/auth-tiny-zones', 'alice', 'alice-pw'), qr/^Auth-Status: OK/m,
	'full zones: still answering');

# 5. reload and binary upgrade while 50 concurrent IMAP logins run. nginx ignores the binary
# upgrade signal unless its master is a daemon (parent pid 1), so this part runs a second,
# daemonized nginx with the same module and configuration, stopped at the end (or by END).

my $globals = $ENV{TEST_NGINX_GLOBALS} // '';
$t->write_file_expand('up.conf', <<"UPCONF");
$globals
pid $d/up.pid;
error_log $d/up.log info;
worker_processes 2;

events {
}

http {
    access_log off;

    server {
        listen       127.0.0.1:8280;

        location = /auth {
            mail_auth;
            mail_auth_passwd_file users;
            mail_auth_backend imap 127.0.0.1:8144;
            mail_auth_fail_wait 0;
        }
    }
}

mail {
    auth_http  127.0.0.1:8280/auth;

    server {
        listen     127.0.0.1:8243;
        protocol   imap;
    }
}
UPCONF

system($Test::Nginx::NGINX, '-p', "$d/", '-c', 'up.conf', '-e', "$d/up.log") == 0
	or die "daemonized nginx did not start\n";
ok(wait_for(10, sub { -s "$d/up.pid" }), 'daemonized nginx started');
$t->waitforsocket('127.0.0.1:' . port(8243));

sub pid_of {
	my ($f) = @_;
	open my $fh, '<', $f or return undef;
	my $p = <$fh> // '';
	return $p =~ /(\d+)/ ? $1 : undef;
}
sub up_log { open my $fh, '<', "$d/up.log" or return ''; local $/; return <$fh>; }
# (END runs in forked children too, the fake backends' connection handlers: only here)
my $main_pid = $$;
END {
	return unless defined $main_pid && $$ == $main_pid;
	for my $f ("$d/up.pid", "$d/up.pid.oldbin") {
		my $p = pid_of($f);
		kill 'QUIT', $p if $p;
	}
}

open my $storm, '-|', 'python3', "$FindBin::Bin/lib/login_storm.py", '127.0.0.1', port(8243),
	12, 50, 'alice', 'alice-pw', 'not-her-password' or die "login_storm: $!\n";

pause(2);
my $old = pid_of("$d/up.pid");
kill 'HUP', $old;
ok(wait_for(5, sub { up_log() =~ /reconfiguring/ }), 'reload under load');

pause(2);
kill 'USR2', $old;
ok(wait_for(10, sub { -e "$d/up.pid.oldbin" && (pid_of("$d/up.pid") // $old) != $old }),
	'binary upgrade: a new master started') or diag(up_log() =~ /(.*(?:crit|emerg|alert).*)/);
my $new = pid_of("$d/up.pid");
pause(1);
kill 'WINCH', $old;
pause(2);
kill 'QUIT', $old;
ok(wait_for(10, sub { !kill(0, $old) }), 'binary upgrade: the old master quit');

my $result = do { local $/; <$storm> };
close $storm;
my %r = $result =~ /"(\w+)": (\d+)/g;
note("login storm: $result");
cmp_ok($r{good_ok} // 0, '>', 100, "logins ran throughout (" . ($r{good_ok} // 0) . " good, "
	. ($r{bad_refused} // 0) . " bad)");
is($r{bad_ok}, 0, 'no OK for a wrong password during reload and upgrade');
is($r{good_refused}, 0, 'no right password refused during reload and upgrade');
is(($r{errors} // 0) + ($r{temporary} // 0), 0, 'no connection errors or temporary failures')
	or diag($result);

my $up = http("GET /auth HTTP/1.0\r\nHost: localhost\r\nAuth-Method: plain\r\n"
	. "Auth-User: alice\r\nAuth-Pass: alice-pw\r\nAuth-Protocol: imap\r\n\r\n",
	socket => IO::Socket::INET->new('127.0.0.1:' . port(8280)));
like($up // '', qr/^Auth-Status: OK/m, 'the new binary answers');
kill 'QUIT', $new;
ok(wait_for(10, sub { !kill(0, $new) }), 'daemonized nginx stopped');
unlike(up_log() . $t->read_file('error.log'), qr/exited on signal|panic caught/, 'no worker crashed');

###############################################################################
